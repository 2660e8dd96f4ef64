"""One layer tar entry as the unpacker (engine.layers.unpack) takes it: its name, rooted at the
layer
with ``..`` refused; its metadata (owner, mode, mtime and the xattrs that are let through); the
overlayfs whiteout names; and the primitives that put an entry's bytes and metadata on an inode
the unpacker has just created in its private directory.

xattr policy: ``security.selinux`` and ``system.nfs4_acl`` are dropped, as are names outside
the user/trusted/security/system namespaces or longer than 255 characters;
``trusted.overlay.*`` and ``user.overlay.*`` are escaped to ``*.overlay.overlay.*`` (as umoci
does), so a layer cannot steer the overlay mount. At most 128 xattrs are kept, each value cut
at 64 KiB.

Nothing here resolves a path: every function takes a directory descriptor that securepath
resolved, and a final name.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable

from engine.errors import InvalidImageError
from engine.hostfs import securepath
from engine.layers.tarstream import CHUNK

WH_PREFIX = ".wh."
WH_META_PREFIX = ".wh..wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_DROP_XATTRS = {"security.selinux", "system.nfs4_acl"}
_XATTR_NAMESPACES = ("user.", "trusted.", "security.", "system.")
_MAX_ID = 2**32 - 1
_MAX_NS = 2**62


def clean_parts(unsafe_name: str, what: str) -> list[str]:
    """Components of a tar name, rooted at the layer: '/', '.' and '' vanish, '..' is refused."""
    # (a str of n characters is at most 4n bytes: only long names need encoding to measure)
    if "\x00" in unsafe_name or (
        len(unsafe_name) > securepath.MAX_PATH // 4
        and len(os.fsencode(unsafe_name)) > securepath.MAX_PATH
    ):
        raise InvalidImageError(f"{what}: name is not a valid path")
    parts = unsafe_name.split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        raise InvalidImageError(f"{what}: '..' in a path is not allowed")
    return parts


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """The entry's SCHILY.xattr.* pax records that the policy lets through (module docstring)."""
    out = []
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name in _DROP_XATTRS or not name.startswith(_XATTR_NAMESPACES) or len(name) > 255:
            continue
        for prefix in ("trusted.overlay.", "user.overlay."):
            if name.startswith(prefix):
                name = prefix + "overlay." + name[len(prefix) :]
        out.append((name, value.encode("utf-8", "surrogateescape")[: 64 * 1024]))
    return out[:128]


class Meta:
    """What an entry's inode gets: owner, mode, mtime, xattrs (a plain class: this is made
    for every entry, and frozen dataclasses are slow to build)."""

    __slots__ = ("uid", "gid", "mode", "mtime_ns", "xattrs")

    def __init__(
        self, uid: int, gid: int, mode: int, mtime_ns: int, xattrs: list[tuple[str, bytes]]
    ) -> None:
        self.uid, self.gid, self.mode, self.mtime_ns, self.xattrs = uid, gid, mode, mtime_ns, xattrs


def entry_meta(member: tarfile.TarInfo, what: str) -> Meta:
    """The entry's metadata; ids out of range are refused, odd mtimes clamped or zeroed."""
    uid, gid, mtime = member.uid, member.gid, member.mtime
    if not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID):
        raise InvalidImageError(f"{what}: uid/gid out of range")
    if type(mtime) is int:
        mtime_ns = mtime * 1_000_000_000
    else:
        try:
            mtime_ns = int(float(mtime) * 1_000_000_000)
        except (TypeError, ValueError, OverflowError):
            mtime_ns = 0
    mtime_ns = max(-_MAX_NS, min(mtime_ns, _MAX_NS))
    xattrs = _xattrs(member) if member.pax_headers else []
    return Meta(uid, gid, member.mode & 0o7777, mtime_ns, xattrs)


def is_whiteout(st: os.stat_result) -> bool:
    """A 0/0 character device: overlayfs's form of a whiteout."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# -- putting metadata on an inode --------------------------------------------------------------


def set_xattrs(target: int | str, xattrs: list[tuple[str, bytes]], follow: bool = True) -> None:
    for name, value in xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=follow)
        except OSError as err:
            # user.* is not allowed on symlinks and devices; some fs lack a namespace.
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


def apply_fd(fd: int, meta: Meta) -> None:
    """Ownership before mode (chown clears setuid), xattrs after chown (it clears
    security.capability), times last."""
    os.fchown(fd, meta.uid, meta.gid)
    os.fchmod(fd, meta.mode)
    if meta.xattrs:
        set_xattrs(fd, meta.xattrs)
    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def apply_at(dir_fd: int, name: str, meta: Meta, *, chmod: bool) -> None:
    """apply_fd's order for a node that cannot be opened (a symlink, a device, a FIFO), never
    following it; ``chmod`` is False for a symlink (its mode means nothing). The node was just
    made in the unpacker's private directory: no one can swap it for a link meanwhile."""
    os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
    if chmod:
        os.chmod(securepath.fd_path(dir_fd, name), meta.mode)
    if meta.xattrs:
        set_xattrs(securepath.fd_path(dir_fd, name), meta.xattrs, follow=False)
    os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def write_file(
    dir_fd: int, name: str, meta: Meta, read: Callable[[int], bytes], size: int, what: str
) -> None:
    """Create the regular file ``name`` (O_EXCL, O_NOFOLLOW) with ``size`` bytes from read,
    then its metadata. InvalidImageError when the data ends early."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        # Only reachable when a non-directory appeared at this name meanwhile.
        os.unlink(name, dir_fd=dir_fd)
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        left = size
        while left > 0:
            chunk = read(min(left, CHUNK))
            if not chunk:
                raise InvalidImageError(f"{what}: unexpected end of data")
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            left -= len(chunk)
        apply_fd(fd, meta)
    finally:
        os.close(fd)


def once(data: bytes) -> Callable[[int], bytes]:
    """A read function over bytes already in memory (a small file handed to the pool)."""
    view = [data]

    def read(n: int) -> bytes:
        out = view[0][:n]
        view[0] = view[0][n:]
        return out

    return read
