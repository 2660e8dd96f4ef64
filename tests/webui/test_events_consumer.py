"""/ws/events/ through Channels' communicator: auth, Origin, heartbeat forwarding, logout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from engine.core import Engine
from webui.asgi import application
from webui.consumers.base import CLOSE_UNAUTHENTICATED

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@database_sync_to_async
def session_for(user: Any) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return str(store.session_key)


def communicator(
    session_key: str | None, origin: tuple[bytes, bytes] | None = ORIGIN
) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1:8000")]
    if origin:
        headers.append(origin)
    if session_key:
        headers.append((b"cookie", f"sessionid={session_key}".encode()))
    return WebsocketCommunicator(application, "/ws/events/", headers=headers)


async def test_anonymous_is_closed(channel_layer: Any) -> None:
    comm = communicator(None)
    connected, _ = await comm.connect()
    assert connected
    out = await comm.receive_output(2)
    assert out == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


@pytest.mark.parametrize(
    "origin", [(b"origin", b"https://evil.example"), None, (b"origin", b"null")]
)
async def test_foreign_or_missing_origin_is_rejected(
    channel_layer: Any, alice: Any, origin: Any
) -> None:
    comm = communicator(await session_for(alice), origin)
    connected, _ = await comm.connect()
    assert not connected


async def test_heartbeats_reach_the_browser(engine_worker: Engine, alice: Any) -> None:
    comm = communicator(await session_for(alice))
    connected, _ = await comm.connect()
    assert connected
    msg = await comm.receive_json_from(5)
    assert msg["type"] == "heartbeat"
    assert msg["node"] == engine_worker.config.node
    await comm.disconnect()


async def test_sending_anything_closes_the_socket(channel_layer: Any, alice: Any) -> None:
    comm = communicator(await session_for(alice))
    await comm.connect()
    await comm.send_json_to({"type": "subscribe", "group": "gantry.everything"})
    out = await comm.receive_output(2)
    assert out["type"] == "websocket.close"


async def test_logout_closes_the_sessions_sockets(channel_layer: Any, alice: Any) -> None:
    from webui.consumers.base import session_group

    key = await session_for(alice)
    comm = communicator(key)
    await comm.connect()
    await asyncio.sleep(0.1)
    await channel_layer.group_send(session_group(key), {"type": "session.logout"})
    out = await comm.receive_output(2)
    assert out == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
