"""What a container changed compared with its image (``podman diff``), and which layer each
entry of the merged view comes from.

Both read the overlay's own directories (the upper dir and the image's layer dirs), never the
merged view, and follow overlayfs's lookup rules: layers are searched top-most first; a
whiteout (a 0/0 character device) ends the search; a non-directory hides everything below it;
a directory marked opaque (``trusted.overlay.opaque=y``) hides the directories below it.

Every lookup inside a layer goes through openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (or a
``dir_fd`` plus a single name, not followed), so a symlink in a layer, or one a running
container puts into its upper dir, is never followed on the host.

Change kinds are podman's: ``A`` (in the upper dir, not in the image), ``C`` (in the upper dir
and in the image; a directory that only got copied up, with the same size, mode and mtime, is
not reported, as containers/storage does), ``D`` (a whiteout in the upper dir over an entry of
the image).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidStateError
from engine.hostfs import securepath

OPAQUE_XATTR = "trusted.overlay.opaque"
UPPER = "upper"
MAX_CHANGES = 200_000
MAX_DEPTH = 1024


@dataclass(frozen=True)
class Change:
    kind: str  # "A" | "C" | "D"
    path: str

    def line(self) -> str:
        return f"{self.kind} {self.path}"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(dir_fd: int) -> bool:
    try:
        value = os.getxattr(securepath.fd_path(dir_fd), OPAQUE_XATTR)
    except OSError:
        return False
    return value in (b"y", b"x")


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_sub(dir_fd: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _parts(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p not in ("", ".")]


class LayerView:
    """The layers of one container, top-most first: ``("upper", upper_dir)`` then the image's
    layers as ``(label, diff_dir)`` (label = the layer's index from the bottom, "0" = base).
    Holds one O_PATH descriptor per layer; use as a context manager."""

    def __init__(self, layers: list[tuple[str, Path]]) -> None:
        self.labels = [label for label, _ in layers]
        self.fds: list[int] = []
        try:
            for _, path in layers:
                self.fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __enter__(self) -> LayerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def stack(self, rel: str, *, skip_upper: bool = False) -> Iterator[list[tuple[str, int]]]:
        """The layers that make up directory ``rel`` of the merged view, top-most first, as
        (label, readable dir fd). Empty if rel is not a directory in any layer."""
        start = 1 if skip_upper and self.labels and self.labels[0] == UPPER else 0
        current: list[tuple[str, int]] = []
        try:
            for i in range(start, len(self.fds)):
                current.append(
                    (
                        self.labels[i],
                        os.open(
                            ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fds[i]
                        ),
                    )
                )
            for part in _parts(rel):
                nxt: list[tuple[str, int]] = []
                try:
                    for label, fd in current:
                        st = _lstat(fd, part)
                        if st is None:
                            continue
                        if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                            break
                        try:
                            sub = _open_sub(fd, part)
                        except OSError:
                            break  # swapped for a symlink meanwhile: stop here
                        nxt.append((label, sub))
                        if is_opaque(sub):
                            break
                except BaseException:
                    for _, fd in nxt:
                        os.close(fd)
                    raise
                for _, fd in current:
                    os.close(fd)
                current = nxt
                if not current:
                    break
            yield current
        finally:
            for _, fd in current:
                os.close(fd)


def lookup(stack: list[tuple[str, int]], name: str) -> tuple[str, os.stat_result] | None:
    """The top-most entry called name in a directory stack: (label, lstat), or None when it is
    missing or whited out."""
    for label, fd in stack:
        st = _lstat(fd, name)
        if st is None:
            continue
        if is_whiteout(st):
            return None
        return label, st
    return None


def same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    """containers/storage's test for a directory that was only copied up."""
    return (
        stat.S_ISDIR(a.st_mode)
        and stat.S_ISDIR(b.st_mode)
        and a.st_size == b.st_size
        and a.st_mode == b.st_mode
        and a.st_mtime_ns == b.st_mtime_ns
    )


def change_kind(upper_st: os.stat_result, lower: tuple[str, os.stat_result] | None) -> str:
    """ "A", "C" or "" for an entry present in the upper dir."""
    if is_whiteout(upper_st):
        return "D" if lower is not None else ""
    if lower is None:
        return "A"
    return "" if same_dir(upper_st, lower[1]) else "C"


def changes(view: LayerView, *, limit: int = MAX_CHANGES) -> list[Change]:
    """Everything the upper dir changed, sorted by path (podman diff). ``view`` must start with
    the upper layer."""
    if not view.labels or view.labels[0] != UPPER:
        raise ValueError("changes: the view has no upper layer")
    out: list[Change] = []
    top = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=view.fds[0])
    try:
        _walk(view, top, "", out, limit, 0)
    finally:
        os.close(top)
    out.sort(key=lambda c: c.path)
    return out


def _walk(
    view: LayerView, dir_fd: int, rel: str, out: list[Change], limit: int, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise InvalidStateError(f"diff: directories nested deeper than {MAX_DEPTH} levels")
    with view.stack(rel or "/", skip_upper=True) as lowers:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = f"{rel}/{entry.name}"
            found = lookup(lowers, entry.name)
            kind = change_kind(st, found)
            if kind:
                if len(out) >= limit:
                    raise InvalidStateError(f"diff: more than {limit} changes")
                out.append(Change(kind, path))
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(entry.name)
    for name in subdirs:
        try:
            sub = _open_sub(dir_fd, name)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                continue  # changed while we walked
            raise
        try:
            _walk(view, sub, f"{rel}/{name}", out, limit, depth + 1)
        finally:
            os.close(sub)


@dataclass
class Attribution:
    """Where the entries of one merged directory come from."""

    # per layer of the directory's stack (top-most first): the names it holds and which of
    # them are whiteouts
    layers: list[tuple[str, set[str], set[str]]]

    def source(self, name: str) -> tuple[str, int]:
        """(label of the top-most layer holding name, its position in the stack) or ("", -1)."""
        for pos, (label, names, whiteouts) in enumerate(self.layers):
            if name in whiteouts:
                return "", -1
            if name in names:
                return label, pos
        return "", -1

    def in_lower(self, name: str, below: int) -> bool:
        for _, names, whiteouts in self.layers[below + 1 :]:
            if name in whiteouts:
                return False
            if name in names:
                return True
        return False

    def deleted(self) -> list[str]:
        """Names the upper dir whites out over an entry of the image."""
        if not self.layers or self.layers[0][0] != UPPER:
            return []
        return sorted(n for n in self.layers[0][2] if self.in_lower(n, 0))


def attribute(view: LayerView, rel: str) -> Attribution:
    """Read the names of directory ``rel`` in each layer of its stack (one getdents per
    layer, one lstat per character device to tell whiteouts)."""
    layers: list[tuple[str, set[str], set[str]]] = []
    with view.stack(rel) as stack:
        for label, fd in stack:
            names: set[str] = set()
            whiteouts: set[str] = set()
            with os.scandir(fd) as it:
                for entry in it:
                    names.add(entry.name)
                    if _maybe_char(entry) and is_whiteout(entry.stat(follow_symlinks=False)):
                        whiteouts.add(entry.name)
            layers.append((label, names - whiteouts, whiteouts))
    return Attribution(layers)


def _maybe_char(entry: os.DirEntry[str]) -> bool:
    # d_type is not exposed for devices; anything that is not a dir, file or symlink may be one.
    try:
        return not (
            entry.is_dir(follow_symlinks=False)
            or entry.is_file(follow_symlinks=False)
            or entry.is_symlink()
        )
    except OSError:
        return False
