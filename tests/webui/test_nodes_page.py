"""The Nodes page (/nodes/) against the real Redis registry: instructors and admins see every
node with its status, counts and versions; learners may not; an admin forgets an offline node
but not an online one; a registry out of reach is said, not a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from engine.core import Engine
from engine.protocol import nodes
from engine.rpc.presence import Presence
from webui import users
from webui.models import AuditEvent, Ownership

pytestmark = pytest.mark.django_db(transaction=True)
HX = {"HX-Request": "true"}


@pytest.fixture
def registry(engine: Engine) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(nodes.NODES_KEY, *client.keys(nodes.LEASE_PREFIX + "*"))
    engine.ensure_root()
    Presence(engine, client).claim()  # this node: online
    gone = Presence(engine, client)
    gone.name = "lab-host-2"  # another node, stopped cleanly: offline
    gone.owner = nodes.owner_token("lab-host-2", 4242, 1.0)
    gone.claim()
    gone.release()
    yield client
    client.delete(nodes.NODES_KEY, *client.keys(nodes.LEASE_PREFIX + "*"))
    client.close()


def client_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_instructors_and_admins_see_every_node_learners_do_not(
    registry: redis.Redis, engine: Engine, alice: Any, admin_user_: Any
) -> None:
    teacher = users.add("teach", users.INSTRUCTOR).user
    assert client_of(alice).get("/nodes/").status_code == 403
    assert ">Nodes</a>" not in client_of(alice).get("/containers/").content.decode()
    for who in (teacher, admin_user_):
        page = client_of(who).get("/nodes/").content.decode()
        assert f'data-node="{engine.config.node}"' in page and 'data-node="lab-host-2"' in page
        assert "online" in page and "offline" in page and "0 running / 0" in page
        assert ">Nodes</a>" in page
    assert "Forget node lab-host-2" in client_of(admin_user_).get("/nodes/").content.decode()
    assert "Forget node" not in client_of(teacher).get("/nodes/").content.decode()


def test_an_admin_forgets_an_offline_node_not_an_online_one(
    registry: redis.Redis, engine: Engine, admin_user_: Any
) -> None:
    admin = client_of(admin_user_)
    online = admin.post(f"/nodes/{engine.config.node}/forget", headers=HX)
    assert online.status_code == 409 and b"is online" in online.content
    assert admin.post("/nodes/no-such/forget", headers=HX).status_code == 404
    alice = users.add("alice", users.LEARNER).user
    Ownership.objects.create(container_id="a" * 64, name="on-gone", node="lab-host-2", owner=alice)
    Ownership.objects.create(container_id="b" * 64, name="on-this", node=engine.config.node,
                             owner=alice)  # fmt: skip
    gone = admin.post("/nodes/lab-host-2/forget", headers=HX)
    assert gone.status_code == 200 and b'data-node="lab-host-2"' not in gone.content
    assert list(Ownership.objects.values_list("name", flat=True)) == ["on-this"]
    assert AuditEvent.objects.get(action="node.forget").detail == {"containers": 1}
    assert {r["Name"] for r in nodes.nodes(registry)} == {engine.config.node}
    teacher = client_of(users.add("teach", users.INSTRUCTOR).user)
    assert teacher.post(f"/nodes/{engine.config.node}/forget").status_code == 403


def test_a_registry_out_of_reach_is_said(admin_user_: Any, settings: Any, tmp_path: Any) -> None:
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    page = client_of(admin_user_).get("/nodes/table")
    assert page.status_code == 200
    assert b"the node registry is out of reach" in page.content


async def test_the_table_is_never_cached(admin_user_: Any, registry: redis.Redis) -> None:
    client = Client()
    await sync_to_async(client.force_login)(admin_user_)
    response = await sync_to_async(client.get)("/nodes/table")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
