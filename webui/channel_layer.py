"""channels_redis with send() in one round trip and receives that are safe to cancel.

**Send.** channels_redis 4.3 sends a message with four commands (ZREMRANGEBYSCORE, ZCOUNT,
ZADD, EXPIRE), each a round trip to Redis. Terminal keystrokes and output cross the layer once
per message, so those trips are most of a keystroke's echo latency. Here the same four steps
run as one Lua script: same keys, same semantics (expiry, capacity -> ChannelFull), one trip.

**Receive.** channels_redis serves every process-local channel (``specific.<prefix>!...``)
from one Redis key, popped by whichever coroutine happens to be blocked in ``receive()``. When
that coroutine is cancelled (a websocket closes, a request times out or is aborted), redis-py
drops the connection mid-BZPOPMIN, and a message Redis has just popped for *another* channel
is gone (channels_redis issue 366, channels 1683). Here one long-lived reader task per event
loop pops from that key and hands each message to its channel's own queue; ``receive()`` only
waits on its queue, so cancelling it can lose nothing. Messages for a channel nobody has read
for ``expiry`` seconds are dropped, as Redis would expire them; no other message is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis import core
from channels_redis.core import RedisChannelLayer

log = logging.getLogger("gantry.channel_layer")

SEND_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, math.floor(now) - tonumber(ARGV[1]))
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""  # scored by Redis's clock, not the sender's: see LayerClock
SWEEP_EVERY = 5.0  # seconds between sweeps of queues nobody reads
RETRY_DELAY = 0.5  # seconds between reads while Redis is unreachable
LONG_QUEUE = 10  # a local channel this many times the layer's capacity behind is logged
STUCK_QUEUE = 100  # ... and this many times behind, its consumer has stopped: it is cleared


REANCHOR_EVERY = 10.0  # seconds between two readings of Redis's clock


class LayerClock:
    """The clock channels_redis scores and trims by (a message's age against ``expiry``, a
    group member's against ``group_expiry``): the Redis server's, read every REANCHOR_EVERY
    seconds and carried forward by this process's monotonic clock in between. channels_redis
    reads the wall clock of whichever process sends; one whose clock jumped two days ahead
    (an NTP step, libfaketime) trimmed every other member out of a group, and one behind wrote
    messages every other process took as expired. Everything else is the ``time`` module."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.base, self.read_at = time.time(), time.monotonic()
        self.reanchor()

    def reanchor(self) -> None:
        import redis

        try:
            client = redis.Redis.from_url(self.address, socket_timeout=0.5)
            seconds, micros = client.time()
            client.close()
        except (redis.RedisError, OSError, ValueError):
            return  # keep carrying the last reading forward
        self.base, self.read_at = seconds + micros / 1e6, time.monotonic()

    def time(self) -> float:
        now = time.monotonic()
        if now - self.read_at > REANCHOR_EVERY:
            self.reanchor()
            now = time.monotonic()
        return self.base + (now - self.read_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class LocalChannels:
    """The queues of one process's local channels on one event loop, filled by one reader."""

    def __init__(self, capacity: int, expiry: float) -> None:
        self.capacity = capacity
        self.expiry = expiry
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.last_read: dict[str, float] = {}
        self.last_delivered: dict[str, float] = {}
        self.waiting: dict[str, int] = {}
        self.swept = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    def queue(self, channel: str) -> asyncio.Queue[dict[str, Any]]:
        q = self.queues.get(channel)
        if q is None:
            q = self.queues[channel] = asyncio.Queue()
            self.last_read[channel] = time.monotonic()
        return q

    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        """Queue a message for its channel. Never dropped: what may be in flight to one
        channel is bounded by its sender (a terminal's credit window, a reply per request),
        and a channel nobody reads is swept after ``expiry``. Dropping the oldest, as
        channels_redis' buffer does, lost terminal output under load."""
        self.sweep()
        q = self.queue(channel)
        q.put_nowait(message)
        self.last_delivered[channel] = time.monotonic()
        if q.qsize() == LONG_QUEUE * self.capacity:
            log.warning("local channel %s holds %d messages unread", channel, q.qsize())
        elif q.qsize() >= STUCK_QUEUE * self.capacity:
            log.error("local channel %s: %d messages unread, cleared", channel, q.qsize())
            self.queues[channel] = asyncio.Queue()  # (nobody waits on a queue that long)

    async def get(self, channel: str) -> dict[str, Any]:
        q = self.queue(channel)
        self.waiting[channel] = self.waiting.get(channel, 0) + 1
        try:
            return await q.get()
        finally:
            self.last_read[channel] = time.monotonic()
            left = self.waiting[channel] - 1
            if left:
                self.waiting[channel] = left
            else:
                del self.waiting[channel]

    def sweep(self) -> None:
        """Forget the channels nobody waits on, read or sent to for ``expiry`` seconds (a
        consumer busy with one message for longer keeps what keeps coming)."""
        now = time.monotonic()
        if now - self.swept < SWEEP_EVERY:
            return
        self.swept = now
        for channel, read in list(self.last_read.items()):
            active = max(read, self.last_delivered.get(channel, 0.0))
            if now - active > self.expiry and channel not in self.waiting:
                self.queues.pop(channel, None)
                self.last_read.pop(channel, None)
                self.last_delivered.pop(channel, None)


class GantryRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        address = self.hosts[0].get("address", "") if self.hosts else ""
        if isinstance(address, str) and address and not isinstance(core.time, LayerClock):
            core.time = LayerClock(address)
        # per event loop, per real channel ("specific.<client prefix>!" and other prefixes)
        self._local: dict[asyncio.AbstractEventLoop, dict[str, LocalChannels]] = {}

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        channel_non_local_name = channel
        if "!" in channel:
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            channel_non_local_name = self.non_local_name(channel)
        channel_key = self.prefix + channel_non_local_name
        if "!" in channel:
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        connection = self.connection(index)
        sent = await connection.eval(
            SEND_SCRIPT, 1, channel_key, int(self.expiry),
            self.get_capacity(channel), self.serialize(message),
        )  # fmt: skip
        if not sent:
            raise ChannelFull()

    async def receive(self, channel: str) -> dict[str, Any]:
        if "!" not in channel:  # a named channel (an engine's): one pop, as below
            assert self.require_valid_channel_name(channel, receive=True)
            return (await self._pop(channel, next(self._receive_index_generator)))[1]
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        return await self._local_channels(real_channel).get(channel)

    def _local_channels(self, real_channel: str) -> LocalChannels:
        loop = asyncio.get_running_loop()
        readers = self._local.get(loop)
        if readers is None:
            for other in self._local:
                if not other.is_closed() and other.is_running():
                    raise RuntimeError(
                        "Two event loops are trying to receive() on one channel layer at once!"
                    )
            readers = self._local[loop] = {}
            self.connection(0)  # channels_redis' own close hook first: see _stop_on_close
            self._stop_on_close(loop, readers)
        local = readers.get(real_channel)
        if local is None:
            local = readers[real_channel] = LocalChannels(self.capacity, float(self.expiry))
            local.task = loop.create_task(self._read_forever(real_channel, local))
        return local

    async def _read_forever(self, real_channel: str, local: LocalChannels) -> None:
        """The only reader of this process's local channels on this loop: never cancelled
        while the loop lives, so no popped message is lost."""
        while True:
            try:
                message_channel, message = await self._pop(
                    real_channel, self.consistent_hash(real_channel)
                )
            except asyncio.CancelledError:
                raise
            except Exception as err:  # Redis gone: keep trying, callers time out on their own
                log.warning("channel layer read failed: %s", err)
                await asyncio.sleep(RETRY_DELAY)
                continue
            channels = message_channel if isinstance(message_channel, list) else [message_channel]
            for channel in channels:
                local.deliver(channel, message)

    async def _pop(self, real_channel: str, index: int) -> tuple[str | list[str], dict[str, Any]]:
        """The next message on a channel, popped with one BZPOPMIN.

        channels_redis' receive_single copies each popped message back into a backup key and
        pops it again (three more trips, two carrying the whole message: a terminal's 256 KiB
        of output, a keystroke's wait) so that a reader cancelled after the pop loses nothing.
        It does not save a message popped when the cancel comes (redis-py drops the
        connection, the reply with it), and nothing awaits between this pop and the message's
        delivery, so the backup buys nothing here. The channel is a list for a group message
        to several of this process's channels."""
        key = self.prefix + real_channel
        connection = self.connection(index)
        popped = None
        while popped is None:
            popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
        message: dict[str, Any] = self.deserialize(popped[1])
        return message.pop("__asgi_channel__", real_channel), message

    def _stop_on_close(
        self, loop: asyncio.AbstractEventLoop, readers: dict[str, LocalChannels]
    ) -> None:
        """Cancel the readers when their loop closes (asgiref's short-lived loops), before
        channels_redis closes the loop's connections."""
        original = loop.close

        def close(self_loop: asyncio.AbstractEventLoop) -> None:
            self._local.pop(loop, None)
            tasks = [r.task for r in readers.values() if r.task is not None and not r.task.done()]
            for task in tasks:
                task.cancel()
            if tasks and not loop.is_running():
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self_loop.close = original  # type: ignore[method-assign]
            original()

        loop.close = types.MethodType(close, loop)  # type: ignore[method-assign]
