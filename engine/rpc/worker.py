"""The engine worker: consumes engine requests from the channel layer and answers them.

The channel layer is handed in (``serve(layer, engine)``), so this module needs no Django or
Channels import: the management command ``manage.py engine`` does the binding. Requests run on
a thread pool; replies and events go back through the layer. A heartbeat is published to the
``gantry.nodes`` group every second so the web can show "engine offline" quickly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import engine.api  # noqa: F401  (registers the verbs)
from engine.api.base import Context
from engine.api.terminal import handle_term_message
from engine.core import Engine
from engine.errors import InvalidInputError
from engine.protocol import (
    CHANNEL_RE,
    NODES_GROUP,
    TERM_TYPE,
    WORKING_INTERVAL,
    WORKING_TYPE,
    engine_channel,
)
from engine.rpc.dispatch import dispatch, parse_request, reply_error, run_startup
from engine.rpc.presence import Presence, hold_root
from engine.runtime.nodeinfo import node_info

log = logging.getLogger("gantry.engine.worker")
HEARTBEAT_INTERVAL = 1.0
SEND_TIMEOUT = 30.0
PUBLISH_TIMEOUT = 5.0  # one event to a group; events are hints, pages read state


class ChannelLayer(Protocol):
    async def send(self, channel: str, message: dict[str, Any]) -> None: ...
    async def receive(self, channel: str) -> dict[str, Any]: ...
    async def group_send(self, group: str, message: dict[str, Any]) -> None: ...


def _is_full(err: BaseException) -> bool:
    # channels.exceptions.ChannelFull, matched by name: engine/ does not import channels.
    return type(err).__name__ == "ChannelFull"


class LayerPublisher:
    """Publisher over a channel layer, callable from worker threads.

    Publishes go through one FIFO drained by one task, so events reach every subscriber in the
    order they were published: fired as separate coroutines, a group_send (several Redis round
    trips) could overtake the one before it, and bursts ran out of connections."""

    def __init__(self, layer: ChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sender (on the loop, before anything publishes)."""
        self.task = self.loop.create_task(self._drain())

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``), then stop the sender."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def publish(self, group: str, event: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (group, event))

    async def _drain(self) -> None:
        while True:
            group, event = await self.queue.get()
            try:
                # bounded: a stalled Redis must not hold every later event for its 30 s timeout
                await asyncio.wait_for(self.layer.group_send(group, event), PUBLISH_TIMEOUT)
            except Exception as err:
                log.warning("publish to %s failed: %s", group, err or type(err).__name__)
            finally:
                self.queue.task_done()

    def send(self, channel: str, event: dict[str, Any]) -> None:
        fut = asyncio.run_coroutine_threadsafe(
            send_patiently(self.layer, channel, event), self.loop
        )
        fut.result(timeout=SEND_TIMEOUT + 5)


async def send_patiently(
    layer: ChannelLayer, channel: str, event: dict[str, Any], timeout: float = SEND_TIMEOUT
) -> None:
    """Send, waiting while the receiver's channel is full (flow control, not loss)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            await layer.send(channel, event)
            return
        except Exception as err:
            if not _is_full(err) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


class Worker:
    def __init__(
        self,
        layer: ChannelLayer,
        engine: Engine,
        *,
        max_threads: int = 32,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        working_interval: float = WORKING_INTERVAL,
        on_ready: Callable[[], None] | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.presence = presence  # this worker in the node registry (None: not registered)
        self.on_ready = on_ready  # called once the start-up work is done and requests are taken
        self.layer = layer
        self.engine = engine
        self.channel = engine_channel(engine.config.node)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_threads, "engine")
        self.heartbeat_interval = heartbeat_interval
        self.working_interval = working_interval
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.engine.ensure_root()
        root_lock = hold_root(self.engine)  # before any container is touched: one worker
        if self.presence is not None:  # a root, one worker a name
            try:
                await loop.run_in_executor(self.pool, self.presence.claim)
            except BaseException:
                os.close(root_lock)
                raise
        self.publisher = LayerPublisher(self.layer, loop)
        self.publisher.start()
        ctx = Context(self.engine, publisher=self.publisher)
        await loop.run_in_executor(self.pool, run_startup, ctx)
        log.info("engine worker for node %s consuming %s", self.engine.config.node, self.channel)
        if self.on_ready is not None:
            self.on_ready()
        beat = asyncio.create_task(self._heartbeat(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                message = await self._receive(stopped)
                if message is None:
                    continue
                if message.get("type") == TERM_TYPE:
                    # Terminal traffic (keystrokes, resizes, acks): fire-and-forget, no reply,
                    # handled here at once so typing never waits behind a slow request.
                    self._handle_term(message)
                    continue
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            stopped.cancel()
            self.engine.stopping.set()
            from engine.terminal.hub import TerminalHub

            self.engine.get(TerminalHub).close_all()
            beat.cancel()
            for task in list(self._tasks):
                task.cancel()
            # the heartbeat ended before the pool it hands the registry's beat to goes
            await asyncio.gather(beat, return_exceptions=True)
            self.pool.shutdown(wait=False, cancel_futures=True)
            await self.publisher.stop()
            if self.presence is not None:
                self.presence.release()
            os.close(root_lock)

    async def _receive(self, stopped: asyncio.Task[Any]) -> dict[str, Any] | None:
        """The next message (a dict), or None when stopped or on a bad or failed receive."""
        receive = asyncio.create_task(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if receive in done:
            try:
                message: Any = receive.result()
            except Exception as err:  # the layer is gone or full: one line each, and retry
                log.error(
                    "receive failed: %s: %s", type(err).__name__, err,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )  # fmt: skip
                await asyncio.sleep(0.5)
                return None
            if isinstance(message, dict):
                return message
            log.warning("bad request: a %s, not a mapping", type(message).__name__)
            return None
        receive.cancel()
        return None

    def _handle_term(self, message: dict[str, Any]) -> None:
        try:
            handle_term_message(self.engine, message)
        except Exception as err:
            log.info("terminal message dropped: %s", err)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            request = parse_request(message)
        except InvalidInputError as err:
            reply_to = message.get("reply_to")
            log.warning("bad request: %s", err.message)
            if isinstance(reply_to, str) and len(reply_to) < 200 and CHANNEL_RE.match(reply_to):
                req_id = str(message.get("id", ""))[:64]
                await self._reply(reply_to, reply_error(req_id, err))
            return
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, dispatch, self.engine, request, self.publisher)
        while not (await asyncio.wait({work}, timeout=self.working_interval))[0]:
            await self._still_working(request.reply_to, request.id)
        await self._reply(request.reply_to, work.result())

    async def _still_working(self, channel: str, request_id: str) -> None:
        """Tell the caller of a long request that this engine is still on it."""
        try:
            await self.layer.send(channel, {"type": WORKING_TYPE, "id": request_id})
        except Exception as err:  # full or gone: the caller times out as it would have
            log.debug("working note to %s lost: %s", channel, err)

    async def _reply(self, channel: str, reply: dict[str, Any]) -> None:
        try:
            await send_patiently(self.layer, channel, reply, timeout=5)
        except Exception as err:
            log.warning("reply to %s lost: %s", channel, err)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(self.pool, node_info, self.engine.config)
        while not stop.is_set():
            beat = {
                "type": "engine.heartbeat",
                "node": self.engine.config.node,
                "time": time.time(),
                "started": self.engine.started,
                "info": info,
            }
            try:
                await self.layer.group_send(NODES_GROUP, beat)
            except Exception as err:
                log.warning("heartbeat failed: %s", err)
            if self.presence is not None:
                await loop.run_in_executor(self.pool, self.presence.beat)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_interval)


async def serve(
    layer: ChannelLayer, engine: Engine, stop: asyncio.Event | None = None, **kwargs: Any
) -> None:
    """Serve engine requests until ``stop`` is set."""
    await Worker(layer, engine, **kwargs).serve(stop or asyncio.Event())
