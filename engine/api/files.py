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

import base64
import binascii
import logging
import threading
import time
from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.api.containers import record_of
from engine.errors import InvalidInputError
from engine.files.bulk import BulkWriter
from engine.files.explorer import DEFAULT_LIMIT, MAX_LIMIT, MAX_VIEW, MAX_WRITE, Files
from engine.files.transfer import MAX_CHUNK, Transfers

log = logging.getLogger("gantry.engine.files")
PATH_MAX_LEN = 65536  # longer is refused by securepath with a clear message anyway
REAP_INTERVAL = 60.0


def _path(args: Args, key: str = "path") -> str:
    value: str = args.get_str(key, required=True, max_len=PATH_MAX_LEN)
    return value


def _mode(args: Args) -> int:
    raw = args.raw("mode")
    if isinstance(raw, str):
        try:
            value = int(raw, 8)
        except ValueError as err:
            raise InvalidInputError(f"mode: {raw[:20]!r} is not an octal mode") from err
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise InvalidInputError("mode: required (octal string like '0755' or an integer)")
    if not 0 <= value <= 0o7777:
        raise InvalidInputError("mode: must be between 0000 and 7777")
    return value


@op("fs.list")
def list_(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    offset = args.get_int("offset", default=0, lo=0, hi=10_000_000)
    limit = args.get_int("limit", default=DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    deleted = args.get_bool("deleted", default=True)
    args.done()
    return ctx.engine.get(Files).list_dir(record, path, offset, limit, deleted=deleted)


@op("fs.stat")
def stat_(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    follow = args.get_bool("follow")
    args.done()
    return ctx.engine.get(Files).stat(record, path, follow=follow)


@op("fs.read")
def read(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    limit = args.get_int("limit", default=MAX_VIEW, lo=0, hi=MAX_VIEW)
    args.done()
    return ctx.engine.get(Files).read(record, path, limit)


@op("fs.write")
def write(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    content = args.get_str("content", default="", max_len=MAX_WRITE)
    token = args.get_str("token", max_len=200)
    create = args.get_bool("create")
    args.done()
    return ctx.engine.get(Files).write(
        record, path, content.encode("utf-8"), token=token, create=create
    )


@op("fs.touch")
def touch(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    args.done()
    return ctx.engine.get(Files).touch(record, path)


@op("fs.mkdir")
def mkdir(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    parents = args.get_bool("parents")
    mode = _mode(args) if args.raw("mode") is not None else 0o755
    args.done()
    return ctx.engine.get(Files).mkdir(record, path, parents=parents, mode=mode)


@op("fs.delete")
def delete(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    recursive = args.get_bool("recursive")
    args.done()
    return ctx.engine.get(Files).delete(record, path, recursive=recursive)


@op("fs.rename")
def rename(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    src = _path(args, "path")
    dst = _path(args, "to")
    args.done()
    return ctx.engine.get(Files).rename(record, src, dst)


@op("fs.chmod")
def chmod(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    mode = _mode(args)
    args.done()
    return ctx.engine.get(Files).chmod(record, path, mode)


@op("fs.download")
def download(ctx: Context, args: Args) -> dict[str, Any]:
    """Stream a file (or a directory as tar) to the requester, then reply with totals.
    With ``lane`` (engine/files/bulk.py) the chunks go on that Redis list instead of the channel;
    "fs.begin" says which way they come."""
    record = record_of(ctx, args)
    path = _path(args)
    lane = BulkWriter.open(ctx.publisher, args.raw("lane"))
    args.done()
    started = time.monotonic()
    total = 0
    with ctx.engine.get(Transfers).download(record, path) as dl:
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


@op("fs.upload_begin")
def upload_begin(ctx: Context, args: Args) -> dict[str, Any]:
    record = record_of(ctx, args)
    path = _path(args)
    size = args.get_int("size", required=True, lo=0, hi=1 << 50)
    overwrite = args.get_bool("overwrite", default=True)
    mode = _mode(args) if args.raw("mode") is not None else None
    args.done()
    return ctx.engine.get(Transfers).upload_begin(
        record, path, size, user=ctx.user, overwrite=overwrite, mode=mode
    )


def _data(args: Args) -> bytes:
    raw = args.raw("data")
    if isinstance(raw, bytes | bytearray):
        data = bytes(raw)
    elif isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as err:
            raise InvalidInputError("data: not base64") from err
    else:
        raise InvalidInputError("data: required (bytes or base64)")
    if len(data) > MAX_CHUNK:
        raise InvalidInputError(f"data: at most {MAX_CHUNK} bytes per chunk")
    return data


@op("fs.upload_chunk")
def upload_chunk(ctx: Context, args: Args) -> dict[str, Any]:
    upload = args.get_str("upload", required=True, max_len=64)
    offset = args.get_int("offset", required=True, lo=0, hi=1 << 50)
    data = _data(args)
    args.done()
    return ctx.engine.get(Transfers).upload_chunk(upload, offset, data, user=ctx.user)


@op("fs.upload_commit")
def upload_commit(ctx: Context, args: Args) -> dict[str, Any]:
    upload = args.get_str("upload", required=True, max_len=64)
    args.done()
    return ctx.engine.get(Transfers).upload_commit(upload, user=ctx.user)


@op("fs.upload_abort")
def upload_abort(ctx: Context, args: Args) -> dict[str, Any]:
    upload = args.get_str("upload", required=True, max_len=64)
    args.done()
    return ctx.engine.get(Transfers).upload_abort(upload, user=ctx.user)


def reap_uploads(ctx: Context) -> None:
    """Abandoned uploads (the browser went away) are aborted after a while: their temporary
    files go, the old files stay."""
    transfers = ctx.engine.get(Transfers)

    def loop() -> None:
        while not ctx.engine.stopping.wait(REAP_INTERVAL):
            try:
                transfers.reap()
            except Exception:
                log.exception("reaping uploads failed")

    threading.Thread(target=loop, name="upload-reaper", daemon=True).start()
