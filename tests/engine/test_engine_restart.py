"""The engine worker dies (SIGKILL) while containers run, and a new one takes over from files
alone: a running container stays Up, its log keeps growing, exec works, and its exit code is
right when it ends; a container that ended while no worker ran is found Exited with its code.

The worker runs as a real separate process (`manage.py engine`) against the test Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.core import Engine
from engine.errors import EngineError
from engine.network import netns
from engine.protocol import nodes
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.liveness import pid_is_conmon
from engine.runtime.runc import Runc
from engine.storage.containers import Containers
from tests.conftest import REPO, TEST_DEFAULT_NETWORK
from tests.engine.runtools import RUNTIME_REASON, Census, can_run_containers, create, no_leaks
from tests.imagetools import busybox_image
from tests.skips import requires
from webui import engine_client

pytestmark = [
    requires(can_run_containers(), RUNTIME_REASON),
    pytest.mark.privileged,
    pytest.mark.django_db(transaction=True),
]

TICKER = (
    "i=0; while [ ! -e /tmp/stop ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; echo bye; exit 42"
)


class WorkerProcess:
    """`python manage.py engine` on a given root and node, as its own process group."""

    def __init__(self, root: Path, node: str, home: Path) -> None:
        self.root, self.node, self.home = root, node, home
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        env.update(
            DJANGO_SETTINGS_MODULE="webui.settings",
            GANTRY_REDIS_URL=os.environ["GANTRY_REDIS_URL"],
            GANTRY_WEB_HOME=str(self.home),
            GANTRY_SECRET_KEY="test-only-" + "y" * 40,
            GANTRY_CONFIG=str(self.home / "no-engine.json"),
            GANTRY_NODE=self.node,
            GANTRY_ROOT=str(self.root),
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "engine", "--root", str(self.root)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.home / "worker.log", "ab"),  # noqa: SIM115 (the child keeps it)
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def call(node: str, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
    return await engine_client.call(op, args or {}, node=node, **kw)


async def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await check()
            if value:
                return value
        except EngineError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.fixture
async def worker_setup(
    engine: Engine, channel_layer: Any, tmp_path: Path
) -> AsyncIterator[tuple[Engine, WorkerProcess]]:
    engine.ensure_root()
    busybox_image(engine)
    home = tmp_path / "web"
    home.mkdir()
    worker = WorkerProcess(Path(engine.config.root), f"restart-{os.getpid()}", home)
    yield engine, worker
    worker.stop()
    client = redis.Redis.from_url(os.environ["GANTRY_REDIS_URL"])
    client.hdel(nodes.NODES_KEY, worker.node)  # the worker registered itself: forget it
    client.delete(nodes.lease_key(worker.node))
    client.close()
    for record in engine.get(Containers).list():
        engine.get(Lifecycle).containers.remove(record.id, force=True)


async def test_it_survives_a_worker_sigkill(worker_setup: tuple[Engine, WorkerProcess]) -> None:
    engine, worker = worker_setup
    node = worker.node
    before = Census.take(engine)
    create(engine, ["sh", "-c", TICKER], name="ticker")
    create(engine, ["sh", "-c", "sleep 1; exit 5"], name="brief")
    worker.start()
    await until(lambda: call(node, "node.info", timeout=1))

    started = await call(node, "container.start", {"id": "ticker"}, timeout=30)
    assert started["state"] == "running"
    await call(node, "container.start", {"id": "brief"}, timeout=30)
    first = await until(lambda: _log_has(node, "ticker", "tick 3"))
    worker.kill()  # SIGKILL: no clean-up of any kind

    record = engine.get(Containers).get("ticker")
    assert pid_is_conmon(record.conmon_pid, record.id)  # conmon lives on without the worker
    assert engine.get(Runc).state(record.id)["status"] == "running"  # type: ignore[index]
    brief_id = engine.get(Containers).get("brief").id
    exit_file = Path(engine.config.root) / "exits" / brief_id
    deadline = time.monotonic() + 10
    while not exit_file.exists():  # "brief" ends while no worker runs
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    worker.start()
    await until(lambda: call(node, "node.info", timeout=1))
    state = await call(node, "container.state", {"id": "ticker"})
    assert state["state"] == "running" and state["pid"] == started["pid"]
    assert state["runc"]["status"] == "running"
    gone = await call(node, "container.state", {"id": "brief"})
    assert gone["state"] == "exited" and gone["exit_code"] == 5
    assert gone["status"].startswith("Exited (5)")
    # The log kept growing while no worker ran, and still grows.
    later = await until(lambda: _log_grew(node, "ticker", len(first)))
    assert later.startswith(first)
    result = await call(node, "exec.run", {"id": "ticker", "command": ["echo", "still here"]})
    assert result == {"exit_code": 0, "stdout": "still here\n", "stderr": "", "truncated": False}

    merged = engine.get(Containers).paths(record.id).merged
    (merged / "tmp" / "stop").touch()  # the ticker exits 42; the new worker's watcher sees it
    done = await until(lambda: _exited(node, "ticker"))
    assert done["exit_code"] == 42 and done["pid"] == 0
    assert (await call(node, "container.logs", {"id": "ticker"}))["data"].endswith("bye\n")
    worker.stop()
    for name in ("ticker", "brief"):
        engine.get(Containers).remove(engine.get(Containers).get(name).id)
    no_leaks(engine, before, ignore=("fds",))  # the engine was another process
    assert engine.get(Lifecycle).reconcile() == []


async def _log_has(node: str, name: str, text: str) -> str:
    data: str = (await call(node, "container.logs", {"id": name}))["data"]
    return data if text in data else ""


async def _log_grew(node: str, name: str, size: int) -> str:
    data: str = (await call(node, "container.logs", {"id": name}))["data"]
    return data if len(data) > size + 20 else ""


async def _exited(node: str, name: str) -> dict[str, Any] | None:
    state: dict[str, Any] = await call(node, "container.state", {"id": name})
    return state if state["state"] == "exited" else None


async def test_networked_containers_keep_their_network_through_a_worker_sigkill(
    worker_setup: tuple[Engine, WorkerProcess],
) -> None:
    """netavark's work lives in the container's namespace and the host's bridge and rules,
    not in the worker: a SIGKILLed worker leaves the published port serving, and the next
    worker tears the network down when the container ends."""
    engine, worker = worker_setup
    node = worker.node
    (worker.home / "no-engine.json").write_text(json.dumps({"network": TEST_DEFAULT_NETWORK}))
    before = Census.take(engine)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    worker.start()
    await until(lambda: call(node, "node.info", timeout=1))
    httpd = "mkdir -p /www && echo still-here > /www/index.html && exec httpd -f -p 8080 -h /www"
    await call(node, "container.create", {
        "image": "busybox", "name": "web", "command": ["sh", "-c", httpd], "network": "bridge",
        "publish": [f"127.0.0.1:{port}:8080"],
    })  # fmt: skip
    await call(node, "container.start", {"id": "web"}, timeout=30)
    await until(lambda: _served(url))
    record = engine.get(Containers).get("web")
    worker.kill()

    assert await _served(url) == "still-here\n"  # no worker: the network is the kernel's
    assert netns.path_of(record.id).exists()
    worker.start()
    await until(lambda: call(node, "node.info", timeout=1))
    assert (await call(node, "container.state", {"id": "web"}))["state"] == "running"
    assert await _served(url) == "still-here\n"
    await call(node, "container.kill", {"id": "web"})
    await until(lambda: _exited(node, "web"))
    assert not netns.path_of(record.id).exists()  # the new worker tore it down
    assert await _served(url) is None
    worker.stop()
    engine.get(Containers).remove(record.id)
    no_leaks(engine, before, ignore=("fds",))
    assert not list((Path(engine.config.root) / "networks" / "ipam").rglob("10.*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _served(url: str) -> str | None:
    def get() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (127.0.0.1)
                return str(response.read().decode())
        except OSError:
            return None

    return await asyncio.to_thread(get)
