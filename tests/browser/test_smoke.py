"""The base page as a person sees it: log in, see the navigation and the engine online; stop
the engine and the badge says offline by itself; it comes back by itself."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import needs_chromium
from tests.skips import requires
from tests.stack.stackrun import Stack

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(os.geteuid() == 0, "the stack's engine worker must run as root"),
]


def log_in(page: Any, stack: Stack) -> None:
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = Stack(restart_delay=4).start()
    yield s
    s.stop()


def test_it_logs_in_and_follows_the_engine(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(stack.url + "/containers/")
    shots(page, "login")
    log_in(page, stack)
    badge = page.locator("#engine-status")
    badge.locator("text=engine online").wait_for(timeout=10_000)
    assert "runc" in page.locator("#node-info").inner_text()
    shots(page, "containers-online")

    os.kill(stack.pid("engine"), signal.SIGKILL)
    badge.locator("text=engine offline").wait_for(timeout=5_000)
    shots(page, "engine-offline")
    try:
        badge.locator("text=engine online").wait_for(timeout=20_000)
    except PlaywrightTimeoutError as err:  # say what the engine did meanwhile
        log = (stack.run_dir / "engine.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{badge.get_attribute('title')!r}; engine.log:\n{log}") from err
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_it_fits_a_phone_width(stack: Stack, browser: Any, shots: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(stack.url + "/login/")
    log_in(page, stack)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    shots(page, "phone")
    context.close()


def test_a_new_socket_waits_for_the_engines_first_heartbeat(stack: Stack, browser: Any) -> None:
    """The loop a busy run met: the engine came back and answered the status probe before its
    first heartbeat, the page reopened its socket, and the next probe, measured from the last
    beat of the old socket, closed the new one at once, again and again. Here the page's
    sockets go through a proxy that stops the beats of the first one after 2 s and holds
    back those of each later one for its first 1.5 s."""
    context = browser.new_context()
    page = context.new_page()
    opened: list[float] = []

    def proxy(ws: Any) -> None:
        server = ws.connect_to_server()
        started = time.monotonic()
        opened.append(started)
        first = len(opened) == 1

        def from_server(message: Any) -> None:
            age = time.monotonic() - started
            beat = isinstance(message, str) and '"heartbeat"' in message
            if beat and ((first and age > 2) or (not first and age < 1.5)):
                return
            ws.send(message)

        server.on_message(from_server)

    page.route_web_socket(re.compile(r".*/ws/events/$"), proxy)
    page.goto(stack.url + "/login/")
    log_in(page, stack)
    badge = page.locator("#engine-status")
    badge.locator("text=engine online").wait_for(timeout=10_000)
    wait_until_more_than(page, opened, 1, timeout=15)  # the beats stopped: a new socket opened
    badge.locator("text=engine online").wait_for(timeout=10_000)
    assert len(opened) <= 3, f"{len(opened)} sockets: each closed before its first beat"
    context.close()


def wait_until_more_than(page: Any, items: list[float], count: int, timeout: float) -> None:
    """Wait in the page (Playwright runs the proxy's callbacks only while it is called)."""
    deadline = time.monotonic() + timeout
    while len(items) <= count:
        assert time.monotonic() < deadline, f"only {len(items)} sockets"
        page.wait_for_timeout(50)


def followed_page(stack: Stack, browser: Any) -> tuple[Any, Any, Any]:
    """A logged-in page showing the engine online and marked (a reload would drop the mark),
    with a busybox image there to make containers from: (context, page, badge)."""
    from tests.imagetools import busybox_image

    engine = stack.engine()
    engine.ensure_root()
    busybox_image(engine)
    context = browser.new_context()
    page = context.new_page()
    page.goto(stack.url + "/login/")
    log_in(page, stack)
    badge = page.locator("#engine-status")
    badge.locator("text=engine online").wait_for(timeout=10_000)
    page.evaluate("window.gantryNotReloaded = true")
    return context, page, badge


def shown_without_reload(stack: Stack, page: Any, name: str) -> None:
    """Someone else makes a container through the web; the open page shows it by itself."""
    other = stack.login()
    form = {"image": "localhost/busybox:latest", "name": name, "command": "true"}
    r = other.post(f"{stack.url}/containers/new", data=form, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text[:300]
    page.get_by_role("link", name=name).wait_for(timeout=15_000)
    assert page.evaluate("window.gantryNotReloaded") is True


def test_a_restarted_web_server_is_followed_without_a_reload(stack: Stack, browser: Any) -> None:
    """The web server killed under an open page: the badge says the page lost it, supervisord
    starts it again, the page reconnects its socket by itself and shows what happened after
    (a container made meanwhile by someone else), with no reload."""
    context, page, badge = followed_page(stack, browser)

    os.kill(stack.pid("web"), signal.SIGKILL)
    page.locator("#engine-status[data-state='offline']").wait_for(timeout=10_000)
    badge.locator("text=engine online").wait_for(timeout=30_000)
    shown_without_reload(stack, page, "made-meanwhile")  # by someone else, through the new web
    context.close()


def test_a_lost_channel_layer_is_shown_and_followed_when_it_returns(
    stack: Stack, browser: Any
) -> None:
    """Redis stalled under an open page (SIGSTOP: the layer is there but answers nothing): the
    badge says "engine offline" while it is gone and "engine online" after. Then Redis killed
    (its groups, the page's subscriptions among them, die with it): supervisord starts it
    again, the page finds the engine again by itself and follows what happens next (a
    container made by someone else) with no reload."""
    context, page, badge = followed_page(stack, browser)

    redis = stack.pid("redis")
    os.kill(redis, signal.SIGSTOP)
    try:
        badge.locator("text=engine offline").wait_for(timeout=10_000)
    finally:
        os.kill(redis, signal.SIGCONT)
    badge.locator("text=engine online").wait_for(timeout=20_000)

    os.kill(redis, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while stack.pid("redis") == redis:  # supervisord starts a new one
        assert time.monotonic() < deadline, "redis did not come back"
        page.wait_for_timeout(100)
    badge.locator("text=engine online").wait_for(timeout=20_000)
    shown_without_reload(stack, page, "made-after-redis")
    context.close()
