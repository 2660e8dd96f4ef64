"""A private sandbox per learner: their host-side paths live under ``<sandbox_root>/<name>/``
(root-owned, engine.json ``sandbox_root``). A learner's ``-v /mnt:/mnt`` binds
``<sandbox_root>/<name>/mnt``, created on demand, so two learners doing the lab at once never
share a ``/mnt``. Admins keep real host paths inside the volume allowlist.

What a learner may type as a source: an absolute path of plain names (letters, digits, '.',
'_', '-'; no '.' or '..'), at most MAX_DEPTH deep. Directories are made one at a time,
beneath the sandbox, never through a symlink (openat2 RESOLVE_BENEATH|NO_SYMLINKS); the
mapped source is then checked as any bind source, against the learner's sandbox only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.errors import InvalidInputError, PolicyError
from engine.hostfs import securepath
from engine.protocol import USER_NAME_RE
from engine.storage.records import CreateOptions
from engine.storage.volumes import Volume, check_volumes

MAX_DEPTH = 8
_PART_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_NO_LINKS = securepath.RESOLVE_BENEATH | securepath.RESOLVE_NO_SYMLINKS


def sandbox_of(config: EngineConfig, name: str | None) -> Path:
    """The sandbox directory of user ``name`` (not created here)."""
    if not name or not USER_NAME_RE.match(name):
        raise PolicyError(
            f"user name {str(name)[:40]!r} cannot name a sandbox (a-z, 0-9, '_', '-')",
            rule="sandbox",
            field="volumes",
        )
    return Path(config.sandbox_root) / name


def sandbox_path(unsafe_source: str) -> list[str]:
    """The parts of a source a learner typed, or PolicyError saying why it is refused."""
    parts = unsafe_source.split("/")
    if not unsafe_source.startswith("/") or len(parts) - 1 > MAX_DEPTH:
        raise PolicyError(
            f"volume source {unsafe_source[:200]!r}: an absolute path such as /mnt "
            f"(at most {MAX_DEPTH} levels), which means a directory of your sandbox",
            rule="sandbox",
            field="volumes",
        )
    out = [p for p in parts[1:] if p != ""]
    for part in out:
        if part in (".", "..") or not _PART_RE.match(part):
            raise PolicyError(
                f"volume source {unsafe_source[:200]!r}: {part[:60]!r} is not a plain name "
                "(letters, digits, '.', '_', '-'; no '..')",
                rule="sandbox",
                field="volumes",
            )
    if not out:
        raise PolicyError("volume source /: name a directory, such as /mnt", field="volumes")
    return out


def make_dirs(top: Path, parts: list[str]) -> Path:
    """``top/parts...`` as directories (made as needed, mode 0755), never through a symlink."""
    os.makedirs(top, mode=0o755, exist_ok=True)
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                nxt = securepath.openat2(fd, part, os.O_PATH | os.O_DIRECTORY, resolve=_NO_LINKS)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                    raise PolicyError(
                        f"volume source: {part} in your sandbox is not a directory of it",
                        rule="sandbox",
                        field="volumes",
                    ) from err
                raise InvalidInputError(f"volume source {part}: {err.strerror}") from err
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return top.joinpath(*parts)


def bind_roots(config: EngineConfig, options: CreateOptions) -> tuple[Path, ...]:
    """Where a container's bind sources may lie: its owner's sandbox for a learner's
    container (whoever edits its config.json later), else the admin's allowlist."""
    if options.sandbox:
        return (sandbox_of(config, options.sandbox),)
    return tuple(config.volume_allowlist)


def sandboxed(config: EngineConfig, name: str | None) -> EngineConfig:
    """The configuration as a learner's container sees it: its sandbox is the allowlist."""
    return replace(config, volume_allowlist=(sandbox_of(config, name),))


def sandbox_volumes(config: EngineConfig, name: str | None, volumes: list[Volume]) -> list[Volume]:
    """A learner's volumes with each source mapped into their sandbox (``requested`` keeps
    what they typed), checked against that sandbox only."""
    top = sandbox_of(config, name)
    mapped = []
    for volume in volumes:
        real = make_dirs(top, sandbox_path(volume.source))
        mapped.append(replace(volume, source=str(real), requested=volume.source))
    return check_volumes(replace(config, volume_allowlist=(top,)), mapped)


MAX_LISTED = 500


def listing(config: EngineConfig, name: str | None) -> tuple[Path, list[dict[str, Any]], bool]:
    """What a learner's sandbox holds, as they see it (/mnt, /mnt/on), never following a
    symlink: (its real directory, entries, whether the list was cut at MAX_LISTED)."""
    top = sandbox_of(config, name)
    out: list[dict[str, Any]] = []
    if not top.is_dir():
        return top, out, False
    stack = [("", os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))]
    try:
        while stack:
            prefix, fd = stack.pop()
            try:
                with os.scandir(fd) as it:
                    items = sorted(it, key=lambda e: e.name)
                for entry in items:
                    if len(out) >= MAX_LISTED:
                        return top, out, True
                    _list_one(entry, prefix, fd, out, stack)
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)
    return top, sorted(out, key=lambda e: e["path"]), False


def _list_one(
    entry: os.DirEntry[str], prefix: str, fd: int, out: list[dict[str, Any]], stack: list[Any]
) -> None:
    st = entry.stat(follow_symlinks=False)
    kind = (
        "dir" if stat.S_ISDIR(st.st_mode)
        else "file" if stat.S_ISREG(st.st_mode)
        else "link" if stat.S_ISLNK(st.st_mode)
        else "other"
    )  # fmt: skip
    path = f"{prefix}/{entry.name}"
    out.append({"path": path, "kind": kind, "size": st.st_size if kind == "file" else 0})
    if kind == "dir" and path.count("/") < MAX_DEPTH:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            stack.append((path, os.open(entry.name, flags, dir_fd=fd)))


def touch(config: EngineConfig, name: str | None, unsafe_path: str) -> dict[str, Any]:
    """``touch PATH`` in a learner's sandbox (the lab's `touch /mnt/on`, by hand): its
    directories made as needed, never through a symlink; an existing file is left as it is."""
    parts = sandbox_path(unsafe_path)
    top = sandbox_of(config, name)
    parent = make_dirs(top, parts[:-1])
    fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            new = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o644, dir_fd=fd)  # fmt: skip
        except OSError as err:
            raise PolicyError(
                f"touch {unsafe_path[:200]}: {err.strerror} (a directory, or a symlink?)",
                rule="sandbox",
                field="path",
            ) from err
        os.close(new)
    finally:
        os.close(fd)
    return {"path": "/" + "/".join(parts), "kind": "file", "size": 0}
