"""The Terminal tab in Chromium: the console pane is fitted to its box (and `stty size` follows
the window), typed text reaches the shell, and what the container prints to make the terminal
answer back (DECRQSS, colour reports) or write the clipboard (OSC 52) never comes back as input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import needs_chromium, stack_with_busybox
from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from stack_with_busybox()


def screen_text(page: Page) -> str:
    return page.locator(".term-pane:not([hidden]) .xterm-rows").inner_text()


def started(stack: Stack, browser: Any, **form: str) -> tuple[Any, str, Any]:
    """A busybox container created and started over HTTP (form: name, command, tty), and a
    browser context logged in as the same admin: (session, container id, context)."""
    session = stack.login()
    r = session.post(
        f"{stack.url}/containers/new",
        data={"image": "localhost/busybox:latest", **form},
        allow_redirects=False,
        timeout=30,
    )
    cid = r.headers["Location"].rstrip("/").split("/")[-1]
    assert session.post(f"{stack.url}/containers/{cid}/run/start", timeout=30).status_code < 400
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.add_cookies(
        [{"name": "sessionid", "value": session.cookies["sessionid"], "url": stack.url}]
    )
    return session, cid, context


def test_the_console_pane(stack: Stack, browser: Any, shots: Any) -> None:
    _, cid, context = started(stack, browser, name="console", command="sh", tty="on")
    page = context.new_page()
    page.goto(f"{stack.url}/containers/{cid}/terminal/")
    pane = page.locator(".term-pane:not([hidden])")
    expect(pane.locator(".term-status")).to_have_text("attached")
    page.locator(".term-pane:not([hidden]) .xterm").click()

    page.keyboard.type("stty size\n")
    expect(pane.locator(".xterm-rows")).to_contain_text(re.compile(r"\d+ \d+"))
    wide = [int(n) for n in re.findall(r"^(\d+) (\d+)\s*$", screen_text(page), re.M)[-1]]
    page.set_viewport_size({"width": 700, "height": 800})
    page.keyboard.type("clear; stty size\n")
    expect(pane.locator(".xterm-rows")).not_to_contain_text(f"{wide[0]} {wide[1]}")
    # the clear is drawn before stty's answer: wait for the answer itself, then read it
    expect(pane.locator(".xterm-rows")).to_contain_text(re.compile(r"\d+ \d+"))
    narrow = [int(n) for n in re.findall(r"^(\d+) (\d+)\s*$", screen_text(page), re.M)[-1]]
    assert narrow[1] < wide[1]  # the pane was fitted again and the pty followed

    # Hostile output: requests for an answer, and a clipboard write. Nothing may come back.
    # Raw mode with a 2 s read timeout: whatever the terminal sends back is caught by dd.
    page.keyboard.type(
        "clear; stty -icanon -echo min 0 time 20;"
        " printf '\\033P$qm\\033\\\\\\033]11;?\\007\\033]52;c;aGk=\\007';"
        " x=$(dd bs=1 count=64 2>/dev/null | od -An -c | tr -d ' \\n'); stty sane;"
        ' echo "got:[$x]"\n'
    )
    expect(pane.locator(".xterm-rows")).to_contain_text("got:[]", timeout=10_000)
    shots(page, "console")

    # Ctrl+Shift+V pastes the clipboard once; Ctrl+Shift+C copies the selection.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    page.evaluate("navigator.clipboard.writeText('echo paste-$((40+2))')")
    page.keyboard.type("clear\n")
    page.wait_for_timeout(500)  # ash drops what comes with its cursor report (a person waits)
    page.keyboard.press("Control+Shift+V")
    page.keyboard.press("Enter")
    # (the rows' text content runs together: the command line, then its output)
    expect(pane.locator(".xterm-rows")).to_contain_text("# echo paste-$((40+2))paste-42")
    page.locator(".term-pane:not([hidden]) .xterm-screen").dblclick()  # selects a word
    page.keyboard.press("Control+Shift+C")
    assert page.evaluate("navigator.clipboard.readText()") != "echo paste-$((40+2))"
    context.close()


def test_a_shell_outlives_its_page_and_gets_its_pane_back(stack: Stack, browser: Any) -> None:
    """A New shell keeps running when the page goes (as `podman exec` sessions do): the
    Terminal tab opened again lists it and attaches, with what it printed replayed."""
    session, cid, context = started(stack, browser, name="shells", command="sleep 300")
    page = context.new_page()
    page.goto(f"{stack.url}/containers/{cid}/terminal/")
    page.get_by_role("button", name="New shell").dblclick()  # one shell, not two
    pane = page.locator(".term-pane:not([hidden])")
    expect(pane.locator(".term-status")).to_have_text("attached")
    page.wait_for_timeout(500)
    page.keyboard.type("echo kept-$((6*7))\n")
    expect(pane.locator(".xterm-rows")).to_contain_text("kept-42")
    page.reload()
    tabs = page.locator(".term-tabs [role=tab]")
    expect(tabs).to_have_count(1)
    expect(page.locator(".term-pane:not([hidden]) .term-status")).to_have_text("attached")
    expect(page.locator(".term-pane:not([hidden]) .xterm-rows")).to_contain_text("kept-42")
    context.close()
    assert session.post(f"{stack.url}/containers/{cid}/remove", data={"force": "1"}).ok
