"""The network as pages: the create form's Network and Published ports fields, the Network tab
of a running container (namespace, veth pair, address, ip -n, ports, netavark's rules, the
commands by hand), the Networks page (an admin creates and removes; a learner only looks),
and the policy's refusals shown as sentences. Real worker, netavark and iptables."""

from __future__ import annotations

import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from engine.core import Engine
from engine.network import netns
from engine.network.store import Networks
from engine.runtime.lifecycle import Lifecycle
from tests.engine.runtools import RUNTIME_REASON, can_run_containers
from tests.engine.storagetools import needs_overlay
from tests.skips import requires
from tests.webui.webtools import HTMX, client_for, stack
from webui.models import Ownership

__all__ = ["stack"]
pytestmark = [
    pytest.mark.django_db(transaction=True),
    needs_overlay,
    requires(can_run_containers(), RUNTIME_REASON),
    pytest.mark.privileged,
]


async def _create(client: Any, **fields: str) -> Any:
    return await client.post(
        "/containers/new", {"image": "busybox", "command": "sleep 600", **fields}, headers=HTMX
    )


async def test_a_learner_publishes_a_port_and_the_network_tab_shows_the_construction(
    alice: Any, bob: Any, stack: Engine
) -> None:
    client = await client_for(alice)
    form = (await client.get("/containers/new")).content.decode()
    assert 'name="network"' in form and 'name="publish"' in form
    assert "default (gantry)" in form and "ports 20000-29999" in form
    r = await _create(client, name="web", network="bridge", publish="20080:8080")
    assert r.status_code == 200 and "HX-Redirect" in r, r.content.decode()[:500]
    own = await Ownership.objects.aget(owner=alice)
    tab = (await client.get(f"/containers/{own.container_id}/network/")).content.decode()
    assert "not set up" in tab and "127.0.0.1:20080-&gt;8080/tcp" in tab
    table = (await client.get("/containers/table")).content.decode()
    assert '<td class="col-ports mono">127.0.0.1:20080-&gt;8080/tcp</td>' in table  # as ps
    await sync_to_async(stack.get(Lifecycle).start)(own.container_id)
    try:
        tab = (await client.get(f"/containers/{own.container_id}/network/")).content.decode()
        path = str(netns.path_of(own.container_id))
        assert path in tab and "veth pair" in tab and "gt250" in tab
        address = re.search(r'data-testid="network-address">(10\.91\.250\.\d+)/24<', tab)
        assert address, tab[:3000]
        assert f"inet {address[1]}/24" in tab  # ip -n ... addr
        assert "default via 10.91.250.1 dev eth0" in tab  # ip -n ... route
        assert f"--to-destination {address[1]}:8080" in tab  # netavark's DNAT rule
        assert f"ip netns add {netns.name_of(own.container_id)}" in tab and "netavark" in tab
        assert "podman create --network gantry -p 127.0.0.1:20080:8080/tcp" in tab
        for tabs in (">Spec</a>", ">Network</a>", ">Run</a>"):
            assert tabs in tab
        other = await client_for(bob)
        assert (await other.get(f"/containers/{own.container_id}/network/")).status_code == 404
    finally:
        await sync_to_async(stack.get(Lifecycle).containers.remove)(own.container_id, force=True)


@pytest.mark.parametrize(
    ("publish", "message"),
    [
        ("80:80", "host port 80 is privileged (below 1024): learners publish 20000-29999"),
        ("18080:80", "host port 18080 is outside the allowed range 20000-29999"),
        ("0.0.0.0:20081:80", "publishing on 0.0.0.0 is not allowed"),
        ("20000-20002:80", "(one port, not a range)"),
    ],
)
async def test_a_learners_refused_port_is_a_sentence_and_nothing_is_made(
    alice: Any, stack: Engine, publish: str, message: str
) -> None:
    client = await client_for(alice)
    r = await _create(client, name="web", network="bridge", publish=publish)
    assert message in r.content.decode().replace("&#x27;", "'")
    assert not await Ownership.objects.filter(owner=alice).aexists()


async def test_an_unknown_network_is_refused_on_the_form(alice: Any, stack: Engine) -> None:
    r = await _create(await client_for(alice), network="nosuch")
    assert "network nosuch not found" in r.content.decode()


async def test_the_networks_page_admins_make_and_remove_learners_look(
    alice: Any, admin_user_: Any, stack: Engine
) -> None:
    learner = await client_for(alice)
    page = (await learner.get("/networks/")).content.decode()
    assert "gantry" in page and "10.91.250.0/24" in page and "New network" not in page
    assert (await learner.post("/networks/create", {"name": "mine"})).status_code == 403

    admin = await client_for(admin_user_)
    page = (await admin.get("/networks/")).content.decode()
    assert "New network" in page and 'aria-label="Remove network gantry"' not in page
    r = await admin.post("/networks/create", {"name": "Bad Name", "dns": "on"})
    assert r.status_code == 400 and "must match [a-z0-9][a-z0-9_.-]{0,62}" in r.content.decode()
    r = await admin.post(
        "/networks/create", {"name": "labnet", "subnet": "10.91.252.0/24", "dns": "on"}
    )
    assert r.status_code == 200 and "Network labnet created (10.91.252.0/24)." in r.content.decode()
    assert "labnet" in [n.name for n in stack.get(Networks).all()]
    r = await admin.post("/networks/labnet/remove")
    assert "Network labnet removed." in r.content.decode()
    assert "labnet" not in [n.name for n in stack.get(Networks).all()]
