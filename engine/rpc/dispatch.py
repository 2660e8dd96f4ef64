"""Engine requests: the verb table and the dispatcher, independent of any transport.

Request  {"type": "engine.request", "id": str, "op": str, "args": {...}, "reply_to": str,
          "user": str | None}
Reply    {"type": "engine.reply", "id": ..., "ok": true, "result": ...}
         {"type": "engine.reply", "id": ..., "ok": false, "error": {"code", "message", ...}}

Verbs are registered with ``@op("container.start")`` in the modules of engine.api; a handler
takes a Context and an Args and returns something JSON-serialisable. Handlers are synchronous
and run on a worker thread, so a slow one never blocks the others.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.core import Engine
from engine.errors import EngineError, InvalidInputError
from engine.events import NullPublisher, Publisher
from engine.rpc.args import Args

log = logging.getLogger("gantry.engine.rpc")

REQUEST_TYPE = "engine.request"
REPLY_TYPE = "engine.reply"
# Channel names as the channel layer accepts them (channels' own rule, plus a length cap).
CHANNEL_RE = re.compile(r"^[a-zA-Z\d\-_.]+(![\w\-.]*)?$")
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OP_RE = re.compile(r"^[a-z]+\.[a-z_]+$")


@dataclass
class Context:
    engine: Engine
    request_id: str = ""
    user: str | None = None
    reply_to: str = ""
    publisher: Publisher = field(default_factory=NullPublisher)


Handler = Callable[[Context, Args], Any]
OPS: dict[str, Handler] = {}


def op(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for verb ``name``."""
    if not OP_RE.match(name):
        raise ValueError(f"bad op name {name!r}")

    def register(fn: Handler) -> Handler:
        if name in OPS:
            raise ValueError(f"op {name!r} registered twice")
        OPS[name] = fn
        return fn

    return register


StartupHook = Callable[[Context], None]
STARTUP: list[StartupHook] = []


def on_startup(fn: StartupHook) -> StartupHook:
    """Run fn once when the worker starts, before it serves requests (sweeps, reconciliation,
    watchers). A hook may start daemon threads; they should stop when engine.stopping is set."""
    STARTUP.append(fn)
    return fn


def run_startup(ctx: Context) -> None:
    for hook in STARTUP:
        try:
            hook(ctx)
        except Exception:  # one broken hook must not keep the engine down
            log.exception("startup hook %s failed", getattr(hook, "__name__", hook))


def engine_channel(node: str) -> str:
    """The channel the worker of ``node`` consumes."""
    return f"engine.{node}"


def reply_ok(request_id: str, result: Any) -> dict[str, Any]:
    return {"type": REPLY_TYPE, "id": request_id, "ok": True, "result": result}


def reply_error(request_id: str, error: EngineError) -> dict[str, Any]:
    return {"type": REPLY_TYPE, "id": request_id, "ok": False, "error": error.to_dict()}


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    args: Any
    reply_to: str
    user: str | None


def parse_request(message: Any) -> Request:
    """Check the envelope. Raises InvalidInputError; ``reply_to`` is only trusted if valid."""
    if not isinstance(message, dict):
        raise InvalidInputError("request must be an object")
    if message.get("type") != REQUEST_TYPE:
        raise InvalidInputError(f"unknown message type {str(message.get('type'))[:40]!r}")
    req_id, op_name = message.get("id"), message.get("op")
    reply_to, user = message.get("reply_to"), message.get("user")
    if not isinstance(req_id, str) or not ID_RE.match(req_id):
        raise InvalidInputError("id: must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(reply_to, str) or len(reply_to) > 200 or not CHANNEL_RE.match(reply_to):
        raise InvalidInputError("reply_to: not a channel name")
    if not isinstance(op_name, str) or len(op_name) > 64:
        raise InvalidInputError("op: must be a string")
    if user is not None and (not isinstance(user, str | int) or isinstance(user, bool)):
        raise InvalidInputError("user: must be a string or null")
    return Request(
        req_id, op_name, message.get("args"), reply_to, None if user is None else str(user)[:150]
    )


def call(ctx: Context, op_name: str, raw_args: Any) -> Any:
    """Run one verb in this thread. Raises EngineError (or anything a handler raises)."""
    import engine.api  # noqa: F401  (registers the verbs; imported late: they import us)

    handler = OPS.get(op_name)
    if handler is None:
        raise InvalidInputError(f"unknown operation {op_name[:64]!r}")
    args = Args(raw_args, op_name)
    return handler(ctx, args)


def dispatch(engine: Engine, request: Request, publisher: Publisher) -> dict[str, Any]:
    """Run a parsed request and build its reply; never raises."""
    ctx = Context(engine, request.id, request.user, request.reply_to, publisher)
    started = time.monotonic()
    try:
        result = call(ctx, request.op, request.args)
        reply = reply_ok(request.id, result)
    except EngineError as err:
        log.info("%s failed: %s", request.op, err.message)
        reply = reply_error(request.id, err)
    except Exception as err:  # the worker must survive any bug in a handler
        log.exception("%s crashed", request.op)
        reply = reply_error(request.id, EngineError(f"{request.op}: internal error: {err}"))
    reply["elapsed_ms"] = round((time.monotonic() - started) * 1000, 2)
    return reply
