"""Quotas per role (engine/storage/quotas.py): how many containers a learner has and runs,
and the memory, process and CPU limits their config.json gets and may not pass."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import InvalidInputError, PolicyError
from engine.protocol import ADMIN, INSTRUCTOR, LEARNER, verbs
from engine.spec.service import SpecService
from engine.storage import quotas
from engine.storage.containers import Containers
from tests.conftest import requires
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, worker_started
from tests.engine.test_sandbox import as_user, create
from tests.imagetools import busybox_image

MIB = 1024 * 1024


def with_quotas(engine: Engine, **learner: Any) -> None:
    engine.config = replace(engine.config, policy={"quotas": {"learner": learner}})


def test_the_defaults_and_the_files_keys() -> None:
    from engine.config import EngineConfig

    config = EngineConfig()
    assert quotas.quota_for(config, ADMIN) is None and quotas.quota_for(config, None) is None
    learner = quotas.quota_for(config, LEARNER)
    assert learner is not None and learner.memory == 256 * MIB and learner.running == 3
    assert quotas.quota_for(config, INSTRUCTOR) != learner
    config = replace(config, policy={"quotas": {"learner": {"memory": "64m", "running": 1}}})
    got = quotas.quota_for(config, LEARNER)
    assert got is not None and (got.memory, got.running, got.containers) == (64 * MIB, 1, 10)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learner": {"memroy": 1}}, "unknown key 'memroy'"),
        ({"learner": {"running": 0}}, "a positive number"),
        ({"learner": {"running": True}}, "a positive number"),
        ({"learner": {"memory": "lots"}}, "a size such as 256m"),
        ({"learner": []}, "must be an object"),
    ],
)
def test_a_bad_quota_in_the_file_is_an_error(raw: Any, message: str) -> None:
    from engine.config import EngineConfig

    with pytest.raises(InvalidInputError, match=message):
        quotas.quota_for(EngineConfig(policy={"quotas": raw}), LEARNER)


def test_a_learner_has_at_most_so_many_containers(engine: Engine) -> None:
    busybox_image(engine)
    with_quotas(engine, containers=2)
    ann = as_user(engine, "ann")
    create(ann, "one")
    create(ann, "two")
    with pytest.raises(PolicyError, match="you have 2 containers: a learner may have 2"):
        create(ann, "three")
    assert len(engine.get(Containers).list()) == 2  # nothing half created
    create(as_user(engine, "bob"), "one")  # another learner's count is theirs
    create(as_user(engine, "root", ADMIN), "admins")  # admins have none


def test_config_json_gets_the_limits_and_keeps_them(engine: Engine) -> None:
    busybox_image(engine)
    record = create(as_user(engine, "ann"), "limited")
    service = engine.get(SpecService)
    service.generate(record.id)
    spec = json.loads(service.get(record.id)["text"])
    resources = spec["linux"]["resources"]
    assert resources["memory"]["limit"] == 256 * MIB
    assert resources["pids"]["limit"] == 512
    assert resources["cpu"] == {"quota": 100000, "period": 100000}

    def refused(change: Any) -> list[str]:
        edited = json.loads(json.dumps(spec))
        change(edited["linux"]["resources"])
        result = service.validate(record.id, json.dumps(edited))
        return [e["field"] for e in result["errors"] if e["rule"] in ("quota", "resources")]

    assert refused(lambda r: r["memory"].update(limit=2048 * MIB)) == [
        "linux.resources.memory.limit"
    ]
    assert refused(lambda r: r.pop("memory")) == ["linux.resources.memory.limit"]
    assert refused(lambda r: r["cpu"].update(quota=300000)) == ["linux.resources.cpu.quota"]
    assert refused(lambda r: r["pids"].update(limit=5000)) == ["linux.resources.pids.limit"]
    assert refused(lambda r: r["memory"].update(limit=512 * MIB)) == []  # within the max


@requires(can_run_containers(), RUNTIME_REASON)
@pytest.mark.privileged
def test_a_learner_runs_at_most_so_many_at_once(engine: Engine) -> None:
    busybox_image(engine)
    with_quotas(engine, running=1)
    with worker_started(engine):
        ann = as_user(engine, "ann")
        first = create(ann, "first", command=["sleep", "60"])
        second = create(ann, "second", command=["sleep", "60"])
        from engine.api.base import invoke

        invoke(ann, verbs.CONTAINER_START, verbs.Id(id=first.id))
        with pytest.raises(PolicyError, match="1 of your containers run already"):
            invoke(ann, verbs.CONTAINER_START, verbs.Id(id=second.id))
        # the limit is the container's owner's, whoever starts it (here the CLI's root)
        with pytest.raises(PolicyError, match="may run at once"):
            invoke(as_user(engine, "root", ADMIN), verbs.CONTAINER_START, verbs.Id(id=second.id))
        invoke(ann, verbs.CONTAINER_KILL, verbs.Kill(id=first.id))
        started = invoke(ann, verbs.CONTAINER_START, verbs.Id(id=second.id))
        assert started["state"] == "running"
