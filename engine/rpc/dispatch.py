"""Engine requests: the verb table and the dispatcher, independent of any transport.

Request  {"type": "engine.request", "id": str, "op": str, "args": {...}, "reply_to": str,
          "user": str | None, "role": "admin"|"instructor"|"learner"|None, "name": str | None}
Reply    {"type": "engine.reply", "id": ..., "ok": true, "result": ...}
         {"type": "engine.reply", "id": ..., "ok": false, "error": {"code", "message", ...}}

Verbs are declared in engine.protocol.verbs and served by handlers registered with
``@op(verbs.CONTAINER_START)`` (engine.api.base) in the modules engine.api.verbs lists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from engine.api.base import Context, handler
from engine.core import Engine
from engine.errors import EngineError, InvalidInputError
from engine.events import Publisher
from engine.protocol import CHANNEL_RE, ID_RE, REPLY_TYPE, REQUEST_TYPE, ROLES, USER_NAME_RE

log = logging.getLogger("gantry.engine.rpc")


def run_startup(ctx: Context) -> None:
    from engine.api.verbs import STARTUP

    for hook in STARTUP:
        try:
            hook(ctx)
        except Exception:  # one broken hook must not keep the engine down
            log.exception("startup hook %s failed", getattr(hook, "__name__", hook))


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
    role: str | None = None  # None: the engine's own (the CLI, as root): an admin
    name: str | None = None  # the user's name: a learner's sandbox is named by it


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
    role, name = message.get("role"), message.get("name")
    if role is not None and role not in ROLES:
        raise InvalidInputError(f"role: one of {', '.join(ROLES)} or null")
    if name is not None and (not isinstance(name, str) or not USER_NAME_RE.match(name)):
        raise InvalidInputError("name: a user name (a-z, 0-9, '_', '-') or null")
    user_id = None if user is None else str(user)[:150]
    return Request(req_id, op_name, message.get("args"), reply_to, user_id, role, name)


def call(ctx: Context, op_name: str, raw_args: Any) -> Any:
    """Run one verb in this thread: its arguments checked against the verb's type
    (engine.protocol.check), then its handler. Raises EngineError (or anything a handler
    raises)."""
    return handler(op_name)(ctx, raw_args)


def dispatch(engine: Engine, request: Request, publisher: Publisher) -> dict[str, Any]:
    """Run a parsed request and build its reply; never raises."""
    ctx = Context(
        engine, request.id, request.user, request.reply_to, publisher, request.role, request.name
    )
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
