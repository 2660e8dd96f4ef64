"""Findings of the UI review, in a real browser against the real stack: Remove image works
from the image's page (and says why not while a container uses it); the engine badge waits for
the first heartbeat and tells a lost web server from a stopped engine; Stop in the containers
list shows "Stopping…" at once; and at 800 px the Run tab and the containers table keep what a
user acts on in view."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import needs_chromium, stack_with_busybox
from tests.browser.test_run_page import login
from tests.engine.runtools import can_run_containers
from tests.imagetools import busybox_image
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(can_run_containers(), "the stack's engine must run containers (root, runc, conmon)"),
]

# Records every text the badge shows, from the first paint on.
BADGE_LOG = """
window.__badge = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("engine-status");
  if (!el) return;
  const note = () => window.__badge.push(el.textContent.trim());
  note();
  new MutationObserver(note).observe(el, {subtree: true, childList: true, characterData: true});
});
"""


def create(
    page: Any, stack: Stack, name: str, command: str, image: str = "localhost/busybox"
) -> str:
    page.goto(stack.url + "/containers/new")
    page.get_by_label("Image").fill(image)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Command").fill(command)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r".*/containers/[0-9a-f]{64}/$"))
    return str(page.url.rstrip("/").rsplit("/", 1)[-1])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_with_busybox()


def test_remove_image_from_its_page(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    questions: list[str] = []

    def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    login(stack, page)
    # its own image (another config, so another id): removing it leaves localhost/busybox
    doomed = busybox_image(
        stack.engine(), "localhost/doomed:latest", config={"Labels": {"test": "doomed"}}
    )
    image_id = doomed.id.removeprefix("sha256:")
    cid = create(page, stack, "user-of-doomed", "true", image="localhost/doomed")
    page.goto(f"{stack.url}/images/{image_id}/")
    page.get_by_role("button", name="Remove image").click()
    expect(page.locator("#toasts")).to_contain_text("in use by container", timeout=10_000)
    assert questions and questions[0].startswith(f"Remove image {image_id[:12]}")
    assert page.url.endswith(f"/images/{image_id}/")  # refused: still here
    shots(page, "in-use")

    page.goto(f"{stack.url}/containers/{cid}/run/")
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    page.goto(f"{stack.url}/images/{image_id}/")
    page.get_by_role("button", name="Remove image").click()
    page.wait_for_url("**/images/")
    expect(page.locator(f"[data-image='{image_id}']")).to_have_count(0)
    assert page.goto(f"{stack.url}/images/{image_id}/").status == 404
    context.close()


def test_the_badge_waits_for_the_first_heartbeat(stack: Stack, browser: Any) -> None:
    """The socket opens at once, the first heartbeat comes later: meanwhile "connecting…",
    never "engine offline". Heartbeats are held back for 2 s to make the gap certain."""
    context = browser.new_context()
    page = context.new_page()
    login(stack, page)
    opened = time.monotonic()

    def relay(ws: Any) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            held = time.monotonic() - opened < 2.0
            if held and isinstance(message, str) and '"heartbeat"' in message:
                return
            ws.send(message)

        server.on_message(to_page)

    page.route_web_socket(re.compile(r".*/ws/events/$"), relay)
    page.add_init_script(BADGE_LOG)
    opened = time.monotonic()
    page.goto(stack.url + "/containers/")
    expect(page.locator("#engine-status")).to_contain_text("engine online", timeout=10_000)
    seen = page.evaluate("window.__badge")
    assert "engine offline" not in seen and seen[0] == "connecting…", seen
    context.close()


def test_a_lost_web_server_is_not_an_offline_engine(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    login(stack, page)
    page.add_init_script(BADGE_LOG)
    page.goto(stack.url + "/containers/")
    badge = page.locator("#engine-status")
    expect(badge).to_contain_text("engine online", timeout=10_000)
    context.set_offline(True)
    try:
        expect(badge).to_contain_text("no contact with the server", timeout=15_000)
        shots(page, "offline", full_page=False)
    finally:
        context.set_offline(False)
    expect(badge).to_contain_text("engine online", timeout=20_000)
    assert "engine offline" not in page.evaluate("window.__badge")
    context.close()


def start(page: Any, stack: Stack, name: str) -> str:
    # PID 1 of a container ignores a SIGTERM it has no handler for: stop waits for SIGKILL.
    cid = create(page, stack, name, "sleep 1000")
    page.goto(f"{stack.url}/containers/{cid}/run/")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("runc-state")).to_contain_text('"status": "running"')
    return cid


def test_the_run_tab_fits_800_px(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    login(stack, page)
    start(page, stack, "run-at-800")
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    # the Remove button inside the 800 px, measured on the page in one step: a state refresh
    # may swap the panel between finding the button and measuring it (None: a race, once)
    page.wait_for_function(
        """() => {
            const button = document.querySelector("[data-testid='run-remove']");
            if (!button || !button.isConnected) return false;
            const box = button.getBoundingClientRect();
            return box.width > 0 && box.right <= 800;
        }""",
        timeout=5000,
    )
    # long lines scroll, in place (asked of the element on the page at that moment: a state
    # refresh may swap the panel, and a replaced element measures 0 wide)
    page.wait_for_function(
        """() => {
            const pre = document.querySelector("[data-testid='runc-state']");
            return pre && pre.isConnected && pre.scrollWidth > pre.clientWidth;
        }""",
        timeout=5000,
    )
    shots(page, "run-800")
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    context.close()


def test_the_containers_table_keeps_what_matters_at_800_px(
    stack: Stack, browser: Any, shots: Any
) -> None:
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    login(stack, page)
    cid = create(page, stack, "a-container-with-a-long-name", "sleep 1000")
    page.goto(stack.url + "/containers/")
    row = page.locator(f"tr[data-container='{cid}']")
    expect(row).to_contain_text("Created")
    for cell in (
        row.get_by_role("link", name="a-container-with-a-long-name"),
        row.locator("td .pill").first,
        row.get_by_role("button", name="Start"),
        row.locator("summary", has_text="Remove"),
    ):
        box = cell.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 800, box
    shots(page, "list-800")
    context.close()


def test_stop_from_the_list_says_stopping_at_once(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(stack, page)
    cid = start(page, stack, "slow-to-stop")
    page.goto(stack.url + "/containers/")
    row = page.locator(f"tr[data-container='{cid}']")
    expect(row).to_contain_text("Up ")
    # The page is busy with the POST for ~10 s (Playwright waits for that navigation), so the
    # page itself notes what the row shows 300 ms after the click, in localStorage.
    page.evaluate(
        """cid => document.addEventListener("submit", () => setTimeout(() => {
             const row = document.querySelector(`tr[data-container="${cid}"]`);
             localStorage.setItem("seen", JSON.stringify({
               status: row.querySelector("td .pill").textContent,
               disabled: [...row.querySelectorAll("button")].map(b => b.disabled)}));
           }, 300))""",
        cid,
    )
    started = time.monotonic()
    row.get_by_role("button", name="Stop").click(no_wait_after=True)
    expect(page.locator(f"tr[data-container='{cid}'] td .pill").first).to_contain_text(
        "Exited", timeout=20_000
    )
    assert time.monotonic() - started > 5  # the stop did wait for SIGKILL
    seen = json.loads(page.evaluate("localStorage.getItem('seen')") or "{}")
    assert seen.get("status") == "Stopping…", seen
    assert seen["disabled"] and all(seen["disabled"]), seen
    context.close()
