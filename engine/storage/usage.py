"""How much disk a directory and a user take.

A user's disk (their quota's ``disk``, engine/storage/quotas.py) is what they wrote: the
upper dirs of their containers (what the explorer, uploads and their processes changed) and
their sandbox (engine/storage/sandbox.py). It is measured when it matters (a create, a
start, a write) by walking the directories with os.fwalk, which never follows a symlink and
holds one descriptor per level, so a container cannot steer the walk out of its upper dir.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class Usage:
    bytes: int  # of regular files, each inode once
    entries: int
    complete: bool  # False: the walk stopped at MAX_ENTRIES, bytes is a lower bound

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.bytes + other.bytes,
            self.entries + other.entries,
            self.complete and other.complete,
        )


NOTHING = Usage(0, 0, True)


def measure(path: Path, limit: int = MAX_ENTRIES) -> Usage:
    """The regular files below ``path``, never following a symlink; nothing if it is gone."""
    total, count, seen = 0, 0, set()
    try:
        for _, dirs, files, dir_fd in os.fwalk(path, follow_symlinks=False):
            count += len(dirs) + len(files)
            if count > limit:
                return Usage(total, count, False)
            for name in files:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    except FileNotFoundError:
        return NOTHING
    return Usage(total, count, True)


def measure_all(paths: Iterable[Path]) -> Usage:
    out = NOTHING
    for path in paths:
        out = out + measure(path)
    return out
