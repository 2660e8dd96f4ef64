"""The web's only way to the engine: requests over the channel layer, with a timeout.

    result = await engine_client.call("container.start", {"id": cid}, user=request.user)

Raises the engine's own error classes (engine.errors) rebuilt from the reply, or
EngineOfflineError when no engine answers within the timeout — never hangs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from engine.errors import EngineError, EngineOfflineError, InvalidInputError, from_dict
from engine.protocol import REQUEST_TYPE, default_node, engine_channel


def node_name(node: str | None = None) -> str:
    return node or settings.GANTRY_NODE or default_node()


def _user_id(user: Any) -> str | None:
    if user is None:
        return None
    if getattr(user, "is_authenticated", False):
        return str(user.pk)
    return str(user) if isinstance(user, str | int) else None


async def _send_request(
    layer: Any, node: str, op: str, args: dict[str, Any] | None, user: Any, reply_to: str
) -> str:
    request_id = uuid.uuid4().hex
    message = {
        "type": REQUEST_TYPE,
        "id": request_id,
        "op": op,
        "args": args or {},
        "reply_to": reply_to,
        "user": _user_id(user),
    }
    try:
        await layer.send(engine_channel(node), message)
    except ChannelFull as err:
        raise EngineOfflineError(f"engine on {node} is not taking requests (queue full)") from err
    except (OSError, ConnectionError) as err:
        raise EngineOfflineError(f"channel layer unreachable: {err}") from err
    return request_id


async def call(
    op: str,
    args: dict[str, Any] | None = None,
    *,
    user: Any = None,
    timeout: float | None = None,
    node: str | None = None,
) -> Any:
    """Send one request and wait for its reply."""
    layer = get_channel_layer()
    if layer is None:
        raise EngineOfflineError("no channel layer configured")
    node = node_name(node)
    timeout = settings.GANTRY_RPC_TIMEOUT if timeout is None else timeout
    # The default prefix on purpose: channels_redis serves every process-local channel that
    # shares a prefix from one Redis key; a second prefix waits behind the websocket
    # consumers' receive (about a heartbeat, 1 s, per call).
    reply_to = await layer.new_channel()
    request_id = await _send_request(layer, node, op, args, user, reply_to)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EngineOfflineError(
                f"engine offline: no answer from node {node} within {timeout:g}s"
            )
        try:
            reply = await asyncio.wait_for(layer.receive(reply_to), remaining)
        except TimeoutError:
            continue
        if reply.get("type") == "engine.reply" and reply.get("id") == request_id:
            return _result(reply)


def _result(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise EngineError("engine sent a malformed error")
    raise from_dict(error)


async def stream(
    op: str,
    args: dict[str, Any] | None = None,
    *,
    user: Any = None,
    timeout: float | None = None,
    idle_timeout: float = 30.0,
    node: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Send one request whose handler sends events to ``reply_to`` before its final reply;
    yield each event (not the reply). Raises the reply's error, if any, at the end."""
    layer = get_channel_layer()
    if layer is None:
        raise EngineOfflineError("no channel layer configured")
    node = node_name(node)
    reply_to = await layer.new_channel()  # the default prefix: see call()
    request_id = await _send_request(layer, node, op, args, user, reply_to)
    first = settings.GANTRY_RPC_TIMEOUT if timeout is None else timeout
    wait = first
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(reply_to), wait)
        except TimeoutError as err:
            raise EngineOfflineError(f"engine offline: node {node} stopped answering") from err
        wait = idle_timeout
        if message.get("type") == "engine.reply":
            if message.get("id") == request_id:
                _result(message)
                return
            continue
        yield message


def call_sync(op: str, args: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """call() for synchronous code (management commands, sync views)."""
    return async_to_sync(call)(op, args, **kwargs)


__all__ = ["call", "call_sync", "stream", "EngineError", "EngineOfflineError", "InvalidInputError"]
