"""Bind sources pinned for runc: what was checked is what gets mounted.

A volume's host path is checked (beneath the allowlist, no symlink anywhere) at create, on
every spec edit and again at start, but runc mounts it later *by path*, following symlinks.
Anyone who can write inside an allowlisted directory (another container with a volume there)
could swap a directory of that path for a symlink between the check and runc's mount(2), and
the container would get whatever the symlink names, the host's / included (security.md D2).

So at start each bind source under the allowlist is opened with openat2(RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS) from the allowlisted directory, and that very object is bind-mounted
(through /proc/self/fd/N) onto a staging point ``<root>/binds/<container id>/<n>``: root-only
directories nobody else can change. runc is given the staging path and copies the mount into
the container's namespace at ``runc create``; right after, the staging mounts go (lazily) and
the container keeps its copy. (runc cannot be given the fd's magic link itself: a bind mount's
source must be in the mount namespace doing the mount, and runc mounts from the container's.)

runc reads the spec from bundle/config.json only, so for the moment of ``runc create`` that
file holds the pinned copy; the user's own bytes are kept in userdata/config.json.user and put
back right after (and at the next start, should the engine die in between). Binds outside the
allowlist are the engine's own (hostname, hosts, resolv.conf from root-only userdata) and the
policy refuses any other. Staging points are only ever unmounted, then unlinked or rmdir'ed:
never a recursive delete that could reach into a volume still mounted there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.errors import NotFoundError, PolicyError
from engine.hostfs import atomic, securepath
from engine.storage import mounts

PIN_RESOLVE = securepath.RESOLVE_BENEATH | securepath.RESOLVE_NO_SYMLINKS


def _is_bind(mount: Any) -> bool:
    if not isinstance(mount, dict):
        return False
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _roots(allowlist: Iterable[Path]) -> list[str]:
    out = []
    for entry in allowlist:
        with contextlib.suppress(OSError):
            out.append(os.path.realpath(entry, strict=True))
    return out


def _root_of(roots: list[str], source: str) -> str | None:
    return next((r for r in roots if source == r or source.startswith(r.rstrip("/") + "/")), None)


def _open_beneath(root: str, source: str, field: str) -> int:
    rel = source[len(root) :].lstrip("/") or "."
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return securepath.openat2(root_fd, rel, os.O_PATH, resolve=PIN_RESOLVE)
    except FileNotFoundError as err:
        raise NotFoundError(f"volume source {source}: no such file or directory") from err
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EXDEV):
            raise PolicyError(
                f"volume source {source}: a symlink is now in its path (refused)",
                rule="bind-source",
                field=field,
            ) from err
        raise
    finally:
        os.close(root_fd)


def open_volume_source(allowlist: Iterable[Path], source: str, field: str = "volumes") -> int:
    """An O_PATH descriptor of a volume's host source, opened from its allowlisted directory
    with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink swapped into the recorded
    path is refused, never followed. For whoever acts on a volume later (start, cp)."""
    root = _root_of(_roots(allowlist), source)
    if root is None:
        raise PolicyError(
            f"volume source {source}: no longer under an allowed directory",
            rule="volume-allowlist",
            field=field,
        )
    return _open_beneath(root, source, field)


def _mountable(fd: int, source: str) -> int:
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind not in (stat.S_IFDIR, stat.S_IFREG):
        os.close(fd)
        raise PolicyError(
            f"volume source {source}: only a directory or a regular file can be mounted",
            rule="bind-source",
            field="mounts",
        )
    return fd


def _stage_point(staging: Path, n: int, fd: int) -> Path:
    target = staging / str(n)
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        target.mkdir(mode=0o700)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    return target


def unstage(staging: Path) -> None:
    """Unmount and remove the staging points of one container (a crash may have left some).
    Raises RuntimeFailedError when a point stays mounted (then nothing below it is touched)."""
    try:
        points = sorted(staging.iterdir())
    except FileNotFoundError:
        return
    for point in points:
        mounts.unmount(point)
        if point.is_dir() and not point.is_symlink():
            point.rmdir()  # never recursive: a failed unmount must not reach into a volume
        else:
            point.unlink()
    staging.rmdir()


@contextlib.contextmanager
def pinned(
    spec: dict[str, Any], allowlist: Iterable[Path], staging: Path
) -> Iterator[dict[str, Any] | None]:
    """A copy of ``spec`` whose bind sources under the allowlist are staging points holding
    exactly the objects checked; None when the spec has no such bind."""
    roots = _roots(allowlist)
    # only the mounts list is copied (the spec is large: seccomp alone is hundreds of entries)
    mounts_list = [dict(m) if isinstance(m, dict) else m for m in spec.get("mounts") or []]
    unstage(staging)
    staged = False
    try:
        for n, mount in enumerate(mounts_list):
            if not _is_bind(mount):
                continue
            source = str(mount.get("source", ""))
            root = _root_of(roots, source)
            if root is None:
                continue  # the engine's own binds; the policy already refused any other
            fd = _mountable(_open_beneath(root, source, "mounts"), source)
            try:
                if not staged:
                    staging.mkdir(mode=0o700, parents=True)
                    staged = True
                target = _stage_point(staging, n, fd)
                mounts.bind_fd(fd, target)
            finally:
                os.close(fd)
            mount["source"] = os.fspath(target)
        yield {**spec, "mounts": mounts_list} if staged else None
    finally:
        if staged:
            unstage(staging)


def restore_user_config(config: Path, keep: Path) -> None:
    """Put the user's config.json back if a start was cut off while the pinned copy was in
    place (the engine died between writing it and runc create)."""
    with contextlib.suppress(FileNotFoundError):
        atomic.write_bytes(config, keep.read_bytes(), mode=0o600)
        keep.unlink()


@contextlib.contextmanager
def in_place(config: Path, keep: Path, runtime_spec: dict[str, Any] | None) -> Iterator[None]:
    """bundle/config.json holds ``runtime_spec`` inside the block (nothing changes for
    None), the user's bytes before and after."""
    if runtime_spec is None:
        yield
        return
    original = config.read_bytes()
    atomic.write_bytes(keep, original, mode=0o600)
    try:
        atomic.write_bytes(config, json.dumps(runtime_spec, indent=2).encode(), mode=0o600)
        yield
    finally:
        atomic.write_bytes(config, original, mode=0o600)
        keep.unlink()
