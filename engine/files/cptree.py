"""Copying between directory descriptors, never following a symlink below them: ``cp``
between a container and the host (podman cp's rules), and a rename across overlay layers
(engine.files.explorer). Regular files land through a temp file and a rename, so a reader never sees
half a
file; owner, mode and mtime are kept. Nothing is decompressed or run here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.errors import InvalidInputError, InvalidStateError, NotFoundError, PolicyError
from engine.files.fsio import TempFile
from engine.hostfs import securepath
from engine.storage.binds import open_volume_source
from engine.storage.volumes import Volume

MAX_DEPTH = 1024  # directory levels a copy goes down (as many as a download's tar)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class CopyStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def _copy_data(src: int, dst: int, size: int) -> int:
    done = 0
    while done < size:
        try:
            n = os.sendfile(dst, src, done, min(size - done, 64 * 1024 * 1024))
        except OSError:
            n = -1
        if n <= 0:
            break
        done += n
    if done < size:  # sendfile refused, or the file shrank: finish with read/write
        os.lseek(src, done, os.SEEK_SET)
        while done < size:
            data = os.read(src, min(1024 * 1024, size - done))
            if not data:
                break
            os.write(dst, data)
            done += len(data)
    return done


def copy_entry(
    src_dir: int,
    src_name: str,
    dst_dir: int,
    dst_name: str,
    *,
    strip_setid: bool = False,
    stats: CopyStats | None = None,
    depth: int = 0,
) -> CopyStats:
    """Copy one entry (recursively for a directory) from (src_dir, src_name) to (dst_dir,
    dst_name), never following a symlink on either side below the two directories. Regular
    files go through a temp file + rename; owner, mode and mtime are kept (setuid/setgid bits
    dropped with ``strip_setid``, used when copying out to the host). FIFOs, devices and
    sockets are skipped and reported."""
    stats = stats or CopyStats()
    if depth > MAX_DEPTH:
        raise InvalidStateError(f"copy: deeper than {MAX_DEPTH} levels")
    st = os.stat(src_name, dir_fd=src_dir, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode) & (~0o6000 if strip_setid else 0o7777)
    try:
        existing: os.stat_result | None = os.stat(dst_name, dir_fd=dst_dir, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    src, dst = (src_dir, src_name), (dst_dir, dst_name)
    if stat.S_ISDIR(st.st_mode):
        _refuse_kind(src_name, existing, "a directory", want_dir=True)
        _copy_dir(src, dst, st, mode, existing is None, strip_setid, stats, depth)
    elif stat.S_ISREG(st.st_mode):
        _refuse_kind(src_name, existing, "a file", want_dir=False)
        _copy_file(src, dst, mode, stats)
    elif stat.S_ISLNK(st.st_mode):
        _refuse_kind(src_name, existing, "a symlink", want_dir=False)
        _copy_link(src, dst, st, existing is not None, stats)
    else:
        stats.skipped.append(src_name)
    return stats


def _refuse_kind(name: str, existing: os.stat_result | None, what: str, want_dir: bool) -> None:
    """A directory replaces only a directory; a file or a link never replaces a directory."""
    if existing is None or stat.S_ISDIR(existing.st_mode) == want_dir:
        return
    if want_dir:
        raise InvalidInputError(f"copy {name}: cannot overwrite a non-directory with a directory")
    raise InvalidInputError(f"copy {name}: cannot overwrite a directory with {what}")


def _copy_dir(
    src: tuple[int, str],
    dst: tuple[int, str],
    st: os.stat_result,
    mode: int,
    create: bool,
    strip_setid: bool,
    stats: CopyStats,
    depth: int,
) -> None:
    if create:
        os.mkdir(dst[1], 0o700, dir_fd=dst[0])
    s = os.open(src[1], _DIR_FLAGS, dir_fd=src[0])
    try:
        d = os.open(dst[1], _DIR_FLAGS, dir_fd=dst[0])
        try:
            for name in sorted(os.listdir(s)):
                copy_entry(s, name, d, name, strip_setid=strip_setid, stats=stats, depth=depth + 1)
            os.fchown(d, st.st_uid, st.st_gid)
            os.fchmod(d, mode)
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(d)
    finally:
        os.close(s)
    stats.dirs += 1


def _copy_file(src: tuple[int, str], dst: tuple[int, str], mode: int, stats: CopyStats) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    s = os.open(src[1], flags, dir_fd=src[0])
    try:
        fst = os.fstat(s)
        if not stat.S_ISREG(fst.st_mode):  # it changed since the stat
            stats.skipped.append(src[1])
            return
        tmp = TempFile(dst[0], dst[1], mode)
        try:
            stats.bytes += _copy_data(s, tmp.fd, fst.st_size)
            tmp.commit(fst.st_uid, fst.st_gid, fsync=False)
        finally:
            tmp.close()
        times = (fst.st_atime_ns, fst.st_mtime_ns)
        os.utime(dst[1], dir_fd=dst[0], follow_symlinks=False, ns=times)
    finally:
        os.close(s)
    stats.files += 1


def _copy_link(
    src: tuple[int, str], dst: tuple[int, str], st: os.stat_result, replace: bool, stats: CopyStats
) -> None:
    target = os.readlink(src[1], dir_fd=src[0])
    if replace:
        os.unlink(dst[1], dir_fd=dst[0])
    os.symlink(target, dst[1], dir_fd=dst[0])
    os.chown(dst[1], st.st_uid, st.st_gid, dir_fd=dst[0], follow_symlinks=False)
    stats.links += 1


# -- the two sides of a cp ----------------------------------------------------------------
class Side(Protocol):
    def kind(self, path: str) -> str | None:
        """ "dir", "other", or None (missing), following symlinks (inside the root)."""

    def open_dir(self, path: str) -> int: ...

    def parent(self, path: str) -> Any:
        """Context manager giving (dir fd, final name)."""

    def is_mount(self, path: str) -> bool:
        """Whether the path is exactly where a volume is mounted (its own root)."""


class HostSide:
    """The host's filesystem, as the root user running the CLI sees it."""

    def kind(self, path: str) -> str | None:
        try:
            return "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
        except FileNotFoundError:
            return None

    def open_dir(self, path: str) -> int:
        return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        norm = os.path.normpath(os.path.abspath(path))
        head, name = os.path.split(norm)
        if not name:
            fd = os.open(norm, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            name = "."
        else:
            fd = os.open(head, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def is_mount(self, path: str) -> bool:
        return False


class _Mounted:
    """One volume of a container, its host side opened on first use."""

    def __init__(self, volume: Volume, allowlist: Sequence[Path]) -> None:
        self.volume = volume
        self.destination = securepath.clean(volume.destination)
        self.allowlist = allowlist
        self.root: securepath.Root | None = None
        self.file_name = ""  # a volume of one regular file: its name in ``root``

    def open(self) -> securepath.Root:
        if self.root is None:
            fd = open_volume_source(self.allowlist, self.volume.source)
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    root = securepath.Root(securepath.fd_path(fd))
                else:  # a file: its directory is the root; only that one name is used in it
                    self.file_name = os.path.basename(self.volume.source)
                    parent = os.path.dirname(self.volume.source)
                    pfd = open_volume_source(self.allowlist, parent)
                    try:
                        root = securepath.Root(securepath.fd_path(pfd))
                    finally:
                        os.close(pfd)
            finally:
                os.close(fd)
            root.path = self.volume.source
            self.root = root
        return self.root

    def close(self) -> None:
        if self.root is not None:
            self.root.close()
            self.root = None


class ContainerSide:
    """A container's root: every path resolves inside it, or inside one of its volumes.

    A container path is cleaned lexically first; at or under a volume's destination (the
    longest one matches) the rest resolves inside the volume's host source as its own root
    (openat2 RESOLVE_IN_ROOT, the source opened from its allowlisted directory without any
    symlink), as ``podman cp`` reads and writes through the container's mounts, running or not.
    Writes into a read-only volume are refused. Limits: a symlink in the container's root that
    leads to a volume's destination is followed inside the container's root only (so it reaches
    the empty mount point, not the volume); a directory copied *onto* a volume's destination
    (``cp DIR ctr:/`` where DIR is named like the volume) lands in the volume, but volumes
    deeper inside a tree being copied are not entered: that tree's mount points are copied as
    the directories they are in the root. The engine's own binds (/etc/hostname, /etc/hosts,
    /etc/resolv.conf) are not volumes and read as the root's placeholders."""

    def __init__(
        self,
        root: securepath.Root,
        volumes: Sequence[Volume] = (),
        allowlist: Sequence[Path] = (),
        *,
        write: bool = False,
    ) -> None:
        self.root = root
        self.write = write
        self.mounts = sorted(
            (_Mounted(v, allowlist) for v in volumes),
            key=lambda m: len(m.destination),
            reverse=True,
        )

    def close(self) -> None:
        for mounted in self.mounts:
            mounted.close()

    def _find(self, clean: str) -> _Mounted | None:
        for mounted in self.mounts:  # longest destination first
            d = mounted.destination
            if clean == d or clean.startswith(d + "/"):
                return mounted
        return None

    def route(self, path: str) -> tuple[securepath.Root, str]:
        """(the root the path resolves in, the path inside it)."""
        clean = securepath.clean(path)
        mounted = self._find(clean)
        if mounted is None:
            return self.root, clean
        if self.write and mounted.volume.read_only:
            raise PolicyError(
                f"cp: {clean}: {mounted.destination} is a read-only volume",
                rule="read-only-volume",
                field="volumes",
            )
        root = mounted.open()
        rest = clean[len(mounted.destination) :] or "/"
        if mounted.file_name:
            if rest != "/":
                raise InvalidInputError(f"cp: {clean}: {mounted.destination} is not a directory")
            if self.write:
                raise InvalidInputError(
                    f"cp: {clean}: a single-file volume cannot be written by cp "
                    f"(write its host file {mounted.volume.source})"
                )
            return root, "/" + mounted.file_name
        return root, rest

    def kind(self, path: str) -> str | None:
        root, inside = self.route(path)
        try:
            fd = root.open(inside, os.O_PATH)
        except FileNotFoundError:
            return None
        try:
            return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "other"
        finally:
            os.close(fd)

    def open_dir(self, path: str) -> int:
        root, inside = self.route(path)
        return root.open(inside, os.O_PATH | os.O_DIRECTORY)

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        root, inside = self.route(path)
        with root.parent(inside) as (fd, name):
            yield fd, name or "."

    def is_mount(self, path: str) -> bool:
        clean = securepath.clean(path)
        return any(m.destination == clean for m in self.mounts)


def _base_name(path: str, sname: str) -> str:
    if sname not in (".", ".."):
        return sname
    parts = securepath.lexical_parts(path)
    return parts[-1] if parts else "rootfs"


def _copy_contents(sfd: int, sname: str, dfd: int, *, strip_setid: bool, stats: CopyStats) -> None:
    s = os.open(sname, _DIR_FLAGS, dir_fd=sfd)
    try:
        for name in sorted(os.listdir(s)):
            copy_entry(s, name, dfd, name, strip_setid=strip_setid, stats=stats)
    finally:
        os.close(s)


def copy_between(
    src: Side, src_path: str, dst: Side, dst_path: str, *, strip_setid: bool
) -> CopyStats:
    """podman cp's rules: into an existing directory under the source's name (a source ending
    in "/." copies its contents instead); onto an existing file (files only); to a new name
    whose parent exists (a directory is created there with the source's contents). A directory
    whose new name is a volume's mount point goes into the volume (its contents; the volume's
    own directory keeps its owner and mode)."""
    contents_only = src_path == "." or src_path.endswith("/.")
    stats = CopyStats()
    with src.parent(src_path) as (sfd, sname):
        st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        base = _base_name(src_path, sname)
        dst_kind = dst.kind(dst_path)
        if dst_kind == "dir":
            target = dst_path.rstrip("/") + "/" + base
            if is_dir and not contents_only and dst.is_mount(target):
                dst_path, contents_only = target, True
            dfd = dst.open_dir(dst_path)
            try:
                if is_dir and contents_only:
                    _copy_contents(sfd, sname, dfd, strip_setid=strip_setid, stats=stats)
                else:
                    copy_entry(sfd, sname, dfd, base, strip_setid=strip_setid, stats=stats)
            finally:
                os.close(dfd)
        elif dst_kind == "other":
            if is_dir:
                raise InvalidInputError(f"cp: {dst_path}: cannot copy a directory onto a file")
            with dst.parent(dst_path) as (dfd, dname):
                copy_entry(sfd, sname, dfd, dname, strip_setid=strip_setid, stats=stats)
        else:
            if dst_path.endswith("/"):
                raise NotFoundError(f"cp: {dst_path}: destination directory does not exist")
            with dst.parent(dst_path) as (dfd, dname):
                copy_entry(sfd, sname, dfd, dname, strip_setid=strip_setid, stats=stats)
    return stats
