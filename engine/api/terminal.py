"""term.* verbs and the terminal traffic that travels without replies.

term.attach is a normal request (it can fail clearly: container not running, no tty). After
it, keystrokes, resizes, acks and detaches are ``engine.term`` messages on the engine's
channel, handled at once by the worker without a reply:

    {"type": "engine.term", "op": "input",  "session": key, "viewer": channel, "data": bytes}
    {"type": "engine.term", "op": "resize", "session": key, "rows": int, "cols": int}
    {"type": "engine.term", "op": "ack",    "session": key, "viewer": channel, "bytes": int}
    {"type": "engine.term", "op": "detach", "session": key, "viewer": channel}
"""

from __future__ import annotations

import re
from typing import Any

from engine.api.base import Context, op
from engine.core import Engine
from engine.errors import InvalidInputError
from engine.protocol import CHANNEL_RE, MAX_COLS, MAX_INPUT, MAX_ROWS, verbs
from engine.protocol.verbs import Json
from engine.terminal.hub import TerminalHub

SESSION_RE = re.compile(r"^(ctr:[0-9a-f]{64}|exec:[0-9a-f]{64}:[0-9a-f]{16,64}|test:[\w.-]{1,64})$")


def _session_key(message: dict[str, Any]) -> str:
    key = message.get("session")
    if not isinstance(key, str) or not SESSION_RE.match(key):
        raise InvalidInputError("session: not a terminal session key")
    return key


def _viewer(message: dict[str, Any]) -> str:
    viewer = message.get("viewer")
    if not isinstance(viewer, str) or len(viewer) > 200 or not CHANNEL_RE.match(viewer):
        raise InvalidInputError("viewer: not a channel name")
    return viewer


def check_size(rows: Any, cols: Any) -> tuple[int, int]:
    for name, value, hi in (("rows", rows, MAX_ROWS), ("cols", cols, MAX_COLS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise InvalidInputError(f"{name}: must be between 1 and {hi}")
    return rows, cols


def handle_term_message(engine: Engine, message: dict[str, Any]) -> None:
    """Apply one engine.term message. Raises InvalidInputError on anything malformed."""
    op = message.get("op")
    session = engine.get(TerminalHub).get(_session_key(message))
    if op == "input":
        data = message.get("data")
        if not isinstance(data, bytes) or not data or len(data) > MAX_INPUT:
            raise InvalidInputError(f"data: 1 to {MAX_INPUT} bytes")
        session.send_input(data)
    elif op == "resize":
        rows, cols = check_size(message.get("rows"), message.get("cols"))
        session.resize(rows, cols)
    elif op == "ack":
        nbytes = message.get("bytes")
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidInputError("bytes: must be a non-negative integer")
        session.ack(_viewer(message), nbytes)
    elif op == "detach":
        session.remove_viewer(_viewer(message))
    else:
        raise InvalidInputError(f"unknown terminal op {str(op)[:20]!r}")


def _consoles(ctx: Context) -> Any:
    from engine.terminal.consoles import Consoles  # late: it pulls in the whole container stack

    return ctx.engine.get(Consoles)


@op(verbs.TERM_ATTACH)
def attach(ctx: Context, args: verbs.Attach) -> Json:
    """Join a container's console (tty containers) or one of its exec shells. Output then
    flows to ``viewer`` as term.output messages; see the module docstring for the rest."""
    consoles = _consoles(ctx)
    result = dict(consoles.attach(args.container, args.viewer, ctx.publisher, exec_id=args.exec))
    result["engine_started"] = ctx.engine.started
    return result


@op(verbs.EXEC_CREATE)
def exec_create(ctx: Context, args: verbs.ExecCreate) -> Json:
    """Start an interactive shell (exec -t) in a running container: the given command, or
    the first of bash, sh the image has. Attach to it with term.attach {exec: id}."""
    if any(not part for part in args.command):
        raise InvalidInputError("command: empty words are not allowed")
    return dict(
        _consoles(ctx).create_exec(
            args.container,
            args.command,
            ctx.publisher,
            user=args.user,
            rows=args.rows,
            cols=args.cols,
        )
    )


@op(verbs.EXEC_TRANSCRIPTS)
def exec_transcripts(ctx: Context, args: verbs.Container) -> list[Json]:
    """What the container's finished exec shells printed (the last 64 KiB of each)."""
    consoles = _consoles(ctx)
    record = consoles.containers.get(args.container)
    return list(consoles.transcripts(record.id))


@op(verbs.EXEC_LIST)
def exec_list(ctx: Context, args: verbs.Container) -> list[Json]:
    """The interactive shells still running in a container, to attach to again."""
    consoles = _consoles(ctx)
    record = consoles.containers.get(args.container)
    return [
        {"exec": s["exec"], "command": s["command"], "started": s["started"]}
        for s in consoles.live_shells(record.id)
    ]
