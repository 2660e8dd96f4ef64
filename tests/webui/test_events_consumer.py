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
from engine.protocol import EVENTS_GROUP
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


async def test_only_this_webs_own_nodes_heartbeats_reach_the_browser(
    channel_layer: Any, alice: Any
) -> None:
    """Another node on the same Redis does not make this web's badge say "engine online"."""
    from engine.protocol import NODES_GROUP
    from webui.engine_client import node_name

    comm = communicator(await session_for(alice))
    assert (await comm.connect())[0]
    beat = {"type": "engine.heartbeat", "time": 1.0, "started": 1.0, "info": {}}
    await channel_layer.group_send(NODES_GROUP, beat | {"node": "another-node"})
    await channel_layer.group_send(NODES_GROUP, beat | {"node": node_name()})
    msg = await comm.receive_json_from(5)
    assert msg["type"] == "heartbeat" and msg["node"] == node_name()
    assert await comm.receive_nothing(0.3)
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


async def test_a_pull_snapshot_comes_with_its_card_rendered(channel_layer: Any, alice: Any) -> None:
    """The page never builds a pull card: each snapshot brings the server's HTML, with what
    came from the engine (or the registry) escaped."""
    comm = communicator(await session_for(alice))
    assert (await comm.connect())[0]
    layer = {
        "digest": "sha256:" + "ab" * 32,
        "short": "abababababab",
        "state": "downloading",
        "size": 2_000_000,
        "done": 1_000_000,
        "speed": 500_000,
    }
    snapshot = {
        "job": "0123456789abcdef",
        "seq": 7,
        "state": "pulling",
        "step": "fetching layers",
        "ref": "evil<script>alert(1)</script>:1",
        "layers": [layer],
    }
    await channel_layer.group_send(
        EVENTS_GROUP, {"type": "engine.event", "kind": "pull"} | snapshot
    )
    msg = await comm.receive_json_from(5)
    while msg["type"] != "event":
        msg = await comm.receive_json_from(5)
    html = msg["html"]
    assert msg["job"] == "0123456789abcdef" and msg["seq"] == 7
    assert 'id="pull-0123456789abcdef"' in html and 'data-seq="7"' in html
    assert "<script>" not in html and "evil&lt;script&gt;" in html
    assert "1.0 MB / 2.0 MB · 500.0 KB/s" in html and 'value="1000000"' in html
    await comm.disconnect()


@pytest.mark.parametrize(
    ("layer", "text"),
    [
        ({"state": "waiting", "size": 10}, "waiting"),
        ({"state": "downloading", "size": 2000, "done": 1000}, "1.0 KB / 2.0 KB"),
        ({"state": "extracting", "size": 2000}, "2.0 KB · extracting"),
        ({"state": "done", "size": 999}, "999 B · done"),
        ({"state": "exists", "size": 5}, "already exists"),
        ({"state": "error", "size": 5}, "failed"),
    ],
)
def test_a_layers_row_says_where_it_is(layer: dict[str, Any], text: str) -> None:
    from webui.pullcards import decorate

    row = decorate({"layers": [dict(layer, digest="sha256:" + "0" * 64)]})["layers"][0]
    assert row["text"] == text
    full = layer["state"] in ("extracting", "done", "exists")
    assert row["bar_value"] == (row["bar_max"] if full else layer.get("done", 0))
