from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient, Client

from engine.core import Engine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("url", ["/", "/containers/", "/images/", "/engine/", "/engine/status"])
def test_it_requires_login(client: Client, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")


def test_it_logs_in_and_shows_the_navigation(client: Client, alice: Any) -> None:
    r = client.post("/login/", {"username": "alice", "password": "alice-pass-123"})
    assert r.status_code == 302
    page = client.get("/containers/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'href="/containers/"' in html and 'href="/images/"' in html
    assert 'id="engine-status"' in html
    assert "alice" in html


def test_logout_needs_a_post(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/containers/").status_code == 302


def test_post_without_csrf_token_is_refused(alice: Any) -> None:
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(alice)
    assert csrf_client.post("/logout/").status_code == 403


def test_security_headers(client: Client, alice: Any) -> None:
    client.force_login(alice)
    r = client.get("/containers/")
    assert r["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r["Content-Security-Policy"]
    assert "script-src 'self'" in r["Content-Security-Policy"]
    assert r["X-Content-Type-Options"] == "nosniff"


def test_foreign_host_header_is_refused(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get("/containers/", HTTP_HOST="evil.example").status_code == 400


async def test_engine_status_says_offline_without_engine(channel_layer: Any, alice: Any) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    r = await client.get("/engine/status")
    assert r.status_code == 200
    assert "engine offline" in r.content.decode()


async def test_engine_page_shows_versions(engine_worker: Engine, alice: Any) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    r = await client.get("/engine/")
    html = r.content.decode()
    assert "engine online" in html
    assert engine_worker.config.node in html
    assert "runc" in html and "conmon" in html


@pytest.mark.parametrize(
    "url", ["/engine/status", "/containers/table", "/images/table", "/images/pulls"]
)
async def test_the_parts_pages_reload_are_never_cached(
    engine_worker: Engine, alice: Any, url: str
) -> None:
    """What htmx polls or reloads on events must not come from a cache."""
    client = AsyncClient()
    await client.aforce_login(alice)
    r = await client.get(url)
    assert r.status_code == 200
    assert "no-store" in r["Cache-Control"] and "max-age=0" in r["Cache-Control"]
