"""Containers on several nodes (issue 15): placement of a new container ("any node" or a named
one), and the containers table with a node column, a node that goes offline shown as such
with its actions disabled and nothing asked of it. Two real engine workers, each registered in
the real Redis, on their own state roots."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import EngineOfflineError, NotFoundError, PolicyError
from engine.images.service import Images
from engine.protocol import nodes, verbs
from engine.rpc.presence import Presence
from engine.rpc.worker import serve
from engine.storage import mounts
from engine.storage.containers import Containers
from engine.storage.records import CreateOptions
from tests.imagetools import busybox_image
from tests.registry import PushedImages, Registry
from tests.webui.test_images_views import wait_done
from tests.webui.webtools import client_for
from webui import engine_client, placement
from webui.models import Ownership

pytestmark = pytest.mark.django_db(transaction=True)
HX = {"HX-Request": "true"}
IMAGE = "localhost/busybox:latest"


def record(name: str, running: int = 0, mem: int = 1, status: str = nodes.ONLINE) -> dict[str, Any]:
    return {"Name": name, "Status": status, "Running": running, "MemFree": mem}


def test_any_node_is_the_users_own_else_the_least_loaded() -> None:
    own = record(engine_client.node_name(), running=9)  # this web's node, busy
    three = [record("a", running=3), record("b", running=1, mem=5), record("c", running=1, mem=9)]
    three.append(own)
    assert placement.choose(three, "any") == "c"  # fewest running, then most memory
    assert placement.choose(three, "") == "c"
    assert placement.choose(three, "any", ["a", "b", "b"]) == "b"  # where the user's lab is
    three[1]["Status"] = nodes.OFFLINE
    assert placement.choose(three, "any", ["b"]) == "c"  # ... unless that node is offline
    assert placement.choose(three, "a") == "a"


def test_the_policy_pins_roles_and_users_to_nodes(settings: Any) -> None:
    settings.GANTRY_NODE_PINS = "learner=a,b user:ann=c"
    nodes_ = [record("a", running=5), record("b", running=4), record("c"), record("d")]
    learner = placement.pinned("learner", "bob")
    assert learner == ["a", "b"] and placement.pinned("learner", "ann") == ["c"]
    assert placement.pinned("instructor", "ivy") is None
    assert placement.choose(nodes_, "any", allowed=learner) == "b"  # least loaded of its pins
    assert placement.choose(nodes_, "any", ["d"], allowed=learner) == "b"  # not where it was
    with pytest.raises(PolicyError, match="keeps you to node a, b"):
        placement.choose(nodes_, "d", allowed=learner)
    settings.GANTRY_NODE_PINS = "learner"  # a typo pins nobody silently: refused
    with pytest.raises(PolicyError, match="is not KEY=NODE"):
        placement.pinned("learner", "bob")
    settings.GANTRY_NODE_PINS = "learner=Lab_1"
    with pytest.raises(PolicyError):
        placement.pinned("learner", "bob")


def test_a_named_node_must_be_known_and_online() -> None:
    two = [record("a"), record("b", status=nodes.OFFLINE)]
    with pytest.raises(EngineOfflineError, match="node b is offline"):
        placement.choose(two, "b")
    with pytest.raises(NotFoundError, match="node zz: no such node"):
        placement.choose(two, "zz")
    own = record(engine_client.node_name(), status=nodes.OFFLINE)
    with pytest.raises(EngineOfflineError, match="no engine node is online"):
        placement.choose([record("b", status=nodes.OFFLINE), own], "any")


def test_this_webs_own_node_counts_when_it_is_not_on_record() -> None:
    own = engine_client.node_name()
    assert placement.choose([], "any") == own and placement.choose([], own) == own
    with pytest.raises(NotFoundError):
        placement.choose([], "elsewhere")
    # a registry that holds only others (one gone offline): this web's node still takes work
    gone = [record("elsewhere", status=nodes.OFFLINE)]
    assert placement.choose(gone, "any") == own
    own_offline = [record(own, status=nodes.OFFLINE)]  # on record and offline: not taken
    with pytest.raises(EngineOfflineError):
        placement.choose(own_offline, "any")


class Node:
    """An engine worker of its own, registered, in this event loop."""

    def __init__(self, engine: Engine, layer: Any) -> None:
        self.engine = engine
        self.stop = asyncio.Event()
        self.client = redis.Redis.from_url(settings.REDIS_URL)
        presence = Presence(engine, self.client)
        self.task = asyncio.create_task(
            serve(layer, engine, self.stop, heartbeat_interval=0.2, presence=presence)
        )

    async def ready(self) -> None:
        node = self.engine.config.node
        await engine_client.request(verbs.NODE_PING, verbs.NoArgs(), timeout=30, node=node)
        busybox_image(self.engine)

    async def halt(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            await asyncio.wait_for(self.task, 10)
            service = self.engine.get(Containers)
            for rec in service.list():
                mounts.unmount(service.paths(rec.id).merged)


@pytest.fixture
async def two_nodes(
    engine: Engine, channel_layer: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Node, Node]]:
    """This test's engine (node testnode) and node testnode-b, which trusts the test's plain
    http registry when the test has one (as engine.json marks the demo registry)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(nodes.NODES_KEY, *client.keys(nodes.LEASE_PREFIX + "*"))
    trusted: tuple[str, ...] = ()
    if "registry" in request.fixturenames:
        trusted = (request.getfixturevalue("registry").host,)
    other = Engine(
        EngineConfig(
            root=tmp_path / "root-b", node="testnode-b", sandbox_root=tmp_path / "sb",
            insecure_registries=trusted,
        )
    )  # fmt: skip
    pair = (Node(engine, channel_layer), Node(other, channel_layer))
    for node in pair:
        await node.ready()
    placement.forget_cache()
    yield pair
    for node in pair:
        await node.halt()
    client.delete(nodes.NODES_KEY, *client.keys(nodes.LEASE_PREFIX + "*"))
    client.close()
    placement.forget_cache()


async def create(client: Any, name: str, node: str) -> Any:
    form = {"image": IMAGE, "name": name, "command": "sleep 60", "node": node}
    return await client.post("/containers/new", form, headers=HX)


async def test_containers_land_on_the_node_asked_for_or_placed(
    two_nodes: tuple[Node, Node], alice: Any, admin_user_: Any, settings: Any
) -> None:
    a, b = two_nodes
    admin = await client_for(admin_user_)
    form = (await admin.get("/containers/new")).content.decode()
    assert (
        'id="id_node"' in form and ">any node</option>" in form and "testnode-b (0 running)" in form
    )
    made = await create(admin, "on-b", "testnode-b")
    assert made.status_code == 200 and "HX-Redirect" in made, made.content.decode()[:3000]
    on_b = await Ownership.objects.aget(name="on-b")
    assert on_b.node == "testnode-b"
    assert b.engine.get(Containers).get("on-b").id == on_b.container_id

    learner = await client_for(alice)
    first = await create(learner, "first", "testnode-b")
    assert "HX-Redirect" in first, first.content.decode()[:3000]
    second = await create(learner, "second", "any")  # beside her first
    assert "HX-Redirect" in second, second.content.decode()[:3000]
    assert (await Ownership.objects.aget(name="alice.second")).node == "testnode-b"
    refused = (await create(learner, "nowhere", "no-such-node")).content.decode()
    assert "node no-such-node: no such node" in refused
    settings.GANTRY_NODE_PINS = f"learner={a.engine.config.node}"
    pinned = (await create(learner, "pinned", "testnode-b")).content.decode()
    assert f"the placement policy keeps you to node {a.engine.config.node}" in pinned
    assert (await create(learner, "third", "any")).status_code == 200
    assert (await Ownership.objects.aget(name="alice.third")).node == a.engine.config.node
    settings.GANTRY_NODE_PINS = ""

    table = (await admin.get("/containers/table")).content.decode()
    assert '<th scope="col" class="col-node">Node</th>' in table
    assert table.count('<td class="col-node mono nowrap">testnode-b</td>') == 3


async def test_a_node_gone_offline_shows_its_containers_so_and_asks_it_nothing(
    two_nodes: tuple[Node, Node], alice: Any
) -> None:
    a, b = two_nodes
    learner = await client_for(alice)
    assert (await create(learner, "on-a", a.engine.config.node)).status_code == 200
    assert (await create(learner, "on-b", "testnode-b")).status_code == 200
    await b.halt()  # a clean stop: offline at once
    placement.forget_cache()
    started = asyncio.get_running_loop().time()
    table = (await learner.get("/containers/table")).content.decode()
    assert asyncio.get_running_loop().time() - started < 2  # no request timed out on node b
    assert "node testnode-b is offline (its engine was stopped)" in table
    on_b = (await Ownership.objects.aget(name="alice.on-b")).container_id
    row_b = table[table.index(f'data-container="{on_b}"') :]
    assert "node offline" in row_b[:3000] and "disabled" in row_b[:3000]
    assert ">alice.on-a</a>" in table  # the other node's row as before
    refused = (await create(learner, "again", "testnode-b")).content.decode()
    assert "node testnode-b is offline" in refused


async def test_images_are_per_node_listed_pulled_and_removed_there(
    two_nodes: tuple[Node, Node], admin_user_: Any, registry: Registry, pushed_images: Any
) -> None:
    a, b = two_nodes
    admin = await client_for(admin_user_)
    table = (await admin.get("/images/table")).content.decode()
    assert '<th scope="col">Node</th>' in table
    busybox = b.engine.get(Images).find(IMAGE).id.removeprefix("sha256:")
    for node in (a, b):  # the same image, once per node, each linking to its node
        assert f'data-node="{node.engine.config.node}"' in table
        assert f"/images/{busybox}/?node={node.engine.config.node}" in table
    page = (await admin.get("/images/")).content.decode()
    assert 'id="pull-node"' in page and '<option value="testnode-b">' in page

    ref = registry.ref(PushedImages.OCI)
    form = {"ref": ref, "skip_tls": "on", "node": "testnode-b"}
    job = re.search(
        r'data-job="([0-9a-f]{16})"',
        (await admin.post("/images/pull", form, headers=HX)).content.decode(),
    )
    assert job and (await wait_done(b.engine, job.group(1)))["state"] == "done"
    assert b.engine.get(Images).find(ref) and not any(
        ref in i.names for i in a.engine.get(Images).images()
    )

    detail = await admin.get(f"/images/{busybox}/?node=testnode-b")
    assert (
        detail.status_code == 200 and '<dd class="mono">testnode-b</dd>' in detail.content.decode()
    )
    assert (await admin.get(f"/images/{busybox}/?node=no-such")).status_code == 404
    removed = await admin.post(f"/images/{busybox}/remove", {"node": "testnode-b"}, headers=HX)
    assert removed.status_code == 200
    assert a.engine.get(Images).find(IMAGE)  # the other node's copy stays
    with pytest.raises(NotFoundError):
        b.engine.get(Images).find(IMAGE)


async def test_the_create_form_pulls_an_image_the_chosen_node_lacks(
    two_nodes: tuple[Node, Node], admin_user_: Any, registry: Registry, pushed_images: Any
) -> None:
    a, b = two_nodes
    admin = await client_for(admin_user_)
    ref = registry.ref(PushedImages.WHITEOUTS)
    form = {"image": ref, "name": "pulled", "command": "true", "node": "testnode-b"}
    made = await admin.post("/containers/new", form, headers=HX)
    assert "HX-Redirect" in made, re.findall(r"role=.alert.*", made.content.decode())
    assert b.engine.get(Images).find(ref) and b.engine.get(Containers).get("pulled")
    with pytest.raises(NotFoundError):
        a.engine.get(Images).find(ref)  # pulled on the chosen node only
    untrusted = {"image": ref, "name": "never", "node": a.engine.config.node}
    refused = (await admin.post("/containers/new", untrusted, headers=HX)).content.decode()
    assert f"is not on node {a.engine.config.node}, and pulling it failed" in refused
    assert "TLS verification failed" in refused  # node a does not trust the plain registry


async def test_an_admin_opens_a_cli_made_container_on_another_node(
    two_nodes: tuple[Node, Node], admin_user_: Any
) -> None:
    """No ownership record says where it is: the web asks the online nodes."""
    a, b = two_nodes
    record = b.engine.get(Containers).create(CreateOptions(), IMAGE, "cli-made")
    admin = await client_for(admin_user_)
    table = (await admin.get("/containers/table")).content.decode()
    assert f'data-container="{record.id}"' in table  # listed with node b's rows
    page = await admin.get(f"/containers/{record.id}/")
    assert page.status_code == 200 and "cli-made" in page.content.decode()
