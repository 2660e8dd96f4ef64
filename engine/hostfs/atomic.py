"""Atomic writes: temp file in the same directory, fsync, rename, fsync the directory.
A crash at any point leaves either the old or the new content, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    import tempfile  # with random: only when a file is written

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(target.parent)


def write_json(path: str | os.PathLike[str], data: Any, mode: int = 0o600) -> None:
    write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", mode)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, "rb") as f:
        return json.load(f)
