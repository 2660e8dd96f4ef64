"""Nothing goes down with one process (issue 25). Each process of the stack is killed in turn
(SIGKILL, by the pid it wrote) while a container runs with a terminal open on it; each time
the stack serves again within 10 s, the container is still up under conmon, and the terminal
is back, as a browser's pane comes back (the same socket re-attached, or a new one that gets
the scrollback), with what it showed before intact and new input answered."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from engine.storage.containers import Containers
from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack, wait_until
from tests.stack.test_terminal_ws import Pane, attach, create

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
]
BACK_WITHIN = 10.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(restart_delay=1).start().with_busybox()
    yield s
    s.stop()


def serving(stack: Stack, session: requests.Session) -> bool:
    try:
        r = session.get(f"{stack.url}/engine/status", timeout=2)
    except requests.RequestException:
        return False
    return r.status_code == 200 and "engine online" in r.text


def answered(pane: Pane, word: str, timeout: float = 3.0) -> bool:
    """Type an echo and see its answer; False if the socket is gone or nothing comes back."""
    mark = len(pane.out)
    try:
        pane.type(f"echo {word}-$((6*7))\n")
        pane.wait_text(f"{word}-42", timeout=timeout, since=mark)
    except (ConnectionClosed, AssertionError, OSError):
        return False
    return True


def pane_back(stack: Stack, session: requests.Session, cid: str, pane: Pane) -> Pane:
    """The pane as the browser keeps it: the old socket if it answers again, else a new one."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if answered(pane, "again"):
            return pane
        try:
            pane = attach(stack, session, cid)
        except (ConnectionClosed, AssertionError, OSError):
            time.sleep(0.5)  # the web server is still starting: the browser retries too
    raise AssertionError("the terminal did not come back")


@pytest.mark.parametrize("victim", ["redis", "engine", "web"])
def test_a_killed_process_comes_back_and_nothing_is_lost(stack: Stack, victim: str) -> None:
    session = stack.login()
    cid = create(stack, session, f"fault-{victim}")
    pane = attach(stack, session, cid)
    pane.type(f"echo before-{victim}-$((6*7))\n")
    pane.wait_text(f"before-{victim}-42")
    conmon = stack.engine().get(Containers).load(cid).conmon_pid

    old = stack.pid(victim)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: stack.pid(victim) != old and serving(stack, session), BACK_WITHIN)
    back_in = time.monotonic() - killed

    pane = pane_back(stack, session, cid, pane)
    assert f"before-{victim}-42" in bytes(pane.out).decode(errors="replace")  # intact
    record = stack.engine().get(Containers).load(cid)
    assert record.state == "running" and record.conmon_pid == conmon
    assert conmon is not None and os.path.exists(f"/proc/{conmon}")
    print(f"{victim}: serving again {back_in:.1f} s after the kill")
    pane.ws.close()
