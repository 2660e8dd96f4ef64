"""/ws/containers/<id>/terminal/ and /ws/containers/<id>/exec/<exec>/: a browser terminal.

Frames from the browser: binary = keystrokes (at most 64 KiB, rate-limited); text = JSON
control, only {"type": "resize", "cols": C, "rows": R}. Anything else closes the socket with
code 4400 and a reason. Frames to the browser: binary = terminal output, in order; text = JSON
{"type": "attached"|"exit"|"error", ...}.

The engine sends output to this consumer's channel with flow control: the consumer acknowledges
what it has handed to the websocket, so a browser that keeps up gets every byte and one that
cannot is detached by the engine with a message (engine/terminal/hub.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from channels.consumer import get_handler_name
from django.http import Http404

from engine.errors import EngineError, NotFoundError
from engine.protocol import (
    MAX_COLS,
    MAX_INPUT,
    MAX_ROWS,
    NODES_GROUP,
    TERM_TYPE,
    engine_channel,
    verbs,
)
from webui import engine_client
from webui.access import aget_container_for_user
from webui.answers import error_text
from webui.consumers.base import (
    CLOSE_BAD_MESSAGE,
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    AuthedJsonConsumer,
)

__all__ = ["TerminalConsumer"]

ACK_EVERY = 256 * 1024
ACK_DELAY = 0.3
MAX_CONTROL = 4096
INPUT_RATE, INPUT_BURST = 200.0, 400.0  # messages per second (paste is one message)
CLOSE_TOO_BIG = 1009
CLOSE_RATE = 4429
ID_RE = re.compile(r"^[0-9a-f]{64}$")
NO_DB_MESSAGES = frozenset({"term.output", "websocket.receive"})
EXEC_RE = re.compile(r"^[0-9a-f]{16,64}$")


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class TerminalConsumer(AuthedJsonConsumer):
    term_key = ""
    engine_started: float | None = None
    ack_later: asyncio.TimerHandle | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Terminal output and keystrokes (most of this consumer's messages) touch no
        database: they skip channels' per-message trip to a worker thread to close old
        database connections (a thread hop for every 256 KiB of output or keystroke; what
        does touch the database goes through database_sync_to_async, which closes them)."""
        if message.get("type") in NO_DB_MESSAGES:
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    async def authed_connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        self.container_id = kwargs.get("container_id", "")
        self.exec_id = kwargs.get("exec_id")
        await self.accept()
        if not ID_RE.match(self.container_id) or (
            self.exec_id is not None and not EXEC_RE.match(self.exec_id)
        ):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        try:
            own = await aget_container_for_user(self.user, self.container_id)
        except Http404:
            # Same answer for "not yours" and "does not exist": ids are not an oracle.
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.node = own.node or engine_client.node_name()
        self.unacked = 0
        self.bucket = TokenBucket(INPUT_RATE, INPUT_BURST)
        # Heartbeats tell us when the engine restarted: then attach again (it replays the
        # scrollback), so the pane comes back by itself.
        await self.join(NODES_GROUP)
        await self._attach()

    async def _attach(self) -> None:
        args = verbs.Attach(
            container=self.container_id, viewer=self.channel_name, exec=self.exec_id or None
        )
        try:
            result = await engine_client.request(
                verbs.TERM_ATTACH, args, user=self.user, node=self.node, timeout=10
            )
        except EngineError as err:
            await self.send_json({"type": "error", "message": error_text(err), "code": err.code})
            if err.code != "offline":
                await self.close(code=CLOSE_NOT_FOUND if isinstance(err, NotFoundError) else 4409)
            return
        self.term_key = str(result["session"])
        self.engine_started = result.get("engine_started")
        self.unacked = 0
        await self.send_json(
            {"type": "attached", "session": self.term_key, "tty": result.get("tty", True)}
        )

    async def engine_heartbeat(self, event: dict[str, Any]) -> None:
        if event.get("node") != self.node:
            return
        started = event.get("started")
        if self.engine_started is None:
            self.engine_started = started
        elif started != self.engine_started:
            self.engine_started = started
            await self._attach()
        elif not self.term_key:
            await self._attach()

    async def disconnect(self, code: int) -> None:
        if self.term_key:
            await self._to_engine({"op": "detach", "viewer": self.channel_name})
            self.term_key = ""
        await super().disconnect(code)

    async def _to_engine(self, message: dict[str, Any]) -> None:
        try:
            await self.channel_layer.send(
                engine_channel(self.node),
                {"type": TERM_TYPE, "session": self.term_key} | message,
            )
        except Exception:
            await self.send_json({"type": "error", "message": "engine offline"})

    # -- from the browser --------------------------------------------------------------------
    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if not self.term_key:
            return
        if bytes_data is not None:
            await self._input(bytes_data)
        elif text_data is not None:
            await self._control(text_data)

    async def _input(self, data: bytes) -> None:
        if len(data) > MAX_INPUT:
            await self.close(code=CLOSE_TOO_BIG, reason="input frame larger than 64 KiB")
            return
        if not self.bucket.take():
            await self.close(code=CLOSE_RATE, reason="too many messages")
            return
        if data:  # an empty packet would mean EOF to conmon
            await self._to_engine({"op": "input", "viewer": self.channel_name, "data": data})

    async def _control(self, text: str) -> None:
        if len(text) > MAX_CONTROL:
            await self.close(code=CLOSE_TOO_BIG, reason="control message too large")
            return
        try:
            message = json.loads(text)
        except ValueError:
            await self.close(code=CLOSE_BAD_MESSAGE, reason="control frames must be JSON")
            return
        if not isinstance(message, dict) or message.get("type") != "resize":
            await self.close(code=CLOSE_BAD_MESSAGE, reason="unknown control message")
            return
        rows, cols = message.get("rows"), message.get("cols")
        if not (_in_range(rows, MAX_ROWS) and _in_range(cols, MAX_COLS)):
            await self.close(
                code=CLOSE_BAD_MESSAGE, reason=f"resize: rows 1-{MAX_ROWS}, cols 1-{MAX_COLS}"
            )
            return
        if not self.bucket.take():
            await self.close(code=CLOSE_RATE, reason="too many messages")
            return
        await self._to_engine({"op": "resize", "rows": rows, "cols": cols})

    # -- from the engine ---------------------------------------------------------------------
    async def term_output(self, event: dict[str, Any]) -> None:
        data = event.get("data", b"")
        await self.send(bytes_data=data)  # waits while the browser's socket is full
        self.unacked += len(data)
        if self.unacked >= ACK_EVERY:
            await self._ack()
        elif self.ack_later is None:
            # A trickle (typing) is acknowledged in batches, at most a few times a second.
            self.ack_later = asyncio.get_running_loop().call_later(
                ACK_DELAY, lambda: asyncio.ensure_future(self._ack())
            )

    async def _ack(self) -> None:
        if self.ack_later is not None:
            self.ack_later.cancel()
            self.ack_later = None
        if self.unacked and self.term_key:
            nbytes, self.unacked = self.unacked, 0
            await self._to_engine({"op": "ack", "viewer": self.channel_name, "bytes": nbytes})

    async def term_closed(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "exit", "code": event.get("exit_code"), "reason": event.get("reason", "")}
        )
        self.term_key = ""
        await self.close(code=1000)


def _in_range(value: Any, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hi
