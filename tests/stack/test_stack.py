"""The foundation as a user meets it: ./gantry run brings the real processes up; log in over
HTTP; the engine shows online; kill the engine worker and the page says "engine offline" within
5 seconds; it comes back; the web runs unprivileged; Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from engine.storage.containers import Containers
from tests.imagetools import busybox_image
from tests.skips import requires
from tests.stack.stackrun import REPO, Stack, wait_until

pytestmark = [
    pytest.mark.stack,
    requires(os.geteuid() == 0, "the stack's engine worker must run as root"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(restart_delay=6).start()
    yield s
    s.stop()


def status(session: object, stack: Stack) -> str:
    r = session.get(f"{stack.url}/engine/status", timeout=10)  # type: ignore[attr-defined]
    assert r.status_code == 200
    return str(r.text)


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_first_start_prints_a_one_time_admin_password(stack: Stack) -> None:
    assert len(stack.password) >= 16
    assert "admin" in "".join(stack.output)


def test_the_web_runs_unprivileged_and_the_engine_as_root(stack: Stack) -> None:
    assert uid_of(stack.pid("web")) != 0
    assert uid_of(stack.pid("redis")) != 0
    assert uid_of(stack.pid("engine")) == 0


def test_anonymous_gets_the_login_page(stack: Stack) -> None:
    import requests

    r = requests.get(f"{stack.url}/containers/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login/")


def test_engine_offline_and_back(stack: Stack) -> None:
    s = stack.login()
    wait_until(lambda: "engine online" in status(s, stack), 20)
    ws = connect(
        f"ws://127.0.0.1:{stack.port}/ws/events/",
        legacy=True,
        additional_headers={"Origin": stack.url, "Cookie": f"sessionid={s.cookies['sessionid']}"},
    )
    beat = json.loads(ws.recv(timeout=5))
    assert beat["type"] == "heartbeat" and beat["info"]["runc"]

    os.kill(stack.pid("engine"), signal.SIGKILL)
    killed = time.monotonic()
    took = wait_until(lambda: "engine offline" in status(s, stack), 5)
    assert took < 5
    # The browser's rule: no heartbeat for 3.5 s means offline. Check the beats really stop.
    with pytest.raises(TimeoutError):
        while True:
            ws.recv(timeout=max(0.1, 4.5 - (time.monotonic() - killed)))
    # The launcher starts the worker again (after GANTRY_ENGINE_RESTART_DELAY).
    wait_until(lambda: "engine online" in status(s, stack), 30)
    beat = json.loads(ws.recv(timeout=5))
    assert beat["type"] == "heartbeat"
    ws.close()


def test_a_second_run_is_refused_and_the_first_keeps_working(stack: Stack) -> None:
    """Two launchers on one host would share the run dir: the second took over redis's
    socket and the pid files, and said "ready" for the first one's web server."""
    second = subprocess.run(
        [str(REPO / "gantry"), "run"],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode != 0
    assert "already running" in second.stderr and "ready: http" not in second.stderr
    assert (stack.run_dir / "redis" / "redis.sock").is_socket()
    assert "engine online" in status(stack.login(), stack)


def test_a_busy_port_is_said_at_once(stack: Stack) -> None:
    other = Stack()  # another run dir, the same port as the running stack
    other.env["GANTRY_PORT"] = str(stack.port)
    try:
        out = subprocess.run(
            [str(REPO / "gantry"), "run"],
            cwd=REPO,
            env=other.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(other.tmp, ignore_errors=True)
    assert out.returncode != 0
    assert f"port {stack.port}" in out.stderr and "already in use" in out.stderr
    assert "ready: http" not in out.stderr


def test_ctrl_c_stops_everything_but_the_containers(stack: Stack) -> None:
    """supervisord stops every program; conmon (and so the container) lives on."""
    engine = stack.engine()
    engine.ensure_root()
    busybox_image(engine)
    session = stack.login()
    form = {"image": "localhost/busybox:latest", "name": "outlives", "command": "sleep 600"}
    r = session.post(f"{stack.url}/containers/new", data=form, allow_redirects=False, timeout=30)
    container_id = r.headers["Location"].strip("/").split("/")[-1]
    session.post(f"{stack.url}/containers/{container_id}/run/start", timeout=30)
    conmon = engine.get(Containers).load(container_id).conmon_pid
    assert conmon and Path(f"/proc/{conmon}").exists()
    pids = [stack.pid(n) for n in ("web", "engine", "redis")]
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(30) == 0

    def alive() -> list[int]:
        out = []
        for p in pids:
            with contextlib.suppress(OSError):
                if "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]:
                    out.append(p)
        return out

    wait_until(lambda: alive() == [], 5)  # supervisord reaped them before it ended
    assert Path(f"/proc/{conmon}").exists()  # Stack.stop sweeps it (and the container) away
