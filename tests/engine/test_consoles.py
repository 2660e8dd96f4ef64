"""Terminals on real containers: the console of a -t container and exec -t shells, through
conmon's attach socket and the terminal hub (no web). Viewers are played by a publisher that
records what each channel receives and acknowledges it, as the web's consumer does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from engine.terminal.consoles import Consoles
from engine.terminal.hub import TerminalHub
from tests.engine.runtools import (
    RUNTIME_REASON,
    Census,
    can_run_containers,
    create,
    no_leaks,
    worker_started,
)
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]


class Screens:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.got: dict[str, bytearray] = {}
        self.closed: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def publish(self, group: str, event: dict[str, Any]) -> None:
        pass

    def send(self, channel: str, event: dict[str, Any]) -> None:
        if event["type"] == "term.closed":
            self.closed[channel] = event
            return
        with self.lock:
            self.got.setdefault(channel, bytearray()).extend(event["data"])
        self.engine.get(TerminalHub).get(event["session"]).ack(channel, len(event["data"]))

    def text(self, channel: str) -> str:
        with self.lock:
            return bytes(self.got.get(channel, b"")).decode(errors="replace")

    def wait_for(self, channel: str, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text(channel):
            assert time.monotonic() < deadline, f"{needle!r} not in {self.text(channel)[-500:]!r}"
            time.sleep(0.02)


@pytest.fixture
def live(engine: Engine) -> Iterator[Engine]:
    busybox_image(engine)
    with worker_started(engine):
        yield engine


def hub_input(engine: Engine, key: str, text: str) -> None:
    engine.get(TerminalHub).get(key).send_input(text.encode())


def test_it_attaches_to_a_tty_container_and_follows_its_size(live: Engine) -> None:
    before = Census.take(live)
    screens = Screens(live)
    create(live, ["sh"], name="tty1", tty=True)
    live.get(Lifecycle).start("tty1")
    result = live.get(Consoles).attach("tty1", "v!1", screens)
    key = result["session"]
    hub_input(live, key, "echo hi-$((6*7))\n")
    screens.wait_for("v!1", "hi-42")
    live.get(TerminalHub).get(key).resize(37, 123)
    hub_input(live, key, "stty size\n")
    screens.wait_for("v!1", "37 123")
    # a second viewer gets the scrollback replayed, and its input reaches the same shell
    live.get(Consoles).attach("tty1", "v!2", screens)
    screens.wait_for("v!2", "hi-42")
    hub_input(live, key, "echo from-two\n")
    screens.wait_for("v!1", "from-two")
    hub_input(live, key, "exit 5\n")
    deadline = time.monotonic() + 10
    while "v!1" not in screens.closed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert screens.closed["v!1"]["exit_code"] == 5
    live.get(Lifecycle).containers.remove(live.get(Containers).get("tty1").id, force=True)
    no_leaks(live, before)


def test_an_exec_shell_gets_its_own_pty_and_exit_code(live: Engine) -> None:
    screens = Screens(live)
    create(live, ["sh", "-c", "touch /test; sleep 300"], name="ex1")
    live.get(Lifecycle).start("ex1")
    shell = live.get(Consoles).create_exec("ex1", [], screens, rows=30, cols=100)
    assert shell["command"] == ["/bin/sh"]  # busybox has no bash
    live.get(Consoles).attach("ex1", "s!1", screens, exec_id=shell["exec"])
    key = shell["session"]
    hub_input(live, key, "stty size; tty; ls /\n")
    screens.wait_for("s!1", "30 100")
    screens.wait_for("s!1", "/dev/pts/")
    screens.wait_for("s!1", "test")
    hub_input(live, key, "exit 3\n")
    deadline = time.monotonic() + 10
    while "s!1" not in screens.closed:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert screens.closed["s!1"]["exit_code"] == 3
    record = live.get(Containers).get("ex1")
    transcripts = live.get(Consoles).transcripts(record.id)
    assert transcripts and transcripts[0]["exit_code"] == 3 and "test" in transcripts[0]["output"]
    bundle = live.get(Containers).paths(record.id).bundle
    assert not (bundle / shell["exec"]).exists()  # the exec bundle is gone


def test_a_missing_shell_or_command_is_one_clear_sentence(live: Engine) -> None:
    from engine.errors import EngineError

    screens = Screens(live)
    create(live, ["sleep", "300"], name="nosh")
    live.get(Lifecycle).start("nosh")
    with pytest.raises(EngineError, match="no such file|not found|executable"):
        live.get(Consoles).create_exec("nosh", ["/bin/zsh"], screens)
    record = live.get(Containers).get("nosh")
    assert list(live.get(Containers).paths(record.id).bundle.glob("[0-9a-f]" * 32)) == []


def test_it_refuses_a_stopped_or_tty_less_container(live: Engine) -> None:
    screens = Screens(live)
    create(live, ["sleep", "300"], name="plain")
    with pytest.raises(InvalidStateError):
        live.get(Consoles).attach("plain", "v!1", screens)
    live.get(Lifecycle).start("plain")
    with pytest.raises(InvalidInputError, match="no terminal"):
        live.get(Consoles).attach("plain", "v!1", screens)
