"""The Run tab through the web views, against the in-process engine worker on the real Redis
and real conmon/runc: access rules (login, owner, CSRF, POST only), every action, live state
events, logs (follow cursor, timestamps, download), and the lab end to end."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from engine.core import Engine
from engine.protocol import EVENTS_GROUP, verbs
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from tests.engine.runtools import (
    RUNTIME_REASON,
    Census,
    can_run_containers,
    create,
    no_leaks,
    on_off_image,
)
from tests.imagetools import busybox_image
from tests.skips import requires
from webui import engine_client
from webui.models import AuditEvent, Ownership

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires(can_run_containers(), RUNTIME_REASON),
    pytest.mark.privileged,
]

LOOP = "trap 'echo bye; exit 7' TERM; echo ready; while true; do sleep 0.05; done"


@pytest.fixture
async def web(engine_worker: Engine, alice: Any) -> AsyncIterator[tuple[Engine, AsyncClient]]:
    busybox_image(engine_worker)
    client = AsyncClient()
    await client.aforce_login(alice)
    yield engine_worker, client
    containers = engine_worker.get(Lifecycle).containers  # removes stop what runs
    for record in containers.list():
        await sync_to_async(containers.remove)(record.id, force=True)


async def owned(engine: Engine, owner: Any, command: list[str], **options: Any) -> str:
    record = await sync_to_async(create)(engine, command, **options)
    await Ownership.objects.acreate(
        container_id=record.id, name=record.name, node=engine.config.node, owner=owner
    )
    return str(record.id)


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def state_of(cid: str) -> dict[str, Any]:
    state = await engine_client.request(verbs.CONTAINER_STATE, verbs.Id(id=cid))
    result: dict[str, Any] = dict(state)
    return result


def url(cid: str, rest: str = "") -> str:
    return f"/containers/{cid}/run/{rest}"


async def test_it_needs_login_ownership_csrf_and_post(web: tuple[Engine, AsyncClient], bob: Any):
    engine, client = web
    cid = await owned(engine, await _user("alice"), ["sleep", "60"])
    anonymous = AsyncClient()
    r = await anonymous.get(url(cid))
    assert r.status_code == 302 and r["Location"].startswith("/login/")
    other = AsyncClient()
    await other.aforce_login(bob)
    assert (await other.get(url(cid))).status_code == 404
    assert (await other.post(url(cid, "start"))).status_code == 404
    assert (await other.get(url(cid, "logs"))).status_code == 404
    assert (await client.get(url(cid, "start"))).status_code == 405
    assert (await client.get(url("../../etc", "state"))).status_code == 404
    strict = AsyncClient(enforce_csrf_checks=True)
    await strict.aforce_login(await _user("alice"))
    assert (await strict.post(url(cid, "start"))).status_code == 403
    assert (await state_of(cid))["state"] == "created"  # nothing happened


async def _user(name: str) -> Any:
    from django.contrib.auth import get_user_model

    return await get_user_model().objects.aget(username=name)


async def test_the_tab_shows_the_state_and_every_action_works(web: tuple[Engine, AsyncClient]):
    engine, client = web
    cid = await owned(engine, await _user("alice"), ["sh", "-c", LOOP], name="runner")
    page = await client.get(url(cid))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-testid="run-start"' in html and "Created" in html
    assert "/static/gantry/run.js" in html and 'aria-current="page">Run' in html

    r = await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    assert r.status_code == 200, r.content
    html = r.content.decode()
    assert (
        'id="run-state"' in html
        and "Up " in html
        and "&quot;status&quot;: &quot;running&quot;" in html
    )
    state = await state_of(cid)
    assert state["pid"] > 0 and str(state["pid"]) in html

    r = await client.post(url(cid, "pause"), headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Paused" in r.content.decode()
    assert (await state_of(cid))["runc"]["status"] == "paused"
    r = await client.post(url(cid, "pause"), headers={"HX-Request": "true"})
    assert r.status_code == 409 and "paused" in r.content.decode()
    r = await client.post(url(cid, "resume"), headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Up " in r.content.decode()

    r = await client.post(url(cid, "kill"), {"signal": "BOGUS"}, headers={"HX-Request": "true"})
    assert r.status_code == 400
    r = await client.post(url(cid, "stop"), {"timeout": "-1"}, headers={"HX-Request": "true"})
    assert r.status_code == 400
    r = await client.post(url(cid, "restart"), {"timeout": "5"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Up " in r.content.decode()
    r = await client.post(url(cid, "stop"), {"timeout": "5"}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Exited (7)" in r.content.decode()
    r = await client.post(url(cid, "kill"), {"signal": "KILL"}, headers={"HX-Request": "true"})
    assert r.status_code == 409  # not running

    r = await client.post(url(cid, "start"))  # without htmx: back to the tab
    assert r.status_code == 302 and r["Location"] == url(cid)
    r = await client.post(url(cid, "kill"), {"signal": "TERM"}, headers={"HX-Request": "true"})
    assert r.status_code == 200
    await until(lambda: _state_is(cid, "exited"))
    actions = [a async for a in AuditEvent.objects.filter(target=cid).values_list("action", "ok")]
    assert ("container.start", True) in actions and ("container.pause", False) in actions


async def _state_is(cid: str, state: str) -> bool:
    return (await state_of(cid))["state"] == state


async def test_an_exit_is_published_for_live_pages(
    web: tuple[Engine, AsyncClient], channel_layer: Any
):
    engine, client = web
    cid = await owned(engine, await _user("alice"), ["sh", "-c", "sleep 0.5; exit 3"])
    listener = await channel_layer.new_channel("test-listener.")
    await channel_layer.group_add(EVENTS_GROUP, listener)
    r = await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    assert r.status_code == 200
    seen: list[str] = []
    deadline = time.monotonic() + 15
    while "died" not in seen:  # the exit watcher tells the web without anyone asking
        assert time.monotonic() < deadline, seen
        event = await asyncio.wait_for(channel_layer.receive(listener), 15)
        if event.get("container") == cid:
            seen.append(event["action"])
            last = event
    assert "start" in seen and last["state"] == "exited" and last["status"].startswith("Exited (3)")
    partial = await client.get(url(cid, "state"))
    assert "Exited (3)" in partial.content.decode()


async def test_logs_follow_with_a_cursor_timestamps_and_download(
    web: tuple[Engine, AsyncClient],
):
    engine, client = web
    script = "echo '<b>one</b>'; sleep 0.6; echo two; echo err >&2"
    cid = await owned(engine, await _user("alice"), ["sh", "-c", script])
    await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    first = await until(lambda: _logs(client, cid, ""))
    assert first["data"] == "<b>one</b>\n"
    second = await until(lambda: _logs(client, cid, first["cursor"]))
    assert second["data"] == "two\nerr\n"
    stamped = json.loads((await client.get(url(cid, "logs?timestamps=1"))).content)
    assert stamped["data"].count("T") >= 3 and " <b>one</b>\n" in stamped["data"]
    bad = await client.get(url(cid, "logs?cursor=../../x"))
    assert bad.status_code == 400
    download = await client.get(url(cid, "logs/download"))
    assert download.status_code == 200
    assert download["Content-Disposition"] == f'attachment; filename="{cid[:12]}.log"'
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Security-Policy"] == "sandbox"
    assert download.content == b"<b>one</b>\ntwo\nerr\n"
    page = (await client.get(url(cid))).content.decode()
    assert "<b>one</b>" not in page  # logs are fetched as JSON and set as text, never HTML


async def _logs(client: AsyncClient, cid: str, cursor: str) -> dict[str, Any] | None:
    r = await client.get(url(cid, "logs" + (f"?cursor={cursor}" if cursor else "")))
    assert r.status_code == 200
    data: dict[str, Any] = json.loads(r.content)
    return data if data["data"] else None


async def test_a_failed_start_shows_runcs_message(web: tuple[Engine, AsyncClient]):
    engine, client = web
    cid = await owned(engine, await _user("alice"), ["/no/such/binary"])
    r = await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    assert r.status_code >= 400 and "/no/such/binary" in r.content.decode()
    page = (await client.get(url(cid))).content.decode()
    assert "/no/such/binary" in page and 'data-testid="run-error"' in page


async def test_the_lab_through_the_web(web: tuple[Engine, AsyncClient], tmp_path: Path):
    engine, client = web
    before = Census.take(engine)
    await sync_to_async(on_off_image)(engine)
    # alice is a learner: her /mnt is her sandbox's (engine/storage/sandbox.py)
    mnt = Path(engine.config.sandbox_root) / "alice" / "mnt"
    r = await client.post(
        "/containers/new",
        {"image": "localhost/gantry/on-off:latest", "name": "lab", "volumes": "/mnt:/mnt"},
    )
    assert r.status_code in (200, 302), r.content.decode()[:500]
    own = await Ownership.objects.aget(name="alice.lab")
    cid = own.container_id
    r = await client.post(f"/containers/{cid}/mount", headers={"HX-Request": "true"})
    assert r.status_code < 400, r.content
    merged = engine.get(Containers).paths(cid).merged
    (merged / "test").touch()  # the lab's `touch $(podman mount lab)/test`
    await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    await until(lambda: _state_is(cid, "exited"))
    partial = (await client.get(url(cid, "state"))).content.decode()
    assert "Exited (0)" in partial
    (mnt / "on").touch()
    r = await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    assert "Up " in r.content.decode()
    seen = await engine_client.request(verbs.EXEC_RUN, verbs.ExecRun(id=cid, command=["ls", "/"]))
    assert "test" in seen["stdout"].split()
    r = await client.post(url(cid, "kill"), {"signal": "KILL"}, headers={"HX-Request": "true"})
    assert "Exited (137)" in r.content.decode()
    r = await client.post(f"/containers/{cid}/remove", headers={"HX-Request": "true"})
    assert r.status_code == 200 and r["HX-Redirect"] == "/containers/"
    assert not await Ownership.objects.filter(container_id=cid).aexists()
    await sync_to_async(no_leaks)(engine, before, ignore=("fds",))


async def test_the_containers_table_has_run_actions(web: tuple[Engine, AsyncClient]):
    engine, client = web
    cid = await owned(engine, await _user("alice"), ["sleep", "60"], name="rowed")
    table = (await client.get("/containers/table")).content.decode()
    assert f'action="/containers/{cid}/run/start"' in table
    r = await client.post(url(cid, "start"), {"from": "list"})
    assert r.status_code == 302 and r["Location"] == "/containers/"
    table = (await client.get("/containers/table")).content.decode()
    assert f'action="/containers/{cid}/run/kill"' in table and "Up " in table
    r = await client.post(url(cid, "kill"), {"from": "list", "signal": "KILL"})
    assert r.status_code == 302
    assert (await state_of(cid))["state"] == "exited"


def test_a_get_never_changes_state(client: Client, alice: Any) -> None:
    client.force_login(alice)
    for action in ("start", "stop", "kill", "pause", "resume", "restart"):
        assert client.get(url("a" * 64, action)).status_code in (404, 405)


async def test_lab_progress_is_kept_with_the_lab_page_closed(web: tuple[Engine, AsyncClient]):
    """The learner starts the lab, then does every step on the container's tabs and never
    looks at the Lab page until the container is gone: it then shows what was done."""
    engine, client = web
    image = "localhost/gantry/on-off:latest"
    await sync_to_async(on_off_image)(engine)
    await client.post("/lab/start", {"image": image})
    form = {"image": image, "name": "lab", "volumes": "/mnt:/mnt"}
    await client.post("/containers/new", form, headers={"HX-Request": "true"})
    cid = (await Ownership.objects.aget(name="alice.lab")).container_id
    await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    await until(lambda: _state_is(cid, "exited"))
    await sync_to_async(_touch)(Path(engine.config.sandbox_root) / "alice" / "mnt" / "on")
    await client.post(url(cid, "start"), headers={"HX-Request": "true"})
    pid = (await state_of(cid))["pid"]
    await until(lambda: sync_to_async(_comm)(pid))  # on-off has become top
    await client.post(url(cid, "kill"), {"signal": "KILL"}, headers={"HX-Request": "true"})
    await client.post(f"/containers/{cid}/remove", headers={"HX-Request": "true"})
    html = (await client.get("/lab/checks")).content.decode()
    done = set(re.findall(r'data-check="(\w+)" data-done="true"', html))
    assert {"pulled", "created", "config", "first_exit", "mnt_on", "top_running", "gone"} <= done


def _touch(path: Path) -> None:
    path.touch()


def _comm(pid: int) -> bool:
    return Path(f"/proc/{pid}/comm").read_text().strip() == "top"
