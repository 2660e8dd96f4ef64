"""Fixtures for the containers and files pages: the real engine worker (Redis), a busybox image,
a container owned by alice, logged-in async clients, and helpers to read responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.conf import settings
from django.test import AsyncClient

from engine.core import Engine
from engine.protocol import verbs
from engine.storage import mounts
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from tests.imagetools import busybox_image
from webui import engine_client
from webui.models import Ownership


@pytest.fixture
async def stack(engine_worker: Engine) -> AsyncIterator[Engine]:
    """The worker with a busybox image in its store; containers unmounted afterwards. The
    image is written once the worker answers, i.e. after its start-up sweep and gc."""
    await engine_client.request(verbs.NODE_PING, verbs.NoArgs(), timeout=30)
    busybox_image(engine_worker)
    yield engine_worker
    service = engine_worker.get(Containers)
    for record in service.list():
        mounts.unmount(service.paths(record.id).merged)


def engine_container(engine: Engine, name: str = "web") -> ContainerRecord:
    return engine.get(Containers).create(CreateOptions(), "localhost/busybox:latest", name)


@pytest.fixture
async def alices(stack: Engine, alice: Any) -> ContainerRecord:
    """A container that belongs to alice."""
    record = engine_container(stack, "alices")
    await Ownership.objects.acreate(
        container_id=record.id, name=record.name, node=settings.GANTRY_NODE, owner=alice
    )
    return record


async def client_for(user: Any, *, csrf: bool = False) -> AsyncClient:
    client = AsyncClient(enforce_csrf_checks=csrf)
    await client.aforce_login(user)
    return client


async def body(response: Any) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join([chunk async for chunk in response.streaming_content])
    return bytes(response.content)


HTMX = {"HX-Request": "true"}
