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
- Recursive deletes work below a directory descriptor (``engine.hostfs.rmtree``, iterative), which
  never follows a symlink: a link to a host directory inside the tree is removed, not entered.
- It works in every state before removal: the storage is mounted for the duration of a call if
  nobody has it mounted (``Containers.open_rootfs``). Nothing from the container is executed.

Limits: text views and edits are capped (``MAX_VIEW``); listings are paged (``MAX_LIMIT``);
/etc/passwd and /etc/group are read up to ``MAX_IDS_FILE``. Names that are not valid UTF-8 are
shown with replacement characters and flagged ``raw`` (they cannot be addressed by name).

The pieces live beside it: engine.files.fsio (errors, version tokens, atomic writes below a
directory
descriptor), engine.files.listing (entries, the paging index) and engine.files.owners (uid/gid
names).
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import InvalidInputError
from engine.files import listing
from engine.files.cptree import copy_entry
from engine.files.fsio import (
    RENAME_NOREPLACE,
    TempFile,
    WriteTarget,
    fs_errors,
    read_upto,
    remove_entry,
    renameat2,
    safe_text,
    show,
    version_token,
    write_target,
)
from engine.files.owners import MAX_IDS_FILE, Ids, OwnerNames
from engine.hostfs import securepath
from engine.images.store import Store
from engine.protocol.verbs import DEFAULT_LIMIT, MAX_LIMIT, MAX_VIEW, MAX_WRITE
from engine.storage.containers import Containers
from engine.storage.diff import UPPER
from engine.storage.records import ContainerRecord

HEX_PREVIEW = 4096  # bytes of a binary file shown as a hex dump


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


class Files:
    """Explorer operations. ``engine.get(Files)``; every method takes a ContainerRecord."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        self.store = engine.get(Store)
        self._owners = OwnerNames()
        self._index = listing.DirIndex()

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
        return self._owners.of(record.id, root)

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
                rel = self.rel_of(record, dfd)
                layers = functools.partial(self.layers, record)
                items, attribution = self._index.get(
                    record.id, dfd, rel, deleted, layers, fresh=offset == 0
                )
                ids = self.ids(record, root)
                entries, consumed = listing.page(
                    dfd, items[offset : offset + limit], attribution, ids, rel or "/", layers
                )
            finally:
                os.close(dfd)
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

    def stat(
        self, record: ContainerRecord, unsafe_path: str, *, follow: bool = False
    ) -> dict[str, Any]:
        """One entry (not following a final symlink), plus where it really is. With
        ``follow``, the entry a symlink leads to, resolved inside the container's root (a link
        that leads out of it is resolved against the root, as the container sees it)."""
        what = show(unsafe_path)
        if follow:
            return self._stat_followed(record, unsafe_path, what)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            with root.parent(unsafe_path) as (pfd, name):
                st = os.stat(name or ".", dir_fd=pfd, follow_symlinks=False)
                target = os.readlink(name, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else None
                where = self.rel_of(record, pfd)
            out = listing.entry_dict(
                name or "/", st, self.ids(record, root), target=target, change="", layer=""
            )
            if where is not None:
                out["path"] = safe_text(os.path.join(where, name) if name else where)[0]
            out["token"] = version_token(st)
            return out

    def _stat_followed(
        self, record: ContainerRecord, unsafe_path: str, what: str
    ) -> dict[str, Any]:
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            fd = root.open(unsafe_path, os.O_PATH)
            try:
                st = os.fstat(fd)
                where = self.rel_of(record, fd)
            finally:
                os.close(fd)
            name = os.path.basename(where) if where else ""
            out = listing.entry_dict(
                name or "/", st, self.ids(record, root), target=None, change="", layer=""
            )
        if where is not None:
            out["path"] = safe_text(where)[0]
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
                data = read_upto(fd, limit + 1)
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

    def target(
        self,
        record: ContainerRecord,
        root: securepath.Root,
        unsafe_path: str,
        *,
        token: str | None,
        create: bool,
    ) -> AbstractContextManager[WriteTarget]:
        """Where a write lands (``fsio.write_target``), located in this container's tree."""
        return write_target(
            root, unsafe_path, functools.partial(self.rel_of, record), token=token, create=create
        )

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
            remove_entry(pfd, name, recursive=recursive)
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
                copy_entry(sfd, sname, dfd, dname)
                remove_entry(sfd, sname, recursive=True)
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
            data = read_upto(fd, limit + 1)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise InvalidInputError(f"{what}: larger than {limit} bytes")
    return data
