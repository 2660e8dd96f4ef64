"""The channel between web and engine: ordered and lossless, against the real Redis.

Each test makes its race happen on purpose: a publish delayed so that the next one could
overtake it, a read cancelled just after Redis popped a message for another channel, and
10,000 events published as fast as the engine can while web clients come and go."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from django.conf import settings

from engine.rpc.worker import LayerPublisher, send_patiently
from webui import channel_layer
from webui.channel_layer import GantryRedisChannelLayer, LocalChannels


def new_layer() -> GantryRedisChannelLayer:
    config: dict[str, Any] = settings.CHANNEL_LAYERS["default"]["CONFIG"]  # type: ignore[assignment]
    return GantryRedisChannelLayer(**config)


@pytest.fixture
async def web_and_engine(channel_layer: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Two layers, as the web process and the engine process each have their own."""
    web, eng = new_layer(), new_layer()
    yield web, eng
    for layer in (web, eng):
        await layer.close_pools()


class SlowFirstLayer:
    """A layer whose group_send takes longer the earlier the event: run at once, the events
    would arrive in reverse."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.received: list[int] = []
        self.done = asyncio.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await asyncio.sleep((self.count - message["n"]) * 0.002)
        self.received.append(message["n"])
        if len(self.received) == self.count:
            self.done.set()


async def test_publishes_from_threads_arrive_in_the_order_they_were_made() -> None:
    loop = asyncio.get_running_loop()
    layer = SlowFirstLayer(30)
    publisher = LayerPublisher(layer, loop)  # type: ignore[arg-type]
    publisher.start()

    def publish_all() -> None:
        for n in range(layer.count):
            publisher.publish("g", {"type": "x", "n": n})

    await loop.run_in_executor(None, publish_all)
    await asyncio.wait_for(layer.done.wait(), 10)
    await publisher.stop()
    assert layer.received == list(range(layer.count))


async def test_stop_sends_what_is_queued() -> None:
    loop = asyncio.get_running_loop()
    layer = SlowFirstLayer(5)
    publisher = LayerPublisher(layer, loop)  # type: ignore[arg-type]
    publisher.start()
    for n in range(5):
        publisher.publish("g", {"type": "x", "n": n})
    await publisher.stop()
    assert layer.received == [0, 1, 2, 3, 4]


async def test_a_cancelled_receive_loses_no_message_of_another_channel(
    web_and_engine: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss as it happened: a coroutine blocked in the shared pop is cancelled just after
    Redis popped a message meant for another channel of the same process."""
    web, eng = web_and_engine
    popped = asyncio.Event()
    real_bzpopmin = redis.asyncio.Redis.bzpopmin

    async def slow_bzpopmin(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await real_bzpopmin(self, *args, **kwargs)
        if result is not None:
            popped.set()
            await asyncio.sleep(0.3)  # the reply is in flight when the cancel comes
        return result

    monkeypatch.setattr(redis.asyncio.Redis, "bzpopmin", slow_bzpopmin)
    closing, waiting = await web.new_channel(), await web.new_channel()
    doomed = asyncio.create_task(web.receive(closing))  # a websocket about to close
    await asyncio.sleep(0.05)  # let it block in the pop (the test fails either way if not)
    await eng.send(waiting, {"type": "engine.reply", "id": "r1"})
    await asyncio.wait_for(popped.wait(), 5)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    reply = await asyncio.wait_for(web.receive(waiting), 3)
    assert reply == {"type": "engine.reply", "id": "r1"}


async def test_a_local_message_crosses_redis_once(
    web_and_engine: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A terminal's 256 KiB of output is popped once: not copied into a backup key and
    popped again, as channels_redis' receive does (its cost showed in terminal throughput)."""
    web, eng = web_and_engine
    commands: list[str] = []
    real = redis.asyncio.Redis.execute_command

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]).upper())
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.Redis, "execute_command", counting)
    channel = await web.new_channel()
    reading = asyncio.create_task(web.receive(channel))
    await asyncio.sleep(0.05)
    await eng.send(channel, {"type": "term.output", "data": b"x" * 256 * 1024})
    message = await asyncio.wait_for(reading, 3)
    assert message == {"type": "term.output", "data": b"x" * 256 * 1024}
    assert "ZADD" not in commands and "ZPOPMIN" not in commands
    assert commands.count("BZPOPMIN") >= 1


async def test_a_reply_nobody_waits_for_is_kept_until_read(
    web_and_engine: tuple[Any, Any],
) -> None:
    web, eng = web_and_engine
    first, late = await web.new_channel(), await web.new_channel()
    await eng.send(late, {"type": "m", "n": 1})
    await eng.send(first, {"type": "m", "n": 2})
    assert (await asyncio.wait_for(web.receive(first), 3))["n"] == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(web.receive(first), 0.2)
    assert (await asyncio.wait_for(web.receive(late), 3))["n"] == 1


async def churn(web: Any, group: str, stop: asyncio.Event) -> int:
    """Web clients connecting and disconnecting: join, read briefly, get cancelled, leave."""
    rounds = 0
    while not stop.is_set():
        channel = await web.new_channel()
        await web.group_add(group, channel)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(web.receive(await web.new_channel()), 0.005)
        await web.group_discard(group, channel)
        rounds += 1
    return rounds


async def test_ten_thousand_events_arrive_complete_and_in_order_while_clients_churn(
    web_and_engine: tuple[Any, Any],
) -> None:
    web, eng = web_and_engine
    count = 10_000
    loop = asyncio.get_running_loop()
    page = await web.new_channel()
    await web.group_add("events", page)
    publisher = LayerPublisher(eng, loop)
    publisher.start()
    stop = asyncio.Event()
    churners = [asyncio.create_task(churn(web, "events", stop)) for _ in range(3)]

    def publish_all() -> None:
        for n in range(count):
            publisher.publish("events", {"type": "engine.event", "n": n})

    producer = threading.Thread(target=publish_all)
    producer.start()
    got: list[int] = []
    try:
        while len(got) < count:
            message = await asyncio.wait_for(web.receive(page), 10)
            got.append(message["n"])
    finally:
        stop.set()
        rounds = await asyncio.gather(*churners)
        producer.join()
        await publisher.stop()
    assert got == list(range(count))
    assert min(rounds) > 10  # the clients really came and went meanwhile


async def test_a_reader_slower_than_its_sender_loses_nothing(
    web_and_engine: tuple[Any, Any],
) -> None:
    """Terminal output lost under load: more messages arrived for one channel than the
    layer's capacity while its consumer was busy, and the oldest were dropped."""
    web, eng = web_and_engine
    channel = await web.new_channel()
    first = asyncio.create_task(web.receive(channel))  # the reader is running
    count = web.capacity * 3
    for n in range(count):
        await send_patiently(eng, channel, {"type": "term.output", "n": n})  # as the engine does
    got = [(await asyncio.wait_for(first, 5))["n"]]
    while len(got) < count:
        got.append((await asyncio.wait_for(web.receive(channel), 5))["n"])
    assert got == list(range(count))


async def test_a_consumer_busy_longer_than_the_expiry_keeps_what_keeps_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep forgot a channel not *read* for the expiry, with the messages that had just
    come for it, while its consumer was busy with one message; Redis keeps a message for the
    expiry after it was sent. And a channel nobody reads or sends to is forgotten."""
    monkeypatch.setattr(channel_layer, "SWEEP_EVERY", 0.0)
    local = LocalChannels(capacity=200, expiry=0.2)
    local.deliver("busy!1", {"n": 1})
    local.deliver("gone!1", {"n": 1})
    assert (await local.get("busy!1"))["n"] == 1  # then busy, not waiting, for 0.5 s
    for n in range(2, 7):
        await asyncio.sleep(0.1)
        local.deliver("busy!1", {"n": n})
    got = [(await asyncio.wait_for(local.get("busy!1"), 2))["n"] for _ in range(5)]
    assert got == [2, 3, 4, 5, 6]
    assert "gone!1" not in local.queues


async def test_a_publish_that_hangs_does_not_hold_the_ones_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stalled Redis held every later event for its 30 s socket timeout."""
    from engine.rpc import worker

    monkeypatch.setattr(worker, "PUBLISH_TIMEOUT", 0.1)

    class HangsOnce:
        def __init__(self) -> None:
            self.sent: list[int] = []
            self.done = asyncio.Event()

        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            if message["n"] == 0:
                await asyncio.Event().wait()  # never answers
            self.sent.append(message["n"])
            if len(self.sent) == 3:
                self.done.set()

    layer = HangsOnce()
    publisher = LayerPublisher(layer, asyncio.get_running_loop())  # type: ignore[arg-type]
    publisher.start()
    for n in range(4):
        publisher.publish("g", {"type": "x", "n": n})
    await asyncio.wait_for(layer.done.wait(), 5)
    await publisher.stop()
    assert layer.sent == [1, 2, 3]


async def test_a_process_whose_wall_clock_jumps_loses_no_member_and_no_message(
    web_and_engine: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock jumping, for one process alone (issue 25): the engine's wall clock two days
    ahead, then three hours behind. channels_redis scored and trimmed by the sender's wall
    clock: ahead, a group_send took every member as older than group_expiry and dropped them
    all (heartbeats lost until the web reconnected); behind, its messages were taken as
    expired by the next sender. The layer now keeps Redis's time (LayerClock)."""
    import time as real_time

    web, eng = web_and_engine
    inbox = await web.new_channel()
    await web.group_add("gantry.test-clock", inbox)
    now = real_time.time()
    monkeypatch.setattr(real_time, "time", lambda: now + 2 * 86400)
    await eng.group_send("gantry.test-clock", {"type": "beat", "n": 1})
    monkeypatch.setattr(real_time, "time", lambda: now - 3 * 3600)
    await eng.send(inbox, {"type": "reply", "n": 2})
    monkeypatch.undo()
    await web.send(inbox, {"type": "reply", "n": 3})  # a sender on time trims what expired
    got = [await asyncio.wait_for(web.receive(inbox), 5) for _ in range(3)]
    assert [m["n"] for m in got] == [1, 2, 3]
    await eng.group_send("gantry.test-clock", {"type": "beat", "n": 4})  # still a member
    assert (await asyncio.wait_for(web.receive(inbox), 5))["n"] == 4
    await web.group_discard("gantry.test-clock", inbox)
