"""A fast lane for bulk bytes (file downloads) next to the channel layer.

Why: channels_redis moves every message through Redis about five times (a sorted set, then a
backup queue on receive, then its cleanup), which tops out near 45 MB/s on a small host. A
plain Redis list moves the bytes twice (RPUSH, BLPOP): about 200 MB/s on the same host. The
request, the "fs.begin" event and the final reply still travel over the channel layer; only
the chunks take the lane, and only when both sides can (the web names the lane in the request,
the engine says in "fs.begin" whether it used it). Otherwise chunks go as channel messages.

Items on the list (each at most CHUNK + 1 bytes, under 512 KiB):
  b"D" + data    a chunk, in order
  b"E"           the end
  b"X" + text    the engine failed; text is the error message
The engine keeps at most MAX_QUEUED items waiting (backpressure: it waits while the reader is
behind) and sets an expiry on the key at every push, so an abandoned transfer leaves nothing.

The lane needs the worker's publisher to expose the channel layer and its event loop
(``publisher.layer`` with ``connection(index)`` and ``consistent_hash(key)`` as
channels_redis has them, and ``publisher.loop``); without them ``BulkWriter.open`` returns
None and the caller falls back to channel messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from engine.errors import EngineError, InvalidInputError
from engine.protocol import DATA, END, ERROR, STOP_SUFFIX
from engine.protocol.verbs import LANE_RE

MAX_QUEUED = 64  # items waiting on the list (~28 MiB of 448 KiB chunks)
EXPIRE_SECONDS = 60
STALL_SECONDS = 30.0  # the reader took nothing for this long: give up
log = logging.getLogger("gantry.engine.bulk")


def check_lane(unsafe_lane: object) -> str:
    if not isinstance(unsafe_lane, str) or not LANE_RE.match(unsafe_lane):
        raise InvalidInputError("lane: must be gantry:bulk:<16-64 letters, digits, '-' or '_'>")
    return unsafe_lane


class BulkWriter:
    """Pushes a transfer's items onto the lane's list, from a worker thread."""

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop, key: str) -> None:
        self.layer = layer
        self.loop = loop
        self.key = key
        self.pushes = 0

    @classmethod
    def open(cls, publisher: Any, unsafe_lane: object) -> BulkWriter | None:
        """A writer for the lane, or None when this worker cannot reach it directly."""
        if unsafe_lane is None:
            return None
        key = check_lane(unsafe_lane)
        layer = getattr(publisher, "layer", None)
        loop = getattr(publisher, "loop", None)
        if not (hasattr(layer, "connection") and hasattr(layer, "consistent_hash")) or loop is None:
            return None
        return cls(layer, loop, key)

    async def _push(self, item: bytes) -> None:
        conn = self.layer.connection(self.layer.consistent_hash(self.key))
        deadline = time.monotonic() + STALL_SECONDS
        delay = 0.002
        self.pushes += 1
        check_stop = self.pushes % 16 == 0
        while await conn.llen(self.key) >= MAX_QUEUED or check_stop:
            if await conn.exists(self.key + STOP_SUFFIX):
                await conn.delete(self.key)
                raise EngineError("download: cancelled by the reader")
            if check_stop and await conn.llen(self.key) < MAX_QUEUED:
                break
            if time.monotonic() > deadline:
                await conn.delete(self.key)
                raise EngineError("download: the reader stopped taking data; abandoned")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        await conn.rpush(self.key, item)
        await conn.expire(self.key, EXPIRE_SECONDS)

    def push(self, item: bytes) -> None:
        future = asyncio.run_coroutine_threadsafe(self._push(item), self.loop)
        future.result(timeout=STALL_SECONDS + 10)

    def data(self, chunk: bytes) -> None:
        self.push(DATA + chunk)

    def end(self) -> None:
        self.push(END)

    def fail(self, message: str) -> None:
        try:
            self.push(ERROR + message.encode("utf-8", "replace")[:4000])
        except Exception as err:  # the reader is gone; the reply still carries the error
            log.info("bulk lane %s: could not pass on the failure: %s", self.key, err)
