"""Moving bytes in and out of a container: uploads (chunked, for the web), downloads (a file,
or a folder as a tar stream built from descriptors: engine.files.dirtar), and ``cp`` between a
container and the host (podman cp's semantics, for the CLI: engine.files.cptree does the copying).

The container side is always reached through ``securepath.Root`` and then by descriptors with
O_NOFOLLOW, exactly as in engine.files.explorer: a symlink swapped in while a transfer runs is never
followed
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
from typing import Any, BinaryIO

from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError, NotFoundError, PolicyError
from engine.files.cptree import ContainerSide, CopyStats, HostSide, Side, copy_between
from engine.files.dirtar import set_special, tar_stream
from engine.files.explorer import Files
from engine.files.fsio import TempFile, WriteTarget, fs_errors, show, version_token
from engine.files.owners import Ids
from engine.hostfs import securepath
from engine.protocol.verbs import MAX_CHUNK
from engine.storage.containers import ContainerRecord, Containers
from engine.storage.sandbox import bind_roots

CHUNK = 448 * 1024  # bytes per download message (a message stays under 512 KiB)
DEFAULT_MAX_UPLOAD = 2 * 1024 * 1024 * 1024
# The web has a whole file before it begins an upload and sends its chunks back to back: one
# idle for a minute was abandoned (the web server or Redis went away mid-upload).
UPLOAD_IDLE_SECONDS = 60.0
MAX_UPLOADS = 64


def max_upload(engine: Engine) -> int:
    """The upload size limit: engine policy "files.max_upload_bytes", else 2 GiB."""
    value = engine.config.policy.get("files.max_upload_bytes", DEFAULT_MAX_UPLOAD)
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_UPLOAD


def upload_idle(engine: Engine) -> float:
    """Seconds an upload may wait for its next chunk: policy "files.upload_idle_seconds"."""
    value = engine.config.policy.get("files.upload_idle_seconds", UPLOAD_IDLE_SECONDS)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else UPLOAD_IDLE_SECONDS


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
            raise NotFoundError(
                "upload: no such upload (idle too long, or the engine restarted); nothing saved"
            )
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
        """Abort uploads idle for longer than upload_idle(). Returns how many."""
        now = time.monotonic() if now is None else now
        idle = upload_idle(self.engine)
        with self._lock:
            stale = [u for u in self.uploads.values() if now - u.touched > idle]
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
                    yield Download("tar", name + ".tar", None, tar_stream(dfd, name, ids, CHUNK))
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


# -- cp: container <-> host -----------------------------------------------------------------
def _container_side(
    engine: Engine, record: ContainerRecord, root: securepath.Root, *, write: bool
) -> ContainerSide:
    roots = bind_roots(engine.config, record.options)
    return ContainerSide(root, record.options.volumes, roots, write=write)


def cp(
    engine: Engine, record: ContainerRecord, src: str, dst: str, *, into_container: bool
) -> CopyStats:
    """Copy host -> container (``into_container``) or container -> host. Container paths
    resolve inside the container's root, or inside a volume's host directory when they are at
    or under its destination (see cptree.ContainerSide; a read-only volume refuses writes); what
    comes out of a container loses setuid/setgid."""
    containers = engine.get(Containers)
    with containers.open_rootfs(record.id) as root:
        inside = _container_side(engine, record, root, write=into_container)
        host: Side = HostSide()
        what = show(dst if into_container else src)
        try:
            with fs_errors(f"cp {what}"):
                if into_container:
                    return copy_between(host, src, inside, dst, strip_setid=False)
                return copy_between(inside, src, host, dst, strip_setid=True)
        finally:
            inside.close()


def cp_to_tar(engine: Engine, record: ContainerRecord, src: str, out: BinaryIO) -> None:
    """``cp CTR:PATH -``: a tar stream of PATH on ``out`` (podman's semantics): a directory as
    NAME/... (its contents as ./... for a path ending in "/."), a file or a symlink as one
    entry. Paths resolve as in cp(), volumes included; the tar is built from descriptors
    (engine.files.dirtar), never followed out of the root it resolved in."""
    containers = engine.get(Containers)
    files = engine.get(Files)
    with containers.open_rootfs(record.id) as root:
        inside = _container_side(engine, record, root, write=False)
        try:
            with fs_errors(f"cp {show(src)}"), inside.parent(src) as (dir_fd, name):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                ids = files.ids(record, root)
                base = securepath.lexical_parts(src)[-1:] or ["rootfs"]
                top = "." if src == "." or src.endswith("/.") else base[0]
                if stat.S_ISDIR(st.st_mode):
                    dfd = os.open(
                        name,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dir_fd,
                    )
                    try:
                        for data in tar_stream(dfd, top, ids, CHUNK):
                            out.write(data)
                    finally:
                        os.close(dfd)
                else:
                    for data in _entry_tar(dir_fd, name, top, st, ids):
                        out.write(data)
        finally:
            inside.close()
        out.flush()


def _entry_tar(
    dir_fd: int, name: str, arcname: str, st: os.stat_result, ids: Ids
) -> Iterator[bytes]:
    """A tar of one non-directory entry: a regular file (opened O_NOFOLLOW|O_NONBLOCK and
    checked with fstat), a symlink, or a device/FIFO header; anything else is refused."""
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = ids.users.get(st.st_uid, ""), ids.groups.get(st.st_gid, "")
    info.mtime = int(st.st_mtime)
    fd = -1
    try:
        if stat.S_ISREG(st.st_mode):
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
            )
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                raise InvalidInputError(f"{arcname}: changed while it was read")
            info.type, info.size = tarfile.REGTYPE, fst.st_size
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dir_fd)
        elif set_special(info, st):
            pass
        else:
            raise InvalidInputError(f"{arcname}: not a file, directory or symlink")
        total = 0
        head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        total += len(head)
        yield head
        if fd >= 0:
            left = info.size
            while left > 0:
                data = os.read(fd, min(CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data
            if left:  # it shrank: pad to what the header announced
                yield b"\0" * left
            total += info.size
            pad = -info.size % tarfile.BLOCKSIZE
            total += pad
            yield b"\0" * pad
        end = b"\0" * (tarfile.BLOCKSIZE * 2)
        total += len(end)
        yield end + b"\0" * (-total % tarfile.RECORDSIZE)
    finally:
        if fd >= 0:
            os.close(fd)
