"""Per-object file locks, so the CLI and the worker (and two requests in the worker) can share
one state root. flock(2) on <root>/locks/<kind>-<key>.lock; released when the holder exits,
even by SIGKILL, so a crash never leaves a stale lock."""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import EngineError, InvalidInputError

_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# flock locks belong to the open file description: two threads of one process that open the
# file separately do exclude each other, which is what we want.


class LockTimeoutError(EngineError):
    code = "invalid_state"


@contextmanager
def locked(
    root: Path, kind: str, key: str, *, shared: bool = False, timeout: float = 300.0
) -> Iterator[None]:
    """Hold the lock kind/key under root for the duration of the block."""
    if not _KEY_RE.match(kind) or not _KEY_RE.match(key):
        raise InvalidInputError(f"lock name {kind}/{key!r} is not valid")
    directory = root / "locks"
    directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(
        directory / f"{kind}-{key.replace(':', '_')}.lock",
        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
        0o600,
    )
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(
                        f"{kind} {key} is busy (locked by another operation)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)
