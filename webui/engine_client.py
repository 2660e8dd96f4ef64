"""The web's only way to the engine: typed requests over the channel layer, with a timeout.

    summary = await engine_client.request(verbs.CONTAINER_START, verbs.Id(id=cid), user=user)

A verb (engine.protocol.verbs) fixes the argument dataclass and the reply type; the engine
checks the arguments again on its side. Raises the engine's own error classes (engine.errors)
rebuilt from the reply, or EngineOfflineError when no engine answers within the timeout —
never hangs. ``call`` takes a verb's name and raw arguments: for tests and tools that must
send what no typed caller can.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from engine.errors import EngineError, EngineOfflineError, InvalidInputError, from_dict
from engine.protocol import (
    REPLY_TYPE,
    REQUEST_TYPE,
    USER_NAME_RE,
    WORKING_INTERVAL,
    WORKING_TYPE,
    default_node,
    engine_channel,
)
from engine.protocol.check import Verb, encode

A = TypeVar("A")
R = TypeVar("R")


def node_name(node: str | None = None) -> str:
    return node or settings.GANTRY_NODE or default_node()


def _user_id(user: Any) -> str | None:
    if user is None:
        return None
    if getattr(user, "is_authenticated", False):
        return str(user.pk)
    return str(user) if isinstance(user, str | int) else None


async def _who(user: Any) -> dict[str, Any]:
    """Who asks, as the engine is told: id, role and name (a learner's sandbox is named by
    it); nothing for a request made for no user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {"user": _user_id(user)}
    role = getattr(user, "_gantry_role", None)
    if role is None:
        from asgiref.sync import sync_to_async

        from webui.users import role_of

        role = await sync_to_async(role_of)(user)
        user._gantry_role = role  # once per request: the user object lives as long
    name = user.get_username()
    return {
        "user": _user_id(user),
        "role": role,
        "name": name if USER_NAME_RE.match(name) else None,
    }


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
        **await _who(user),
    }
    try:
        await layer.send(engine_channel(node), message)
    except ChannelFull as err:
        raise EngineOfflineError(f"engine on {node} is not taking requests (queue full)") from err
    except (OSError, ConnectionError, RedisConnectionError) as err:
        raise EngineOfflineError(f"channel layer unreachable: {err}") from err
    except RedisError as err:  # up, but refusing writes: "OOM command not allowed" when full
        raise EngineOfflineError(f"channel layer refused the request: {err}") from err
    return request_id


async def _open(
    op: str, args: dict[str, Any] | None, user: Any, node: str | None, timeout: float
) -> tuple[Any, str, str, str]:
    """Send a request to the engine of ``node``: (channel layer, node, reply channel, id).
    Sending counts against the request's timeout: a Redis that stalls (DEBUG SLEEP, a full
    disk under it) would otherwise hold the request for its socket timeout."""
    layer = get_channel_layer()
    if layer is None:
        raise EngineOfflineError("no channel layer configured")
    node = node_name(node)
    # The default prefix on purpose: channels_redis serves every process-local channel that
    # shares a prefix from one Redis key; a second prefix waits behind the websocket
    # consumers' receive (about a heartbeat, 1 s, per call).
    try:
        async with asyncio.timeout(timeout):
            reply_to = await layer.new_channel()
            request_id = await _send_request(layer, node, op, args, user, reply_to)
    except TimeoutError as err:
        raise EngineOfflineError(
            f"channel layer did not take the request within {timeout:g}s (Redis slow or stuck)"
        ) from err
    return layer, node, reply_to, request_id


async def call(
    op: str,
    args: dict[str, Any] | None = None,
    *,
    user: Any = None,
    timeout: float | None = None,
    node: str | None = None,
) -> Any:
    """Send one request and wait for its reply: at most ``timeout`` in all, and never longer
    than the RPC timeout without a word from the engine (it says "working" every
    WORKING_INTERVAL seconds on a long request), so an engine killed in the middle of a
    request is reported within the RPC timeout, not the request's whole allowance."""
    rpc_timeout = float(settings.GANTRY_RPC_TIMEOUT)
    quiet = max(rpc_timeout, 2.5 * WORKING_INTERVAL)  # two "working" notes may be late
    timeout = rpc_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    layer, node, reply_to, request_id = await _open(op, args, user, node, timeout)
    heard = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise EngineOfflineError(
                f"engine offline: no answer from node {node} within {timeout:g}s"
            )
        if now - heard >= quiet:
            raise EngineOfflineError(
                f"engine offline: node {node} went quiet for {quiet:g}s while handling {op} "
                "(it may have restarted): whether it took effect is unknown; look again"
            )
        wait = min(deadline, heard + quiet) - now
        try:
            reply = await asyncio.wait_for(layer.receive(reply_to), wait)
        except TimeoutError:
            continue
        if reply.get("id") != request_id:
            continue
        if reply.get("type") == WORKING_TYPE:
            heard = time.monotonic()
        elif reply.get("type") == REPLY_TYPE:
            return _result(reply)


async def request(
    verb: Verb[A, R],
    args: A,
    *,
    user: Any = None,
    timeout: float | None = None,
    node: str | None = None,
) -> R:
    """Run ``verb`` with ``args`` on the engine of ``node`` and answer its reply."""
    reply = await call(verb.name, encode(args), user=user, timeout=timeout, node=node)
    return cast(R, reply)


def _result(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise EngineError("engine sent a malformed error")
    raise from_dict(error)


async def stream(
    verb: Verb[A, Any],
    args: A,
    *,
    user: Any = None,
    timeout: float | None = None,
    idle_timeout: float | None = None,
    node: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Send one request whose handler sends events to ``reply_to`` before its final reply;
    yield each event (not the reply). Raises the reply's error, if any, at the end. Between
    two messages (events or "working" notes) at most ``idle_timeout``, the RPC timeout."""
    first = settings.GANTRY_RPC_TIMEOUT if timeout is None else timeout
    idle_timeout = settings.GANTRY_RPC_TIMEOUT if idle_timeout is None else idle_timeout
    layer, node, reply_to, request_id = await _open(verb.name, encode(args), user, node, first)
    wait = first
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(reply_to), wait)
        except TimeoutError as err:
            raise EngineOfflineError(f"engine offline: node {node} stopped answering") from err
        wait = idle_timeout
        if message.get("type") == WORKING_TYPE:
            continue
        if message.get("type") == REPLY_TYPE:
            if message.get("id") == request_id:
                _result(message)
                return
            continue
        yield message


__all__ = [
    "call",
    "request",
    "stream",
    "EngineError",
    "EngineOfflineError",
    "InvalidInputError",
]
