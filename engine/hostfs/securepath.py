"""The only resolver of untrusted paths: openat2(2) with RESOLVE_IN_ROOT, through ctypes.

Every path that comes from a user, an image layer or a container is ``unsafe_*`` until it has
been resolved here *inside a root directory*. Resolution happens in the kernel, relative to a
directory file descriptor, with every symlink (absolute or relative) and ``..`` scoped to that
root as if it were chroot(2): a container symlink ``/data -> /`` resolves to the container's
``/``, never the host's. Magic links (``/proc/self/root`` and friends) are refused outright.

Callers then act on the returned file descriptor, never on a path string, so a container that
swaps a directory for a symlink between two steps cannot redirect the second step (the TOCTOU
class of CVE-2018-15664). Operations that must not follow the final component (lstat, unlink,
rename, readlink, symlink, mknod) resolve the *parent* with openat2 and then use the final name
with ``dir_fd=``; the final name is never ``..``, ``.`` or empty.

Limits: the kernel must have openat2 (Linux >= 5.6). Bind mounts inside the root are crossed
(RESOLVE_NO_XDEV is not set) because a container's volumes are bind mounts.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from engine.errors import InvalidInputError, NotFoundError
from engine.hostfs import libc

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "armv7l": 437, "ppc64le": 437, "s390x": 437}
MAX_PATH = 4096
_EAGAIN_RETRIES = 128


_OPEN_HOW = struct.Struct("=QQQ")  # struct open_how: flags, mode, resolve


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """openat2(2). Retries EAGAIN (a concurrent rename raced the lookup); raises OSError."""
    number = _SYS_OPENAT2.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"openat2: unknown syscall number on {os.uname().machine}")
    how = _OPEN_HOW.pack(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    syscall = libc.call().syscall
    for _ in range(_EAGAIN_RETRIES):
        fd = syscall(number, dirfd, encoded, how, len(how))
        if fd >= 0:
            return int(fd)
        err = libc.errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, f"{os.strerror(err)}: {path!r}")
    raise OSError(errno.EAGAIN, f"openat2 kept racing: {path!r}")


def check_unsafe(unsafe_path: str) -> str:
    """Refuse what no resolution can make sense of: NUL bytes, absurd lengths, non-strings."""
    if not isinstance(unsafe_path, str):
        raise InvalidInputError("path: must be a string")
    if "\x00" in unsafe_path:
        raise InvalidInputError("path: contains a NUL byte")
    if len(os.fsencode(unsafe_path)) > MAX_PATH:
        raise InvalidInputError(f"path: longer than {MAX_PATH} bytes")
    return unsafe_path


def split(unsafe_path: str) -> tuple[str, str]:
    """Split into (parent, final name). Empty and '.' components go; '..' stays for the kernel
    to resolve (inside the root). A final '..' or nothing at all gives name '' (the directory
    itself)."""
    parts = [p for p in check_unsafe(unsafe_path).split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        return "/" + "/".join(parts), ""
    return "/" + "/".join(parts[:-1]), parts[-1]


def clean(unsafe_path: str) -> str:
    """Lexically clean a path as seen from a root: '/a/./b/../c' -> '/a/c', '/../x' -> '/x'.
    For display and records only; resolution always goes through the kernel."""
    return "/" + "/".join(lexical_parts(check_unsafe(unsafe_path)))


def lexical_parts(unsafe_path: str) -> list[str]:
    """clean()'s components, without its checks: '' and '.' vanish, '..' stops at the root.
    For a path already known to be sane (a symlink's target, read back from the kernel)."""
    out: list[str] = []
    for part in unsafe_path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


class Root:
    """A directory that untrusted paths are resolved inside. Holds an O_PATH descriptor.

    Use as a context manager or call close(). Every method takes an ``unsafe_path`` (absolute
    or relative, both meaning "from this root")."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise NotFoundError(f"root {self.path} does not exist") from err

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, unsafe_path: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
        """Open a path inside the root, following symlinks within it. Returns an fd."""
        check_unsafe(unsafe_path)
        return openat2(self.fd, unsafe_path.lstrip("/") or ".", flags, mode)

    def open_dir(self, unsafe_path: str) -> int:
        return self.open(unsafe_path, os.O_RDONLY | os.O_DIRECTORY)

    @contextmanager
    def parent(self, unsafe_path: str) -> Iterator[tuple[int, str]]:
        """(fd of the resolved parent directory, final name). The name is '' when the path
        names the root or ends in '..' (the fd is then the directory itself)."""
        parent, name = split(unsafe_path)
        fd = self.open(parent, os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def lstat(self, unsafe_path: str) -> os.stat_result:
        """lstat inside the root: the final component is not followed."""
        with self.parent(unsafe_path) as (fd, name):
            if not name:
                return os.stat(fd)
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def exists(self, unsafe_path: str) -> bool:
        try:
            self.lstat(unsafe_path)
            return True
        except FileNotFoundError:
            return False

    def readlink(self, unsafe_path: str) -> str:
        with self.parent(unsafe_path) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def mkdir_all(self, unsafe_path: str, mode: int = 0o755) -> int:
        """Create every missing directory of the path inside the root; return an O_PATH fd of
        the last one. Existing symlinks along the way are followed inside the root."""
        parts = [p for p in check_unsafe(unsafe_path).split("/") if p not in ("", ".")]
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            done = ""
            for part in parts:
                done = f"{done}/{part}"
                try:
                    nfd = self.open(done, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    with self.parent(done) as (pfd, name):
                        try:
                            os.mkdir(name, mode, dir_fd=pfd)
                        except FileExistsError:
                            pass  # raced with another creator; open it below
                    nfd = self.open(done, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def open_regular(self, unsafe_path: str, flags: int = os.O_RDONLY, mode: int = 0) -> int:
        """Open a path that must be a regular file. FIFOs, devices and sockets are refused
        without blocking (O_NONBLOCK at open, checked with fstat, then cleared)."""
        fd = self.open(unsafe_path, flags | os.O_NONBLOCK | os.O_NOCTTY, mode)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInputError(f"{clean(unsafe_path)}: not a regular file")
            os.set_blocking(fd, True)
            return fd
        except BaseException:
            os.close(fd)
            raise


def fd_path(fd: int, name: str = "") -> str:
    """A /proc path for an fd (for syscalls that take no dir_fd, like setxattr on a symlink):
    /proc/self/fd/N is resolved by the kernel to exactly the object the fd holds."""
    base = f"/proc/self/fd/{fd}"
    return f"{base}/{name}" if name else base
