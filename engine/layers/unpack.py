"""Layer extraction: a tar stream (gzip, zstd or plain) into one layer directory in overlayfs
form, entry by entry. ``tarfile`` is only the parser; every create goes through a directory
file descriptor that securepath resolved inside the layer root (openat2 RESOLVE_IN_ROOT), so
no entry, symlink or hardlink can reach outside it, and nothing is ever ``extractall``-ed.

Overlayfs form: ``.wh.NAME`` becomes a 0/0 character device NAME; ``.wh..wh..opq`` becomes the
``trusted.overlay.opaque=y`` xattr on its directory. Whiteouts hide lower layers only: an entry
this layer created survives its own layer's whiteout, and a directory this layer re-creates
after whiting it out is made opaque (the case podman 4.3 gets wrong and umoci gets right).

Refused (InvalidImageError, the layer is abandoned): ``..`` in a name or hardlink target, a
non-directory entry for the layer root (a symlink named ``.``: CVE-2021-29136), whiteouts of
``.``/``..``, hardlinks to something this layer does not hold, paths through a non-directory,
more decompressed bytes than the budget (bombs), header records (GNU long names, PAX) over
1 MiB or chained too deep (engine.layers.tarstream refuses them from their header, before tarfile
would read one whole into memory), and trailing garbage after the archive.
Absolute names land root-relative. The xattr policy (engine.layers.tarentry) keeps a layer from
steering the overlay mount.

The parts: engine.layers.tarstream decompresses, hashes and budgets on a thread of its own;
engine.layers.tarentry holds the names, metadata and xattr rules; engine.layers.tree resolves
and creates parents inside the root and knows what this layer made; engine.layers.writepool
creates small files and symlinks on a writer thread when creating inodes turns out slow. This
module walks the entries, in order, and decides what each one does to the tree.

Limits: the result is only meaningful once ``unpack`` returns; on error the directory is in an
undefined state and must be discarded (the store extracts into <root>/tmp for that reason).
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidImageError
from engine.hostfs import securepath
from engine.layers.tarentry import (
    OPAQUE_XATTR,
    WH_META_PREFIX,
    WH_OPAQUE,
    WH_PREFIX,
    apply_at,
    apply_fd,
    clean_parts,
    entry_meta,
    once,
    set_xattrs,
    write_file,
)
from engine.layers.tarstream import FastTarInfo, Feed, HeaderRecordError, Inflater
from engine.layers.tree import LayerTree, os_error
from engine.layers.writepool import ASYNC_MAX, OrderedWrites

DEFAULT_BUDGET = 64 * 1024**3
DEFAULT_MAX_ENTRIES = 2_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class UnpackResult:
    diff_id: str
    tar_size: int  # decompressed bytes
    entries: int
    files: int
    size: int  # bytes of regular-file content
    compression: str


class Unpacker:
    """Extract one tar stream into ``dest`` (an empty directory). Not reusable."""

    def __init__(
        self,
        dest: Path,
        *,
        pool: ThreadPoolExecutor | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        what: str = "unpack",
        adaptive: bool = True,
    ) -> None:
        self.writes = OrderedWrites(pool, adaptive=adaptive)
        self.tree = LayerTree(dest, self.writes)
        self.max_entries = max_entries
        self.what = what
        self.entries = 0
        self.files = 0
        self.size = 0

    def close(self) -> None:
        self.writes.wait_all()
        self.tree.close()

    def unpack(self, feed: Feed) -> None:
        try:
            tar = tarfile.TarFile(
                fileobj=feed,  # type: ignore[arg-type]
                mode="r",
                tarinfo=FastTarInfo,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except HeaderRecordError as err:
            raise InvalidImageError(f"{self.what}: {err}") from None
        except tarfile.ReadError as err:
            if feed.tell() == 0 and feed.eof:
                return  # an empty blob: no entries
            raise InvalidImageError(f"{self.what}: not a tar archive ({err})") from err
        try:
            while True:
                try:
                    member = tar.next()
                except HeaderRecordError as err:
                    raise InvalidImageError(f"{self.what}: {err}") from None
                except tarfile.TarError as err:
                    raise InvalidImageError(f"{self.what}: bad tar archive ({err})") from err
                # Streaming: forget parsed headers so memory stays flat.
                tar.members.clear()  # type: ignore[attr-defined]
                if member is None:
                    break
                self.entries += 1
                if self.entries > self.max_entries:
                    raise InvalidImageError(f"{self.what}: more than {self.max_entries} entries")
                self.writes.raise_errors()
                self._entry(tar, feed, member)
            self.writes.barrier()
            if not feed.drain_zeros():
                raise InvalidImageError(f"{self.what}: data after the end of the tar archive")
            self.tree.apply_dir_times()
        finally:
            self.writes.wait_all()

    # -- entries ----------------------------------------------------------------------------
    def _entry(self, tar: tarfile.TarFile, feed: Feed, member: tarfile.TarInfo) -> None:
        what = f"{self.what}: entry {member.name[:200]!r}"
        parts = clean_parts(member.name, what)
        try:
            if parts and parts[-1].startswith(WH_PREFIX):
                self._whiteout(parts, member, what)
            elif not parts:
                self._root_entry(member, what)
            elif member.isreg():
                self._regular(tar, feed, member, parts, what)
            elif member.isdir():
                self._directory(member, parts, what)
            elif member.issym():
                self._symlink(member, parts, what)
            elif member.islnk():
                self._hardlink(member, parts, what)
            elif member.ischr() or member.isblk() or member.isfifo():
                self._special(member, parts, what)
            else:
                raise InvalidImageError(f"{what}: unsupported tar entry type {member.type!r}")
        except OSError as err:
            raise os_error(what, err) from err

    def _root_entry(self, member: tarfile.TarInfo, what: str) -> None:
        if not member.isdir():
            raise InvalidImageError(f"{what}: only a directory may name the layer root")
        meta = entry_meta(member, what)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.tree.root.fd)
        try:
            apply_fd(fd, meta)
        finally:
            os.close(fd)
        self.tree.dir_time([], meta.mtime_ns)

    def _regular(
        self,
        tar: tarfile.TarFile,
        feed: Feed,
        member: tarfile.TarInfo,
        parts: list[str],
        what: str,
    ) -> None:
        meta = entry_meta(member, what)
        pfd, pkey = self.tree.parent(parts, what)
        name = parts[-1]
        self.tree.make_room(pfd, (*pkey, name), parts, keep_dir=False)
        self.files += 1
        self.size += member.size
        if member.issparse():
            source = tar.extractfile(member)
            assert source is not None
            write_file(pfd, name, meta, source.read, member.size, what)
            return
        feed.seek(member.offset_data)
        if member.size > ASYNC_MAX:
            write_file(pfd, name, meta, feed.read, member.size, what)
        elif self.writes.active:
            data = feed.read(member.size)
            if len(data) != member.size:
                raise InvalidImageError(f"{what}: unexpected end of data")
            self.writes.submit(
                (*pkey, name),
                pfd,
                lambda fd: write_file(fd, name, meta, once(data), len(data), what),
            )
        else:
            started = time.perf_counter()
            write_file(pfd, name, meta, feed.read, member.size, what)
            self.writes.adapt(time.perf_counter() - started)

    def _directory(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = entry_meta(member, what)
        pfd, pkey = self.tree.parent(parts, what)
        name = parts[-1]
        before = self.tree.make_room(pfd, (*pkey, name), parts, keep_dir=True)
        # A directory that replaces this layer's whiteout of the same name hides the lower
        # layers' directory: it is opaque.
        opaque = before == -1
        if before is None or opaque or not stat.S_ISDIR(before):
            os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            set_xattrs(fd, meta.xattrs)
            if opaque:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)
        self.tree.dir_time(parts, meta.mtime_ns)

    def _symlink(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = entry_meta(member, what)
        target = member.linkname
        if not target or "\x00" in target or len(os.fsencode(target)) > securepath.MAX_PATH:
            raise InvalidImageError(f"{what}: bad symlink target")
        pfd, pkey = self.tree.parent(parts, what)
        name = parts[-1]
        self.tree.make_room(pfd, (*pkey, name), parts, keep_dir=False)

        def create(fd: int) -> None:
            os.symlink(target, name, dir_fd=fd)
            apply_at(fd, name, meta, chmod=False)

        self.writes.submit((*pkey, name), pfd, create)

    def _hardlink(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        target_parts = clean_parts(member.linkname, f"{what}: hardlink target")
        if not target_parts:
            raise InvalidImageError(f"{what}: hardlink to the layer root")
        # Resolve the target first (its parent may be this entry's parent: the cache).
        tfd, tkey = self.tree.parent(target_parts, what)
        tname = target_parts[-1]
        self.writes.wait_key((*tkey, tname))
        tfd = os.dup(tfd)
        try:
            try:
                os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError as err:
                raise InvalidImageError(
                    f"{what}: hardlink target {member.linkname[:200]!r} is not in this layer"
                ) from err
            pfd, pkey = self.tree.parent(parts, what)
            name = parts[-1]
            if (tkey, tname) == (pkey, name):
                return  # a link to itself: nothing to do
            self.tree.make_room(pfd, (*pkey, name), parts, keep_dir=False)
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _special(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = entry_meta(member, what)
        pfd, pkey = self.tree.parent(parts, what)
        name = parts[-1]
        self.tree.make_room(pfd, (*pkey, name), parts, keep_dir=False)
        if member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
        apply_at(pfd, name, meta, chmod=True)

    def _whiteout(self, parts: list[str], member: tarfile.TarInfo, what: str) -> None:
        base = parts[-1]
        if base == WH_OPAQUE:
            # Opaque: the parent directory hides the lower layers' content, not its own.
            fd = self.tree.dir_fd(parts[:-1], what)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
            return
        if base.startswith(WH_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk, ...): never materialised
        target = base[len(WH_PREFIX) :]
        if target in ("", ".", ".."):
            raise InvalidImageError(f"{what}: invalid whiteout")
        pfd, pkey = self.tree.parent(parts, what)
        key = (*pkey, target)
        self.writes.wait_key(key)
        st = None
        if key in self.tree.made:
            try:
                st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
        if st is None:
            self.tree.made.add(key)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            return
        if stat.S_ISDIR(st.st_mode):
            # This layer made that directory: keep it, hide the lower one.
            fd = os.open(target, _DIR_FLAGS, dir_fd=pfd)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
        # A non-directory this layer made already hides the lower entry: leave it.


def unpack_stream(
    raw_read: Callable[[int], bytes],
    dest: Path,
    *,
    what: str = "unpack",
    budget: int = DEFAULT_BUDGET,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    pool: ThreadPoolExecutor | None = None,
    adaptive: bool = True,
) -> UnpackResult:
    """Decompress and extract a layer blob read through ``raw_read`` into ``dest``.

    Guarantee: on success every byte of the stream was read (so a verifying raw reader has
    checked its digest), and ``diff_id`` is the sha256 of the decompressed tar. On failure
    ``dest`` holds an undefined partial tree; the caller deletes it."""
    inflater = Inflater(raw_read, budget, what)
    unpacker = Unpacker(dest, pool=pool, max_entries=max_entries, what=what, adaptive=adaptive)
    try:
        unpacker.unpack(Feed(inflater.read))
    finally:
        unpacker.close()
        inflater.close()
    return UnpackResult(
        inflater.diff_id,
        inflater.total,
        unpacker.entries,
        unpacker.files,
        unpacker.size,
        inflater.compression,
    )
