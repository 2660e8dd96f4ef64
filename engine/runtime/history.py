"""What a container did, kept in its record for whoever asks later (the lab's checks, read
from the engine whichever page was open, or none, and whether the web or the CLI acted):
the codes of its first exits, and the names of the main processes it was seen running.
A few entries each, in ``record.extra`` (older engines keep and ignore them)."""

from __future__ import annotations

from pathlib import Path

from engine.storage.records import ContainerRecord

KEPT = 20  # entries of each list


def note_exit(record: ContainerRecord, code: int) -> None:
    """An exit, in order (the first one is "the first start's")."""
    codes = record.extra.setdefault("exit_codes", [])
    if isinstance(codes, list) and len(codes) < KEPT:
        codes.append(code)


def process_unseen(record: ContainerRecord) -> str:
    """The name of the container's main process now if it is not noted yet (and can be),
    else ""."""
    if not record.pid:
        return ""
    try:
        name = Path(f"/proc/{record.pid}/comm").read_text().strip()
    except OSError:
        return ""
    seen = record.extra.get("processes_seen", [])
    if not name or not isinstance(seen, list) or name in seen or len(seen) >= KEPT:
        return ""
    return name


def note_process(record: ContainerRecord) -> bool:
    """The name of the container's main process now, if new. Answers whether it was."""
    name = process_unseen(record)
    if name:
        record.extra.setdefault("processes_seen", []).append(name)
    return bool(name)


def exit_codes(record: ContainerRecord) -> list[int]:
    codes = record.extra.get("exit_codes")
    return [c for c in codes if isinstance(c, int)] if isinstance(codes, list) else []


def processes_seen(record: ContainerRecord) -> list[str]:
    seen = record.extra.get("processes_seen")
    return [s for s in seen if isinstance(s, str)] if isinstance(seen, list) else []
