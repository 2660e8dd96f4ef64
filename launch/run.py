"""`./gantry run` after the set-up: the stack under supervisord, in the foreground.

    python -m launch.run CODE_DIR          (CODE_DIR: where the web user reads the web's code)
    python -m launch.run --node CODE_DIR   `./gantry node`: only the engine worker, joining the
                                           shared Redis at $GANTRY_REDIS_URL as $GANTRY_NODE

Programs, each restarted by supervisord when it ends, each logging into $GANTRY_RUN:

    redis     a private Redis on a unix socket only, as the web user    redis/redis.log
    registry  the demo registry, plain http on 127.0.0.1, as the web user    registry.log
    engine    the engine worker, as root; a restart waits GANTRY_ENGINE_RESTART_DELAY  engine.log
    web       uvicorn, as the web user    web.log

With $GANTRY_REDIS_URL naming another Redis than the private socket (redis://:PASSWORD@HOST,
rediss:// for TLS) no Redis is started: the stack joins that one. A Redis on TCP without a
password in the URL is refused.

Ctrl-C (SIGINT or SIGTERM to this process) stops them all and ends with 0; conmon, and so
every container, outlives them. One stack per run directory: a second launcher is refused
while the first one's lock is held (by this process and supervisord).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch import demo

REPO = Path(__file__).resolve().parent.parent


class Refused(Exception):
    """The stack cannot start: the message says why and what to do."""


def say(text: str) -> None:
    print(f"gantry: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Settings:
    run: Path
    venv: Path
    web_user: str
    web_home: Path
    bind: str
    port: int
    registry_port: int
    registry_dir: Path
    demo: bool
    restart_delay: float
    redis_url: str
    node_only: bool = False  # `./gantry node`: the engine worker alone

    @classmethod
    def from_env(cls, node_only: bool = False) -> Settings:
        env = os.environ
        run = Path(env["GANTRY_RUN"])
        return cls(
            node_only=node_only,
            redis_url=env.get("GANTRY_REDIS_URL") or f"unix://{run / 'redis' / 'redis.sock'}",
            run=run,
            venv=Path(env["GANTRY_VENV"]),
            web_user=env["GANTRY_WEB_USER"],
            web_home=Path(env["GANTRY_WEB_HOME"]),
            bind=env["GANTRY_BIND"],
            port=int(env["GANTRY_PORT"]),
            registry_port=int(env["GANTRY_REGISTRY_PORT"]),
            registry_dir=Path(env["GANTRY_REGISTRY_DIR"]),
            demo=env.get("GANTRY_DEMO", "1") != "0",
            restart_delay=float(env.get("GANTRY_ENGINE_RESTART_DELAY") or 2),
        )

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def redis_socket(self) -> Path:
        return self.run / "redis" / "redis.sock"

    @property
    def own_redis(self) -> bool:
        """Whether this stack runs its private Redis (else it joins $GANTRY_REDIS_URL's)."""
        return self.redis_url == f"unix://{self.redis_socket}"


def shown_url(url: str) -> str:
    """A Redis URL fit for a log: its password replaced by ***."""
    from engine.protocol.nodes import redacted

    return redacted(url)


def check_redis_url(s: Settings) -> None:
    """Refuse a shared Redis on TCP that takes no password, and a node with no shared Redis."""
    if s.node_only and s.own_redis:
        raise Refused(
            "./gantry node joins the Redis its web and other nodes share: set GANTRY_REDIS_URL "
            "(redis://:PASSWORD@HOST:6379/0, or rediss://... for TLS)"
        )
    if s.own_redis:
        return
    parts = urllib.parse.urlsplit(s.redis_url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise Refused(
            f"GANTRY_REDIS_URL {shown_url(s.redis_url)[:200]}: "
            "redis://, rediss:// (TLS) or unix:// only"
        )
    if parts.scheme in ("redis", "rediss") and not parts.password:
        raise Refused(
            f"GANTRY_REDIS_URL {shown_url(s.redis_url)[:200]} has no password: Gantry never uses "
            "a Redis on TCP that anyone who reaches its port may use "
            "(redis://:PASSWORD@HOST:6379/0, requirepass in redis.conf)"
        )


def redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


# -- before the programs -----------------------------------------------------------------------
def hold_run_lock(s: Settings) -> int:
    """The run lock, held by this process and (inherited) by supervisord."""
    fd = os.open(s.run / "run.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = (
            (s.run / "launcher.pid").read_text().strip()
            if (s.run / "launcher.pid").exists()
            else "?"
        )
        raise Refused(
            f"Gantry is already running (launcher pid {pid}); stop it first (Ctrl-C where it runs)"
        ) from None
    os.set_inheritable(fd, True)
    (s.run / "launcher.pid").write_text(f"{os.getpid()}\n")
    return fd


def in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def as_web(s: Settings, code: Path, *args: str) -> None:
    """manage.py ARGS as the web user, against the web's database."""
    subprocess.run(
        ["setpriv", f"--reuid={s.web_user}", f"--regid={s.web_user}", "--init-groups",
         "env", f"HOME={s.web_home}", s.python, str(code / "manage.py"), *args],
        check=True,
    )  # fmt: skip


def wants_registry(s: Settings) -> bool:
    if not s.demo or demo.check() != 0:
        return False
    if in_use("127.0.0.1", s.registry_port):
        say(
            f"port {s.registry_port} is already in use (Debian's docker-registry service? "
            "systemctl disable --now docker-registry, or set GANTRY_REGISTRY_PORT): "
            "starting without the demo registry"
        )
        return False
    return True


def registry_config(s: Settings) -> Path:
    """Debian's docker-registry: filesystem storage, delete enabled, no auth, plain http on
    loopback only; written at each start (its secret is new each time)."""
    s.registry_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.chown(s.registry_dir, s.web_user, s.web_user)
    conf = s.run / "registry.yml"
    conf.write_text(
        "# Written by ./gantry at each start: the demo registry.\n"
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {s.registry_dir}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{s.registry_port}\n  secret: {secrets.token_urlsafe(24)}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )
    os.chmod(conf, 0o640)
    shutil.chown(conf, "root", s.web_user)
    return conf


# -- the programs ------------------------------------------------------------------------------
def program(s: Settings, name: str, command: list[str], **how: str | float) -> list[str]:
    """launch/program.py wrapping ``command``: pid file, restart delay, the user to run as."""
    wrapper = [s.python, "-m", "launch.program", name]
    for key, value in how.items():
        wrapper += [f"--{key}", str(value)]
    return [*wrapper, "--", *command]


REDIS_FLAGS = "--port 0 --unixsocketperm 700 --appendonly no --loglevel warning"
UVICORN_FLAGS = (
    "--ws websockets-sansio --ws-max-size 1048576 --ws-per-message-deflate false "
    "--no-server-header --log-level warning "
    "--timeout-graceful-shutdown 3"
)


def programs(s: Settings, code: Path, registry: Path | None) -> dict[str, tuple[list[str], Path]]:
    """Each program: its command and its log."""
    redis_dir, web = s.run / "redis", s.web_user
    redis = ["redis-server", *shlex.split(REDIS_FLAGS), "--save", ""]
    redis += ["--unixsocket", str(s.redis_socket), "--dir", str(redis_dir)]
    engine = [s.python, str(REPO / "manage.py"), "engine"]
    uvicorn = [s.python, "-m", "uvicorn", "webui.asgi:application", *shlex.split(UVICORN_FLAGS)]
    uvicorn += ["--host", s.bind, "--port", str(s.port)]
    out = {
        "redis": (program(s, "redis", redis, user=web), redis_dir / "redis.log"),
        "engine": (
            program(s, "engine", engine, cwd=str(REPO), delay=s.restart_delay),
            s.run / "engine.log",
        ),
        "web": (
            program(s, "web", uvicorn, user=web, home=str(s.web_home), cwd=str(code)),
            s.run / "web.log",
        ),
    }
    if not s.own_redis:
        del out["redis"]
    if s.node_only:
        return {"engine": out["engine"]}
    if registry is not None:
        command = ["docker-registry", "serve", str(registry)]
        out["registry"] = (
            program(s, "registry", command, user=web, home=str(s.registry_dir)),
            s.run / "registry.log",
        )
    return out


def supervisord_conf(s: Settings, table: dict[str, tuple[list[str], Path]]) -> Path:
    """The supervisord configuration for these programs (written at each start)."""
    run = str(s.run).replace("%", "%%")
    password = secrets.token_hex(16)  # the socket is root's alone; this quiets supervisord
    lines = [
        "; Written by ./gantry run at each start.",
        "[supervisord]", "nodaemon=true", "silent=true", "user=root", "loglevel=warn",
        f"logfile={run}/supervisord.log", f"pidfile={run}/supervisord.pid", f"childlogdir={run}",
        "[unix_http_server]", f"file={run}/supervisor.sock", "chmod=0700",
        "username=gantry", f"password={password}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]", f"serverurl=unix://{run}/supervisor.sock",
        "username=gantry", f"password={password}",
    ]  # fmt: skip
    for priority, (name, (command, log)) in enumerate(table.items()):
        lines += [
            f"[program:{name}]",
            f"command={shlex.join(command).replace('%', '%%')}",
            f"priority={10 * (priority + 1)}",
            f"directory={str(REPO).replace('%', '%%')}",  # where launch.program is found
            "autostart=true", "autorestart=true", "startsecs=1", "startretries=1000",
            "stopsignal=TERM", "stopwaitsecs=10", "stopasgroup=true", "killasgroup=true",
            "redirect_stderr=true", f"stdout_logfile={str(log).replace('%', '%%')}",
            "stdout_logfile_maxbytes=16MB", "stdout_logfile_backups=2",
        ]  # fmt: skip
    conf = s.run / "supervisord.conf"
    conf.write_text("\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    return conf


def wait_for(
    what: str, ready: Callable[[], bool], seconds: float, stack: subprocess.Popen[Any]
) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if stack.poll() is not None:
            raise Refused(f"supervisord ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise Refused(f"{what} did not start")
        time.sleep(0.1)


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except OSError:
        return False


def prepare_web(s: Settings, code: Path) -> None:
    """The web's database up to date and its first admin; its port free."""
    as_web(s, code, "migrate_once", "--ensure-admin")  # one web at a time on a shared database
    if in_use(s.bind, s.port):
        raise Refused(
            f"port {s.port} on {s.bind} is already in use: stop what serves it, or set GANTRY_PORT"
        )


# -- the stack ---------------------------------------------------------------------------------
class Launcher:
    def __init__(self, settings: Settings, code: Path) -> None:
        self.s, self.code = settings, code
        self.stack: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.holds_lock = False

    def on_signal(self, signum: int, frame: Any) -> None:
        """Ctrl-C or SIGTERM: supervisord stops every program (and then ends)."""
        self.stopping = True
        if self.stack is not None and self.stack.poll() is None:
            self.stack.send_signal(signal.SIGTERM)

    def start(self, lock: int) -> list[str]:
        """supervisord and its programs; answers the demo images' references."""
        s = self.s
        registry = registry_config(s) if wants_registry(s) else None
        for stale in s.run.glob("*.started"):
            stale.unlink()
        s.redis_socket.unlink(missing_ok=True)
        (s.run / "engine.ready").unlink(missing_ok=True)
        os.environ["GANTRY_READY_FILE"] = str(s.run / "engine.ready")
        conf = supervisord_conf(s, programs(s, self.code, registry))
        self.stack = stack = subprocess.Popen(
            [str(s.venv / "bin" / "supervisord"), "-n", "-c", str(conf)],
            start_new_session=True,  # Ctrl-C reaches this launcher only, which stops them in order
            pass_fds=(lock,),
        )
        if s.own_redis:
            log = s.run / "redis" / "redis.log"
            wait_for(f"redis (see {log})", s.redis_socket.is_socket, 10, stack)
        else:
            shown = f"the Redis at {shown_url(s.redis_url)}"
            wait_for(shown, lambda: redis_answers(s.redis_url), 20, stack)
        refs = []
        if registry is not None:
            v2 = f"http://127.0.0.1:{s.registry_port}/v2/"
            wait_for(
                f"the demo registry (see {s.run}/registry.log)", lambda: answers(v2), 15, stack
            )
            refs = demo.push(f"127.0.0.1:{s.registry_port}")
        ready = s.run / "engine.ready"
        seen = f"the engine worker (see {s.run}/engine.log)"
        wait_for(seen, ready.exists, 60, stack)
        if s.node_only:
            return refs
        login = f"http://{s.bind}:{s.port}/login/"
        wait_for(f"the web server (see {s.run}/web.log)", lambda: answers(login), 30, stack)
        return refs

    def supervise(self) -> int:
        """Until Ctrl-C (0) or supervisord's own end (1)."""
        assert self.stack is not None
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stack.wait(1)
                break
        if self.stopping:
            return 0
        say(f"supervisord ended by itself (see {self.s.run}/supervisord.log)")
        return 1

    def clean(self) -> None:
        """Stop what this launcher started and forget its files (a refused second launcher
        started nothing and touches nothing of the running stack's)."""
        if not self.holds_lock:
            return
        if self.stack is not None and self.stack.poll() is None:
            self.stack.send_signal(signal.SIGTERM)
            try:
                self.stack.wait(30)
            except subprocess.TimeoutExpired:
                self.stack.kill()
        for name in ("redis", "engine", "web", "registry", "launcher", "supervisord"):
            (self.s.run / f"{name}.pid").unlink(missing_ok=True)
        (self.s.run / "engine.ready").unlink(missing_ok=True)
        self.s.redis_socket.unlink(missing_ok=True)


def banner(s: Settings, refs: list[str]) -> None:
    if s.node_only:
        node = os.environ.get("GANTRY_NODE") or "(the host name)"
        say(f"ready: node {node} joined {shown_url(s.redis_url)}  (Ctrl-C stops its engine)")
        say(f"logs: {s.run}/engine.log")
        return
    say(f"ready: http://{s.bind}:{s.port}/  (log in as admin; Ctrl-C stops everything)")
    say(f"logs: {s.run}/engine.log (and web.log, supervisord.log beside it)")
    if refs:
        say("demo images (plain http on loopback: pull with --tls-verify=false):")
    for ref in refs:
        lab = "/gantry/on-off:" in ref
        say(
            f"  {ref}   the lab: runs top while /mnt/on exists, else exits 0" if lab else f"  {ref}"
        )


def main(argv: list[str]) -> int:
    node_only = argv[0] == "--node"
    launcher = Launcher(Settings.from_env(node_only), Path(argv[-1]))
    s = launcher.s
    signal.signal(signal.SIGINT, launcher.on_signal)
    signal.signal(signal.SIGTERM, launcher.on_signal)
    try:
        check_redis_url(s)
        lock = hold_run_lock(s)
        launcher.holds_lock = True
        if not s.node_only:
            prepare_web(s, launcher.code)
        refs = launcher.start(lock)
        if not launcher.stopping:
            banner(s, refs)
            return launcher.supervise()
        return 0
    except Refused as err:
        if launcher.stopping:
            return 0
        say(str(err))
        return 1
    finally:
        launcher.clean()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
