"""The admins' pages in Chromium, driven by their visible labels. Users: add two learners, read
their one-time passwords, log one in, make the other an instructor, disable the first (whose
open page is logged out). Nodes: the stack's engine online, offline within 5 s of its
heartbeats stopping, online again, without a reload."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import needs_chromium
from tests.browser.test_run_page import login
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [needs_chromium, requires(os.geteuid() == 0, "the stack runs as root")]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack().start()
    try:
        yield s
    finally:
        s.stop()


def test_an_admin_adds_and_manages_learners(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    login(stack, page)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("Names").fill("ann\nbob")
    page.get_by_role("button", name="Add and show passwords").click()
    added = page.get_by_test_id("added-users")
    expect(added).to_contain_text("ann")
    password = added.locator("tr", has_text="ann").locator("td.mono").inner_text()
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", password)
    shots(page, "added")

    learner = browser.new_context().new_page()
    learner.goto(stack.url + "/login/")
    learner.get_by_label("User name").fill("ann")
    learner.get_by_label("Password").fill(password)
    learner.get_by_role("button", name="Log in").click()
    learner.wait_for_url("**/containers/")
    expect(learner.get_by_role("link", name="Users")).to_have_count(0)

    everyone = page.get_by_test_id("users")
    everyone.get_by_label("Role of bob").select_option("instructor")
    everyone.locator("tr", has_text="bob").get_by_role("button", name="Set role").click()
    expect(page.get_by_role("status")).to_contain_text("bob is instructor")
    everyone.locator("tr", has_text="ann").get_by_role("button", name="Disable").click()
    expect(everyone.locator("tr", has_text="ann")).to_contain_text("disabled")
    shots(page, "managed")
    learner.reload()
    expect(learner).to_have_url(re.compile(r"/login/"))
    # the Class page lists the active learners (ann is disabled, bob an instructor now)
    page.get_by_test_id("users").locator("tr", has_text="ann").get_by_role(
        "button", name="Enable"
    ).click()
    page.get_by_role("link", name="Class").click()
    expect(page.get_by_role("heading", name="Class")).to_be_visible()
    expect(page.locator("tr[data-learner='ann']")).to_contain_text("not started")
    expect(page.locator("tr[data-learner='bob']")).to_have_count(0)
    shots(page, "class")
    context.close()


def test_the_nodes_page_follows_a_node_going_offline_and_back(
    stack: Stack, browser: Any, shots: Any
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(stack, page)
    page.get_by_role("link", name="Nodes").click()
    expect(page.get_by_role("heading", name="Nodes")).to_be_visible()
    row = page.get_by_role("row", name=re.compile(stack.env["GANTRY_NODE"]))
    expect(row.get_by_test_id("node-status")).to_have_text("online")
    expect(row).to_contain_text(f"pid {stack.pid('engine')}")
    shots(page, "online")
    engine = stack.pid("engine")
    os.kill(engine, signal.SIGSTOP)  # heartbeats stop; nothing is lost
    try:
        expect(row.get_by_test_id("node-status")).to_have_text("offline", timeout=8000)
        expect(row.get_by_role("button", name=re.compile("Forget node"))).to_be_visible()
        shots(page, "offline")
    finally:
        os.kill(engine, signal.SIGCONT)
    expect(row.get_by_test_id("node-status")).to_have_text("online", timeout=8000)
    context.close()
