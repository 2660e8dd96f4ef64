"""The small pieces every explorer operation is made of, shared by engine.files.explorer and
engine.files.transfer: OS errors worded as engine errors, paths fit for a message, names made valid
UTF-8, version tokens, bounded reads, and atomic writes below a directory descriptor
(``TempFile``, ``WriteTarget``: a temp file renamed into place, never a path string)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.errors import EngineError, InvalidInputError, InvalidStateError, NotFoundError
from engine.hostfs import libc, securepath
from engine.hostfs.rmtree import remove_tree_at

_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "s390x": 347}
RENAME_NOREPLACE = 1


# -- errors ---------------------------------------------------------------------------------
@contextmanager
def fs_errors(what: str) -> Iterator[None]:
    """Turn OS errors into engine errors that name the path, in lowercase words."""
    try:
        yield
    except EngineError:
        raise
    except FileNotFoundError as err:
        raise NotFoundError(f"{what}: no such file or directory") from err
    except FileExistsError as err:
        raise InvalidInputError(f"{what}: already exists") from err
    except NotADirectoryError as err:
        raise InvalidInputError(f"{what}: not a directory") from err
    except IsADirectoryError as err:
        raise InvalidInputError(f"{what}: is a directory") from err
    except OSError as err:
        reason = {
            errno.ELOOP: "too many levels of symbolic links (or a magic link)",
            errno.EXDEV: "leads out of the container",
            errno.ENOTEMPTY: "directory not empty",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
            errno.ENAMETOOLONG: "name too long",
            errno.ENOSPC: "no space left on the device",
            errno.ENXIO: "no such device or address",
            errno.EROFS: "read-only file system",
        }.get(err.errno or 0, (err.strerror or str(err)).lower())
        raise InvalidInputError(f"{what}: {reason}") from err


def show(unsafe_path: str) -> str:
    """A path fit for an error message."""
    try:
        return securepath.clean(unsafe_path)[:300]
    except InvalidInputError:
        return "(invalid path)"


# -- names, versions, reads ------------------------------------------------------------------
def safe_text(name: str) -> tuple[str, bool]:
    """(text that is valid UTF-8, whether it had to be changed). Names come from the
    filesystem as bytes; undecodable bytes arrive as surrogates."""
    try:
        name.encode("utf-8")
        return name, False
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True


def version_token(st: os.stat_result) -> str:
    """Changes whenever the file's content may have: inode, size, mtime and ctime."""
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"


def read_upto(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        data = os.read(fd, min(left, 1024 * 1024))
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def remove_entry(dir_fd: int, name: str, *, recursive: bool) -> None:
    """Remove ``name`` below ``dir_fd``: a file or a symlink (never its target), or a
    directory (only an empty one unless ``recursive``; a recursive delete works below the
    directory's descriptor and never follows a symlink)."""
    if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        if recursive:
            remove_tree_at(dir_fd, name)  # iterative, never follows a symlink
        else:
            os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    number = _SYS_RENAMEAT2.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "renameat2 unknown here")
    res = libc.call().syscall(number, src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags)
    if res != 0:
        err = libc.errno()
        raise OSError(err, os.strerror(err))


# -- atomic writes below a directory descriptor -----------------------------------------------
class TempFile:
    """A file being written in directory ``dir_fd`` that appears under ``name`` only on
    commit(). O_TMPFILE (no name at all until linked) where the filesystem has it, a hidden
    ``.name.gantry-XXXX`` file otherwise. close() without commit() leaves nothing behind."""

    def __init__(self, dir_fd: int, name: str, mode: int = 0o644) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.temp_name = ""
        try:
            self.fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
            self.temp_name = f".{name[:100]}.gantry-{secrets.token_hex(6)}"
            self.fd = os.open(
                self.temp_name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        self.mode = mode
        self.written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n

    def commit(
        self, uid: int = 0, gid: int = 0, *, replace: bool = True, fsync: bool = True
    ) -> None:
        """fsync, set owner and mode, and put the file in place (atomically replacing an
        existing one when ``replace``; refusing to when not)."""
        os.fchown(self.fd, uid, gid)
        os.fchmod(self.fd, self.mode)
        if fsync:
            os.fsync(self.fd)
        if not self.temp_name:
            self.temp_name = f".{self.name[:100]}.gantry-{secrets.token_hex(6)}"
            os.link(
                securepath.fd_path(self.fd),
                self.temp_name,
                dst_dir_fd=self.dir_fd,
                follow_symlinks=True,
            )
        try:
            if replace:
                os.rename(self.temp_name, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            else:
                renameat2(self.dir_fd, self.temp_name, self.dir_fd, self.name, RENAME_NOREPLACE)
        except BaseException:
            self._unlink()
            raise
        self.temp_name = ""

    def _unlink(self) -> None:
        if self.temp_name:
            try:
                os.unlink(self.temp_name, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            self.temp_name = ""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._unlink()


@dataclass
class WriteTarget:
    dir_fd: int
    name: str
    path: str
    mode: int
    uid: int
    gid: int
    token: str | None

    def recheck(self) -> None:
        """Right before the rename: the file must still be the one the token names."""
        try:
            st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            if self.token is not None:
                raise InvalidStateError(
                    f"{self.path}: deleted while saving", current="deleted"
                ) from None
            return
        if self.token is None or version_token(st) != self.token:
            if self.token is None:
                return  # a new file; commit(replace=False) refuses to clobber
            raise InvalidStateError(
                f"{self.path}: changed while saving; nothing was saved", current="changed"
            )


@contextmanager
def write_target(
    root: securepath.Root,
    unsafe_path: str,
    rel_of: Callable[[int], str | None],
    *,
    token: str | None,
    create: bool,
) -> Iterator[WriteTarget]:
    """Where a write lands: the real file an existing path leads to (symlinks followed
    inside the root), or a new name in an existing directory. ``rel_of(fd)`` tells where an
    opened object sits in the container's tree. ``token`` (from a read) must still match, and
    ``create`` refuses an existing file."""
    try:
        fd = root.open(unsafe_path, os.O_PATH)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            rel = rel_of(fd)
        finally:
            os.close(fd)
        if create:
            raise InvalidInputError(f"{show(unsafe_path)}: already exists")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInputError(f"{show(unsafe_path)}: not a regular file")
        if token is not None and token != version_token(st):
            raise InvalidStateError(
                f"{show(unsafe_path)}: the file changed since it was opened; nothing was "
                "saved (reload it to see the new content)",
                current="changed",
            )
        if rel is None:
            raise InvalidStateError(f"{show(unsafe_path)}: cannot locate it in the container")
        with root.parent(rel) as (pfd, name):
            yield WriteTarget(
                pfd,
                name,
                rel,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                version_token(st),
            )
        return
    if token is not None:
        raise InvalidStateError(
            f"{show(unsafe_path)}: the file was deleted since it was opened; nothing was saved",
            current="deleted",
        )
    with root.parent(unsafe_path) as (pfd, name):
        if not name:
            raise InvalidInputError(f"{show(unsafe_path)}: not a file name")
        try:
            os.stat(name, dir_fd=pfd, follow_symlinks=False)
            raise InvalidInputError(f"{show(unsafe_path)}: a dangling symlink is in the way")
        except FileNotFoundError:
            pass
        where = rel_of(pfd) or "/"
        yield WriteTarget(pfd, name, os.path.join(where, name), 0o644, 0, 0, None)
