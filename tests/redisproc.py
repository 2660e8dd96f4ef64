"""A private redis-server for tests and benches: a unix socket only (no TCP port), no
persistence, started and waited for."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

OPTIONS = "--port 0 --unixsocketperm 700 --appendonly no --loglevel warning"


def start_redis(
    sock: Path, workdir: Path | str, *extra: str, timeout: float = 10
) -> subprocess.Popen[bytes]:
    """redis-server listening on ``sock`` (``extra``: more of its options); RuntimeError if
    it does not come up."""
    argv = ["redis-server", *shlex.split(OPTIONS), "--save", "", "--unixsocket", str(sock)]
    proc = subprocess.Popen(
        [*argv, "--dir", str(workdir), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"redis-server did not start on {sock}")
        time.sleep(0.02)
    return proc


def start_tcp_redis(
    sock: Path, workdir: Path | str, port: int, password: str
) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:``port`` with ``password`` (as a shared Redis is run), and
    on ``sock`` (what start_redis waits for)."""
    tcp = ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", password]
    return start_redis(sock, workdir, *tcp)
