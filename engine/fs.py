"""The file explorer: operations on a container's merged root filesystem.

Every path a user gives is ``unsafe_*`` and is resolved inside the container's root with
``securepath.Root`` (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS): a container symlink
``/data -> /`` leads to the container's ``/``, never the host's. The operations then act on
descriptors (``dir_fd=`` plus one final name), never on a host path string, so a container that
swaps a directory for a symlink between two steps cannot steer the second one (CVE-2018-15664).

- Only regular files are read or written: FIFOs, devices and sockets are refused without
  blocking (O_NONBLOCK on open, then fstat). The storage is mounted ``nodev`` besides.
- Writes go to a temporary file in the same directory (O_TMPFILE where the kernel has it, a
  hidden named file otherwise), are fsynced and renamed into place: an interrupted write leaves
  the old file whole (security.md C8). A write carries the version token of the content the user
  saw; if the file changed since, nothing is written (InvalidStateError).
- Recursive deletes work below a directory descriptor (``shutil.rmtree(dir_fd=...)``), which
  never follows a symlink: a link to a host directory inside the tree is removed, not entered.
- It works in every state before removal: the storage is mounted for the duration of a call if
  nobody has it mounted (``Containers.open_rootfs``). Nothing from the container is executed.

Limits: text views and edits are capped (``MAX_VIEW``); listings are paged (``MAX_LIMIT``);
/etc/passwd and /etc/group are read up to ``MAX_IDS_FILE``. Names that are not valid UTF-8 are
shown with replacement characters and flagged ``raw`` (they cannot be addressed by name).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import securepath
from engine.containers import ContainerRecord, Containers
from engine.core import Engine
from engine.diff import UPPER, Attribution, LayerView, attribute, change_kind, lookup
from engine.errors import EngineError, InvalidInputError, InvalidStateError, NotFoundError
from engine.store import Store

MAX_VIEW = 256 * 1024  # bytes of a file shown (and editable) in one message
HEX_PREVIEW = 4096  # bytes of a binary file shown as a hex dump
MAX_WRITE = 384 * 1024  # one fs.write (the editor); bigger files go through an upload
MAX_LIMIT = 2000  # entries per listing page
MAX_PAGE_BYTES = 448 * 1024  # and a page's reply stays under 512 KiB whatever the names
DEFAULT_LIMIT = 500
MAX_IDS_FILE = 1024 * 1024
INDEX_TTL = 60.0  # seconds a listing's snapshot serves its next pages
INDEX_CACHE_SIZE = 16
_TYPES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "link",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "s390x": 347}
RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)


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


# -- names and entries ----------------------------------------------------------------------
def safe_text(name: str) -> tuple[str, bool]:
    """(text that is valid UTF-8, whether it had to be changed). Names come from the
    filesystem as bytes; undecodable bytes arrive as surrogates."""
    try:
        name.encode("utf-8")
        return name, False
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True


def file_type(mode: int) -> str:
    return _TYPES.get(stat.S_IFMT(mode), "unknown")


def version_token(st: os.stat_result) -> str:
    """Changes whenever the file's content may have: inode, size, mtime and ctime."""
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"


@dataclass
class Ids:
    """uid -> user name and gid -> group name, from the container's own files."""

    users: dict[int, str]
    groups: dict[int, str]

    def user(self, uid: int) -> str:
        return self.users.get(uid, str(uid))

    def group(self, gid: int) -> str:
        return self.groups.get(gid, str(gid))


def parse_ids(data: bytes) -> dict[int, str]:
    """name:x:id:... lines (passwd and group share the first three fields)."""
    out: dict[int, str] = {}
    for line in data.decode("utf-8", "replace").splitlines()[:20000]:
        parts = line.split(":")
        if len(parts) < 3 or not parts[0] or line.startswith("#"):
            continue
        try:
            num = int(parts[2])
        except ValueError:
            continue
        out.setdefault(num, parts[0][:64])
    return out


def entry_dict(
    name: str, st: os.stat_result, ids: Ids, *, target: str | None, change: str, layer: str
) -> dict[str, Any]:
    text, raw = safe_text(name)
    out: dict[str, Any] = {
        "name": text,
        "type": file_type(st.st_mode),
        "mode": stat.filemode(st.st_mode),
        "perm": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": ids.user(st.st_uid),
        "group": ids.group(st.st_gid),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "change": change,
        "layer": layer,
    }
    if target is not None:
        out["target"] = safe_text(target)[0]
    if raw:
        out["raw"] = True
    return out


def deleted_dict(name: str) -> dict[str, Any]:
    text, raw = safe_text(name)
    out: dict[str, Any] = {"name": text, "type": "deleted", "change": "D", "layer": UPPER}
    if raw:
        out["raw"] = True
    return out


def hexdump(data: bytes) -> list[str]:
    """Lines like ``hexdump -C``; the text column shows printable ASCII only."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hexes:<47}  |{text}|")
    return lines


def looks_binary(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        # a multi-byte character cut by the size cap is still text
        return err.start < len(data) - 4
    return False


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, "renameat2 unknown here")
    res = _libc.syscall(number, src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags)
    if res != 0:
        err = ctypes.get_errno()
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


# -- the service ----------------------------------------------------------------------------
class Files:
    """Explorer operations. ``engine.get(Files)``; every method takes a ContainerRecord."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        self.store = engine.get(Store)
        self._ids_cache: dict[tuple[str, str], tuple[tuple[int, ...], dict[int, str]]] = {}
        self._index_cache: dict[
            tuple[Any, ...], tuple[float, list[tuple[bool, str, bool]], Attribution | None]
        ] = {}
        self._index_lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------------------
    def layers(self, record: ContainerRecord) -> list[tuple[str, Path]]:
        """Upper first, then the image layers top-most first, labelled by index from 0."""
        lowers = self.containers.lower_dirs(record)
        out = [(UPPER, self.containers.paths(record.id).upper)]
        out += [(str(i), p) for i, p in reversed(list(enumerate(lowers)))]
        return out

    def layer_legend(self, record: ContainerRecord) -> list[dict[str, Any]]:
        legend: list[dict[str, Any]] = [
            {"label": UPPER, "chain_id": "", "index": len(record.layers)}
        ]
        for i, chain in reversed(list(enumerate(record.layers))):
            legend.append({"label": str(i), "chain_id": chain, "index": i})
        return legend

    def rel_of(self, record: ContainerRecord, fd: int) -> str | None:
        """Where an opened object sits in the merged tree ("/etc/passwd"), read back from the
        kernel; None if it is not under the merged dir (then no layer can be named)."""
        try:
            real = os.readlink(securepath.fd_path(fd))
        except OSError:
            return None
        merged = os.path.realpath(self.containers.paths(record.id).merged)
        if real == merged:
            return "/"
        if real.startswith(merged + "/"):
            return real[len(merged) :]
        return None

    def ids(self, record: ContainerRecord, root: securepath.Root) -> Ids:
        return Ids(
            self._id_file(record, root, "/etc/passwd"), self._id_file(record, root, "/etc/group")
        )

    def _id_file(self, record: ContainerRecord, root: securepath.Root, path: str) -> dict[int, str]:
        try:
            fd = root.open_regular(path)
        except (OSError, EngineError):
            return {}
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._ids_cache.get((record.id, path))
            if cached and cached[0] == key:
                return cached[1]
            data = os.read(fd, MAX_IDS_FILE)
        except OSError:
            return {}
        finally:
            os.close(fd)
        parsed = parse_ids(data)
        if len(self._ids_cache) > 256:
            self._ids_cache.clear()
        self._ids_cache[(record.id, path)] = (key, parsed)
        return parsed

    # -- listing ------------------------------------------------------------------------------
    def list_dir(
        self,
        record: ContainerRecord,
        unsafe_path: str,
        offset: int = 0,
        limit: int = DEFAULT_LIMIT,
        *,
        deleted: bool = True,
    ) -> dict[str, Any]:
        """One page of a directory, sorted (directories first, then by name), with each entry's
        type, mode, owner names, size, mtime, symlink target, change mark (A/C/D vs the image)
        and source layer. Deleted entries (whiteouts over the image) are listed as type
        "deleted" when ``deleted``. Only the page's entries are stat'ed."""
        limit = max(1, min(limit, MAX_LIMIT))
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            dfd = root.open_dir(unsafe_path)
            try:
                return self._list_fd(record, root, dfd, offset, limit, deleted)
            finally:
                os.close(dfd)

    def _list_fd(
        self,
        record: ContainerRecord,
        root: securepath.Root,
        dfd: int,
        offset: int,
        limit: int,
        deleted: bool,
    ) -> dict[str, Any]:
        rel = self.rel_of(record, dfd)
        items, attribution = self._index(record, dfd, rel, deleted, fresh=offset == 0)
        ids = self.ids(record, root)
        entries = []
        consumed, budget = 0, MAX_PAGE_BYTES
        for _, name, is_deleted in items[offset : offset + limit]:
            if budget <= 0:
                break  # the page is full: the rest comes with next_offset
            consumed += 1
            if is_deleted:
                entries.append(deleted_dict(name))
                budget -= 80 + len(os.fsencode(name))
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
            except FileNotFoundError:
                continue  # removed while we listed
            change, layer = "", ""
            if attribution is not None:
                layer, pos = attribution.source(name)
                if layer == UPPER:
                    change = "C" if attribution.in_lower(name, pos) else "A"
                    if change == "C" and stat.S_ISDIR(st.st_mode):
                        change = self._dir_change(record, rel or "/", name, st)
            entries.append(entry_dict(name, st, ids, target=target, change=change, layer=layer))
            # what the entry costs in the reply: its names' bytes plus ~170 for the rest
            budget -= 170 + len(os.fsencode(name)) + len(os.fsencode(target or ""))
        end = offset + consumed
        return {
            "path": safe_text(rel)[0] if rel is not None else None,
            "entries": entries,
            "total": len(items),
            "offset": offset,
            "limit": limit,
            "next_offset": end if end < len(items) else None,
            "layers": self.layer_legend(record),
        }

    def _index(
        self, record: ContainerRecord, dfd: int, rel: str | None, deleted: bool, *, fresh: bool
    ) -> tuple[list[tuple[bool, str, bool]], Attribution | None]:
        """The directory's sorted names (directories first) with where each comes from. The
        first page always reads the directory; the next pages of the same listing reuse that
        snapshot while the directory is unchanged (same inode, mtime, ctime and link count,
        for at most INDEX_TTL seconds), so paging through 10,000 entries reads them once and
        pages neither skip nor repeat names."""
        st = os.fstat(dfd)
        key = (record.id, rel, deleted, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
               st.st_nlink)  # fmt: skip
        with self._index_lock:
            cached = self._index_cache.get(key)
        if not fresh and cached and time.monotonic() - cached[0] < INDEX_TTL:
            return cached[1], cached[2]
        with os.scandir(dfd) as it:
            items = [(not e.is_dir(follow_symlinks=False), e.name, False) for e in it]
        attribution: Attribution | None = None
        if rel is not None:
            with LayerView(self.layers(record)) as view:
                attribution = attribute(view, rel)
            if deleted:
                items += [(True, name, True) for name in attribution.deleted()]
        items.sort(key=lambda t: (t[0], t[1]))
        with self._index_lock:
            while len(self._index_cache) >= INDEX_CACHE_SIZE:
                self._index_cache.pop(next(iter(self._index_cache)))
            self._index_cache[key] = (time.monotonic(), items, attribution)
        return items, attribution

    def _dir_change(self, record: ContainerRecord, rel: str, name: str, st: os.stat_result) -> str:
        with LayerView(self.layers(record)) as view, view.stack(rel, skip_upper=True) as lowers:
            return change_kind(st, lookup(lowers, name))

    def stat(self, record: ContainerRecord, unsafe_path: str) -> dict[str, Any]:
        """One entry (not following a final symlink), plus where it really is."""
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            with root.parent(unsafe_path) as (pfd, name):
                st = os.stat(name or ".", dir_fd=pfd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else None
                where = self.rel_of(record, pfd)
            out = entry_dict(
                name or "/", st, self.ids(record, root), target=target, change="", layer=""
            )
            if where is not None:
                out["path"] = safe_text(os.path.join(where, name) if name else where)[0]
            out["token"] = version_token(st)
            return out

    # -- reading ------------------------------------------------------------------------------
    def read(
        self, record: ContainerRecord, unsafe_path: str, limit: int = MAX_VIEW
    ) -> dict[str, Any]:
        """A regular file for viewing: text (up to ``limit`` bytes) or, for binary content,
        a hex dump of the first bytes; and the version token an edit must send back."""
        limit = max(0, min(limit, MAX_VIEW))
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            fd = root.open_regular(unsafe_path)
            try:
                st = os.fstat(fd)
                data = _read_upto(fd, limit + 1)
                rel = self.rel_of(record, fd)
            finally:
                os.close(fd)
        truncated = len(data) > limit
        data = data[:limit]
        binary = looks_binary(data)
        out: dict[str, Any] = {
            "path": safe_text(rel)[0] if rel else show(unsafe_path),
            "size": st.st_size,
            "mode": stat.filemode(st.st_mode),
            "token": version_token(st),
            "binary": binary,
            "truncated": truncated,
            "editable": not binary and not truncated,
        }
        if binary:
            out["hex"] = hexdump(data[:HEX_PREVIEW])
        else:
            out["text"] = data.decode("utf-8", "replace")
        return out

    # -- writing ------------------------------------------------------------------------------
    def write(
        self,
        record: ContainerRecord,
        unsafe_path: str,
        data: bytes,
        *,
        token: str | None = None,
        create: bool = False,
    ) -> dict[str, Any]:
        """Replace a regular file's content (temp file + rename; owner and mode kept).
        ``token`` is what read() returned: if the file changed since, InvalidStateError and
        nothing is written. ``create`` makes a new file and refuses an existing one."""
        if len(data) > MAX_WRITE:
            raise InvalidInputError(f"write: at most {MAX_WRITE} bytes at once (use an upload)")
        what = show(unsafe_path)
        with (
            self.containers.open_rootfs(record.id) as root,
            fs_errors(what),
            self.target(record, root, unsafe_path, token=token, create=create) as t,
        ):
            tmp = TempFile(t.dir_fd, t.name, t.mode)
            try:
                tmp.write(data)
                t.recheck()
                tmp.commit(t.uid, t.gid, replace=not create)
            finally:
                tmp.close()
            st = os.stat(t.name, dir_fd=t.dir_fd, follow_symlinks=False)
        return {"path": t.path, "token": version_token(st), "size": st.st_size}

    @contextmanager
    def target(
        self,
        record: ContainerRecord,
        root: securepath.Root,
        unsafe_path: str,
        *,
        token: str | None,
        create: bool,
    ) -> Iterator[WriteTarget]:
        """Where a write lands: the real file an existing path leads to (symlinks followed
        inside the root), or a new name in an existing directory."""
        try:
            fd = root.open(unsafe_path, os.O_PATH)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                st = os.fstat(fd)
                rel = self.rel_of(record, fd)
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
            where = self.rel_of(record, pfd) or "/"
            yield WriteTarget(pfd, name, os.path.join(where, name), 0o644, 0, 0, None)

    # -- small changes ------------------------------------------------------------------------
    def touch(self, record: ContainerRecord, unsafe_path: str) -> dict[str, Any]:
        """Create an empty file, or update the times of an existing one (as touch does)."""
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            try:
                fd = root.open(unsafe_path, os.O_PATH)
            except FileNotFoundError:
                fd = -1
            if fd >= 0:
                try:
                    os.utime(securepath.fd_path(fd))
                finally:
                    os.close(fd)
                return {"path": what, "created": False}
            with root.parent(unsafe_path) as (pfd, name):
                if not name:
                    raise InvalidInputError(f"{what}: not a file name")
                fd = os.open(
                    name,
                    os.O_WRONLY
                    | os.O_CREAT
                    | os.O_EXCL
                    | os.O_NOFOLLOW
                    | os.O_NONBLOCK
                    | os.O_CLOEXEC,
                    0o644,
                    dir_fd=pfd,
                )
                os.close(fd)
        return {"path": what, "created": True}

    def mkdir(
        self, record: ContainerRecord, unsafe_path: str, *, parents: bool = False, mode: int = 0o755
    ) -> dict[str, Any]:
        if mode & ~0o7777:
            raise InvalidInputError("mkdir: mode must be between 0000 and 7777")
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            if parents:
                os.close(root.mkdir_all(unsafe_path, mode))
            else:
                with root.parent(unsafe_path) as (pfd, name):
                    if not name:
                        raise InvalidInputError(f"{what}: already exists")
                    os.mkdir(name, mode, dir_fd=pfd)
        return {"path": what}

    def delete(
        self, record: ContainerRecord, unsafe_path: str, *, recursive: bool = False
    ) -> dict[str, Any]:
        """Remove a file, a symlink (never its target) or a directory (recursive: below the
        directory's descriptor, never following a symlink)."""
        what = show(unsafe_path)
        with (
            self.containers.open_rootfs(record.id) as root,
            fs_errors(what),
            root.parent(unsafe_path) as (pfd, name),
        ):
            if not name:
                raise InvalidInputError(f"{what}: the container's / cannot be deleted")
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(name, dir_fd=pfd)
                else:
                    os.rmdir(name, dir_fd=pfd)
            else:
                os.unlink(name, dir_fd=pfd)
        return {"path": what}

    def rename(self, record: ContainerRecord, unsafe_src: str, unsafe_dst: str) -> dict[str, Any]:
        """Rename inside the container; refuses to replace an existing entry. A directory from
        the image cannot be renamed in place on overlayfs (redirect_dir=off): it is copied and
        the original deleted, as mv does."""
        src_what, dst_what = show(unsafe_src), show(unsafe_dst)
        with (
            self.containers.open_rootfs(record.id) as root,
            fs_errors(f"rename {src_what}"),
            root.parent(unsafe_src) as (sfd, sname),
            root.parent(unsafe_dst) as (dfd, dname),
        ):
            if not sname or not dname:
                raise InvalidInputError("rename: the container's / cannot be renamed")
            try:
                renameat2(sfd, sname, dfd, dname, RENAME_NOREPLACE)
            except OSError as err:
                if err.errno == errno.EEXIST:
                    raise InvalidInputError(f"rename: {dst_what} already exists") from err
                if err.errno != errno.EXDEV:
                    raise
                from engine.transfer import copy_entry

                copy_entry(sfd, sname, dfd, dname)
                if stat.S_ISDIR(os.stat(sname, dir_fd=sfd, follow_symlinks=False).st_mode):
                    shutil.rmtree(sname, dir_fd=sfd)
                else:
                    os.unlink(sname, dir_fd=sfd)
        return {"path": dst_what}

    def chmod(self, record: ContainerRecord, unsafe_path: str, mode: int) -> dict[str, Any]:
        """chmod; a symlink is followed inside the container's root, never out of it."""
        if mode & ~0o7777:
            raise InvalidInputError("chmod: mode must be between 0000 and 7777")
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            fd = root.open(unsafe_path, os.O_PATH)
            try:
                os.chmod(securepath.fd_path(fd), mode)
                st = os.fstat(fd)
            finally:
                os.close(fd)
        return {
            "path": what,
            "mode": stat.filemode(st.st_mode),
            "perm": f"{stat.S_IMODE(st.st_mode):04o}",
        }


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


def _read_upto(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        data = os.read(fd, min(left, 1024 * 1024))
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def read_container_file(
    engine: Engine, record: ContainerRecord, unsafe_path: str, limit: int = MAX_IDS_FILE
) -> bytes:
    """Read a regular file of a container (for example /etc/passwd, to resolve a user), at
    most ``limit`` bytes; a longer file raises InvalidInputError. Mounts the storage for the
    call if needed. Raises NotFoundError when the file does not exist."""
    containers = engine.get(Containers)
    what = show(unsafe_path)
    with containers.open_rootfs(record.id) as root, fs_errors(what):
        fd = root.open_regular(unsafe_path)
        try:
            data = _read_upto(fd, limit + 1)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise InvalidInputError(f"{what}: larger than {limit} bytes")
    return data
