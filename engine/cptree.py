"""Copying between directory descriptors, never following a symlink below them: ``cp``
between a container and the host (podman cp's rules), and a rename across overlay layers
(engine.fs). Regular files land through a temp file and a rename, so a reader never sees half a
file; owner, mode and mtime are kept. Nothing is decompressed or run here.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import securepath
from engine.errors import InvalidInputError, InvalidStateError, NotFoundError
from engine.fs import TempFile

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
    if stat.S_ISDIR(st.st_mode):
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            raise InvalidInputError(
                f"copy {src_name}: cannot overwrite a non-directory with a directory"
            )
        if existing is None:
            os.mkdir(dst_name, 0o700, dir_fd=dst_dir)
        s = os.open(src_name, _DIR_FLAGS, dir_fd=src_dir)
        try:
            d = os.open(dst_name, _DIR_FLAGS, dir_fd=dst_dir)
            try:
                for name in sorted(os.listdir(s)):
                    copy_entry(
                        s, name, d, name, strip_setid=strip_setid, stats=stats, depth=depth + 1
                    )
                os.fchown(d, st.st_uid, st.st_gid)
                os.fchmod(d, mode)
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(d)
        finally:
            os.close(s)
        stats.dirs += 1
    elif stat.S_ISREG(st.st_mode):
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise InvalidInputError(f"copy {src_name}: cannot overwrite a directory with a file")
        s = os.open(
            src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_dir
        )
        try:
            fst = os.fstat(s)
            if not stat.S_ISREG(fst.st_mode):
                stats.skipped.append(src_name)
                return stats
            tmp = TempFile(dst_dir, dst_name, mode)
            try:
                stats.bytes += _copy_data(s, tmp.fd, fst.st_size)
                tmp.commit(fst.st_uid, fst.st_gid, fsync=False)
            finally:
                tmp.close()
            os.utime(
                dst_name,
                dir_fd=dst_dir,
                follow_symlinks=False,
                ns=(fst.st_atime_ns, fst.st_mtime_ns),
            )
        finally:
            os.close(s)
        stats.files += 1
    elif stat.S_ISLNK(st.st_mode):
        target = os.readlink(src_name, dir_fd=src_dir)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise InvalidInputError(
                    f"copy {src_name}: cannot overwrite a directory with a symlink"
                )
            os.unlink(dst_name, dir_fd=dst_dir)
        os.symlink(target, dst_name, dir_fd=dst_dir)
        os.chown(dst_name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
        stats.links += 1
    else:
        stats.skipped.append(src_name)
    return stats


# -- the two sides of a cp ----------------------------------------------------------------
class Side(Protocol):
    def kind(self, path: str) -> str | None:
        """ "dir", "other", or None (missing), following symlinks (inside the root)."""

    def open_dir(self, path: str) -> int: ...

    def parent(self, path: str) -> Any:
        """Context manager giving (dir fd, final name)."""


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


class ContainerSide:
    """A container's root: every path resolves inside it."""

    def __init__(self, root: securepath.Root) -> None:
        self.root = root

    def kind(self, path: str) -> str | None:
        try:
            fd = self.root.open(path, os.O_PATH)
        except FileNotFoundError:
            return None
        try:
            return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "other"
        finally:
            os.close(fd)

    def open_dir(self, path: str) -> int:
        return self.root.open(path, os.O_PATH | os.O_DIRECTORY)

    @contextmanager
    def parent(self, path: str) -> Iterator[tuple[int, str]]:
        with self.root.parent(path) as (fd, name):
            yield fd, name or "."


def copy_between(
    src: Side, src_path: str, dst: Side, dst_path: str, *, strip_setid: bool
) -> CopyStats:
    """podman cp's rules: into an existing directory under the source's name (a source ending
    in "/." copies its contents instead); onto an existing file (files only); to a new name
    whose parent exists (a directory is created there with the source's contents)."""
    contents_only = src_path == "." or src_path.endswith("/.")
    stats = CopyStats()
    with src.parent(src_path) as (sfd, sname):
        st = os.stat(sname, dir_fd=sfd, follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        base = sname if sname not in (".", "..") else "rootfs"
        dst_kind = dst.kind(dst_path)
        if dst_kind == "dir":
            dfd = dst.open_dir(dst_path)
            try:
                if is_dir and contents_only:
                    s = os.open(sname, _DIR_FLAGS, dir_fd=sfd)
                    try:
                        for name in sorted(os.listdir(s)):
                            copy_entry(s, name, dfd, name, strip_setid=strip_setid, stats=stats)
                    finally:
                        os.close(s)
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
