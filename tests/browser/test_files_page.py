"""The lab in a real browser against the real stack: create a container with -v /mnt:/mnt from
the form, see it "Created" in the live table, mount it on the Storage tab, touch `test` in the
Files tab and see it marked added, upload with progress, edit with a conflict, rename and
delete through the row dialog, unmount — and no CSP violation on the way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from engine.config import EngineConfig
from engine.core import Engine
from engine.storage.containers import Containers
from tests.browser.conftest import needs_chromium, stack_with_busybox
from tests.engine.storagetools import CAN_OVERLAY
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(os.geteuid() == 0 and CAN_OVERLAY, "the stack's engine must run as root"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_with_busybox()


def engine_of(stack: Stack) -> Engine:
    return Engine(EngineConfig(root=stack.tmp / "root", node=stack.env["GANTRY_NODE"]))


def test_the_lab_in_the_browser(stack: Stack, browser: Any, shots: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    page.goto(stack.url + "/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")

    # create, as podman create --name lab -v /mnt:/mnt busybox top
    page.get_by_role("link", name="Create container").click()
    page.get_by_label("Image").fill("localhost/busybox:latest")
    page.get_by_label("Name").fill("lab")
    page.get_by_label("Command").fill("top")
    page.get_by_label("Volumes").fill("/mnt:/mnt")
    shots(page, "create-form")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url("**/containers/*/")
    expect(page.locator("#podman-create")).to_contain_text("podman create --name lab -v /mnt:/mnt")
    record = engine_of(stack).get(Containers).get("lab")
    page.goto(stack.url + "/containers/")
    row = page.locator(f"tr[data-container='{record.id}']")
    expect(row).to_contain_text("Created")
    expect(row).to_contain_text("lab")
    shots(page, "containers-table")

    # Storage: mount, as podman mount lab
    page.goto(f"{stack.url}/containers/{record.id}/storage/")
    page.get_by_role("button", name="Mount", exact=True).click()
    expect(page.locator("#mount-count")).to_have_text("1")
    expect(page.locator("#mountinfo")).to_contain_text("overlay")
    shots(page, "storage-mounted")

    # Files: touch test -> marked A, in the upper layer
    page.goto(f"{stack.url}/containers/{record.id}/files/")
    page.locator("#touch-name").fill("test")
    page.get_by_role("button", name="Touch", exact=True).click()
    test_row = page.locator("tr.t-file", has_text="test")
    expect(test_row.locator(".mark.A")).to_be_visible()
    expect(test_row).to_contain_text("upper")

    # upload two files with the progress bar
    (tmp_path / "one.txt").write_text("one\n")
    (tmp_path / "two.bin").write_bytes(os.urandom(600_000))
    page.locator("#upload-files").set_input_files(
        [str(tmp_path / "one.txt"), str(tmp_path / "two.bin")]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-status")).to_contain_text("2 uploaded")
    expect(page.locator("tr.t-file", has_text="two.bin")).to_be_visible()
    shots(page, "files-after-upload")

    # rename and delete through the row dialog
    page.locator("tr.t-file", has_text="one.txt").locator("button.row-menu").click()
    page.locator("#row-rename").fill("renamed.txt")
    page.get_by_role("button", name="Rename", exact=True).click()
    expect(page.locator("tr.t-file", has_text="renamed.txt")).to_be_visible()
    page.locator("tr.t-file", has_text="renamed.txt").locator("button.row-menu").click()
    page.locator("#row-delete").click()
    expect(page.locator("tr.t-file", has_text="renamed.txt")).to_have_count(0)

    # edit /etc/hostname; a change behind our back is a conflict, nothing overwritten
    page.goto(f"{stack.url}/containers/{record.id}/files/view?path=/etc/hostname")
    page.locator("#editor-text").fill("lab-host\n")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#editor")).to_contain_text("Saved.")
    merged = engine_of(stack).get(Containers).paths(record.id).merged
    (merged / "etc" / "hostname").write_text("changed elsewhere\n")
    page.locator("#editor-text").fill("mine\n")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#editor")).to_contain_text("changed since it was opened")
    expect(page.locator("#editor-text")).to_have_value("mine\n")
    assert (merged / "etc" / "hostname").read_text() == "changed elsewhere\n"
    shots(page, "editor-conflict")

    # unmount again; the file stays in the upper dir
    page.goto(f"{stack.url}/containers/{record.id}/storage/")
    page.get_by_role("button", name="Unmount", exact=True).click()
    expect(page.locator("#mount-count")).to_have_text("0")
    upper = engine_of(stack).get(Containers).paths(record.id).upper
    assert (upper / "test").exists()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
    context.close()
