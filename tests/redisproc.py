"""A private redis-server for tests and benches: a unix socket only (no TCP port), no
persistence, started and waited for."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def start_redis(sock: Path, workdir: Path | str, timeout: float = 10) -> subprocess.Popen[bytes]:
    """redis-server listening on ``sock``; RuntimeError if it does not come up."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--loglevel",
            "warning",
        ],  # fmt: skip
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
