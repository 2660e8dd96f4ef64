"""Moving bytes in and out of a container: uploads (chunked, for the web), downloads (a file,
or a folder as a tar stream built from descriptors), and ``cp`` between a container and the host
(podman cp's semantics, for the CLI).

The container side is always reached through ``securepath.Root`` and then by descriptors with
O_NOFOLLOW, exactly as in engine.fs: a symlink swapped in while a transfer runs is never followed
out of the container. Uploads land in a temporary file next to the target (O_TMPFILE when the
filesystem has it) and are renamed into place on commit only: an aborted or abandoned upload
leaves the old file whole and no temporary file behind. Nothing is decompressed or run with the
container's binaries (a tar is built, never extracted, here).
"""

from __future__ import annotations

import os
import secrets
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import securepath
from engine.containers import ContainerRecord, Containers
from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError, NotFoundError, PolicyError
from engine.fs import Files, Ids, TempFile, WriteTarget, fs_errors, show, version_token

CHUNK = 448 * 1024  # bytes per download message (a message stays under 512 KiB)
MAX_CHUNK = 448 * 1024  # largest upload chunk accepted
DEFAULT_MAX_UPLOAD = 2 * 1024 * 1024 * 1024
UPLOAD_IDLE_SECONDS = 600.0
MAX_UPLOADS = 64
MAX_TAR_DEPTH = 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def max_upload(engine: Engine) -> int:
    """The upload size limit: engine policy "files.max_upload_bytes", else 2 GiB."""
    value = engine.config.policy.get("files.max_upload_bytes", DEFAULT_MAX_UPLOAD)
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_UPLOAD


# -- uploads --------------------------------------------------------------------------------
@dataclass
class Upload:
    id: str
    user: str | None
    container_id: str
    path: str
    size: int
    stack: ExitStack
    tmp: TempFile
    target: WriteTarget
    touched: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Transfers:
    """``engine.get(Transfers)``: upload sessions live in the worker's memory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        self.files = engine.get(Files)
        self.uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()

    def upload_begin(
        self,
        record: ContainerRecord,
        unsafe_path: str,
        size: int,
        *,
        user: str | None,
        overwrite: bool = True,
        mode: int | None = None,
    ) -> dict[str, Any]:
        """Start an upload of ``size`` bytes to a file (an existing regular file is replaced
        on commit when ``overwrite``; its owner and mode are kept)."""
        limit = max_upload(self.engine)
        if size < 0 or size > limit:
            raise PolicyError(
                f"upload {show(unsafe_path)}: {size} bytes is more than the limit ({limit})",
                rule="max-upload",
                field="size",
            )
        self.reap()
        with self._lock:
            if len(self.uploads) >= MAX_UPLOADS:
                raise InvalidStateError("too many uploads at once; try again shortly")
        stack = ExitStack()
        try:
            root = stack.enter_context(self.containers.open_rootfs(record.id))
            with fs_errors(show(unsafe_path)):
                target = stack.enter_context(
                    self.files.target(record, root, unsafe_path, token=None, create=not overwrite)
                )
                tmp = TempFile(
                    target.dir_fd, target.name, mode if mode is not None else target.mode
                )
            stack.callback(tmp.close)
        except BaseException:
            stack.close()
            raise
        upload = Upload(
            secrets.token_hex(16), user, record.id, target.path, size, stack, tmp, target
        )
        with self._lock:
            self.uploads[upload.id] = upload
        return {"upload": upload.id, "path": upload.path, "size": size}

    def _get(self, upload_id: str, user: str | None) -> Upload:
        with self._lock:
            upload = self.uploads.get(upload_id)
        if upload is None or upload.user != user:
            raise NotFoundError("upload: no such upload (it may have expired)")
        return upload

    def upload_chunk(
        self, upload_id: str, offset: int, data: bytes, *, user: str | None
    ) -> dict[str, Any]:
        if len(data) > MAX_CHUNK:
            raise InvalidInputError(f"upload chunk: at most {MAX_CHUNK} bytes")
        upload = self._get(upload_id, user)
        with upload.lock:
            if offset != upload.tmp.written:
                raise InvalidInputError(
                    f"upload chunk: offset {offset}, expected {upload.tmp.written}"
                )
            if upload.tmp.written + len(data) > upload.size:
                self.upload_abort(upload_id, user=user)
                raise InvalidInputError("upload: more data than announced; upload aborted")
            with fs_errors(upload.path):
                try:
                    upload.tmp.write(data)
                except BaseException:
                    self.upload_abort(upload_id, user=user)
                    raise
            upload.touched = time.monotonic()
            return {"written": upload.tmp.written}

    def upload_commit(self, upload_id: str, *, user: str | None) -> dict[str, Any]:
        upload = self._get(upload_id, user)
        with upload.lock:
            try:
                if upload.tmp.written != upload.size:
                    raise InvalidInputError(
                        f"upload: {upload.tmp.written} of {upload.size} bytes received; "
                        "nothing saved"
                    )
                with fs_errors(upload.path):
                    upload.tmp.commit(upload.target.uid, upload.target.gid)
                    st = os.stat(
                        upload.target.name, dir_fd=upload.target.dir_fd, follow_symlinks=False
                    )
            finally:
                self._drop(upload)
        return {"path": upload.path, "size": st.st_size, "token": version_token(st)}

    def upload_abort(self, upload_id: str, *, user: str | None) -> dict[str, Any]:
        upload = self._get(upload_id, user)
        self._drop(upload)
        return {"path": upload.path, "aborted": True}

    def _drop(self, upload: Upload) -> None:
        with self._lock:
            self.uploads.pop(upload.id, None)
        upload.stack.close()

    def reap(self, now: float | None = None) -> int:
        """Abort uploads idle for longer than UPLOAD_IDLE_SECONDS. Returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [u for u in self.uploads.values() if now - u.touched > UPLOAD_IDLE_SECONDS]
        for upload in stale:
            self._drop(upload)
        return len(stale)

    # -- downloads ------------------------------------------------------------------------------
    @contextmanager
    def download(self, record: ContainerRecord, unsafe_path: str) -> Iterator[Download]:
        """A file as it is, or a directory as a tar stream. Symlinks on the way (and a final
        one) are followed inside the container's root only."""
        what = show(unsafe_path)
        with self.containers.open_rootfs(record.id) as root, fs_errors(what):
            fd = root.open(unsafe_path, os.O_PATH)
            try:
                st = os.fstat(fd)
                rel = self.files.rel_of(record, fd) or securepath.clean(unsafe_path)
            finally:
                os.close(fd)
            name = os.path.basename(rel.rstrip("/")) or "rootfs"
            if stat.S_ISDIR(st.st_mode):
                dfd = root.open_dir(unsafe_path)
                try:
                    ids = self.files.ids(record, root)
                    yield Download("tar", name + ".tar", None, tar_stream(dfd, name, ids))
                finally:
                    os.close(dfd)
            elif stat.S_ISREG(st.st_mode):
                ffd = root.open_regular(unsafe_path)
                try:
                    size = os.fstat(ffd).st_size
                    yield Download("file", name, size, file_stream(ffd, size))
                finally:
                    os.close(ffd)
            else:
                raise InvalidInputError(f"{what}: not a regular file or directory")


@dataclass
class Download:
    kind: str  # "file" | "tar"
    name: str
    size: int | None
    chunks: Iterator[bytes]


def file_stream(fd: int, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """The file's bytes, at most ``size`` of them (what was announced), in chunks."""
    left = size
    while left > 0:
        data = os.read(fd, min(chunk, left))
        if not data:
            break
        left -= len(data)
        yield data


# -- tar of a directory, from descriptors ---------------------------------------------------
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


def _tarinfo(arcname: str, st: os.stat_result, ids: Ids) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = ids.users.get(st.st_uid, ""), ids.groups.get(st.st_gid, "")
    info.mtime = int(st.st_mtime)
    return info


def tar_stream(dir_fd: int, top: str, ids: Ids, chunk: int = CHUNK) -> Iterator[bytes]:
    """A POSIX (pax) tar of the tree below ``dir_fd``, named ``top/...``. Directories are
    entered with O_NOFOLLOW, files opened with O_NOFOLLOW|O_NONBLOCK and checked with fstat:
    a symlink swapped in meanwhile is stored as a symlink or skipped, never followed. A file
    that shrinks while it is read is padded, one that grows is cut, so the archive stays valid.
    Sockets are skipped; device nodes and FIFOs are stored as headers (never opened)."""
    buf = _Buffer(chunk)

    def header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    root_fd = os.open(".", _DIR_FLAGS, dir_fd=dir_fd)
    stack: list[tuple[int, str, Iterator[str]]] = []
    try:
        st = os.fstat(root_fd)
        info = _tarinfo(top + "/", st, ids)
        info.type = tarfile.DIRTYPE
        yield from buf.add(header(info))
        stack.append((root_fd, top, iter(sorted(os.listdir(root_fd)))))
        root_fd = -1
        while stack:
            fd, arc, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = f"{arc}/{name}"
            info = _tarinfo(path, st, ids)
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= MAX_TAR_DEPTH:
                    raise InvalidStateError(f"download: deeper than {MAX_TAR_DEPTH} levels")
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # swapped for something else meanwhile
                info.name = path + "/"
                info.type = tarfile.DIRTYPE
                yield from buf.add(header(info))
                stack.append((sub, path, iter(sorted(os.listdir(sub)))))
            elif stat.S_ISREG(st.st_mode):
                yield from _tar_file(buf, fd, name, info, header)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                try:
                    info.linkname = os.readlink(name, dir_fd=fd)
                except OSError:
                    continue
                yield from buf.add(header(info))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                info.type = (
                    tarfile.CHRTYPE
                    if stat.S_ISCHR(st.st_mode)
                    else tarfile.BLKTYPE
                    if stat.S_ISBLK(st.st_mode)
                    else tarfile.FIFOTYPE
                )
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                yield from buf.add(header(info))
        yield from buf.add(b"\0" * (tarfile.BLOCKSIZE * 2))
        pad = -buf.total % tarfile.RECORDSIZE
        yield from buf.add(b"\0" * pad)
        if buf.data:
            yield bytes(buf.data)
    finally:
        if root_fd >= 0:
            os.close(root_fd)
        for fd, _, _ in stack:
            os.close(fd)


def _tar_file(
    buf: _Buffer, dir_fd: int, name: str, info: tarfile.TarInfo, header: Any
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
            data = os.read(fd, min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield from buf.add(data)
        if left:
            yield from buf.add(b"\0" * left)
        yield from buf.add(b"\0" * (-st.st_size % tarfile.BLOCKSIZE))
    finally:
        os.close(fd)


# -- copying between descriptors (cp, and rename across layers) -----------------------------
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
    if depth > MAX_TAR_DEPTH:
        raise InvalidStateError(f"copy: deeper than {MAX_TAR_DEPTH} levels")
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


# -- cp: container <-> host -----------------------------------------------------------------
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


def cp(
    engine: Engine, record: ContainerRecord, src: str, dst: str, *, into_container: bool
) -> CopyStats:
    """Copy host -> container (``into_container``) or container -> host. Container paths
    resolve inside the container's root; what comes out of a container loses setuid/setgid."""
    containers = engine.get(Containers)
    with containers.open_rootfs(record.id) as root:
        inside: Side = ContainerSide(root)
        host: Side = HostSide()
        what = show(dst if into_container else src)
        with fs_errors(f"cp {what}"):
            if into_container:
                return copy_between(host, src, inside, dst, strip_setid=False)
            return copy_between(inside, src, host, dst, strip_setid=True)
