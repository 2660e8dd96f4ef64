"""The images pages against a real engine worker (on real Redis) and a real docker-registry:
login and CSRF required, clear errors, the pull card, live pull events over /ws/events/, the
list, the image page, removal, and the admin-only credentials page."""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import AsyncClient, Client

from engine.core import Engine
from engine.images.service import Images
from tests.registry import PASSWORD, USER, PushedImages, Registry, free_port
from tests.webui.test_events_consumer import communicator, session_for
from webui.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)
HX = {"HX-Request": "true"}


async def logged_in(user: Any) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def wait_done(engine: Engine, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = engine.get(Images).job(job_id)
        if not job.running:
            return job.snapshot()
        await asyncio.sleep(0.05)
    raise AssertionError("pull did not finish")


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/images/"),
        ("get", "/images/table"),
        ("get", "/images/pulls"),
        ("post", "/images/pull"),
        ("get", "/images/" + "a" * 64 + "/"),
        ("post", "/images/" + "a" * 64 + "/remove"),
        ("get", "/images/credentials/"),
    ],
)
def test_it_requires_login(client: Client, method: str, url: str) -> None:
    r = getattr(client, method)(url)
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_pull_needs_a_csrf_token(alice: Any) -> None:
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(alice)
    assert csrf_client.post("/images/pull", {"ref": "busybox"}).status_code == 403


def test_credentials_are_for_admins(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get("/images/credentials/").status_code == 403
    assert client.post("/images/credentials/add", {"registry": "x"}).status_code == 403


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "give an image reference"),
        ("Not A Ref", "contains whitespace"),
        ("busybox@sha256:../../x", "not a sha256 digest"),
        ("busybox", "platform"),
    ],
)
async def test_bad_references_are_one_clear_sentence(
    engine_worker: Engine, alice: Any, ref: str, message: str
) -> None:
    client = await logged_in(alice)
    data = {"ref": ref, "platform": "linux/amd64/v8/x" if ref == "busybox" else ""}
    r = await client.post("/images/pull", data, headers=HX)
    assert r.status_code == 400
    text = r.content.decode()
    assert message in text and "\n" not in text.strip()


async def test_pull_progress_list_detail_and_remove(
    engine_worker: Engine, admin_user_: Any, registry: Registry, pushed_images: PushedImages
) -> None:
    """An admin pulls from a registry on this host (a learner may not: see below)."""
    client = await logged_in(admin_user_)
    comm = communicator(await session_for(admin_user_))
    connected, _ = await comm.connect()
    assert connected
    ref = registry.ref(PushedImages.WHITEOUTS)
    r = await client.post("/images/pull", {"ref": ref, "skip_tls": "on"}, headers=HX)
    assert r.status_code == 200, r.content
    card = r.content.decode()
    job_id = re.search(r'data-job="([0-9a-f]{16})"', card)
    assert job_id, card
    job = await wait_done(engine_worker, job_id.group(1))
    assert job["state"] == "done", job["error"]
    # The same pull arrived over the websocket, as snapshots with per-layer progress.
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not any(m.get("kind") == "pull" and m.get("state") == "done" for m in seen):
        assert time.monotonic() < deadline, seen
        message = await comm.receive_json_from(5)
        if message.get("type") == "event":
            seen.append(message)
    done = next(m for m in seen if m.get("kind") == "pull" and m["state"] == "done")
    assert done["job"] == job_id.group(1) and len(done["layers"]) == 3
    assert "user" not in done
    await comm.disconnect()
    # A reload rebuilds the card from image.pulls.
    page = (await client.get("/images/")).content.decode()
    assert f'id="pull-{job_id.group(1)}"' in page and 'src="/static/gantry/images.js"' in page
    assert '<span class="muted pull-step" data-role="step"></span>' in page  # not "done" twice
    table = (await client.get("/images/table")).content.decode()
    assert ref in table
    image_id = job["image"].removeprefix("sha256:")
    detail = (await client.get(f"/images/{image_id}/")).content.decode()
    for needle in ("Manifest chain", "application/vnd.oci.image.manifest.v1+json",
                   "org.example.test=gantry", "/bin/sh", "PATH=/usr/local/sbin",
                   "ocibuild layer 2", "diff id", "GET " + registry.host):  # fmt: skip
        assert needle in detail, needle
    assert detail.count("<tr>") >= 3  # the layers table
    r = await client.post(f"/images/{image_id}/remove", headers=HX)
    assert r.status_code == 200 and r["HX-Redirect"] == "/images/"
    assert (await client.get(f"/images/{image_id}/")).status_code == 404
    actions = [a async for a in AuditEvent.objects.values_list("action", flat=True)]
    assert "image.pull" in actions and "image.remove" in actions


async def test_removal_of_an_image_in_use_is_refused(
    engine_worker: Engine, alice: Any, registry: Registry, pushed_images: PushedImages
) -> None:
    import json

    image = await asyncio.to_thread(
        engine_worker.get(Images).pull, registry.ref(PushedImages.OCI), tls_verify=False
    )
    ctr = engine_worker.config.root / "containers" / ("d" * 64)
    ctr.mkdir(parents=True)
    (ctr / "container.json").write_text(json.dumps({"name": "lab", "image_id": image.id}))
    client = await logged_in(alice)
    r = await client.post(f"/images/{image.id[7:]}/remove", headers=HX)
    assert r.status_code == 409
    assert "in use by container lab" in r.content.decode()


async def test_hostile_names_are_escaped(engine_worker: Engine, alice: Any) -> None:
    from tests.imagetools import make_image

    make_image(
        engine_worker,
        [{"/a": "1"}],
        name="localhost/x:<script>alert(1)</script>",
        config={"Cmd": ["<img src=x onerror=alert(1)>"], "Labels": {"k": "<b>bold</b>"}},
    )
    client = await logged_in(alice)
    table = (await client.get("/images/table")).content.decode()
    assert "<script>alert(1)" not in table and "&lt;script&gt;" in table
    image_id = re.search(r'data-image="([0-9a-f]{64})"', table)
    assert image_id
    detail = (await client.get(f"/images/{image_id.group(1)}/")).content.decode()
    assert "<img src=x" not in detail and "<b>bold</b>" not in detail


class _HxRegions(HTMLParser):
    """For each element with hx-post: is it inside an hx-disable region (where htmx ignores
    it)? And for each text: the same question."""

    VOID = frozenset({"br", "img", "input", "meta", "link", "hr", "wbr", "source", "area"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []
        self.posts: dict[str, bool] = {}
        self.texts: list[tuple[str, bool]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        disabled = (bool(self.stack) and self.stack[-1]) or "hx-disable" in a
        if a.get("hx-post"):
            self.posts[str(a["hx-post"])] = disabled
        if tag not in self.VOID:
            self.stack.append(disabled)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append((data.strip(), bool(self.stack) and self.stack[-1]))


async def test_the_remove_button_works_while_image_text_stays_hx_disabled(
    engine_worker: Engine, alice: Any
) -> None:
    """The whole page was one hx-disable region, so htmx ignored Remove (no confirm, no
    request). Remove must lie outside it; the image's own text must stay inside one."""
    from tests.imagetools import make_image

    image = make_image(
        engine_worker,
        [{"/a": "1"}],
        name="localhost/hx:<b hx-get=x>",
        config={"Cmd": ["hx-on-cmd"], "Labels": {"hx-label": "hx-on-value"}},
    )
    client = await logged_in(alice)
    image_id = image.id.removeprefix("sha256:")
    parser = _HxRegions()
    parser.feed((await client.get(f"/images/{image_id}/")).content.decode())
    remove = f"/images/{image_id}/remove"
    assert parser.posts == {remove: False}, parser.posts
    image_text = [(t, off) for t, off in parser.texts if "hx-get=x" in t or "hx-on" in t]
    assert image_text and all(off for _, off in image_text), parser.texts


async def test_admins_keep_credentials(
    engine_worker: Engine, admin_user_: Any, auth_registry: Registry
) -> None:
    client = await logged_in(admin_user_)
    page = await client.get("/images/credentials/")
    assert page.status_code == 200 and "No saved logins" in page.content.decode()
    wrong = {"registry": auth_registry.host, "username": USER, "password": "nope", "skip_tls": "on"}
    r = await client.post("/images/credentials/add", wrong, headers=HX)
    assert "credentials refused" in r.content.decode()
    good = wrong | {"password": PASSWORD}
    r = await client.post("/images/credentials/add", good, headers=HX)
    html = r.content.decode()
    assert f"Logged in to {auth_registry.host}" in html and PASSWORD not in html
    audit = [d async for d in AuditEvent.objects.values_list("detail", flat=True)]
    assert PASSWORD not in str(audit)
    r = await client.post(
        "/images/credentials/remove", {"registry": auth_registry.host}, headers=HX
    )
    assert "No saved logins" in r.content.decode()


async def test_a_pull_that_fails_later_says_so_on_its_card(
    engine_worker: Engine, admin_user_: Any
) -> None:
    """The pull starts (200, a running card), then the registry does not answer: the card,
    read again as a reload or a resync would, shows the failure and why."""
    client = await logged_in(admin_user_)
    ref = f"127.0.0.1:{free_port()}/nobody/home:1"  # nothing listens there
    r = await client.post("/images/pull", {"ref": ref, "skip_tls": "on"}, headers=HX)
    assert r.status_code == 200, r.content
    job_id = re.search(r'data-job="([0-9a-f]{16})"', r.content.decode())
    assert job_id
    job = await wait_done(engine_worker, job_id.group(1))
    assert job["state"] == "error" and job["error"]
    cards = (await client.get("/images/pulls", headers=HX)).content.decode()
    card = cards[cards.index(f'id="pull-{job_id.group(1)}"') :]
    assert 'data-state="error"' in card[:200]
    alert = re.search(r'data-role="error" role="alert"\s*>(.*?)</p>', card, re.S)
    assert alert and "127.0.0.1" in alert.group(1), card[:800]


async def test_a_learner_pulls_only_from_the_allowed_registries(
    engine_worker: Engine, alice: Any
) -> None:
    """The root engine does not probe this host's services for a learner."""
    client = await logged_in(alice)
    r = await client.post("/images/pull", {"ref": "127.0.0.1:5000/x:1"}, headers=HX)
    assert r.status_code == 403
    assert "learners may pull from docker.io, quay.io, ghcr.io only" in r.content.decode()
