"""The host's processes as tests look at them: live (not zombie) and conmon by command line."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int | None) -> bool:
    """A process that exists and is not a zombie."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def conmon_pids(naming: str) -> list[int]:
    """The live conmon processes whose command line contains ``naming`` (a container id, a
    state root)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        is_conmon = cmdline.startswith(b"conmon\0") or b"/conmon\0" in cmdline[:64]
        if is_conmon and naming.encode() in cmdline and alive(int(entry)):
            out.append(int(entry))
    return out
