"""The RPC over the real channel layer (Redis), against the worker running in-process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import EngineOfflineError, InvalidInputError
from engine.protocol import engine_channel, verbs
from engine.protocol.check import Verb
from engine.protocol.verbs import NoArgs
from webui import engine_client


async def test_it_calls_node_info(engine_worker: Engine) -> None:
    info = await engine_client.request(verbs.NODE_INFO, verbs.NoArgs())
    assert info["node"] == engine_worker.config.node
    assert info["root"] == str(engine_worker.config.root)


async def test_it_raises_the_engines_typed_error(engine_worker: Engine) -> None:
    with pytest.raises(InvalidInputError, match="unknown operation"):
        await engine_client.call("node.nonsense")


async def test_the_worker_survives_garbage(engine_worker: Engine, channel_layer: Any) -> None:
    channel = engine_channel(engine_worker.config.node)
    for junk in (
        {"type": "engine.request"},
        {"type": "nope", "x": 1},
        {"type": "engine.request", "id": "1", "op": "node.info", "reply_to": "bad name"},
    ):
        await channel_layer.send(channel, junk)
    reply_to = await channel_layer.new_channel("t.")
    await channel_layer.send(
        channel,
        {"type": "engine.request", "id": "bad id!", "op": "node.info", "reply_to": reply_to},
    )
    reply = await asyncio.wait_for(channel_layer.receive(reply_to), 5)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_input"
    assert await engine_client.request(verbs.NODE_PING, verbs.NoArgs()) == "pong"


async def test_it_says_offline_within_the_timeout_when_no_engine_runs(channel_layer: Any) -> None:
    started = time.monotonic()
    with pytest.raises(EngineOfflineError, match="engine offline"):
        await engine_client.request(
            verbs.NODE_INFO, verbs.NoArgs(), timeout=1.0, node="nobody-home"
        )
    assert time.monotonic() - started < 2.0


async def test_requests_run_concurrently(
    engine_worker: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.api import base

    def slow(ctx: Any, args: Any) -> str:
        time.sleep(0.5)
        return "done"

    verb: Verb[NoArgs, str] = Verb("node.slow", NoArgs, "node")
    monkeypatch.setitem(base.OPS, "node.slow", base.Handler(verb, slow))
    started = time.monotonic()
    results = await asyncio.gather(*(engine_client.call("node.slow") for _ in range(8)))
    assert results == ["done"] * 8
    assert time.monotonic() - started < 2.0


async def test_heartbeats_reach_the_nodes_group(engine_worker: Engine, channel_layer: Any) -> None:
    me = await channel_layer.new_channel("hb.")
    await channel_layer.group_add("gantry.nodes", me)
    beat = await asyncio.wait_for(channel_layer.receive(me), 5)
    assert beat["type"] == "engine.heartbeat"
    assert beat["node"] == engine_worker.config.node
    assert beat["info"]["runc"]


def slow_verb(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    from engine.api import base

    def slow(ctx: Any, args: Any) -> str:
        time.sleep(seconds)
        return "done"

    verb: Verb[NoArgs, str] = Verb("node.slow", NoArgs, "node")
    monkeypatch.setitem(base.OPS, "node.slow", base.Handler(verb, slow))


async def test_a_long_request_is_kept_alive_past_the_rpc_timeout(
    engine_worker: Engine, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A request allowed longer than the RPC timeout (a start: a minute) gets its answer: the
    engine says "working" while it runs, so the caller does not take it for gone."""
    settings.GANTRY_RPC_TIMEOUT = 5.0
    slow_verb(monkeypatch, 6.5)
    assert await engine_client.call("node.slow", timeout=30) == "done"


async def test_an_engine_gone_quiet_is_reported_within_the_rpc_timeout(
    channel_layer: Any, settings: Any
) -> None:
    """An engine that took a request and died (nothing answers, nothing says "working") is
    reported after the RPC timeout, not after the request's whole allowance."""
    settings.GANTRY_RPC_TIMEOUT = 5.0
    node = "taken-and-dead"

    async def take_and_die() -> None:
        await channel_layer.receive(engine_channel(node))  # the request, never answered

    taker = asyncio.create_task(take_and_die())
    started = time.monotonic()
    with pytest.raises(EngineOfflineError, match="went quiet for 5s while handling node.info"):
        await engine_client.call("node.info", timeout=60, node=node)
    assert 5.0 <= time.monotonic() - started < 7.0
    await taker
