"""The Spec tab in a real browser against the real stack: generate, the form and the raw JSON
editing one document both ways, a broken save showing each error next to its field with the
draft kept, a good save, the diff, reset — and no CSP violation on the way."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from engine.config import EngineConfig
from engine.core import Engine
from engine.storage.containers import Containers
from tests.browser.conftest import console_errors, needs_chromium
from tests.engine.test_spec_service import can_mount_overlay
from tests.imagetools import busybox_image
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(os.geteuid() == 0 and can_mount_overlay(), "the stack's engine must run as root"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack().start()
    yield s
    s.stop()


def engine_of(stack: Stack) -> Engine:
    return Engine(EngineConfig(root=stack.tmp / "root", node=stack.env["GANTRY_NODE"]))


def create_container(stack: Stack, page: Any, name: str) -> str:
    """Create through the web's own form (so the web records the owner), as podman create
    --name NAME -e A=1 busybox sh does; returns the container id."""
    engine = engine_of(stack)
    engine.ensure_root()
    busybox_image(engine)
    page.goto(stack.url + "/containers/new")
    page.get_by_label("Image").fill("localhost/busybox:latest")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Command").fill("sh")
    page.get_by_label("Environment").fill("A=1")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url("**/containers/*/")
    return engine.get(Containers).get(name).id


def login(stack: Stack, page: Any) -> None:
    page.goto(stack.url + "/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")


def doc(page: Any) -> dict[str, Any]:
    return dict(json.loads(page.locator("#spec-text").input_value()))


def test_the_spec_tab_edits_one_document_two_ways(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems = console_errors(page)
    login(stack, page)
    container_id = create_container(stack, page, "spec1")
    page.get_by_role("link", name="Spec").click()
    page.wait_for_url(f"**/containers/{container_id}/spec/")
    shots(page, "empty")
    page.get_by_test_id("spec-generate").click()
    page.wait_for_selector("#spec-text")
    assert doc(page)["process"]["args"] == ["sh"]
    shots(page, "generated")

    # form -> JSON
    page.locator("#f-cwd").fill("/tmp")
    page.locator("#f-args").fill("sh\n-c\necho hi")
    page.locator("input[data-cap='CAP_NET_RAW']").check()
    page.locator("#f-memory").fill("67108864")
    assert doc(page)["process"]["cwd"] == "/tmp"
    assert doc(page)["process"]["args"] == ["sh", "-c", "echo hi"]
    assert "CAP_NET_RAW" in doc(page)["process"]["capabilities"]["effective"]
    assert doc(page)["linux"]["resources"]["memory"] == {"limit": 67108864}

    # JSON -> form
    edited = doc(page)
    edited["hostname"] = "typed-in-json"
    page.locator("#spec-text").fill(json.dumps(edited, indent=2))
    expect(page.locator("#f-hostname")).to_have_value("typed-in-json")  # no eval under the CSP

    # A broken save: errors next to their fields, the draft kept.
    page.get_by_test_id("spec-save").click()
    page.get_by_test_id("spec-errors").wait_for()
    caps_error = page.locator("fieldset[data-field='process.capabilities'] .field-error")
    assert "CAP_NET_RAW" in caps_error.first.inner_text()
    assert doc(page)["hostname"] == "typed-in-json"  # nothing lost
    shots(page, "refused")

    # Fix it in the form, save, see the diff.
    page.locator("input[data-cap='CAP_NET_RAW']").uncheck()
    page.get_by_test_id("spec-save").click()
    page.get_by_test_id("spec-saved").wait_for()
    page.get_by_test_id("spec-line-diff").wait_for()
    assert "typed-in-json" in page.get_by_test_id("spec-line-diff").inner_text()
    changed = page.get_by_test_id("spec-field-diff").inner_text()
    assert "process.capabilities" not in changed  # a toggle back and forth leaves no edit
    assert page.locator(".field-error").count() == 0
    shots(page, "saved")

    # Add a mount row in the form: it lands in the JSON.
    page.locator("#spec-add-mount").click()
    row = page.locator("#spec-mount-rows tr").last
    row.locator("[data-part='destination']").fill("/scratch")
    row.locator("[data-part='type']").fill("tmpfs")
    row.locator("[data-part='options']").fill("nosuid,size=1m")
    assert doc(page)["mounts"][-1] == {
        "destination": "/scratch",
        "type": "tmpfs",
        "options": ["nosuid", "size=1m"],
    }

    # Reset to generated (confirm dialog accepted).
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("spec-reset").click()
    page.get_by_test_id("spec-diff-empty").wait_for()
    assert doc(page)["process"]["args"] == ["sh"]
    shots(page, "reset")
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems
    context.close()
