"""A container directory as a tar stream (a folder download), built from descriptors.

Directories are entered with O_NOFOLLOW and files opened with O_NOFOLLOW|O_NONBLOCK and checked
with fstat, so a symlink swapped in while the stream is built is stored as a symlink or skipped,
never followed out of the container. Nothing is extracted or run here.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator

from engine.errors import InvalidStateError
from engine.files.owners import Ids

MAX_TAR_DEPTH = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_Header = Callable[[tarfile.TarInfo], bytes]


class _Buffer:
    def __init__(self, chunk: int) -> None:
        self.data = bytearray()
        self.chunk = chunk
        self.total = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        self.data += data
        self.total += len(data)
        while len(self.data) >= self.chunk:
            out = bytes(self.data[: self.chunk])
            del self.data[: self.chunk]
            yield out


_SPECIAL = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def set_special(info: tarfile.TarInfo, st: os.stat_result) -> bool:
    """Make info a device or fifo entry if st is one (True), else leave it (False)."""
    kind = _SPECIAL.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return False
    info.type = kind
    info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return True


def _tarinfo(arcname: str, st: os.stat_result, ids: Ids) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = ids.users.get(st.st_uid, ""), ids.groups.get(st.st_gid, "")
    info.mtime = int(st.st_mtime)
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_Frame = tuple[int, str, Iterator[str]]  # a directory being read: fd, archive path, names left


def tar_stream(dir_fd: int, top: str, ids: Ids, chunk: int) -> Iterator[bytes]:
    """A POSIX (pax) tar of the tree below ``dir_fd``, named ``top/...``, in pieces of
    ``chunk`` bytes. Directories are entered with O_NOFOLLOW, files opened with
    O_NOFOLLOW|O_NONBLOCK and checked with fstat: a symlink swapped in meanwhile is stored as a
    symlink or skipped, never followed. A file that shrinks while it is read is padded, one
    that grows is cut, so the archive stays valid. Sockets are skipped; device nodes and FIFOs
    are stored as headers (never opened)."""
    buf = _Buffer(chunk)
    root_fd = os.open(".", _DIR_FLAGS, dir_fd=dir_fd)
    stack: list[_Frame] = []
    try:
        info = _tarinfo(top + "/", os.fstat(root_fd), ids)
        info.type = tarfile.DIRTYPE
        yield from buf.add(_header(info))
        stack.append((root_fd, top, iter(sorted(os.listdir(root_fd)))))
        root_fd = -1
        while stack:
            fd, arc, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            yield from _tar_entry(buf, stack, fd, arc, name, ids)
        yield from buf.add(b"\0" * (tarfile.BLOCKSIZE * 2))
        yield from buf.add(b"\0" * (-buf.total % tarfile.RECORDSIZE))
        if buf.data:
            yield bytes(buf.data)
    finally:
        if root_fd >= 0:
            os.close(root_fd)
        for fd, _, _ in stack:
            os.close(fd)


def _tar_entry(
    buf: _Buffer, stack: list[_Frame], fd: int, arc: str, name: str, ids: Ids
) -> Iterator[bytes]:
    """One entry of the directory ``fd``: its header (and data); a directory is pushed on
    ``stack`` to be read next. What vanished or changed kind meanwhile is left out."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    path = f"{arc}/{name}"
    info = _tarinfo(path, st, ids)
    if stat.S_ISDIR(st.st_mode):
        if len(stack) >= MAX_TAR_DEPTH:
            raise InvalidStateError(f"download: deeper than {MAX_TAR_DEPTH} levels")
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            return  # swapped for something else meanwhile
        info.name, info.type = path + "/", tarfile.DIRTYPE
        stack.append((sub, path, iter(sorted(os.listdir(sub)))))
        yield from buf.add(_header(info))
    elif stat.S_ISREG(st.st_mode):
        yield from _tar_file(buf, fd, name, info, _header)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        try:
            info.linkname = os.readlink(name, dir_fd=fd)
        except OSError:
            return
        yield from buf.add(_header(info))
    elif set_special(info, st):
        yield from buf.add(_header(info))


def _tar_file(
    buf: _Buffer, dir_fd: int, name: str, info: tarfile.TarInfo, header: _Header
) -> Iterator[bytes]:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return  # gone, or swapped for a symlink
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        info.size = st.st_size
        info.type = tarfile.REGTYPE
        yield from buf.add(header(info))
        left = st.st_size
        while left > 0:
            data = os.read(fd, min(buf.chunk, left))
            if not data:
                break
            left -= len(data)
            yield from buf.add(data)
        if left:
            yield from buf.add(b"\0" * left)
        yield from buf.add(b"\0" * (-st.st_size % tarfile.BLOCKSIZE))
    finally:
        os.close(fd)
