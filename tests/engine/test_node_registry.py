"""The node registry against the real Redis: one live worker per node name, records every
client reads with a status judged by Redis's clock, a clean stop shown at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import EngineError
from engine.protocol import nodes
from engine.rpc.presence import NodeNameTakenError, Presence, hold_root
from tests.engine.clitools import REPO


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(settings.REDIS_URL)
    c.delete(nodes.NODES_KEY, *c.keys(nodes.LEASE_PREFIX + "*"))
    yield c
    c.delete(nodes.NODES_KEY, *c.keys(nodes.LEASE_PREFIX + "*"))
    c.close()


def presence(engine: Engine, client: redis.Redis, host: str, pid: int) -> Presence:
    """A worker's presence as if it ran on ``host`` as ``pid``."""
    p = Presence(engine, client)
    p.host = host
    p.owner = nodes.owner_token(host, pid, engine.started)
    return p


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def by_name(client: redis.Redis) -> dict[str, dict[str, Any]]:
    return {r["Name"]: r for r in nodes.nodes(client)}


def test_a_worker_is_listed_online_with_its_counts(engine: Engine, client: redis.Redis) -> None:
    engine.ensure_root()
    p = Presence(engine, client)
    p.claim()
    record = by_name(client)[engine.config.node]
    assert record["Status"] == nodes.ONLINE
    assert record["Pid"] == os.getpid() and record["Containers"] == 0 and record["Running"] == 0
    assert record["Versions"]["engine"] and record["Host"]
    assert record["Load"] >= 0 and record["MemFree"] > 0 and record["DiskFree"] > 0
    p.release()
    assert by_name(client)[engine.config.node]["Status"] == nodes.OFFLINE  # at once


def test_a_second_worker_under_a_live_name_is_refused_naming_the_first(
    engine: Engine, client: redis.Redis
) -> None:
    engine.ensure_root()
    presence(engine, client, "host-a", 4242).claim()
    with pytest.raises(NodeNameTakenError, match="host host-a, pid 4242"):
        presence(engine, client, "host-b", 777).claim()
    assert by_name(client)[engine.config.node]["Host"] == "host-a"


def test_a_lease_left_by_a_dead_worker_of_this_host_is_taken_over(
    engine: Engine, client: redis.Redis
) -> None:
    engine.ensure_root()
    mine = Presence(engine, client)
    presence(engine, client, mine.host, dead_pid()).claim()  # killed; its lease still runs
    mine.claim()
    assert by_name(client)[engine.config.node]["Pid"] == os.getpid()


def test_a_live_worker_of_this_host_is_not_taken_over(engine: Engine, client: redis.Redis) -> None:
    engine.ensure_root()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        mine = Presence(engine, client)
        presence(engine, client, mine.host, sleeper.pid).claim()
        with pytest.raises(NodeNameTakenError, match=f"pid {sleeper.pid}"):
            mine.claim()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_node_whose_heartbeats_stop_shows_offline(
    engine: Engine, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes, "OFFLINE_AFTER", 0.3)
    engine.ensure_root()
    Presence(engine, client).claim()
    assert by_name(client)[engine.config.node]["Status"] == nodes.ONLINE
    deadline = time.monotonic() + 5
    while by_name(client)[engine.config.node]["Status"] == nodes.ONLINE:
        assert time.monotonic() < deadline, "still online without heartbeats"
        time.sleep(0.05)


def test_only_an_offline_node_can_be_forgotten(engine: Engine, client: redis.Redis) -> None:
    engine.ensure_root()
    p = Presence(engine, client)
    p.claim()
    with pytest.raises(ValueError, match="is online"):
        nodes.forget(client, engine.config.node)
    p.release()
    assert nodes.forget(client, engine.config.node)
    assert engine.config.node not in by_name(client)
    assert not nodes.forget(client, "no-such-node")


def test_a_record_that_is_not_ours_is_skipped(client: redis.Redis) -> None:
    client.hset(nodes.NODES_KEY, "junk", b"\xff not json")
    client.hset(nodes.NODES_KEY, "list", b"[1, 2]")
    assert nodes.nodes(client) == []


def test_the_worker_refuses_a_name_another_live_worker_holds(
    engine: Engine, client: redis.Redis, tmp_path: Path
) -> None:
    """`manage.py engine --node N` while N's lease is held on another host: it stops at once,
    naming that host and pid, and sweeps no container."""
    engine.ensure_root()
    presence(engine, client, "lab-host-2", 31337).claim()
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "GANTRY_REDIS_URL": settings.REDIS_URL,
        "GANTRY_WEB_HOME": str(tmp_path / "web"),
        "GANTRY_SECRET_KEY": "test-only-" + "x" * 40,
        "GANTRY_CONFIG": str(tmp_path / "none.json"),
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "engine", "--root", str(tmp_path / "root2"),
         "--node", engine.config.node],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"node {engine.config.node} is already online" in done.stderr
    assert "host lab-host-2, pid 31337" in done.stderr
    assert by_name(client)[engine.config.node]["Host"] == "lab-host-2"


def test_a_state_root_has_one_worker_whatever_its_node_name(engine: Engine) -> None:
    engine.ensure_root()
    held = hold_root(engine)
    other = Engine(EngineConfig(root=engine.config.root, node="another-node"))
    with pytest.raises(EngineError, match=f"in use by the engine of node {engine.config.node} "
                       rf"\(pid {os.getpid()}\): each node needs a root of its own"):  # fmt: skip
        hold_root(other)
    os.close(held)  # (a worker that dies lets go the same way)
    os.close(hold_root(other))


def test_the_cli_says_which_registry_it_cannot_reach_without_its_password(
    tmp_path: Path,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "GANTRY_REDIS_URL": "redis://:s3cret@127.0.0.1:1/0",
           "GANTRY_ROOT": str(tmp_path), "GANTRY_CONFIG": str(tmp_path / "none.json")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "engine", "nodes"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 125
    assert "cannot reach the node registry at redis://:***@127.0.0.1:1/0" in done.stderr
    assert "s3cret" not in done.stderr
