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

from engine.api.args import Args
from engine.api.base import Context, op
from engine.core import Engine
from engine.errors import InvalidInputError
from engine.protocol import CHANNEL_RE, MAX_COLS, MAX_INPUT, MAX_ROWS
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


@op("term.attach")
def attach(ctx: Context, args: Args) -> dict[str, Any]:
    """Join a container's console (tty containers) or one of its exec shells. Output then
    flows to ``viewer`` as term.output messages; see the module docstring for the rest."""
    container = args.get_str("container", required=True, max_len=128)
    exec_id = args.get_str("exec", max_len=64)
    viewer = args.get_str("viewer", required=True, max_len=200, pattern=CHANNEL_RE)
    args.done()
    result = dict(_consoles(ctx).attach(container, viewer, ctx.publisher, exec_id=exec_id))
    result["engine_started"] = ctx.engine.started
    return result


@op("exec.create")
def exec_create(ctx: Context, args: Args) -> dict[str, Any]:
    """Start an interactive shell (exec -t) in a running container: the given command, or
    the first of bash, sh the image has. Attach to it with term.attach {exec: id}."""
    container = args.get_str("container", required=True, max_len=128)
    command = args.get_str_list("command", max_items=256)
    user = args.get_str("user", default="", max_len=256)
    rows = args.get_int("rows", default=24, lo=1, hi=MAX_ROWS)
    cols = args.get_int("cols", default=80, lo=1, hi=MAX_COLS)
    args.done()
    if any(not part for part in command):
        raise InvalidInputError("command: empty words are not allowed")
    return dict(
        _consoles(ctx).create_exec(
            container, command, ctx.publisher, user=user, rows=rows, cols=cols
        )
    )


@op("exec.transcripts")
def exec_transcripts(ctx: Context, args: Args) -> list[dict[str, Any]]:
    """What the container's finished exec shells printed (the last 64 KiB of each)."""
    container = args.get_str("container", required=True, max_len=128)
    args.done()
    consoles = _consoles(ctx)
    record = consoles.containers.get(container)
    return list(consoles.transcripts(record.id))


@op("exec.list")
def exec_list(ctx: Context, args: Args) -> list[dict[str, Any]]:
    """The interactive shells still running in a container, to attach to again."""
    container = args.get_str("container", required=True, max_len=128)
    args.done()
    consoles = _consoles(ctx)
    record = consoles.containers.get(container)
    return [
        {"exec": s["exec"], "command": s["command"], "started": s["started"]}
        for s in consoles.live_shells(record.id)
    ]
