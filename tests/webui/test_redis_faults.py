"""A stalled and a full Redis (issue 25's fault matrix), on a private redis-server with the web's
own channel layer and a real engine worker: a request fails with a clear error within its
timeout rather than hanging for the socket's, and requests answer again once Redis does."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.core import Engine
from engine.errors import EngineOfflineError
from engine.protocol import verbs
from engine.rpc.worker import serve
from tests.redisproc import start_redis
from webui import engine_client


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "redis.sock"
    proc = start_redis(sock, tmp_path, "--enable-debug-command", "local")
    yield sock
    proc.kill()
    proc.wait(10)


@pytest.fixture
async def worker(engine: Engine, private_redis: Path, settings: Any) -> AsyncIterator[Any]:
    """The web's channel layer on the private Redis, and an engine worker serving on it."""
    from channels.layers import channel_layers, get_channel_layer

    layers = {"default": dict(settings.CHANNEL_LAYERS["default"])}
    config = dict(layers["default"]["CONFIG"])
    config["hosts"] = [dict(config["hosts"][0], address=f"unix://{private_redis}")]
    layers["default"]["CONFIG"] = config
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends.clear()
    layer = get_channel_layer()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(layer, engine, stop, heartbeat_interval=0.2))
    await answers()
    yield layer
    stop.set()
    await asyncio.wait_for(task, 20)
    await layer.close_pools()
    channel_layers.backends.clear()


async def ping(timeout: float) -> str:
    return await engine_client.request(verbs.NODE_PING, verbs.NoArgs(), timeout=timeout)


async def answers(within: float = 15) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            assert await ping(2) == "pong"
            return
        except EngineOfflineError:
            assert time.monotonic() < deadline, "the engine did not answer again"


async def stalled(sock: Path) -> bool:
    """True while Redis answers no PING within 0.3 s (it is in DEBUG SLEEP)."""
    client = redis.asyncio.Redis(unix_socket_path=str(sock))
    try:
        await asyncio.wait_for(client.ping(), 0.3)
        return False
    except TimeoutError:
        return True
    finally:
        await client.aclose()


async def test_a_stalled_redis_fails_a_request_within_its_timeout(
    worker: Any, private_redis: Path
) -> None:
    sleeper = await asyncio.create_subprocess_exec(
        "redis-cli", "-s", str(private_redis), "DEBUG", "SLEEP", "4",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while not await stalled(private_redis):
        assert time.monotonic() < deadline, "Redis never stalled"
    started = time.monotonic()
    with pytest.raises(EngineOfflineError, match="within 1s"):
        await ping(1.0)
    assert time.monotonic() - started < 1.8  # its own timeout, not the socket's 30 s
    await sleeper.wait()
    await answers()


async def test_a_full_redis_answers_or_refuses_a_request_clearly_and_recovers(
    worker: Any, private_redis: Path
) -> None:
    client = redis.Redis(unix_socket_path=str(private_redis))
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used // 2)  # what it holds passes maxmemory: it is full
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("probe", "x")
        started = time.monotonic()
        # The send script and the receive's one BZPOPMIN may pass (a script that has written
        # is let on past the OOM check, and a pop frees memory); a write that does not is
        # refused. Either the answer or a clear error, within the timeout, never a hang.
        refusal = "refused the request: OOM|no answer from node testnode within 2s"
        try:
            assert await ping(2.0) == "pong"
        except EngineOfflineError as err:
            assert re.search(refusal, str(err)), err
        assert time.monotonic() - started < 2.5
        client.config_set("maxmemory", 0)
        await answers()
    finally:
        client.close()
