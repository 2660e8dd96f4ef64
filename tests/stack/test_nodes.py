"""The stack's engine in the node registry, as `./gantry nodes` shows it (issue 15): online with
its containers counted; SIGKILLed, offline within the 5 s rule while its container runs on
under conmon; restarted by its supervisor, online again under a new pid. And a web stack and
a `./gantry node` joined to one Redis on TCP with a password: both nodes listed, a clean
stop shown at once, the password in no output."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.protocol import nodes
from engine.storage.containers import Containers
from tests.engine.clitools import REPO
from tests.engine.runtools import can_run_containers
from tests.redisproc import start_tcp_redis
from tests.skips import requires
from tests.stack.stackrun import Stack, free_port, wait_until
from tests.stack.test_terminal_ws import create

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
]
RESTART_DELAY = 10.0  # long enough to see the node offline before it is back


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(restart_delay=RESTART_DELAY).start().with_busybox()
    yield s
    s.stop()


def gantry_nodes(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "gantry"), "nodes", *args],
        env=stack.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def this_node(stack: Stack) -> dict[str, Any]:
    done = gantry_nodes(stack, "--format", "json")
    assert done.returncode == 0, done.stderr
    found = {n["Name"]: n for n in json.loads(done.stdout)}
    return found[stack.env["GANTRY_NODE"]]


def test_the_node_is_listed_and_shown_offline_within_5_s_of_its_engine_dying(
    stack: Stack,
) -> None:
    session = stack.login()
    cid = create(stack, session, "node-counted")
    wait_until(lambda: this_node(stack)["Running"] == 1, 10)
    node = this_node(stack)
    assert node["Status"] == nodes.ONLINE and node["Containers"] == 1
    assert node["Pid"] == stack.pid("engine") and node["LastSeen"].endswith("Z")
    table = gantry_nodes(stack).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "LAST", "SEEN", "CONTAINERS", "RUNNING", "HOST"]
    assert table[1].split()[:2] == [stack.env["GANTRY_NODE"], "online"]

    old = stack.pid("engine")
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: this_node(stack)["Status"] == nodes.OFFLINE, RESTART_DELAY - 2)
    offline_after = time.monotonic() - killed
    assert offline_after <= nodes.OFFLINE_AFTER + 1.5  # the rule, and one heartbeat's slack
    conmon = stack.engine().get(Containers).load(cid).conmon_pid
    assert conmon and os.path.exists(f"/proc/{conmon}")  # its container runs on

    wait_until(lambda: this_node(stack)["Status"] == nodes.ONLINE, RESTART_DELAY + 20)
    back = this_node(stack)
    assert back["Pid"] == stack.pid("engine") != old  # the same host's dead worker: taken over
    assert back["Running"] == 1
    print(f"offline {offline_after:.1f} s after the kill")


def test_an_online_node_cannot_be_forgotten_and_an_unknown_one_is_not_found(
    stack: Stack,
) -> None:
    online = gantry_nodes(stack, "rm", stack.env["GANTRY_NODE"])
    assert online.returncode != 0 and "is online: stop its engine first" in online.stderr
    unknown = gantry_nodes(stack, "rm", "no-such-node")
    assert unknown.returncode != 0 and "no such node" in unknown.stderr


def listed(stack: Stack) -> dict[str, dict[str, Any]]:
    done = gantry_nodes(stack, "--format", "json")
    assert done.returncode == 0, done.stderr
    return {n["Name"]: n for n in json.loads(done.stdout)}


def test_a_web_stack_and_a_node_share_one_redis_on_tcp(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    port = free_port()
    redis = start_tcp_redis(tmp_path / "redis.sock", tmp_path, port, password)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    web: Stack | None = None
    node: Stack | None = None
    try:
        web = Stack(extra_env={"GANTRY_REDIS_URL": url}).start()
        assert not (web.run_dir / "redis.pid").exists()  # it joined, started none
        node = Stack(command="node", extra_env={"GANTRY_REDIS_URL": url}).start()
        both = listed(web)
        for member in (web, node):
            assert both[member.env["GANTRY_NODE"]]["Status"] == nodes.ONLINE
            assert both[member.env["GANTRY_NODE"]]["Pid"] == member.pid("engine")
        assert not any(password in line for line in web.output + node.output)
        assert "redis://:***@127.0.0.1" in "".join(node.output)
        name = node.env["GANTRY_NODE"]
        node.stop()
        node = None
        assert listed(web)[name]["Status"] == nodes.OFFLINE  # a clean stop: at once
    finally:
        for left in (node, web):
            if left is not None:
                left.stop()
        redis.terminate()
        redis.wait(10)


def test_a_node_without_a_shared_redis_or_with_an_open_one_is_refused() -> None:
    cases = [("", "./gantry node joins the Redis"), ("redis://127.0.0.1:1/0", "no password")]
    for url, said in cases:
        stack = Stack(command="node", extra_env={"GANTRY_REDIS_URL": url} if url else {})
        try:
            with pytest.raises(RuntimeError, match="did not start"):
                stack.start(timeout=60)
            assert said in "".join(stack.output)
        finally:
            stack.stop()
