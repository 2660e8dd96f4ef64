"""The stack's engine in the node registry, as `./gantry nodes` shows it (issue 15): online with
its containers counted; SIGKILLed, offline within the 5 s rule while its container runs on
under conmon; restarted by its supervisor, online again under a new pid. A node without a
shared Redis, or with one open to anyone, is refused (the shared set-up itself is
tests/stack/test_several_hosts.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.protocol import nodes
from engine.storage.containers import Containers
from tests.engine.clitools import REPO
from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack, wait_until
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
