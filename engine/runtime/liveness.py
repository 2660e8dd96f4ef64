"""Is a container's record still what its processes say? The cheap questions, asked from /proc
and the state root alone: ``ps`` asks them before it builds the runtime stack (which only a
record that must change needs), and the lifecycle asks them before it syncs."""

from __future__ import annotations

import os
from pathlib import Path

from engine.runtime import history
from engine.storage.records import ACTIVE_STATES, ContainerRecord


def exit_dir(root: str | os.PathLike[str]) -> Path:
    """Where conmon writes each container's exit code (a file named by its id)."""
    return Path(root) / "exits"


def pid_is_conmon(pid: int | None, container_id: str) -> bool:
    """True when ``pid`` is a live (not zombie) conmon for this container: the guard against
    pid reuse before the engine signals or trusts a recorded pid."""
    if not pid or pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :][:1]
    if state in (b"Z", b"X"):
        return False
    return (
        bool(cmdline)
        and b"conmon" in os.path.basename(cmdline[0])
        and (container_id.encode() in cmdline)
    )


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def settled(root: str | os.PathLike[str], userdata: Path, record: ContainerRecord) -> bool:
    """True when a sync would leave ``record`` as it is: it is not running or paused, or its
    conmon is alive, has written no exit code, and its process has been noted."""
    if record.state not in ACTIVE_STATES:
        return True
    if (exit_dir(root) / record.id).exists():
        return False
    pid = record.conmon_pid or read_pid_file(userdata / "conmon.pid")
    return pid_is_conmon(pid, record.id) and not history.process_unseen(record)
