"""Fixtures every test may use: a real redis-server on a private unix socket (the channel
layer), a temporary engine state root, an in-process engine worker, personas, and probes for
capabilities (root, overlay, runc, conmon) that skip with a stated reason only when the
capability is really absent."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from engine.config import EngineConfig
from engine.core import Engine
from tests.redisproc import start_redis
from tests.settings import TEST_TMP
from tests.skips import requires

REPO = Path(__file__).resolve().parent.parent
__all__ = ["REPO", "requires"]  # requires lives in tests/skips.py (no side effects)


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """A real redis-server on the unix socket that tests.settings points the layer at."""
    sock = Path(TEST_TMP) / "redis.sock"
    if shutil.which("redis-server") is None:
        pytest.exit("redis-server is not installed: run ./gantry test, which installs it", 2)
    try:
        proc = start_redis(sock, TEST_TMP)
    except RuntimeError as err:
        pytest.exit(str(err), 2)
    yield str(sock)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(TEST_TMP, ignore_errors=True)


TEST_DEFAULT_NETWORK = {"name": "gantry", "subnet": "10.91.250.0/24", "bridge": "gt250"}


@pytest.fixture(scope="session", autouse=True)
def no_network_left() -> Iterator[None]:
    """At the end of the run: no container network namespace, no test bridge (gt*, gs*) and
    no aardvark-dns of a test's state root is left on the host (each test tears its own
    down; a stack's sweep tears down the containers it left running)."""
    from engine.network import netns

    before = set(netns.ours())
    yield
    left = [n for n in netns.ours() if n not in before]
    bridges = [b for b in os.listdir("/sys/class/net") if re.fullmatch(r"g[st]\d+", b)]
    dns = subprocess.run(
        ["pgrep", "-f", "aardvark-dns --config /tmp/"], capture_output=True, text=True
    ).stdout.split()
    assert not (left or bridges or dns), f"left: netns {left}, bridges {bridges}, aardvark {dns}"


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    """A temporary engine state root; never the real one."""
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    return root


@pytest.fixture
def engine(tmp_root: Path, tmp_path: Path) -> Engine:
    return Engine(
        EngineConfig(
            root=tmp_root,
            node=settings.GANTRY_NODE,
            volume_allowlist=(tmp_path / "volumes",),
            sandbox_root=tmp_path / "sandbox",
            # A create without --network gets none here (the tests of networks, the seed lab
            # and the stacks use the default bridge); the default network is a test one.
            network=dict(TEST_DEFAULT_NETWORK),
            policy={"network": {"default": "none"}},
        )
    )


@pytest.fixture
async def channel_layer() -> AsyncIterator[Any]:
    """The configured (Redis) channel layer, flushed before the test and closed after."""
    from channels.layers import channel_layers, get_channel_layer

    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()
    await layer.close_pools()
    channel_layers.backends.clear()


@pytest.fixture
async def engine_worker(engine: Engine, channel_layer: Any) -> AsyncIterator[Engine]:
    """The engine worker running in this event loop against the real Redis layer."""
    from engine.rpc.worker import serve

    stop = asyncio.Event()
    task = asyncio.create_task(serve(channel_layer, engine, stop, heartbeat_interval=0.2))
    yield engine
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def admin_user_(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", password="root-pass-123")


def is_root() -> bool:
    return os.geteuid() == 0


# Real registries for the pull tests (docker-registry on loopback; see tests/registry.py).
from tests.registry import (  # noqa: E402, F401
    auth_registry,
    pushed_images,
    registry,
    registry_workdir,
    token_registry,
)
