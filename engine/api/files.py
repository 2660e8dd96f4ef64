"""fs.* verbs: the file explorer over a container's merged root (engine/files/explorer.py,
transfer.py).

Every verb takes ``id`` (container id, name or unique prefix) and container paths (``path``)
that are resolved inside the container's root, whatever they contain.

    fs.list          {id, path, offset?, limit?}        -> {path, entries, total, layers}
    fs.stat          {id, path, follow?}                -> entry (+ token); follow: the target
    fs.read          {id, path, limit?}                 -> {text | hex, token, binary, ...}
    fs.write         {id, path, content, token?, create?} -> {token}
    fs.touch|mkdir|delete|rename|chmod
    fs.download      {id, path}   events {"type": "fs.begin", kind, name, size} then
                                  {"type": "fs.chunk", data: bytes} to reply_to; reply {size, ...}
    fs.upload_begin  {id, path, size, overwrite?}       -> {upload}
    fs.upload_chunk  {upload, offset, data: bytes|base64} -> {written}
    fs.upload_commit {upload} / fs.upload_abort {upload}

Streams send one message per chunk (at most CHUNK bytes of data, well under 512 KiB) with
``ctx.publisher.send``, which waits while the requester's channel is full (flow control).
"""

from __future__ import annotations

import logging
import threading
import time

from engine.api.base import Context, op
from engine.api.containers import record_of
from engine.files.bulk import BulkWriter
from engine.files.explorer import Files
from engine.files.transfer import Transfers, upload_idle
from engine.protocol import verbs
from engine.protocol.verbs import Json
from engine.storage import quotas
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord

log = logging.getLogger("gantry.engine.files")
REAP_INTERVAL = 30.0  # at most; half the upload idle time when that is shorter


def with_room(ctx: Context, ref: str, adding: int = 0) -> ContainerRecord:
    """The container, if its owner's disk quota has room for ``adding`` bytes more
    (engine/storage/quotas.py); else PolicyError, before anything is written."""
    record = record_of(ctx, ref)
    config = ctx.engine.config
    quota = quotas.of_container(config, record.options)
    quotas.check_disk(config, ctx.engine.get(Containers), quota, record.options.sandbox, adding)
    return record


@op(verbs.FS_LIST)
def list_(ctx: Context, args: verbs.FsList) -> Json:
    record = record_of(ctx, args.id)
    return ctx.engine.get(Files).list_dir(
        record, args.path, args.offset, args.limit, deleted=args.deleted
    )


@op(verbs.FS_STAT)
def stat_(ctx: Context, args: verbs.FsStat) -> Json:
    return ctx.engine.get(Files).stat(record_of(ctx, args.id), args.path, follow=args.follow)


@op(verbs.FS_READ)
def read(ctx: Context, args: verbs.FsRead) -> Json:
    return ctx.engine.get(Files).read(record_of(ctx, args.id), args.path, args.limit)


@op(verbs.FS_WRITE)
def write(ctx: Context, args: verbs.FsWrite) -> Json:
    content = args.content.encode("utf-8")
    return ctx.engine.get(Files).write(
        with_room(ctx, args.id, len(content)),
        args.path,
        content,
        token=args.token,
        create=args.create,
    )


@op(verbs.FS_TOUCH)
def touch(ctx: Context, args: verbs.At) -> Json:
    return ctx.engine.get(Files).touch(with_room(ctx, args.id), args.path)


@op(verbs.FS_MKDIR)
def mkdir(ctx: Context, args: verbs.FsMkdir) -> Json:
    return ctx.engine.get(Files).mkdir(
        with_room(ctx, args.id), args.path, parents=args.parents, mode=args.mode
    )


@op(verbs.FS_DELETE)
def delete(ctx: Context, args: verbs.FsDelete) -> Json:
    return ctx.engine.get(Files).delete(
        record_of(ctx, args.id), args.path, recursive=args.recursive
    )


@op(verbs.FS_RENAME)
def rename(ctx: Context, args: verbs.FsRename) -> Json:
    return ctx.engine.get(Files).rename(record_of(ctx, args.id), args.path, args.to)


@op(verbs.FS_CHMOD)
def chmod(ctx: Context, args: verbs.FsChmod) -> Json:
    return ctx.engine.get(Files).chmod(record_of(ctx, args.id), args.path, args.mode)


@op(verbs.FS_DOWNLOAD)
def download(ctx: Context, args: verbs.FsDownload) -> verbs.Downloaded:
    """Stream a file (or a directory as tar) to the requester, then reply with totals.
    With ``lane`` (engine/files/bulk.py) the chunks go on that Redis list instead of the channel;
    "fs.begin" says which way they come."""
    record = record_of(ctx, args.id)
    lane = BulkWriter.open(ctx.publisher, args.lane)
    started = time.monotonic()
    total = 0
    with ctx.engine.get(Transfers).download(record, args.path) as dl:
        ctx.publisher.send(
            ctx.reply_to,
            {
                "type": "fs.begin",
                "id": ctx.request_id,
                "kind": dl.kind,
                "name": dl.name,
                "size": dl.size,
                "lane": lane.key if lane else None,
            },
        )
        try:
            for chunk in dl.chunks:
                total += len(chunk)
                if lane:
                    lane.data(chunk)
                else:
                    ctx.publisher.send(
                        ctx.reply_to, {"type": "fs.chunk", "id": ctx.request_id, "data": chunk}
                    )
            if lane:
                lane.end()
        except BaseException as err:
            if lane:
                lane.fail(getattr(err, "message", None) or f"download failed: {err}")
            raise
        kind, name = dl.kind, dl.name
    seconds = time.monotonic() - started
    rate = total / seconds / 1048576 if seconds > 0 else 0.0
    log.info(
        "download %s:%s: %d bytes in %.2fs (%.1f MiB/s, %s)",
        record.name, name, total, seconds, rate, "lane" if lane else "channel",
    )  # fmt: skip
    return {
        "kind": kind,
        "name": name,
        "size": total,
        "seconds": round(seconds, 3),
        "mib_per_s": round(rate, 1),
        "lane": bool(lane),
    }


@op(verbs.FS_UPLOAD_BEGIN)
def upload_begin(ctx: Context, args: verbs.UploadBegin) -> Json:
    return ctx.engine.get(Transfers).upload_begin(
        with_room(ctx, args.id, args.size),
        args.path,
        args.size,
        user=ctx.user,
        overwrite=args.overwrite,
        mode=args.mode,
    )


@op(verbs.FS_UPLOAD_CHUNK)
def upload_chunk(ctx: Context, args: verbs.UploadChunk) -> Json:
    return ctx.engine.get(Transfers).upload_chunk(
        args.upload, args.offset, args.data, user=ctx.user
    )


@op(verbs.FS_UPLOAD_COMMIT)
def upload_commit(ctx: Context, args: verbs.UploadId) -> Json:
    return ctx.engine.get(Transfers).upload_commit(args.upload, user=ctx.user)


@op(verbs.FS_UPLOAD_ABORT)
def upload_abort(ctx: Context, args: verbs.UploadId) -> Json:
    return ctx.engine.get(Transfers).upload_abort(args.upload, user=ctx.user)


def reap_uploads(ctx: Context) -> None:
    """Abandoned uploads (the browser went away) are aborted after a while: their temporary
    files go, the old files stay."""
    transfers = ctx.engine.get(Transfers)
    interval = min(REAP_INTERVAL, max(0.5, upload_idle(ctx.engine) / 2))

    def loop() -> None:
        while not ctx.engine.stopping.wait(interval):
            try:
                transfers.reap()
            except Exception:
                log.exception("reaping uploads failed")

    threading.Thread(target=loop, name="upload-reaper", daemon=True).start()
