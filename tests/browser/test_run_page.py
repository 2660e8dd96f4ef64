"""The Run tab in a real browser against the real stack: start, logs that follow by
themselves, a container that exits on its own turning to Exited without a reload, pause and
resume, kill, the containers table's row actions, remove — and no CSP violation on the way."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import console_errors, needs_chromium, stack_with_busybox
from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(can_run_containers(), "the stack's engine must run containers (root, runc, conmon)"),
]
SCRIPT = (
    "echo hello; i=0; while [ $i -lt 25 ]; do echo tick $i; i=$((i+1)); sleep 0.2; done; exit 3"
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_with_busybox()


def login(stack: Stack, page: Any) -> None:
    page.goto(stack.url + "/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")


def create(page: Any, stack: Stack, name: str, command: str, *, tty: bool = False) -> str:
    page.goto(stack.url + "/containers/new")
    page.get_by_label("Image").fill("localhost/busybox")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Command").fill(command)
    if tty:
        page.locator("input[name='tty']").check()
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r".*/containers/[0-9a-f]{64}/$"))
    return str(page.url.rstrip("/").rsplit("/", 1)[-1])


def test_the_run_tab_lives(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    problems = console_errors(page)
    login(stack, page)
    cid = create(page, stack, "ticker", f"sh -c '{SCRIPT}'")
    page.goto(f"{stack.url}/containers/{cid}/run/")
    status = page.get_by_test_id("run-status")
    expect(status).to_have_text("Created")
    shots(page, "created")

    page.get_by_test_id("run-start").click()
    expect(status).to_contain_text("Up ")
    expect(page.get_by_test_id("runc-state")).to_contain_text('"status": "running"')
    expect(page.locator("#container-state")).to_have_text("running")  # the header follows
    logs = page.get_by_test_id("run-logs")
    expect(logs).to_contain_text("hello")
    expect(logs).to_contain_text("tick 3", timeout=10_000)  # follow: no click, no reload
    shots(page, "running")

    page.get_by_test_id("run-pause").click()
    expect(status).to_have_text("Paused")
    page.get_by_test_id("run-resume").click()
    expect(status).to_contain_text("Up ")

    # It ends by itself (exit 3): the websocket event turns the tab to Exited, no reload.
    expect(status).to_contain_text("Exited (3)", timeout=20_000)
    expect(logs).to_contain_text("tick 24")
    expect(page.get_by_test_id("run-exit-code")).to_have_text("3")
    expect(page.locator("#container-state")).to_have_text("exited")
    shots(page, "exited")

    page.locator("#logs-timestamps").check()
    expect(logs).to_contain_text(re.compile(r"\d{4}-\d\d-\d\dT\S+ hello"))

    # Start again, kill with the default SIGKILL, then the table's row actions.
    page.get_by_test_id("run-start").click()
    expect(status).to_contain_text("Up ")
    page.get_by_test_id("run-kill").click()
    expect(status).to_contain_text("Exited (137)")
    page.goto(stack.url + "/containers/")
    row = page.locator(f"tr[data-container='{cid}']")
    row.get_by_role("button", name="Start").click()
    page.wait_for_url("**/containers/")
    expect(page.locator(f"tr[data-container='{cid}'] .pill").first).to_contain_text("Up ")
    shots(page, "table")
    page.goto(f"{stack.url}/containers/{cid}/run/")
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("run-remove").click()  # running: force, after a confirm
    page.wait_for_url("**/containers/")
    expect(page.locator(f"tr[data-container='{cid}']")).to_have_count(0)
    assert not [p for p in problems if "Content Security Policy" in p or "Error" in p], problems
    context.close()
    assert not os.path.exists(stack.tmp / "root" / "containers" / cid)


def test_a_tty_containers_logs_read_as_plain_text(stack: Stack, browser: Any) -> None:
    """What a terminal got (colours, \\r\\n, a redraw) shows as lines of text, not escapes."""
    context = browser.new_context()
    page = context.new_page()
    login(stack, page)
    script = r"printf 'plain\\n\\033[1;31mred\\033[0m\\n\\033]0;title\\007/ # \\rdone\\n'"
    cid = create(page, stack, "colours", f'sh -c "{script}"', tty=True)
    page.goto(f"{stack.url}/containers/{cid}/run/")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-status")).to_contain_text("Exited (0)", timeout=10_000)
    logs = page.get_by_test_id("run-logs")
    expect(logs).to_contain_text("done")
    assert logs.text_content() == "plain\nred\n/ # \ndone\n"
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    context.close()


def test_a_click_during_a_refresh_is_not_lost(stack: Stack, browser: Any) -> None:
    """The race as it was seen: the refresh after the pause event replaced the state panel
    between the Resume button's mousedown and mouseup, and the click was lost. Here the
    refresh is made to land exactly there."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    login(stack, page)
    cid = create(page, stack, "presser", "sleep 300")
    page.goto(f"{stack.url}/containers/{cid}/run/")
    status = page.get_by_test_id("run-status")
    page.get_by_test_id("run-start").click()
    expect(status).to_contain_text("Up ")
    page.get_by_test_id("run-pause").click()
    expect(status).to_have_text("Paused")

    page.get_by_test_id("run-resume").hover()
    page.mouse.down()
    page.evaluate(
        """() => new Promise((done) => {
            const panel = document.getElementById("run-state");
            document.body.addEventListener("htmx:afterRequest", done, { once: true });
            window.htmx.trigger(panel, "refresh");
        })"""
    )
    page.mouse.up()
    expect(status).to_contain_text("Up ")
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    context.close()


def test_a_pull_card_keeps_its_newest_snapshot(stack: Stack, browser: Any) -> None:
    """Snapshots that arrive late (an older sequence number, or a running one after done)
    never take a card back. (Each snapshot brings its card's HTML, as the events socket
    renders it: tests/webui/test_events_consumer.py.)"""
    context = browser.new_context()
    page = context.new_page()
    login(stack, page)
    page.goto(stack.url + "/images/")
    page.evaluate(
        """() => {
            window.sendPull = (job) => document.body.dispatchEvent(new CustomEvent("gantry:pull", {
                detail: Object.assign({ job: "0123456789abcdef", ref: "demo:1", layers: [],
                    html: `<article class="pull-job card" id="pull-0123456789abcdef"
                        data-state="${job.state}" data-seq="${job.seq}">
                        <span class="pill" data-role="state">${job.state}</span>
                        <span data-role="step">${job.step}</span></article>` }, job),
            }));
            const send = window.sendPull;
            send({ state: "pulling", step: "fetching layers", seq: 3 });
            send({ state: "pulling", step: "resolving the reference", seq: 2 });
        }"""
    )
    card = page.locator("#pull-0123456789abcdef")
    expect(card.locator("[data-role='step']")).to_have_text("fetching layers")
    page.evaluate(
        """() => {
            const send = window.sendPull;
            send({ state: "done", step: "", seq: 5 });
            send({ state: "pulling", step: "writing manifest to image destination", seq: 4 });
            send({ state: "pulling", step: "writing manifest to image destination", seq: 9 });
        }"""
    )
    expect(card).to_have_attribute("data-state", "done")
    expect(card.locator("[data-role='state']")).to_have_text("done")
    context.close()


def test_the_containers_table_reads_again_after_a_failed_load(stack: Stack, browser: Any) -> None:
    """A table whose load failed (here the request is dropped on its way) reads itself again
    a moment later; nothing else would have reloaded it."""
    context = browser.new_context()
    page = context.new_page()
    login(stack, page)
    cid = create(page, stack, "recovers", "sleep 1")
    dropped: list[str] = []

    def drop_the_first(route: Any) -> None:
        if not dropped:
            dropped.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/containers/table", drop_the_first)
    page.goto(stack.url + "/containers/")
    expect(page.locator(f"tr[data-container='{cid}']")).to_have_count(1, timeout=10_000)
    assert dropped
    page.unroute("**/containers/table")
    page.goto(f"{stack.url}/containers/{cid}/run/")
    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    context.close()
