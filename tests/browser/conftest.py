"""Playwright (the Python package) driving Debian's chromium, headless, no browser download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.skips import requires
from tests.stack.stackrun import Stack, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Without the background-networking flags chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

needs_chromium = requires(os.path.exists(CHROMIUM), "Debian's chromium is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running while it is open,
    which the asyncio tests of other modules must not inherit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Any:
    """shots(page, "step-name") writes tests/artifacts/<test>/<n>-<step>.png."""
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = [0]

    def take(page: Any, name: str, full_page: bool = True) -> Path:
        count[0] += 1
        path = folder / f"{count[0]:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


def stack_with_busybox() -> Iterator[Stack]:
    """A running stack (web, worker, Redis) whose engine has the busybox image; for a
    module-scoped ``stack`` fixture: ``yield from stack_with_busybox()``."""
    from tests.imagetools import busybox_image

    s = Stack().start()
    try:
        # the worker sweeps and collects the store as it starts: add the image after that
        session = s.login()
        status = s.url + "/engine/status"
        wait_until(lambda: "engine online" in session.get(status, timeout=10).text, 60)
        engine = s.engine()
        engine.ensure_root()
        busybox_image(engine)
        yield s
    finally:
        s.stop()


def console_errors(page: Any) -> list[str]:
    """The page's console errors and uncaught exceptions, as they come."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems
