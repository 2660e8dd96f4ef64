"""Terminals through a real websocket against the running stack (uvicorn, Redis, the engine
worker, conmon, runc), as a browser uses them: type and read back, resize, a million lines
complete and in order, two viewers, a viewer that never reads, an engine restart, exec shells,
and the websocket abuse cases of security.md section E."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(restart_delay=3).start().with_busybox()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(stack: Stack) -> requests.Session:
    return stack.login()


def create(
    stack: Stack,
    session: requests.Session,
    name: str,
    command: str = "sh",
    tty: bool = True,
    start: bool = True,
    node: str = "",
) -> str:
    form = {"image": "localhost/busybox:latest", "name": name, "command": command}
    if tty:
        form["tty"] = "on"
    if node:
        form["node"] = node
    r = session.post(f"{stack.url}/containers/new", data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text[:2000]
    container_id = r.headers["Location"].strip("/").split("/")[-1]
    if start:
        r = session.post(f"{stack.url}/containers/{container_id}/run/start", timeout=30)
        assert r.status_code < 400, r.text[:500]
    return container_id


def open_ws(
    stack: Stack, session: requests.Session | None, path: str, origin: str | None = None
) -> ClientConnection:
    headers = {"Origin": origin or stack.url}
    if session is not None:
        headers["Cookie"] = f"sessionid={session.cookies['sessionid']}"
    return connect(
        f"ws://127.0.0.1:{stack.port}{path}",
        additional_headers=headers,
        legacy=True,
        max_size=None,
        open_timeout=10,
    )


class Pane:
    """A websocket terminal client: what a browser pane does, minus the drawing."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.out = bytearray()
        self.control: list[dict[str, Any]] = []

    def pump(self, timeout: float = 0.2) -> None:
        try:
            frame = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return
        if isinstance(frame, bytes):
            self.out += frame
        else:
            self.control.append(json.loads(frame))

    def wait_control(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.control:
                if message["type"] == kind:
                    self.control.remove(message)
                    return message
            assert time.monotonic() < deadline, f"no {kind} message; got {self.control}"
            self.pump(0.5)

    def wait_text(self, pattern: str | bytes, timeout: float = 15, since: int = 0) -> None:
        """Read until ``pattern`` arrives after byte ``since``. Each look searches only what
        came since the last one (a copy of the whole output per frame made the client, not
        the server, the bottleneck of a million lines: slow enough to be detached)."""
        needle = pattern.encode() if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        start = since
        while self.out.find(needle, start) < 0:
            assert time.monotonic() < deadline, f"{needle!r} not seen: {bytes(self.out[-300:])!r}"
            start = max(since, len(self.out) - len(needle) + 1)
            self.pump(0.5)

    def type(self, text: str) -> None:
        self.ws.send(text.encode())

    def resize(self, rows: int, cols: int) -> None:
        self.ws.send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))


def attach(stack: Stack, session: requests.Session, container_id: str) -> Pane:
    pane = Pane(open_ws(stack, session, f"/ws/containers/{container_id}/terminal/"))
    pane.wait_control("attached")
    return pane


def test_it_types_resizes_and_reads_back(stack: Stack, admin: requests.Session) -> None:
    cid = create(stack, admin, "tty-basic")
    pane = attach(stack, admin, cid)
    pane.resize(40, 132)
    pane.type("echo hi-$((6*7))\n")
    pane.wait_text("hi-42")
    pane.type("stty size\n")
    pane.wait_text("40 132")
    pane.ws.close()


def test_terminal_output_is_sent_uncompressed(stack: Stack, admin: requests.Session) -> None:
    """The client offers permessage-deflate, as browsers do; the server declines: deflating
    every byte of output cost 6% of a terminal's throughput and CPU in the one web process
    that serves a whole class, for bandwidth a LAN does not lack."""
    pane = attach(stack, admin, create(stack, admin, "tty-plain"))
    request, response = pane.ws.request, pane.ws.response
    assert request is not None and response is not None
    assert "permessage-deflate" in (request.headers.get("Sec-WebSocket-Extensions") or "")
    assert response.headers.get("Sec-WebSocket-Extensions") is None
    pane.ws.close()


def test_a_million_lines_arrive_complete_and_in_order(
    stack: Stack, admin: requests.Session
) -> None:
    cid = create(stack, admin, "tty-seq")
    pane = attach(stack, admin, cid)
    pane.type("stty -echo; seq 1 1000000; echo SEQ-EN''D\n")
    pane.wait_text("SEQ-END", timeout=240)
    text = bytes(pane.out).decode()
    numbers = re.findall(r"^(\d+)\r$", text, re.M)
    assert numbers == [str(i) for i in range(1, 1_000_001)]
    pane.ws.close()


def test_two_viewers_share_one_terminal(stack: Stack, admin: requests.Session) -> None:
    cid = create(stack, admin, "tty-two")
    one, two = attach(stack, admin, cid), attach(stack, admin, cid)
    one.type("echo from-one\n")
    two.wait_text("from-one")
    two.type("echo from-two\n")
    one.wait_text("from-two")
    one.ws.close()
    two.ws.close()


def test_a_viewer_that_never_reads_does_not_stop_the_other(
    stack: Stack, admin: requests.Session
) -> None:
    cid = create(stack, admin, "tty-stall")
    stalled = open_ws(stack, admin, f"/ws/containers/{cid}/terminal/")  # never read again
    reader = attach(stack, admin, cid)
    reader.type("stty -echo; seq 1 300000; echo STALL-EN''D\n")
    reader.wait_text("STALL-END", timeout=180)
    numbers = re.findall(r"^(\d+)\r$", bytes(reader.out).decode(), re.M)
    assert numbers == [str(i) for i in range(1, 300_001)]
    reader.type("echo still-alive\n")
    reader.wait_text("still-alive")
    stalled.close()
    reader.ws.close()


def test_an_exec_shell_sees_the_container_and_reports_its_exit(
    stack: Stack, admin: requests.Session
) -> None:
    cid = create(stack, admin, "exec-me", command="sh -c 'touch /test; sleep 600'", tty=False)
    r = admin.post(
        f"{stack.url}/containers/{cid}/terminal/exec",
        data={"command": ""},
        headers={"HX-Request": "true"},
        timeout=30,
    )
    assert r.status_code == 204, r.text
    exec_id = json.loads(r.headers["HX-Trigger"])["gantry:exec-created"]["exec"]
    pane = Pane(open_ws(stack, admin, f"/ws/containers/{cid}/exec/{exec_id}/"))
    pane.wait_control("attached")
    pane.type("ls /\n")
    pane.wait_text("test")
    pane.type("exit 3\n")
    assert pane.wait_control("exit")["code"] == 3
    missing = admin.post(
        f"{stack.url}/containers/{cid}/terminal/exec",
        data={"command": "/bin/zsh"},
        headers={"HX-Request": "true"},
        timeout=30,
    )
    assert missing.status_code == 200 and "error" in missing.text
    assert "zsh" in missing.text or "no such file" in missing.text.lower()


def test_the_pane_comes_back_after_an_engine_restart(stack: Stack, admin: requests.Session) -> None:
    cid = create(stack, admin, "tty-restart")
    pane = attach(stack, admin, cid)
    pane.type("echo before-$((1+1))\n")
    pane.wait_text("before-2")
    os.kill(stack.pid("engine"), signal.SIGKILL)
    pane.wait_control("attached", timeout=40)  # re-attached to the new worker
    mark = len(pane.out)
    pane.type("echo after-$((2+2))\n")
    pane.wait_text("after-4", since=mark)
    pane.ws.close()


# -- security.md section E -----------------------------------------------------------------
def closed_with(ws: ClientConnection, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None
        return closed.rcvd.code
    raise AssertionError("socket stayed open")


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
def test_a_foreign_origin_is_refused(stack: Stack, admin: requests.Session, origin: str) -> None:
    cid = create(stack, admin, f"tty-origin-{len(origin)}", start=False)
    with pytest.raises(InvalidStatus) as refused:
        open_ws(stack, admin, f"/ws/containers/{cid}/terminal/", origin=origin)
    assert refused.value.response.status_code == 403


def test_anonymous_and_other_users_are_closed(stack: Stack, admin: requests.Session) -> None:
    cid = create(stack, admin, "tty-private")
    assert closed_with(open_ws(stack, None, f"/ws/containers/{cid}/terminal/")) == 4401
    stack.add_user("mallory", "mallory-pass-123")
    mallory = stack.login("mallory", "mallory-pass-123")
    assert closed_with(open_ws(stack, mallory, f"/ws/containers/{cid}/terminal/")) == 4403
    assert closed_with(open_ws(stack, mallory, "/ws/containers/../../terminal/")) in (4403, 4404)


@pytest.mark.parametrize(
    "frame,code",
    [
        (b"x" * 100_000, 1009),
        (json.dumps({"type": "resize", "rows": 0, "cols": 0}), 4400),
        (json.dumps({"type": "resize", "rows": 24, "cols": 65535}), 4400),
        (json.dumps({"type": "subscribe", "group": "gantry.events"}), 4400),
        ("not json", 4400),
    ],
)
def test_abusive_frames_close_the_socket(
    stack: Stack, admin: requests.Session, frame: str | bytes, code: int
) -> None:
    cid = create(stack, admin, f"tty-abuse-{code}-{len(frame)}")
    pane = attach(stack, admin, cid)
    pane.ws.send(frame)
    assert closed_with(pane.ws) == code
    attach(stack, admin, cid).ws.close()  # the terminal still works for others


def test_a_flood_of_messages_is_cut_off(stack: Stack, admin: requests.Session) -> None:
    cid = create(stack, admin, "tty-flood", command="sh -c 'stty -echo; cat >/dev/null'")
    pane = attach(stack, admin, cid)
    try:
        for _ in range(3000):
            pane.ws.send(b"a")
    except ConnectionClosed:
        pass
    assert closed_with(pane.ws) == 4429
