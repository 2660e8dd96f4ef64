"""The containers pages: the live ps -a table, the create form, the container page, the Storage
tab with mount/unmount, removal; ownership (404 for others), login and CSRF on every action."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient

from engine.core import Engine
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord
from tests.engine.storagetools import needs_overlay
from tests.webui.webtools import HTMX, alices, client_for, engine_container, stack
from webui.models import AuditEvent, Ownership

__all__ = ["alices", "stack"]
pytestmark = [pytest.mark.django_db(transaction=True), needs_overlay]


def page_urls(cid: str) -> list[str]:
    return [
        f"/containers/{cid}/",
        f"/containers/{cid}/storage/",
        f"/containers/{cid}/storage/panel",
    ]


def action_urls(cid: str) -> list[str]:
    return [f"/containers/{cid}/mount", f"/containers/{cid}/unmount", f"/containers/{cid}/remove"]


async def test_pages_and_actions_need_a_login(alices: ContainerRecord) -> None:
    client = AsyncClient()
    for url in ["/containers/", "/containers/table", "/containers/new", *page_urls(alices.id)]:
        r = await client.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url
    for url in action_urls(alices.id):
        r = await client.post(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url


async def test_the_table_lists_the_users_containers_like_ps(
    alices: ContainerRecord, alice: Any, bob: Any, admin_user_: Any, stack: Engine
) -> None:
    page = await (await client_for(alice)).get("/containers/")
    html = page.content.decode()
    assert 'hx-trigger="load, gantry:container from:body' in html
    assert "Create container" in html
    table = (await (await client_for(alice)).get("/containers/table")).content.decode()
    assert alices.id[:12] in table and "alices" in table and "Created" in table
    assert "localhost/busybox:latest" in table and "/bin/sh" in table
    for head in ("Container ID", "Image", "Command", "Created", "Status", "Ports", "Names"):
        assert head in table
    bobs = (await (await client_for(bob)).get("/containers/table")).content.decode()
    assert alices.id[:12] not in bobs and "No containers yet" in bobs
    admin = (await (await client_for(admin_user_)).get("/containers/table")).content.decode()
    assert alices.id[:12] in admin and "alice" in admin


async def test_create_makes_a_container_the_user_owns(alice: Any, stack: Engine) -> None:
    client = await client_for(alice)
    form = (await client.get("/containers/new")).content.decode()
    assert "your own sandbox on the host" in form  # alice is a learner
    for field in ("image", "name", "command", "entrypoint", "env", "workdir", "user", "tty",
                  "interactive", "volumes"):  # fmt: skip
        assert f'name="{field}"' in form
    r = await client.post(
        "/containers/new",
        {
            "image": "busybox",
            "name": "lab",
            "command": "top -b",
            "env": "A=1\nB=2",
            "volumes": "/mnt:/mnt",
            "tty": "1",
        },  # fmt: skip
        headers=HTMX,
    )
    assert r.status_code == 200, r.content
    record = stack.get(Containers).get("alice.lab")  # a learner's names are hers alone
    assert r["HX-Redirect"] == f"/containers/{record.id}/"
    assert record.options.command == ["top", "-b"] and record.options.tty
    assert "A=1" in record.options.env and record.options.volumes[0].destination == "/mnt"
    # alice is a learner: her /mnt is her own sandbox's, and the page says both
    volume = record.options.volumes[0]
    assert volume.source == str(stack.config.sandbox_root / "alice" / "mnt")
    assert volume.requested == "/mnt" and record.options.sandbox == "alice"
    detail = (await client.get(f"/containers/{record.id}/")).content.decode()
    assert f"(your sandbox: {volume.source})" in detail and "-v /mnt:/mnt" in detail
    own = await Ownership.objects.aget(container_id=record.id)
    assert own.owner_id == alice.pk and own.name == "alice.lab" and own.node == stack.config.node
    event = await AuditEvent.objects.filter(action="container.create").afirst()
    assert event is not None and event.ok and event.target == record.id
    assert "podman create --name lab -v" in event.detail["podman"]
    table = (await client.get("/containers/table")).content.decode()
    assert "lab" in table and "Created" in table


async def test_create_shows_the_engines_error_next_to_the_form(alice: Any, stack: Engine) -> None:
    client = await client_for(alice)
    r = await client.post(
        "/containers/new", {"image": "busybox", "volumes": "/mnt/../etc:/etc"}, headers=HTMX
    )
    html = r.content.decode()
    assert r.status_code == 200 and "&#x27;..&#x27; is not a plain name" in html
    assert 'aria-invalid="true"' in html and 'value="busybox"' in html
    r = await client.post("/containers/new", {"image": "no-such-image"})
    assert r.status_code == 400 and "no-such-image" in r.content.decode()
    assert stack.get(Containers).list() == []
    assert await Ownership.objects.acount() == 0
    failed = await AuditEvent.objects.filter(action="container.create").afirst()
    assert failed is not None and not failed.ok


async def test_another_users_container_is_not_found(alices: ContainerRecord, bob: Any) -> None:
    client = await client_for(bob)
    for url in page_urls(alices.id) + [f"/containers/{'0' * 64}/", "/containers/not-hex/"]:
        assert (await client.get(url)).status_code == 404, url
    for url in action_urls(alices.id):
        assert (await client.post(url)).status_code == 404, url


async def test_the_detail_page_has_the_tabs(alices: ContainerRecord, alice: Any) -> None:
    html = (await (await client_for(alice)).get(f"/containers/{alices.id}/")).content.decode()
    for tab in ("storage", "files", "spec", "run", "terminal"):
        assert f'href="/containers/{alices.id}/{tab}/"' in html
    assert "podman create --name alices" in html and "Remove container" in html


async def test_storage_tab_mounts_and_unmounts(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    client = await client_for(alice)
    html = (await client.get(f"/containers/{alices.id}/storage/")).content.decode()
    assert (
        "upperdir (rw)" in html
        and "lower 0" in html
        and "mount -t overlay -o nodev,lowerdir=" in html
    )
    assert "not mounted" in html and 'id="mount-count">0<' in html
    r = await client.post(f"/containers/{alices.id}/mount", headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200 and 'id="mount-count">1<' in html
    assert " - overlay " in html and "nodev" in html  # the mountinfo line
    assert stack.get(Containers).is_mounted(alices.id)
    r = await client.post(f"/containers/{alices.id}/unmount", headers=HTMX)
    assert 'id="mount-count">0<' in r.content.decode()
    assert not stack.get(Containers).is_mounted(alices.id)
    r = await client.post(f"/containers/{alices.id}/unmount", headers=HTMX)
    assert r.status_code == 409 and "not mounted" in r.content.decode()
    assert (await client.get(f"/containers/{alices.id}/mount")).status_code == 405


async def test_actions_need_the_csrf_token(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    client = await client_for(alice, csrf=True)
    for url in action_urls(alices.id):
        assert (await client.post(url)).status_code == 403, url
    assert (await client.post("/containers/new", {"image": "busybox"})).status_code == 403
    assert not stack.get(Containers).is_mounted(alices.id)


async def test_remove_forgets_the_container(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    client = await client_for(alice)
    r = await client.post(f"/containers/{alices.id}/remove", headers=HTMX)
    assert r.status_code == 200 and r["HX-Redirect"] == "/containers/"
    assert stack.get(Containers).list() == []
    assert await Ownership.objects.acount() == 0


async def test_an_admin_sees_containers_made_with_the_cli(
    admin_user_: Any, bob: Any, stack: Engine
) -> None:
    record = engine_container(stack, "from-cli")
    admin = await client_for(admin_user_)
    table = (await admin.get("/containers/table")).content.decode()
    assert record.id[:12] in table and "(cli)" in table
    assert (await admin.get(f"/containers/{record.id}/storage/")).status_code == 200
    bobs = (await (await client_for(bob)).get("/containers/table")).content.decode()
    assert record.id[:12] not in bobs
    assert (await (await client_for(bob)).get(f"/containers/{record.id}/")).status_code == 404


async def test_engine_calls_do_not_wait_behind_a_websocket_receive(
    alices: ContainerRecord, alice: Any, channel_layer: Any
) -> None:
    """A page keeps /ws/events/ open: its consumer sits in receive() on a process-local
    channel. An engine call from the same process must not queue behind it."""
    import asyncio
    import contextlib
    import time

    listener = await channel_layer.new_channel()
    waiting = asyncio.create_task(channel_layer.receive(listener))
    await asyncio.sleep(0.2)
    client = await client_for(alice)
    started = time.monotonic()
    r = await client.get(f"/containers/{alices.id}/storage/panel")
    assert r.status_code == 200
    assert time.monotonic() - started < 1.0
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
