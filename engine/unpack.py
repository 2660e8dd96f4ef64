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
more decompressed bytes than the budget (bombs), and trailing garbage after the archive.
Absolute names land root-relative. xattrs ``security.selinux`` and ``system.nfs4_acl`` are
dropped and ``trusted.overlay.*``/``user.overlay.*`` are escaped (as umoci does), so a layer
cannot steer the overlay mount.

Speed: the decompressing, hashing and budgeting happen on a thread of their own
(engine.tarstream). When creating inodes turns out slow (it is measured: a busy journal, an
allocator walking freed inodes), small files and symlinks go to a pool of writer threads in
batches while this thread parses on, since that kernel work scales over CPUs; when it is fast,
Python is the bottleneck and the pool stays off. Ordering is kept by (parent inode, name) keys:
an entry waits for a pending write at its own key (or its hardlink target's), removals and
unresolvable parents wait for everything, and directories are created here, in order.

Limits: the result is only meaningful once ``unpack`` returns; on error the directory is in an
undefined state and must be discarded (the store extracts into <root>/tmp for that reason).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine import securepath
from engine.errors import EngineError, InvalidImageError
from engine.tarstream import CHUNK, FastTarInfo, Feed, Inflater

WH_PREFIX = ".wh."
WH_META_PREFIX = ".wh..wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
ASYNC_MAX = 256 * 1024  # files up to this size are written by the pool
BATCH = 16  # entries per pool task
ADAPT_WINDOW = 64  # files timed before deciding whether the pool should take over
SLOW_CREATE = 0.0003  # seconds per small file above which the pool takes over
IN_FLIGHT = 8  # pool tasks pending per layer (memory: IN_FLIGHT * BATCH * ASYNC_MAX at most)
DEFAULT_BUDGET = 64 * 1024**3
DEFAULT_MAX_ENTRIES = 2_000_000
_DROP_XATTRS = {"security.selinux", "system.nfs4_acl"}
_XATTR_NAMESPACES = ("user.", "trusted.", "security.", "system.")
Key = tuple[int, int, str]  # (st_dev, st_ino) of the parent directory, name


@dataclass
class UnpackResult:
    diff_id: str
    tar_size: int  # decompressed bytes
    entries: int
    files: int
    size: int  # bytes of regular-file content
    compression: str


# -- names ---------------------------------------------------------------------------------------


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


class _Meta:
    """What an entry's inode gets: owner, mode, mtime, xattrs (a plain class: this is made
    for every entry, and frozen dataclasses are slow to build)."""

    __slots__ = ("uid", "gid", "mode", "mtime_ns", "xattrs")

    def __init__(
        self, uid: int, gid: int, mode: int, mtime_ns: int, xattrs: list[tuple[str, bytes]]
    ) -> None:
        self.uid, self.gid, self.mode, self.mtime_ns, self.xattrs = uid, gid, mode, mtime_ns, xattrs


_MAX_ID = 2**32 - 1
_MAX_NS = 2**62


def _meta(member: tarfile.TarInfo, what: str) -> _Meta:
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
    return _Meta(uid, gid, member.mode & 0o7777, mtime_ns, xattrs)


def _set_xattrs(target: int | str, xattrs: list[tuple[str, bytes]], follow: bool = True) -> None:
    for name, value in xattrs:
        try:
            os.setxattr(target, name, value, follow_symlinks=follow)
        except OSError as err:
            # user.* is not allowed on symlinks and devices; some fs lack a namespace.
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


def _apply_fd(fd: int, meta: _Meta) -> None:
    """Ownership before mode (chown clears setuid), xattrs after chown (it clears
    security.capability), times last."""
    os.fchown(fd, meta.uid, meta.gid)
    os.fchmod(fd, meta.mode)
    if meta.xattrs:
        _set_xattrs(fd, meta.xattrs)
    os.utime(fd, ns=(meta.mtime_ns, meta.mtime_ns))


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# -- the unpacker --------------------------------------------------------------------------------


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
        self.root = securepath.Root(dest)
        self._pool = pool
        # With adaptive, the pool is only used once _adapt() finds creating files slow.
        self.pool: ThreadPoolExecutor | None = None if adaptive else pool
        self._window_n = 0
        self._window_s = 0.0
        self.max_entries = max_entries
        self.what = what
        self.entries = 0
        self.files = 0
        self.size = 0
        self._pending: dict[Key, Future[None]] = {}
        self._batch: list[tuple[Callable[[int], None], int]] = []
        self._batch_keys: set[Key] = set()
        # Every (parent, name) this layer created: the directory started empty, so a name
        # not in here does not exist, and a new file can go to the pool without an lstat.
        self._made: set[Key] = set()
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._errors: list[BaseException] = []
        self._dir_times: list[tuple[list[str], int]] = []
        self._cache: tuple[str, int, tuple[int, int]] | None = None

    def close(self) -> None:
        self._wait_all()
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None
        self.root.close()

    # -- ordering ---------------------------------------------------------------------------
    # Only the parser thread touches _pending and _batch; pool tasks only run their batch.
    def _wait_key(self, key: Key) -> None:
        if key in self._batch_keys:
            self._flush()
        fut = self._pending.get(key)
        if fut is not None:
            fut.exception()
            self._raise_errors()

    def _wait_all(self) -> None:
        self._flush()
        for fut in list(self._pending.values()):
            fut.exception()
        self._pending.clear()

    def _barrier(self) -> None:
        self._wait_all()
        self._raise_errors()

    def _raise_errors(self) -> None:
        if self._errors:
            raise self._errors[0]

    def _submit(self, key: Key, pfd: int, fn: Callable[[int], None]) -> None:
        """Run fn(dup of pfd) on the pool (in batches, to keep the per-file overhead low),
        in order with any later entry at the same key (it waits for this one)."""
        if self.pool is None:
            fn(pfd)
            return
        self._batch.append((fn, os.dup(pfd)))
        self._batch_keys.add(key)
        if len(self._batch) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch or self.pool is None:
            return
        items, keys = self._batch, self._batch_keys
        self._batch, self._batch_keys = [], set()
        self._slots.acquire()

        def task() -> None:
            try:
                for fn, fd in items:
                    try:
                        fn(fd)
                    except BaseException as err:
                        self._errors.append(err)
                    finally:
                        os.close(fd)
            finally:
                self._slots.release()

        fut = self.pool.submit(task)
        if len(self._pending) > 4096:
            self._pending = {k: f for k, f in self._pending.items() if not f.done()}
        for key in keys:
            self._pending[key] = fut

    # -- resolution -------------------------------------------------------------------------
    def _parent(self, parts: list[str], what: str) -> tuple[int, tuple[int, int]]:
        """(O_PATH fd of the entry's parent, its (dev, ino)), creating missing directories.
        The fd belongs to the cache; callers must not close it."""
        path = "/".join(parts[:-1])
        if self._cache is not None and self._cache[0] == path:
            return self._cache[1], self._cache[2]
        flags = os.O_PATH | os.O_DIRECTORY
        try:
            fd = securepath.openat2(self.root.fd, path or ".", flags)
        except FileNotFoundError:
            self._barrier()  # a symlink on the way may still be in the pool
            try:
                fd = securepath.openat2(self.root.fd, path or ".", flags)
            except FileNotFoundError:
                fd = self._mkdir_all(parts[:-1], what)
        except NotADirectoryError as err:
            raise InvalidImageError(f"{what}: a parent is not a directory") from err
        except OSError as err:
            raise self._os_error(what, err) from err
        st = os.fstat(fd)
        if self._cache is not None:
            os.close(self._cache[1])
        self._cache = (path, fd, (st.st_dev, st.st_ino))
        return fd, self._cache[2]

    def _forget_cache(self, parts: list[str]) -> None:
        """An entry at parts replaced something: a cached parent at or below it is stale."""
        if self._cache is None:
            return
        path = "/".join(parts)
        cached = self._cache[0]
        if cached == path or cached.startswith(path + "/"):
            os.close(self._cache[1])
            self._cache = None

    def _mkdir_all(self, parts: list[str], what: str, depth: int = 0) -> int:
        """mkdir -p inside the root; a dangling symlink on the way gets its target created
        (inside the root), as writing through ``localetc -> /etc`` lands in the root's /etc."""
        if depth > 40:
            raise InvalidImageError(f"{what}: too many levels of symbolic links")
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root.fd)
        try:
            for i, part in enumerate(parts):
                sub = "/".join(parts[: i + 1])
                try:
                    nfd = securepath.openat2(self.root.fd, sub, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        self._made.add((*self._ino(fd), part))
                        created = True
                    except FileExistsError:
                        created = False
                        os.close(self._mkdir_all(self._link_target(fd, part), what, depth + 1))
                    nfd = securepath.openat2(self.root.fd, sub, os.O_PATH | os.O_DIRECTORY)
                    if created:
                        os.chmod(securepath.fd_path(nfd), 0o755)  # noqa: S103 (a rootfs dir)
                os.close(fd)
                fd = nfd
            return fd
        except NotADirectoryError as err:
            os.close(fd)
            raise InvalidImageError(f"{what}: a parent is not a directory") from err
        except BaseException:
            os.close(fd)
            raise

    def _link_target(self, dir_fd: int, name: str) -> list[str]:
        """The in-root path a (dangling) symlink points at, as components ('..' stops at
        the root, as the kernel's RESOLVE_IN_ROOT does)."""
        target = os.readlink(name, dir_fd=dir_fd)
        base: list[str] = []
        if not target.startswith("/"):
            here = os.readlink(securepath.fd_path(dir_fd))
            root = os.readlink(securepath.fd_path(self.root.fd))
            rel = os.path.relpath(here, root)
            base = [] if rel == "." else rel.split("/")
        out = list(base)
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            out.append(part)
        return out

    @staticmethod
    def _ino(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def _os_error(self, what: str, err: OSError) -> EngineError:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return EngineError(f"{what}: no space left on the device")
        return InvalidImageError(f"{what}: {err.strerror or err}")

    def _make_room(self, pfd: int, key: Key, parts: list[str], *, keep_dir: bool) -> int | None:
        """Clear the way for a new entry at key: returns the st_mode that was there (-1 for a
        whiteout, None if nothing). A directory stays when keep_dir (tar merges them)."""
        self._wait_key(key)
        if key not in self._made:
            self._made.add(key)
            return None
        name = key[2]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return st.st_mode
            self._barrier()  # pending writes below it must land before it goes
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        self._forget_cache(parts)
        return st.st_mode if not _is_whiteout(st) else -1

    # -- entries ----------------------------------------------------------------------------
    def unpack(self, feed: Feed) -> None:
        try:
            tar = tarfile.TarFile(
                fileobj=feed,  # type: ignore[arg-type]
                mode="r",
                tarinfo=FastTarInfo,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.ReadError as err:
            if feed.tell() == 0 and feed.eof:
                return  # an empty blob: no entries
            raise InvalidImageError(f"{self.what}: not a tar archive ({err})") from err
        try:
            while True:
                try:
                    member = tar.next()
                except tarfile.TarError as err:
                    raise InvalidImageError(f"{self.what}: bad tar archive ({err})") from err
                # Streaming: forget parsed headers so memory stays flat.
                tar.members.clear()  # type: ignore[attr-defined]
                if member is None:
                    break
                self.entries += 1
                if self.entries > self.max_entries:
                    raise InvalidImageError(f"{self.what}: more than {self.max_entries} entries")
                self._raise_errors()
                self._entry(tar, feed, member)
            self._barrier()
            if not feed.drain_zeros():
                raise InvalidImageError(f"{self.what}: data after the end of the tar archive")
            self._apply_dir_times()
        finally:
            self._wait_all()

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
            raise self._os_error(what, err) from err

    def _root_entry(self, member: tarfile.TarInfo, what: str) -> None:
        if not member.isdir():
            raise InvalidImageError(f"{what}: only a directory may name the layer root")
        meta = _meta(member, what)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root.fd)
        try:
            _apply_fd(fd, meta)
        finally:
            os.close(fd)
        self._dir_times.append(([], meta.mtime_ns))

    def _regular(
        self,
        tar: tarfile.TarFile,
        feed: Feed,
        member: tarfile.TarInfo,
        parts: list[str],
        what: str,
    ) -> None:
        meta = _meta(member, what)
        pfd, pkey = self._parent(parts, what)
        name = parts[-1]
        self._make_room(pfd, (*pkey, name), parts, keep_dir=False)
        self.files += 1
        self.size += member.size
        if member.issparse():
            source = tar.extractfile(member)
            assert source is not None
            self._write_file(pfd, name, meta, source.read, member.size, what)
            return
        feed.seek(member.offset_data)
        if member.size > ASYNC_MAX:
            self._write_file(pfd, name, meta, feed.read, member.size, what)
        elif self.pool is not None:
            data = feed.read(member.size)
            if len(data) != member.size:
                raise InvalidImageError(f"{what}: unexpected end of data")
            self._submit(
                (*pkey, name),
                pfd,
                lambda fd: self._write_file(fd, name, meta, _once(data), len(data), what),
            )
        else:
            started = time.perf_counter()
            self._write_file(pfd, name, meta, feed.read, member.size, what)
            self._adapt(time.perf_counter() - started)

    def _adapt(self, seconds: float) -> None:
        """Serial until creating files turns out slow: then the writer pool takes them. When
        the kernel is quick (a fresh fs, tmpfs), Python is the bottleneck and threads only add
        GIL traffic; when inode creation is slow (a busy journal, freed space being reused),
        creating files from several threads at once wins by far."""
        self._window_n += 1
        self._window_s += seconds
        if self._window_n >= ADAPT_WINDOW:
            if self._window_s / self._window_n > SLOW_CREATE and self._pool is not None:
                self.pool = self._pool
            self._window_n, self._window_s = 0, 0.0

    @staticmethod
    def _write_file(
        pfd: int, name: str, meta: _Meta, read: Callable[[int], bytes], size: int, what: str
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            # Only reachable when a non-directory appeared at this name meanwhile.
            os.unlink(name, dir_fd=pfd)
            fd = os.open(name, flags, 0o600, dir_fd=pfd)
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
            _apply_fd(fd, meta)
        finally:
            os.close(fd)

    def _directory(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = _meta(member, what)
        pfd, pkey = self._parent(parts, what)
        name = parts[-1]
        before = self._make_room(pfd, (*pkey, name), parts, keep_dir=True)
        # A directory that replaces this layer's whiteout of the same name hides the lower
        # layers' directory: it is opaque.
        opaque = before == -1
        if before is None or opaque or not stat.S_ISDIR(before):
            os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            os.fchown(fd, meta.uid, meta.gid)
            os.fchmod(fd, meta.mode)
            _set_xattrs(fd, meta.xattrs)
            if opaque:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)
        self._dir_times.append((parts, meta.mtime_ns))

    def _symlink(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = _meta(member, what)
        target = member.linkname
        if not target or "\x00" in target or len(os.fsencode(target)) > securepath.MAX_PATH:
            raise InvalidImageError(f"{what}: bad symlink target")
        pfd, pkey = self._parent(parts, what)
        name = parts[-1]
        self._make_room(pfd, (*pkey, name), parts, keep_dir=False)

        def create(fd: int) -> None:
            os.symlink(target, name, dir_fd=fd)
            os.chown(name, meta.uid, meta.gid, dir_fd=fd, follow_symlinks=False)
            if meta.xattrs:
                _set_xattrs(securepath.fd_path(fd, name), meta.xattrs, follow=False)
            os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=fd, follow_symlinks=False)

        self._submit((*pkey, name), pfd, create)

    def _hardlink(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        target_parts = clean_parts(member.linkname, f"{what}: hardlink target")
        if not target_parts:
            raise InvalidImageError(f"{what}: hardlink to the layer root")
        # Resolve the target first (its parent may be this entry's parent: the cache).
        tfd, tkey = self._parent(target_parts, what)
        tname = target_parts[-1]
        self._wait_key((*tkey, tname))
        tfd = os.dup(tfd)
        try:
            try:
                os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError as err:
                raise InvalidImageError(
                    f"{what}: hardlink target {member.linkname[:200]!r} is not in this layer"
                ) from err
            pfd, pkey = self._parent(parts, what)
            name = parts[-1]
            if (tkey, tname) == (pkey, name):
                return  # a link to itself: nothing to do
            self._make_room(pfd, (*pkey, name), parts, keep_dir=False)
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _special(self, member: tarfile.TarInfo, parts: list[str], what: str) -> None:
        meta = _meta(member, what)
        pfd, pkey = self._parent(parts, what)
        name = parts[-1]
        self._make_room(pfd, (*pkey, name), parts, keep_dir=False)
        if member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
        # The node was just made in our private directory: no one can swap it for a link.
        os.chown(name, meta.uid, meta.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(securepath.fd_path(pfd, name), meta.mode)
        if meta.xattrs:
            _set_xattrs(securepath.fd_path(pfd, name), meta.xattrs, follow=False)
        os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _whiteout(self, parts: list[str], member: tarfile.TarInfo, what: str) -> None:
        base = parts[-1]
        if base == WH_OPAQUE:
            # Opaque: the parent directory hides the lower layers' content, not its own.
            fd = self._dir_fd(parts[:-1], what)
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
        pfd, pkey = self._parent(parts, what)
        key = (*pkey, target)
        self._wait_key(key)
        st = None
        if key in self._made:
            try:
                st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass
        if st is None:
            self._made.add(key)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            return
        if stat.S_ISDIR(st.st_mode):
            # This layer made that directory: keep it, hide the lower one.
            fd = os.open(
                target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd
            )
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)
        # A non-directory this layer made already hides the lower entry: leave it.

    def _dir_fd(self, parts: list[str], what: str) -> int:
        """An O_RDONLY fd of a directory (created if missing), resolved in the root."""
        if parts:
            pfd, _ = self._parent([*parts, "x"], what)
        else:
            pfd = self.root.fd
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)

    def _apply_dir_times(self) -> None:
        """Directory mtimes last: creating children changed them."""
        for parts, mtime_ns in self._dir_times:
            try:
                with self.root.parent("/".join(parts)) as (fd, name):
                    if name:
                        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)
                    else:
                        os.utime(securepath.fd_path(fd), ns=(mtime_ns, mtime_ns))
            except FileNotFoundError:
                continue  # replaced later in the same layer


def _once(data: bytes) -> Callable[[int], bytes]:
    view = [data]

    def read(n: int) -> bytes:
        out = view[0][:n]
        view[0] = view[0][n:]
        return out

    return read


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
