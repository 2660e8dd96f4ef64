"""Issue 25's fault matrix against the whole stack as `./gantry run` starts it: Redis, the
engine worker and the web server, each SIGKILLed (by the pid it wrote) while a pull, a start,
an upload and a download are in flight. Each operation is held at a known point first (a
registry proxy that stops forwarding part of the way into a blob, a runc that waits at
`start`, an upload seen open in the engine, a download part read), so the kill lands inside
it every time, never by luck of timing.

In every case: the stack serves again within 10 s; the request in flight ends (an error that
says what happened, or the finished work), never hangs past its timeout; nothing half-done is
visible (no image, layer or file that was not finished); the operation works again afterwards;
no temporary upload stays open in the engine."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from engine.storage.containers import Containers
from tests.engine.ocibuild import Dir, File, Layout
from tests.engine.runtools import can_run_containers
from tests.registry import Registry, start_registry
from tests.skips import requires
from tests.stack.stackrun import Stack, wait_until
from tests.stack.test_faults import BACK_WITHIN, serving
from tests.stack.test_terminal_ws import create

pytestmark = [
    pytest.mark.stack,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
]
VICTIMS = ["redis", "engine", "web"]
BIG = 16 * 1024 * 1024  # incompressible, far more than socket buffers hold
REQUEST_TIMEOUT = 30.0  # the client's own limit: the stack must answer (or fail) before it

HOLDING_RUNC = """#!/bin/sh
# runc, except that `runc start` waits while GATE/hold exists, and then starts nothing if the
# engine that ran it is gone (as a killed engine would not have run it at all)
for arg in "$@"; do
    if [ "$arg" = start ] && [ -e GATE/hold ]; then
        : > GATE/held
        while [ -e GATE/hold ]; do sleep 0.05; done
        [ "$(cut -d' ' -f4 /proc/$$/stat)" = "$PPID" ] || exit 1
    fi
done
exec /usr/sbin/runc "$@"
"""


class HoldingProxy:
    """A TCP proxy to a registry that holds a connection once it has carried ``hold_after``
    bytes toward the client, until release(): the pull is then part of the way into a blob."""

    def __init__(self, upstream: str, hold_after: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.hold_after = hold_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.holding = threading.Event()
        self.released = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        carried = 0
        try:
            while data := src.recv(65536):
                carried += len(data)
                if down and carried > self.hold_after and not self.released.is_set():
                    self.holding.set()
                    self.released.wait(60)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.released.set()
        self.listener.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(restart_delay=1, extra_env={"GANTRY_RPC_TIMEOUT": "5"})
    gate = s.tmp / "gate"
    gate.mkdir()
    runc = s.tmp / "holding-runc"
    runc.write_text(HOLDING_RUNC.replace("GATE", str(gate)))
    runc.chmod(0o755)
    config = {"runtime": str(runc), "policy": {"files.upload_idle_seconds": 2}}
    (s.tmp / "engine.json").write_text(json.dumps(config))
    s.start().with_busybox()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("registry")
    reg = start_registry(work, work / "storage")
    yield reg
    reg.stop()


def kill_and_wait(
    stack: Stack, session: requests.Session, victim: str, paused: bool = False
) -> float:
    """SIGKILL the victim; wait until a new one serves. Returns the seconds it took. With
    ``paused``, the web server was SIGSTOPped to hold a request where it was: it goes on (if
    it is not the victim) once the victim is dead."""
    old = stack.pid(victim)
    os.kill(old, signal.SIGKILL)
    if paused and victim != "web":
        os.kill(stack.pid("web"), signal.SIGCONT)
    return wait_until(lambda: stack.pid(victim) != old and serving(stack, session), BACK_WITHIN)


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run a request in a thread; its result (or exception) lands in the list."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as err:  # the client's view of a failure is part of the test
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def ended(thread: threading.Thread, out: list[object]) -> object:
    thread.join(REQUEST_TIMEOUT + 5)
    assert not thread.is_alive(), "the request hung past its timeout"
    return out[0]


# -- a pull ----------------------------------------------------------------------------------
def push_big(registry: Registry, tmp: Path, name: str) -> str:
    layout = Layout(tmp / "oci")
    layout.image([[Dir("data"), File("data/big", os.urandom(BIG))]], tag="big", compression="tar")
    registry.push(layout.path, "big", f"test/{name}:1")
    return f"test/{name}:1"


def pull_state(stack: Stack, session: requests.Session, job: str) -> tuple[str, str]:
    page = session.get(f"{stack.url}/images/pulls", timeout=10).text
    card = re.search(rf'id="pull-{job}".*?</article>', page, re.S)
    if card is None:
        return "", ""
    state = re.search(r'data-state="(\w+)"', card.group(0))
    error = re.search(r'data-role="error"[^>]*>([^<]*)<', card.group(0))
    return (state.group(1) if state else ""), (error.group(1).strip() if error else "")


def image_listed(stack: Stack, session: requests.Session, name: str) -> bool:
    return name.split(":")[0] in session.get(f"{stack.url}/images/table", timeout=10).text


@pytest.mark.parametrize("victim", VICTIMS)
def test_a_pull_outlives_or_clearly_fails_a_killed_process(
    stack: Stack, registry: Registry, tmp_path: Path, victim: str
) -> None:
    session = stack.login()
    name = push_big(registry, tmp_path, f"pull-{victim}")
    proxy = HoldingProxy(registry.host, hold_after=2 * 1024 * 1024)
    try:
        form = {"ref": f"{proxy.host}/{name}", "skip_tls": "on"}
        r = session.post(f"{stack.url}/images/pull", data=form, timeout=REQUEST_TIMEOUT)
        r.raise_for_status()
        job = re.search(r'data-job="([0-9a-f]+)"', r.text)
        assert job, r.text[:500]
        assert proxy.holding.wait(30), "the pull never got into its blob"
        kill_and_wait(stack, session, victim)
    finally:
        proxy.close()  # the rest of the blob flows (to an engine that may be a new one)
    wait_until(lambda: pull_state(stack, session, job.group(1))[0] in ("done", "error"), 30)
    state, error = pull_state(stack, session, job.group(1))
    print(f"{victim}: pull {state} {error}")
    if victim == "engine":  # the pull died with it: said so, nothing of it kept
        assert state == "error" and "interrupted" in error
        assert not image_listed(stack, session, name)
    else:  # the engine kept pulling through a lost Redis or web server
        assert state == "done" and image_listed(stack, session, name)
    root = stack.tmp / "root"
    wait_until(lambda: list((root / "tmp").iterdir()) == [], 10)  # no half-written layer
    again = session.post(
        f"{stack.url}/images/pull", data={"ref": registry.ref(name), "skip_tls": "on"}, timeout=30
    )
    again_job = re.search(r'data-job="([0-9a-f]+)"', again.text)
    assert again_job, again.text[:500]
    wait_until(lambda: pull_state(stack, session, again_job.group(1))[0] == "done", 60)
    assert image_listed(stack, session, name)


# -- a start -----------------------------------------------------------------------------------
def runc_state(stack: Stack, cid: str) -> str:
    import subprocess

    done = subprocess.run(
        ["runc", "--root", str(stack.tmp / "root" / "runc"), "state", cid],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return str(json.loads(done.stdout)["status"]) if done.returncode == 0 else "none"


def start(stack: Stack, session: requests.Session, cid: str) -> requests.Response:
    return session.post(f"{stack.url}/containers/{cid}/run/start", timeout=REQUEST_TIMEOUT)


@pytest.mark.parametrize("victim", VICTIMS)
def test_a_start_ends_clearly_when_a_process_is_killed_inside_it(stack: Stack, victim: str) -> None:
    session = stack.login()
    cid = create(stack, session, f"start-{victim}", command="sleep 600", tty=False, start=False)
    gate = stack.tmp / "gate"
    (gate / "hold").touch()
    try:
        thread, out = in_thread(lambda: start(stack, session, cid))
        wait_until(lambda: (gate / "held").exists(), 30)  # runc create done, start held
        kill_and_wait(stack, session, victim)
    finally:
        (gate / "hold").unlink()
        (gate / "held").unlink(missing_ok=True)
    answer = ended(thread, out)
    print(f"{victim}: the start answered {getattr(answer, 'status_code', answer)!r}")
    containers = stack.engine().get(Containers)
    if victim == "engine":  # the start died with it: never shown running; a new start runs it
        assert containers.load(cid).state != "running"
        assert getattr(answer, "status_code", 0) >= 500 and "engine" in answer.text.lower()  # type: ignore[attr-defined]
        r = start(stack, session, cid)
        assert r.status_code < 400, r.text[:500]
    wait_until(lambda: containers.load(cid).state == "running", 15)
    assert runc_state(stack, cid) == "running"
    r = session.post(f"{stack.url}/containers/{cid}/run/kill", timeout=REQUEST_TIMEOUT)
    assert r.status_code < 400, r.text[:500]
    wait_until(lambda: containers.load(cid).state == "exited", 15)


# -- an upload ---------------------------------------------------------------------------------
def open_uploads(stack: Stack) -> list[str]:
    """The engine's temporary upload files (O_TMPFILE: open, with no name) under the root."""
    pid, root, found = stack.pid("engine"), str(stack.tmp / "root"), []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith(root) and link.endswith("(deleted)"):
                found.append(link)
    return found


def upload(stack: Stack, session: requests.Session, cid: str, name: str, data: bytes) -> object:
    return session.post(
        f"{stack.url}/containers/{cid}/files/upload",
        data={"dir": "/"},
        files={"files": (name, data)},
        allow_redirects=False,
        timeout=REQUEST_TIMEOUT,
    )


def merged(stack: Stack, cid: str) -> Path:
    return stack.tmp / "root" / "containers" / cid / "merged"


@pytest.mark.parametrize("victim", VICTIMS)
def test_an_upload_cut_by_a_killed_process_saves_nothing(stack: Stack, victim: str) -> None:
    session = stack.login()
    cid = create(stack, session, f"upload-{victim}", command="sleep 600", tty=False)
    data = os.urandom(4 * BIG)
    spooled = set(Path("/tmp").glob("*.upload*"))
    thread, out = in_thread(lambda: upload(stack, session, cid, "cut.bin", data))
    wait_until(lambda: open_uploads(stack) != [], 30, interval=0.002)
    os.kill(stack.pid("web"), signal.SIGSTOP)  # no more chunks: the upload is held half-way
    assert open_uploads(stack), "the upload finished before it could be held"
    kill_and_wait(stack, session, victim, paused=True)
    answer = ended(thread, out)
    print(f"{victim}: the upload answered {getattr(answer, 'text', answer)!r}"[:300])
    if victim != "web":
        assert getattr(answer, "status_code", 0) == 400
        assert re.search("engine offline|channel layer unreachable|engine restarted", answer.text)  # type: ignore[attr-defined]
    assert not (merged(stack, cid) / "cut.bin").exists()  # nothing half-written is visible
    wait_until(lambda: open_uploads(stack) == [], 10)  # an abandoned upload is reaped
    assert set(Path("/tmp").glob("*.upload*")) <= spooled  # nor the web's spooled copy
    again = upload(stack, session, cid, "whole.bin", data)
    assert getattr(again, "status_code", 0) == 302, getattr(again, "text", again)
    assert (merged(stack, cid) / "whole.bin").read_bytes() == data


# -- a download --------------------------------------------------------------------------------
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_download_cut_by_a_killed_process_ends_with_an_error(stack: Stack, victim: str) -> None:
    session = stack.login()
    size = 4 * BIG  # more than the bulk lane queues: the engine is still reading when killed
    make = f"head -c {size} /dev/urandom > /big.part && mv /big.part /big && exec sleep 600"
    cid = create(stack, session, f"download-{victim}", command=f"sh -c '{make}'", tty=False)
    big = merged(stack, cid) / "big"
    wait_until(big.exists, 30)
    url = f"{stack.url}/containers/{cid}/files/download?path=/big"
    got = bytearray()
    with session.get(url, stream=True, timeout=(5, REQUEST_TIMEOUT)) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == size
        got += r.raw.read(1024 * 1024)
        kill_and_wait(stack, session, victim)
        cut = time.monotonic()
        failed: Exception | None = None
        try:
            while chunk := r.raw.read(1024 * 1024):
                got += chunk
        except Exception as err:  # what the client sees of a cut download
            failed = err
        took = time.monotonic() - cut
    print(f"{victim}: {len(got)} of {size} bytes, then {failed!r} after {took:.1f} s")
    assert took < BACK_WITHIN, "the cut download hung"
    if len(got) < size:
        assert failed is not None, "a cut download looked complete"
    else:
        assert bytes(got) == big.read_bytes()
    with session.get(url, timeout=REQUEST_TIMEOUT) as r:
        assert r.status_code == 200 and r.content == big.read_bytes()
