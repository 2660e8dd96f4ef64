"""The Files tab: every explorer action through the pages (login, ownership → 404, CSRF), the
traversal and hostile-name cases of security.md section C as a browser would send them, and
downloads served as safe attachments."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient

from engine.core import Engine
from engine.errors import InvalidInputError
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord
from tests.engine.storagetools import needs_overlay
from tests.webui.webtools import HTMX, alices, body, client_for, stack
from webui.models import AuditEvent

__all__ = ["alices", "stack"]
pytestmark = [pytest.mark.django_db(transaction=True), needs_overlay]

HOSTILE = [
    "a\r\nSet-Cookie: x=1",
    "\x1b[31mred",
    "<img src=x onerror=alert(1)>",
    "evil\u202egpj.exe",
]


def merged(stack: Engine, record: ContainerRecord) -> Path:
    return stack.get(Containers).mount(record.id)


def get_urls(cid: str) -> list[str]:
    base = f"/containers/{cid}/files"
    return [f"{base}/", f"{base}/rows?path=/", f"{base}/view?path=/etc/passwd",
            f"{base}/download?path=/etc/passwd"]  # fmt: skip


def post_urls(cid: str) -> dict[str, dict[str, str]]:
    base = f"/containers/{cid}/files"
    return {
        f"{base}/touch": {"dir": "/", "name": "t"},
        f"{base}/mkdir": {"dir": "/", "name": "d"},
        f"{base}/rename": {"path": "/etc/hostname", "name": "hn"},
        f"{base}/delete": {"path": "/etc/hostname"},
        f"{base}/chmod": {"path": "/etc/hostname", "mode": "0600"},
        f"{base}/save": {"path": "/etc/hostname", "content": "x"},
        f"{base}/upload": {"dir": "/"},
    }


async def test_every_view_needs_a_login(alices: ContainerRecord) -> None:
    client = AsyncClient()
    for url in get_urls(alices.id):
        r = await client.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url
    for url, data in post_urls(alices.id).items():
        r = await client.post(url, data)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url


async def test_another_users_container_is_not_found(
    alices: ContainerRecord, bob: Any, stack: Engine
) -> None:
    client = await client_for(bob)
    for url in get_urls(alices.id):
        assert (await client.get(url)).status_code == 404, url
    for url, data in post_urls(alices.id).items():
        assert (await client.post(url, data, headers=HTMX)).status_code == 404, url
    assert "t" not in os.listdir(merged(stack, alices))


async def test_actions_need_the_csrf_token(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    client = await client_for(alice, csrf=True)
    for url, data in post_urls(alices.id).items():
        assert (await client.post(url, data, headers=HTMX)).status_code == 403, url
    m = merged(stack, alices)
    assert not (m / "t").exists() and (m / "etc" / "hostname").read_text() == "busybox\n"


async def test_the_listing(alices: ContainerRecord, alice: Any, stack: Engine) -> None:
    m = merged(stack, alices)
    (m / "test").touch()
    (m / "bin" / "ls").unlink()
    client = await client_for(alice)
    html = (await client.get(f"/containers/{alices.id}/files/")).content.decode()
    assert 'class="crumbs"' in html and "etc/</a>" in html
    assert '<span class="mark A"' in html and "deleted by the container" not in html
    etc = (await client.get(f"/containers/{alices.id}/files/?path=/etc")).content.decode()
    assert "passwd" in etc and "root:root" in etc and "-rw-r--r--" in etc
    bins = (await client.get(f"/containers/{alices.id}/files/?path=/bin")).content.decode()
    assert "→ busybox" in bins and "deleted by the container" in bins
    home = (await client.get(f"/containers/{alices.id}/files/?path=/home")).content.decode()
    assert "user:user" in home  # names from the container's /etc/passwd and /etc/group


async def test_encoded_traversal_stays_in_the_container(
    alices: ContainerRecord, alice: Any, stack: Engine, tmp_path: Path
) -> None:
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "host-only-file").write_text("x")
    client = await client_for(alice)
    for query in ("%2e%2e%2f%2e%2e%2f%2e%2e%2fetc", "../../../../etc", "/etc/../../../../etc"):
        r = await client.get(f"/containers/{alices.id}/files/?path={query}")
        html = r.content.decode()
        assert r.status_code == 200 and "group" in html and "hostname" in html, query
        assert "shadow" not in html and "os-release" not in html  # the host's /etc has these
    deep = "%2e%2e%2f" * 30 + "tmp"
    r = await client.get(f"/containers/{alices.id}/files/?path={deep}")
    assert r.status_code == 200 and "host-only-file" not in r.content.decode()
    r = await client.get(f"/containers/{alices.id}/files/view?path=/etc/%00passwd")
    assert r.status_code == 400
    r = await client.get(f"/containers/{alices.id}/files/?path=" + "a/" * 40000)
    assert r.status_code == 400


async def test_hostile_names_are_escaped(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    m = merged(stack, alices)
    for name in HOSTILE:
        (m / "tmp" / name).write_text("hostile\n")
    html = (
        await (await client_for(alice)).get(f"/containers/{alices.id}/files/?path=/tmp")
    ).content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "\r\nSet-Cookie" not in html and "a\\r\\nSet-Cookie: x=1" in html
    assert "a%0D%0ASet-Cookie%3A%20x%3D1" in html  # how actions name it (percent-encoded)
    assert "\x1b" not in html and "\\x1b[31mred" in html
    assert "\u202e" not in html and "evil\\u202egpj.exe" in html


async def test_view_edit_and_conflicts(alices: ContainerRecord, alice: Any, stack: Engine) -> None:
    m = merged(stack, alices)
    client = await client_for(alice)
    page = (
        await client.get(f"/containers/{alices.id}/files/view?path=/etc/hostname")
    ).content.decode()
    assert "busybox" in page and 'name="token"' in page and "<textarea" in page
    token = page.split('name="token" value="')[1].split('"')[0]
    r = await client.post(
        f"/containers/{alices.id}/files/save",
        {"path": "/etc/hostname", "content": "edited\r\n", "token": token},
        headers=HTMX,
    )
    assert r.status_code == 200 and "Saved." in r.content.decode()
    assert (m / "etc" / "hostname").read_text() == "edited\n"
    (m / "etc" / "hostname").write_text("changed meanwhile\n")
    r = await client.post(f"/containers/{alices.id}/files/save",
                          {"path": "/etc/hostname", "content": "mine", "token": token})  # fmt: skip
    assert r.status_code == 409 and "changed since it was opened" in r.content.decode()
    assert ">mine</textarea>" in r.content.decode(), "the user's text is kept"
    assert (m / "etc" / "hostname").read_text() == "changed meanwhile\n"
    binary = (
        await client.get(f"/containers/{alices.id}/files/view?path=/bin/busybox")
    ).content.decode()
    assert "00000000  7f 45 4c 46" in binary and "<textarea" not in binary


async def test_a_symlink_opens_what_it_leads_to_inside_the_container(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    """A link to a file opens the file view, a link to a directory lists it; the engine
    resolves the target inside the container's root, even one written to leave it."""
    m = merged(stack, alices)
    (m / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (m / "usr" / "lib" / "os-release").write_text("NAME=inside\n")
    (m / "etc" / "os-release").symlink_to("../usr/lib/os-release")
    (m / "etc" / "abs-link").symlink_to("/etc/hostname")
    (m / "etc" / "leave").symlink_to("../../../../../../../../etc/hostname")
    (m / "etc" / "dir-link").symlink_to("/usr/lib")
    client = await client_for(alice)
    base = f"/containers/{alices.id}/files"
    listing = (await client.get(f"{base}/?path=/etc")).content.decode()
    assert f'href="{base}/?path=/etc/os-release"' in listing  # the row asks; the view decides

    r = await client.get(f"{base}/?path=/etc/os-release")
    assert r.status_code == 302 and r["Location"] == f"{base}/view?path=%2Fetc%2Fos-release"
    page = (await client.get(r["Location"])).content.decode()
    assert "NAME=inside" in page and "/usr/lib/os-release" in page
    for link in ("abs-link", "leave"):  # the container's /etc/hostname, never the host's
        r = await client.get(f"{base}/?path=/etc/{link}")
        assert r.status_code == 302, link
        assert "busybox" in (await client.get(r["Location"])).content.decode(), link
    r = await client.get(f"{base}/?path=/etc/dir-link")
    assert r.status_code == 200 and "os-release" in r.content.decode()
    (m / "etc" / "dangling").symlink_to("/nowhere")
    r = await client.get(f"{base}/?path=/etc/dangling")
    assert r.status_code == 404 and "no such file or directory" in r.content.decode()
    r = await client.get(f"{base}/?path=/dev/null")  # not a regular file: the error stands
    assert r.status_code in (400, 404)


async def test_saving_updates_the_size_and_a_conflict_says_it_once(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    m = merged(stack, alices)
    client = await client_for(alice)
    page = (
        await client.get(f"/containers/{alices.id}/files/view?path=/etc/hostname")
    ).content.decode()
    assert '<span id="file-size">8\xa0bytes</span>' in page
    token = page.split('name="token" value="')[1].split('"')[0]
    save = f"/containers/{alices.id}/files/save"
    content = "a much longer host name\n"
    r = await client.post(save, {"path": "/etc/hostname", "content": content, "token": token},
                          headers=HTMX)  # fmt: skip
    html = r.content.decode()
    assert "Saved." in html and '<span id="file-size" hx-swap-oob="true">24\xa0bytes</span>' in html
    (m / "etc" / "hostname").write_text("changed meanwhile\n")
    r = await client.post(save, {"path": "/etc/hostname", "content": "mine", "token": token},
                          headers=HTMX)  # fmt: skip
    html = r.content.decode()
    alert = html.split('<p class="error" role="alert">')[1].split("</p>")[0]
    assert alert.startswith("Not saved: the file changed since it was opened. Your text is")
    assert alert.count("changed") == 1 and "nothing was saved" not in alert
    assert "file-size" not in html


async def test_touch_mkdir_rename_chmod_delete(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    m = merged(stack, alices)
    client = await client_for(alice)
    base = f"/containers/{alices.id}/files"
    r = await client.post(f"{base}/touch", {"dir": "/", "name": "test"}, headers=HTMX)
    assert r.status_code == 204 and "gantry:files-changed" in r["HX-Trigger"]
    assert (m / "test").is_file()
    await client.post(f"{base}/mkdir", {"dir": "/", "name": "folder"}, headers=HTMX)
    await client.post(f"{base}/rename", {"path": "/test", "name": "renamed"}, headers=HTMX)
    assert (m / "renamed").exists() and not (m / "test").exists()
    await client.post(f"{base}/chmod", {"path": "/renamed", "mode": "0600"}, headers=HTMX)
    assert oct((m / "renamed").stat().st_mode & 0o7777) == "0o600"
    r = await client.post(f"{base}/chmod", {"path": "/renamed", "mode": "rwx"}, headers=HTMX)
    assert r.status_code == 400
    r = await client.post(f"{base}/touch", {"dir": "/", "name": "../escape"}, headers=HTMX)
    assert r.status_code == 400 and "without '/'" in r.content.decode()
    await client.post(f"{base}/delete", {"path": "/folder", "recursive": "1"}, headers=HTMX)
    await client.post(f"{base}/delete", {"path": "/renamed"}, headers=HTMX)
    assert not (m / "folder").exists() and not (m / "renamed").exists()
    r = await client.post(f"{base}/touch", {"dir": "/etc", "name": "plain"})  # no htmx: redirect
    assert r.status_code == 302 and r["Location"].endswith("?path=%2Fetc")
    actions = {a async for a in AuditEvent.objects.values_list("action", flat=True)}
    assert {"fs.touch", "fs.mkdir", "fs.rename", "fs.chmod", "fs.delete"} <= actions


async def test_upload_several_files(alices: ContainerRecord, alice: Any, stack: Engine) -> None:
    m = merged(stack, alices)
    (m / "etc" / "b.bin").write_text("old")
    big = os.urandom(1024 * 1024 + 3)
    client = await client_for(alice)
    r = await client.post(
        f"/containers/{alices.id}/files/upload",
        {
            "dir": "/etc",
            "files": [SimpleUploadedFile("a.txt", b"hello"), SimpleUploadedFile("b.bin", big)],
        },
        headers=HTMX,
    )
    assert r.status_code == 200, r.content
    assert r.content.decode().strip() == "2 uploaded"
    assert json.loads(r["HX-Trigger"]) == {"gantry:files-changed": {}}
    assert (m / "etc" / "a.txt").read_bytes() == b"hello" and (
        m / "etc" / "b.bin"
    ).read_bytes() == big
    assert [n for n in os.listdir(m / "etc") if "gantry" in n] == []
    # into a directory that is not there: each file says why, nothing is left behind
    r = await client.post(
        f"/containers/{alices.id}/files/upload",
        {"dir": "/no/such/dir", "files": [SimpleUploadedFile("c.txt", b"c")]},
        headers=HTMX,
    )
    assert r.status_code == 200
    assert r.content.decode().startswith("1 failed:") and "c.txt: " in r.content.decode()
    assert not (m / "no").exists()


async def test_downloads_are_safe_attachments(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    m = merged(stack, alices)
    (m / "tmp" / "evil.html").write_text("<script>alert(1)</script>")
    (m / "tmp" / HOSTILE[0]).write_text("x")
    client = await client_for(alice)
    r = await client.get(f"/containers/{alices.id}/files/download?path=/tmp/evil.html")
    assert r.status_code == 200 and await body(r) == b"<script>alert(1)</script>"
    assert r["Content-Type"] == "application/octet-stream"
    assert r["X-Content-Type-Options"] == "nosniff" and r["Content-Security-Policy"] == "sandbox"
    assert (
        r["Content-Disposition"] == "attachment; filename=\"evil.html\"; filename*=UTF-8''evil.html"
    )
    r = await client.get(f"/containers/{alices.id}/files/download", {"path": "/tmp/" + HOSTILE[0]})
    cd = r["Content-Disposition"]
    assert (
        "\r" not in cd and "\n" not in cd and "filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1" in cd
    )
    assert "Set-Cookie" not in {k.lower().title() for k in r.headers} or "x=1" not in r.get(
        "Set-Cookie", ""
    )
    r = await client.get(f"/containers/{alices.id}/files/download?path=/etc")
    assert (
        r["Content-Type"] == "application/x-tar"
        and 'filename="etc.tar"' in r["Content-Disposition"]
    )
    with tarfile.open(fileobj=io.BytesIO(await body(r))) as tar:
        assert tar.extractfile("etc/hostname").read() == b"busybox\n"  # type: ignore[union-attr]
    r = await client.get(f"/containers/{alices.id}/files/download?path=/nope")
    assert r.status_code == 404


async def test_special_files_are_refused_in_the_page(
    alices: ContainerRecord, alice: Any, stack: Engine
) -> None:
    m = merged(stack, alices)
    os.mkfifo(m / "fifo")
    client = await client_for(alice)
    r = await client.get(f"/containers/{alices.id}/files/view?path=/fifo")
    assert r.status_code == 400 and "not a regular file" in r.content.decode()
    r = await client.get(f"/containers/{alices.id}/files/download?path=/fifo")
    assert r.status_code == 400


async def test_downloads_without_the_bulk_lane(
    alices: ContainerRecord, alice: Any, stack: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks come as channel messages when the layer offers no lane."""
    import webui.views.files

    monkeypatch.setattr(webui.views.files, "new_lane", lambda: None)
    m = merged(stack, alices)
    blob = os.urandom(2 * 1024 * 1024 + 11)
    (m / "blob").write_bytes(blob)
    r = await (await client_for(alice)).get(f"/containers/{alices.id}/files/download?path=/blob")
    assert r.status_code == 200 and await body(r) == blob


async def test_the_bulk_lane_stops_the_engine_when_the_reader_leaves(channel_layer: Any) -> None:
    from engine.errors import EngineError
    from engine.files.bulk import BulkWriter
    from webui.bulklane import new_lane, read_lane

    lane = new_lane()
    assert lane is not None
    writer = BulkWriter.open(
        SimpleNamespace(layer=channel_layer, loop=asyncio.get_running_loop()), lane
    )
    assert writer is not None

    def produce() -> None:
        for _ in range(10_000):
            writer.data(b"x" * 1000)

    task = asyncio.create_task(asyncio.to_thread(produce))
    reader = read_lane(lane)
    assert await anext(reader) == b"x" * 1000
    await reader.aclose()  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match="cancelled by the reader"):
        await asyncio.wait_for(task, 10)
    conn = channel_layer.connection(channel_layer.consistent_hash(lane))
    assert not await conn.exists(lane)


def test_the_engine_uses_no_lane_without_a_channel_layer() -> None:
    from engine.events import RecordingPublisher
    from engine.files.bulk import BulkWriter

    assert BulkWriter.open(RecordingPublisher(), "gantry:bulk:" + "a" * 32) is None
    assert BulkWriter.open(RecordingPublisher(), None) is None
    with pytest.raises(InvalidInputError):
        BulkWriter.open(RecordingPublisher(), "other:key")
