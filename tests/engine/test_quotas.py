"""Quotas per role (engine/storage/quotas.py): how many containers a learner has and runs,
and the memory, process and CPU limits their config.json gets and may not pass."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import InvalidInputError, PolicyError
from engine.protocol import ADMIN, INSTRUCTOR, LEARNER, verbs
from engine.spec.service import SpecService
from engine.storage import quotas, usage
from engine.storage.containers import Containers
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, worker_started
from tests.engine.storagetools import containers, needs_overlay
from tests.engine.test_sandbox import as_user, create
from tests.imagetools import busybox_image
from tests.skips import requires

__all__ = ["containers"]

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


def test_usage_counts_files_once_and_never_follows_a_link(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "d" / "e").mkdir(parents=True)
    (top / "a").write_bytes(b"x" * 1000)
    (top / "d" / "e" / "b").write_bytes(b"y" * 24)
    os.link(top / "a", top / "d" / "hard")  # one inode, counted once
    big = tmp_path / "big"
    big.write_bytes(b"z" * 100_000)
    (top / "d" / "out").symlink_to(big)  # a link out is an entry, not its target's bytes
    (top / "d" / "outdir").symlink_to(tmp_path)
    got = usage.measure(top)
    assert (got.bytes, got.entries, got.complete) == (1024, 7, True)
    assert usage.measure(top, limit=3).complete is False
    assert usage.measure(tmp_path / "gone") == usage.NOTHING


def test_a_bad_disk_quota_in_the_file_is_an_error() -> None:
    from engine.config import EngineConfig

    config = EngineConfig(policy={"quotas": {"learner": {"disk": "2g"}}})
    got = quotas.quota_for(config, LEARNER)
    assert got is not None and got.disk == 2048 * MIB
    with pytest.raises(InvalidInputError, match="a size such as 256m"):
        quotas.quota_for(EngineConfig(policy={"quotas": {"learner": {"disk": "-1"}}}), LEARNER)


@needs_overlay
@pytest.mark.privileged
def test_a_learner_past_their_disk_quota_writes_creates_and_starts_nothing(
    engine: Engine, containers: Containers
) -> None:
    from engine.api.base import invoke

    busybox_image(engine)
    with_quotas(engine, disk="64k")
    ann, bob = as_user(engine, "ann"), as_user(engine, "bob")
    mine = create(ann, "mine")
    write = verbs.FsWrite(id=mine.id, path="/one", content="x" * 40_000, create=True)
    invoke(ann, verbs.FS_WRITE, write)
    too_much = verbs.FsWrite(id=mine.id, path="/two", content="y" * 40_000, create=True)
    refusal = r"hold 39\.1 KiB and this adds 39\.1 KiB: your disk quota is 64\.0 KiB"
    with pytest.raises(PolicyError, match=refusal) as err:
        invoke(ann, verbs.FS_WRITE, too_much)
    assert err.value.field == "disk"
    begin = verbs.UploadBegin(id=mine.id, path="/big", size=30_000)
    with pytest.raises(PolicyError, match="your disk quota is 64.0 KiB"):
        invoke(ann, verbs.FS_UPLOAD_BEGIN, begin)
    listing = invoke(ann, verbs.FS_LIST, verbs.FsList(id=mine.id, path="/"))
    assert {"two", "big"}.isdisjoint(e["name"] for e in listing["entries"])  # nothing written
    # the sandbox counts too: past the quota, nothing more is created or started
    (engine.config.sandbox_root / "ann").mkdir(parents=True)
    (engine.config.sandbox_root / "ann" / "fill").write_bytes(b"f" * 30_000)
    with pytest.raises(PolicyError, match="delete files or remove a container first"):
        create(ann, "another")
    with pytest.raises(PolicyError, match="your disk quota"):
        invoke(ann, verbs.CONTAINER_START, verbs.Id(id=mine.id))
    assert [r.name for r in containers.list()] == ["ann.mine"]  # nothing half created
    with pytest.raises(PolicyError, match="your disk quota"):
        invoke(ann, verbs.SANDBOX_TOUCH, verbs.SandboxPath(path="/mnt/on"))
    # another learner's disk is theirs
    create(bob, "theirs")
    seen = invoke(bob, verbs.SANDBOX_USAGE, verbs.SandboxUsage(names=["bob"]))
    assert seen == [{"name": "bob", "used": 0, "quota": 64 * 1024, "complete": True}]
    with pytest.raises(PolicyError, match="only their own"):
        invoke(bob, verbs.SANDBOX_USAGE, verbs.SandboxUsage(names=["ann"]))
    teacher = as_user(engine, "tess", INSTRUCTOR)
    [ann_use] = invoke(teacher, verbs.SANDBOX_USAGE, verbs.SandboxUsage(names=["ann"]))
    assert ann_use["used"] == 70_000 and ann_use["quota"] == 64 * 1024
    storage = invoke(ann, verbs.CONTAINER_STORAGE, verbs.Id(id=mine.id))
    assert storage["disk"]["used"] == 70_000 and storage["upper"]["size"] == 40_000
    # room again once a file is deleted
    invoke(ann, verbs.FS_DELETE, verbs.FsDelete(id=mine.id, path="/one"))
    create(ann, "another")


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (verbs.SandboxUsage(names=["../etc"]), "cannot name a sandbox"),
        (verbs.SandboxUsage(names=["ann"], role="root"), "learner, instructor or admin"),
    ],
)
def test_sandbox_usage_refuses_what_names_no_sandbox(
    engine: Engine, args: verbs.SandboxUsage, refusal: str
) -> None:
    from engine.api.base import invoke

    teacher = as_user(engine, "tess", INSTRUCTOR)
    with pytest.raises(PolicyError, match=refusal):
        invoke(teacher, verbs.SANDBOX_USAGE, args)
    assert not (engine.config.sandbox_root / "etc").exists()  # nothing made on the way
