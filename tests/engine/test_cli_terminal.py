"""`exec -t -i` and `attach` in a real terminal: the CLI runs on a pty, as a person's shell
would run it; the window size follows (TIOCSWINSZ on the pty sends SIGWINCH to the CLI, which
resizes conmon's pty); Ctrl-P Ctrl-Q detaches from `attach`."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Engine
from engine.runtime.lifecycle import Lifecycle
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, create, worker_started
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def live(engine: Engine) -> Iterator[Engine]:
    busybox_image(engine)
    with worker_started(engine):
        yield engine


class Tty:
    """The CLI on the slave side of a pty; the test types on the master side."""

    def __init__(self, root: Path, *args: str, rows: int = 30, cols: int = 100) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # as a terminal emulator does: the window has a size before the program runs
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.chdir(REPO)
            argv = [sys.executable, "-m", "engine", "--root", str(root), *args]
            os.execv(sys.executable, argv)  # noqa: S606
        self.pid, self.fd = pid, fd
        self.out = b""
        self.answered = 0
        self.prompts = 0

    def size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def read(self, wait: float) -> None:
        if select.select([self.fd], [], [], wait)[0]:
            try:
                self.out += os.read(self.fd, 65536)
            except OSError:
                return
        # Be a terminal: busybox ash asks where the cursor is after each prompt (ESC[6n)
        # and reads the answer before anything typed.
        while self.out.count(b"\x1b[6n") > self.answered:
            self.answered += 1
            os.write(self.fd, b"\x1b[1;5R")

    def wait_for(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle.encode() not in self.out:
            assert time.monotonic() < deadline, f"{needle!r} not in {self.out[-400:]!r}"
            self.read(0.2)

    def ready(self, timeout: float = 15) -> None:
        """Wait for the next prompt's cursor query, then a moment: busybox ash drops what is
        typed in the same read as the cursor report (a person never types that fast)."""
        deadline = time.monotonic() + timeout
        while self.out.count(b"\x1b[6n") <= self.prompts:
            assert time.monotonic() < deadline, f"no prompt in {self.out[-400:]!r}"
            self.read(0.2)
        self.prompts = self.out.count(b"\x1b[6n")
        self.read(0.3)

    def exit_status(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self.read(0.1)
        raise AssertionError("the CLI did not exit")


def test_exec_it_follows_the_window_and_returns_the_exit_code(live: Engine) -> None:
    create(live, ["sleep", "300"], name="ex")
    live.get(Lifecycle).start("ex")
    tty = Tty(live.config.root, "exec", "-t", "-i", "ex", "sh")
    tty.ready()  # the prompt and its cursor query, answered by read()
    tty.type("stty size\n")
    tty.wait_for("30 100")
    tty.ready()
    tty.size(41, 123)  # the kernel sends the CLI SIGWINCH
    time.sleep(0.3)
    tty.type("stty size\n")
    tty.wait_for("41 123")
    tty.ready()
    tty.type("tty; exit 3\n")
    tty.wait_for("/dev/pts/")
    assert tty.exit_status() == 3


def test_attach_types_into_the_console_and_detaches_with_ctrl_p_ctrl_q(live: Engine) -> None:
    create(live, ["sh"], name="att", tty=True)
    live.get(Lifecycle).start("att")
    tty = Tty(live.config.root, "attach", "att", rows=25, cols=90)
    tty.wait_for("\x1b[J")  # attached: ash redraws its line when the pty is resized
    tty.type("\n")  # a fresh prompt (and its cursor query) for this client
    tty.ready()
    tty.type("echo hi-$((40+2)); stty size\n")
    tty.wait_for("hi-42")
    tty.wait_for("25 90")
    tty.type("\x10\x11")
    assert tty.exit_status() == 0
    assert b"Detached" in tty.out
    assert live.get(Lifecycle).get_synced("att").state == "running"


def test_attach_detaches_when_the_keys_share_a_read_with_more_input(live: Engine) -> None:
    """The race as it was seen: the keys and the next bytes (there, ash's cursor report)
    arrive in one read. Stopping the CLI while they are typed puts them in one read for
    sure; the command typed before the keys is delivered, not dropped."""
    from engine.runtime.logs import read_all
    from engine.storage.containers import Containers

    record = create(live, ["sh"], name="att1", tty=True)
    live.get(Lifecycle).start("att1")
    tty = Tty(live.config.root, "attach", "att1")
    tty.wait_for("\x1b[J")  # attached, in raw mode, forwarding
    os.kill(tty.pid, signal.SIGSTOP)
    tty.type("echo be$((1+1))fore\r\x10\x11\x1b[1;5R")
    os.kill(tty.pid, signal.SIGCONT)
    assert tty.exit_status() == 0
    assert b"Detached" in tty.out
    log = live.get(Containers).paths(record.id).userdata / "ctr.log"
    deadline = time.monotonic() + 15
    while b"be2fore" not in read_all(log):
        assert time.monotonic() < deadline, read_all(log)[-400:]
        time.sleep(0.1)
    assert live.get(Lifecycle).get_synced("att1").state == "running"


def test_attach_refuses_bad_detach_keys(live: Engine) -> None:
    create(live, ["sh"], name="att2", tty=True)
    live.get(Lifecycle).start("att2")
    tty = Tty(live.config.root, "attach", "--detach-keys", "ctrl-1", "att2")
    assert tty.exit_status() == 125
    assert b"invalid detach keys" in tty.out
