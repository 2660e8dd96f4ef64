"""The web's end of the engine's bulk lane (engine/files/bulk.py): downloads read their chunks from
a
Redis list instead of channel messages when the channel layer is channels_redis, about five
times faster. The engine tells in "fs.begin" whether it used the lane; if not, the chunks come
as channel messages as usual."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from engine.errors import EngineError, EngineOfflineError
from engine.protocol import DATA, END, ERROR, STOP_SUFFIX


def idle_timeout() -> float:
    """Seconds without a chunk on an empty lane after which the engine is gone (killed,
    restarted): the RPC timeout. While the reader is behind, the lane is never empty."""
    return float(settings.GANTRY_RPC_TIMEOUT)


def _layer() -> Any:
    layer = get_channel_layer()
    if hasattr(layer, "connection") and hasattr(layer, "consistent_hash"):
        return layer
    return None


def new_lane() -> str | None:
    """A fresh lane name to offer the engine, or None when the layer cannot carry one."""
    return f"gantry:bulk:{uuid.uuid4().hex}" if _layer() is not None else None


async def read_lane(key: str) -> AsyncIterator[bytes]:
    """The chunks of a transfer, in order, until the engine's end mark. Raises the engine's
    error if it failed. On any exit the list is deleted and, if the transfer did not finish,
    the engine is told to stop."""
    layer = _layer()
    if layer is None:
        raise EngineOfflineError("download: no bulk lane on this channel layer")
    conn = layer.connection(layer.consistent_hash(key))
    finished = False
    try:
        while True:
            got = await conn.blpop([key], timeout=idle_timeout())
            if got is None:
                raise EngineOfflineError("download: the engine stopped sending")
            item: bytes = got[1]
            kind = item[:1]
            if kind == DATA:
                yield item[1:]
            elif kind == END:
                finished = True
                return
            elif kind == ERROR:
                finished = True
                raise EngineError(item[1:].decode("utf-8", "replace"))
    finally:
        if not finished:
            await conn.set(key + STOP_SUFFIX, b"1", ex=60)
        await conn.delete(key)
