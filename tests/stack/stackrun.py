"""Start the whole stack exactly the way `./gantry run` does (the same script), in private
directories and on a free port, and stop it with Ctrl-C (SIGINT) as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from engine.config import first_file
from tests.procs import conmon_pids

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(
        self,
        restart_delay: float = 2.0,
        extra_env: dict[str, str] | None = None,
        command: str = "run",
    ) -> None:
        self.command = command  # "node": `./gantry node`, an engine worker alone
        # Not under pytest's tmp_path: the unprivileged web user must reach these directories.
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-stack-"))
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = self.tmp / "run"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GANTRY_", "DJANGO_"))}
        self.env.update(
            {
                "GANTRY_ROOT": str(self.tmp / "root"),
                "GANTRY_WEB_HOME": str(self.tmp / "web"),
                "GANTRY_RUN": str(self.run_dir),
                "GANTRY_CONFIG": str(self.tmp / "engine.json"),
                "GANTRY_PORT": str(self.port),
                "GANTRY_SKIP_SETUP": "1",
                "GANTRY_NODE": f"stack-{self.port}",
                "GANTRY_ENGINE_RESTART_DELAY": str(restart_delay),
                "GANTRY_DEMO": "0",
                "GANTRY_SANDBOX_ROOT": str(self.tmp / "sandbox"),  # never the host's
            }
            | (extra_env or {})
        )
        self.output: list[str] = []
        self.password = ""
        self.proc: subprocess.Popen[str] | None = None

    def own_network(self) -> None:
        """Each stack's default network is its own (10.91.N.0/24 on bridge gsN): stacks that
        run at once on this machine, each with its own state root, never share addresses.
        engine.json is written as `config init` would, unless the test wrote its own."""
        path = self.tmp / "engine.json"
        port = int(self.env.get("GANTRY_REGISTRY_PORT") or 5000)  # as ./gantry passes it
        config = json.loads(path.read_text()) if path.exists() else first_file(port)
        n = self.port % 200 + 20
        config.setdefault("network", {"subnet": f"10.91.{n}.0/24", "bridge": f"gs{n}"})
        path.write_text(json.dumps(config))

    def start(self, timeout: float = 120) -> Stack:
        self.own_network()
        self.proc = subprocess.Popen(
            [str(REPO / "gantry"), self.command],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                found = re.search(r"one-time password: (\S+)", line)
                if found:
                    self.password = found.group(1)
                if "ready: http" in line or "ready: node" in line:
                    ready.set()
            ready.set()  # the launcher ended: stop waiting

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("stack did not start:\n" + "".join(self.output[-40:]))
        return self

    def pid(self, name: str) -> int:
        return int((self.run_dir / f"{name}.pid").read_text())

    def login(self, user: str = "admin", password: str | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.get(f"{self.url}/login/", timeout=10)
        r = s.post(
            f"{self.url}/login/",
            data={
                "username": user,
                "password": password or self.password,
                "csrfmiddlewaretoken": s.cookies["csrftoken"],
            },
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 302, r.text[:500]
        s.headers["X-CSRFToken"] = s.cookies["csrftoken"]
        s.headers["Referer"] = self.url + "/"
        return s

    def manage(self, *args: str) -> str:
        """Run manage.py as the web user against this stack's database; return stdout."""
        env = self.env | {"DJANGO_SETTINGS_MODULE": "webui.settings", "HOME": "/nonexistent"}
        user = env.get("GANTRY_WEB_USER", "gantry")
        out = subprocess.run(
            [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--init-groups",
                "/opt/gantry/venv/bin/python",
                str(REPO / "manage.py"),
                *args,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return out.stdout

    def add_user(self, name: str, password: str) -> None:
        self.manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({name!r}, password={password!r})",
        )

    def with_busybox(self) -> Stack:
        """Put localhost/busybox:latest in this stack's image store (tests make containers)."""
        from tests.imagetools import busybox_image

        engine = self.engine()
        engine.ensure_root()
        busybox_image(engine)
        return self

    def engine(self) -> Any:
        """An in-process Engine on this stack's state root (to seed images, inspect state)."""
        from engine.config import EngineConfig
        from engine.core import Engine

        return Engine(EngineConfig(root=self.tmp / "root", node=self.env["GANTRY_NODE"]))

    def stop(self) -> int | None:
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                code = self.proc.wait(10)
        for name in ("engine", "web", "redis", "registry"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.pid(name), signal.SIGKILL)
        sweep_root(self.tmp / "root")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return code


def sweep_root(root: Path) -> None:
    """Leave nothing of a test's state root on the host: containers still running (runc
    delete --force), their conmons, and mounts under it (a test that failed half-way)."""
    runc_root = root / "runc"
    if runc_root.is_dir():
        for state in runc_root.iterdir():
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "--force", state.name],
                capture_output=True,
                check=False,
                timeout=30,
            )
    for pid in conmon_pids(str(root)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    sweep_networks(root)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False, timeout=30)


def sweep_networks(root: Path) -> None:
    """The networks of containers a stopped stack left running: netavark's teardown with
    each one's own setup document, and its namespace (as the engine does at their end)."""
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.network import attach
    from engine.network.store import Networks

    containers = root / "containers"
    if not containers.is_dir():
        return
    networks = Engine(EngineConfig(root=root)).get(Networks)
    for directory in containers.iterdir():
        with contextlib.suppress(Exception):
            attach.disconnect(networks, directory.name, directory / "userdata")


def wait_until(predicate: object, timeout: float, interval: float = 0.1) -> float:
    """Wait until predicate() is true; return the seconds it took. Raises on timeout."""
    started = time.monotonic()
    while True:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
