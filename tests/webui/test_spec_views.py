"""The Spec tab through the web, against the real engine worker (Redis channel layer) and real
containers (overlay-mounted busybox): login and owner-only access (another user's container is
a 404), CSRF, generate, a broken edit that shows each error at its field path and keeps the
draft, a good edit saved exactly, the diff, reset, the audit log, escaping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient, Client

from engine.core import Engine
from engine.spec.service import SpecService
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from tests.engine.test_spec_service import can_mount_overlay
from tests.imagetools import busybox_image
from tests.skips import requires
from webui.models import AuditEvent, Ownership

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires(can_mount_overlay(), "needs root and overlayfs to mount a container rootfs"),
]
HTMX = {"HX-Request": "true"}


@pytest.fixture
def container(engine_worker: Engine) -> ContainerRecord:
    engine_worker.ensure_root()
    busybox_image(engine_worker)
    env = ["GREETING=<script>alert(1)</script>"]
    return engine_worker.get(Containers).create(
        CreateOptions(command=["sh"], env=env), "localhost/busybox", "web1"
    )


async def owned_by(user: Any, record: ContainerRecord) -> None:
    await Ownership.objects.acreate(
        container_id=record.id, name=record.name, node="testnode", owner=user
    )


async def client_for(user: Any) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


def url(record: ContainerRecord, action: str = "") -> str:
    return f"/containers/{record.id}/spec/{action}"


def config_path(engine: Engine, record: ContainerRecord) -> Path:
    return engine.get(SpecService).config_path(record.id)


async def test_it_needs_a_login(container: ContainerRecord) -> None:
    r = await AsyncClient().get(url(container))
    assert r.status_code == 302 and r["Location"].startswith("/login/")


async def test_another_users_container_is_not_found(
    container: ContainerRecord, alice: Any, bob: Any
) -> None:
    await owned_by(alice, container)
    client = await client_for(bob)
    assert (await client.get(url(container))).status_code == 404
    for action in ("generate", "save", "check", "reset"):
        assert (await client.post(url(container, action), {"text": "{}"})).status_code == 404
    assert (await client.get(url(container, "diff"))).status_code == 404
    assert (await client.get("/containers/nothex/spec/")).status_code == 404


async def test_an_admin_sees_any_container(
    container: ContainerRecord, alice: Any, admin_user_: Any
) -> None:
    await owned_by(alice, container)
    r = await (await client_for(admin_user_)).get(url(container))
    assert r.status_code == 200 and "Generate config.json" in r.content.decode()


def test_posts_need_the_csrf_token(container: ContainerRecord, alice: Any) -> None:
    Ownership.objects.create(container_id=container.id, name="web1", node="n", owner=alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(url(container, "generate")).status_code == 403
    assert client.post(url(container, "save"), {"text": "{}"}).status_code == 403


async def test_it_generates_and_shows_the_spec_with_help(
    engine_worker: Engine, container: ContainerRecord, alice: Any
) -> None:
    await owned_by(alice, container)
    client = await client_for(alice)
    r = await client.post(url(container, "generate"))
    assert r.status_code == 302 and r["Location"] == url(container)
    assert config_path(engine_worker, container).exists()
    page = (await client.get(url(container))).content.decode()
    assert (
        'data-testid="spec-text"' in page
        and "&quot;ociVersion&quot;: &quot;1.0.2-dev&quot;" in page
    )
    assert "configured" in page and "as generated" in page
    # Every field explains itself: the help table's text on hover, with podman's flag.
    assert 'title="The program and its arguments' in page and "podman: -w / --workdir." in page
    # Container-controlled text is escaped, never markup.
    assert "<script>alert(1)</script>" not in page
    assert "GREETING=&lt;script&gt;alert(1)&lt;/script&gt;" in page
    events = [e async for e in AuditEvent.objects.filter(action="spec.generate")]
    assert events and events[0].ok and events[0].target == container.id


async def test_a_broken_edit_shows_errors_and_keeps_the_draft(
    engine_worker: Engine, container: ContainerRecord, alice: Any
) -> None:
    await owned_by(alice, container)
    client = await client_for(alice)
    await client.post(url(container, "generate"))
    before = config_path(engine_worker, container).read_bytes()
    spec = json.loads(before)
    spec["process"]["args"] = []
    spec["process"]["cwd"] = "/proc/self/fd/7"
    spec["hooks"] = {"prestart": [{"path": "/bin/sh"}]}
    draft = json.dumps(spec, indent=2)

    r = await client.post(url(container, "save"), {"text": draft}, headers=HTMX)
    html = r.content.decode()
    assert r.status_code == 200  # swapped into #spec-result; the editor is not replaced
    assert 'data-field="process.args"' in html and "must be a non-empty array" in html
    assert config_path(engine_worker, container).read_bytes() == before

    spec["process"]["args"] = ["sh"]  # schema fixed: now the policy speaks, every rule
    r = await client.post(url(container, "save"), {"text": json.dumps(spec)}, headers=HTMX)
    html = r.content.decode()
    assert 'data-field="hooks.prestart"' in html and 'data-field="process.cwd"' in html
    assert "no-hooks" in html and "CVE-2024-21626" in html
    assert config_path(engine_worker, container).read_bytes() == before

    # Without htmx: the whole page again, with the draft in the editor and the errors.
    r = await client.post(url(container, "save"), {"text": draft})
    page = r.content.decode()
    assert r.status_code == 400
    assert "/proc/self/fd/7" in page and "must be a non-empty array" in page
    failed = [e async for e in AuditEvent.objects.filter(action="spec.put", ok=False)]
    assert failed and "process.args" in failed[0].error


async def test_check_reports_a_refused_capability_once_without_saying_not_saved(
    engine_worker: Engine, container: ContainerRecord, admin_user_: Any
) -> None:
    """Check never saves, so its result does not open with "Not saved"; CAP_SYS_ADMIN asked
    in three sets is one line that names the engine policy and the operator's setting."""
    await owned_by(admin_user_, container)
    client = await client_for(admin_user_)
    await client.post(url(container, "generate"))
    spec = json.loads(config_path(engine_worker, container).read_bytes())
    for kind in ("bounding", "effective", "permitted"):
        spec["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")
    r = await client.post(url(container, "check"), {"text": json.dumps(spec)}, headers=HTMX)
    html = r.content.decode()
    assert 'data-testid="spec-errors"' in html
    assert "Not saved" not in html and "would be refused" in html
    assert html.count("CAP_SYS_ADMIN") == 1 and "only an admin" not in html
    assert "policy.spec.allow_capabilities" in html
    saved = await client.post(url(container, "save"), {"text": json.dumps(spec)}, headers=HTMX)
    assert "Not saved" in saved.content.decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON"),
        ('{"a": 1, "a": 2}', "duplicate key"),
        ("[" * 5000, "nested deeper"),
        ("x" * (1024 * 1024 + 1), "larger than 1048576 bytes"),
    ],
    ids=["broken", "duplicate", "deep", "huge"],
)
async def test_malformed_documents_are_refused_with_a_reason(
    engine_worker: Engine, container: ContainerRecord, alice: Any, text: str, message: str
) -> None:
    await owned_by(alice, container)
    client = await client_for(alice)
    await client.post(url(container, "generate"))
    before = config_path(engine_worker, container).read_bytes()
    r = await client.post(url(container, "save"), {"text": text}, headers=HTMX)
    assert r.status_code == 200 and message in r.content.decode()
    assert config_path(engine_worker, container).read_bytes() == before


async def test_a_good_edit_is_saved_diffed_and_reset(
    engine_worker: Engine, container: ContainerRecord, alice: Any
) -> None:
    await owned_by(alice, container)
    client = await client_for(alice)
    await client.post(url(container, "generate"))
    spec = json.loads(config_path(engine_worker, container).read_text())
    spec["process"]["args"] = ["sh", "-c", "echo edited"]
    text = json.dumps(spec, indent=1)

    checked = await client.post(url(container, "check"), {"text": text}, headers=HTMX)
    assert 'data-testid="spec-checked"' in checked.content.decode()
    assert json.loads(config_path(engine_worker, container).read_text()) != spec

    r = await client.post(url(container, "save"), {"text": text}, headers=HTMX)
    assert 'data-testid="spec-saved"' in r.content.decode() and json.loads(r["HX-Trigger"]) == {
        "spec-saved": {}
    }
    assert config_path(engine_worker, container).read_text() == text + "\n"

    diff = (await client.get(url(container, "diff"))).content.decode()
    assert "process.args" in diff and "echo edited" in diff
    page = (await client.get(url(container))).content.decode()
    assert ">edited<" in page

    r = await client.post(url(container, "reset"), headers=HTMX)
    assert r.status_code == 200 and r["HX-Redirect"] == url(container)
    restored = json.loads(config_path(engine_worker, container).read_text())
    assert restored["process"]["args"] == ["sh"]
    diff = (await client.get(url(container, "diff"))).content.decode()
    assert 'data-testid="spec-diff-empty"' in diff


async def test_generate_failures_are_shown(engine_worker: Engine, alice: Any) -> None:
    engine_worker.ensure_root()
    busybox_image(engine_worker)
    record = engine_worker.get(Containers).create(
        CreateOptions(command=["sh"], user="ghost"), "localhost/busybox", "ghosted"
    )
    await owned_by(alice, record)
    client = await client_for(alice)
    r = await client.post(url(record, "generate"), headers=HTMX)
    assert r.status_code == 200 and "unable to find user ghost" in r.content.decode()
    assert not config_path(engine_worker, record).exists()
