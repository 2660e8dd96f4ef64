"""engine.runtime.runc (the runc wrapper) and engine.runtime.logs (k8s-file): signal parsing, runc's
messages, state/kill/pause/resume/ps/delete on a hand-made bundle, and log reading with
partial lines, timestamps, follow cursors and truncation."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine.core import Engine
from engine.errors import InvalidInputError, RuntimeFailedError
from engine.runtime.conmon import Conmon, MonitorSpec
from engine.runtime.exits import wait_for_file
from engine.runtime.logs import LogCursor, last_lines, read_all, read_log
from engine.runtime.runc import Runc, parse_signal, runc_message
from tests.engine.runtools import RUNTIME_REASON, busybox_rootfs, can_run_containers, make_bundle
from tests.skips import requires


@pytest.mark.parametrize(
    ("given", "number"),
    [("9", 9), (9, 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15), ("SIGUSR1", 10),
     ("HUP", 1), ("RTMIN+2", signal.SIGRTMIN + 2), ("RTMAX", signal.SIGRTMAX)],
)  # fmt: skip
def test_it_parses_signals_like_podman(given: str | int, number: int) -> None:
    assert parse_signal(given) == number


@pytest.mark.parametrize("bad", ["", "0", "65", "NOPE", "SIG", "KILL; rm -rf /", "९", True, -1])
def test_it_refuses_bad_signals(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        parse_signal(bad)  # type: ignore[arg-type]


def test_it_lifts_runcs_message_out_of_its_log_lines() -> None:
    line = 'time="2026-11-28T16:16:55Z" level=error msg="container \\"x\\" does not exist"'
    assert runc_message(line) == 'container "x" does not exist'
    assert runc_message('{"level":"error","msg":"boom","time":"x"}') == "boom"
    assert runc_message("plain failure\n") == "plain failure"


# -- logs -----------------------------------------------------------------------------------
LOG = (
    b"2026-11-28T15:17:57.1+00:00 stdout F hello\n"
    b"2026-11-28T15:17:57.2+00:00 stderr F oops\n"
    b"2026-11-28T15:17:57.3+00:00 stdout P / # \n"
    b"2026-11-28T15:17:58.4+00:00 stdout P ec\n"
    b"2026-11-28T15:17:58.5+00:00 stdout F ho\n"
    b"2026-11-28T15:17:58.6+00:00 stdout F \n"
)


def test_it_rebuilds_the_byte_stream_from_a_k8s_file(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(LOG)
    assert read_all(path) == b"hello\noops\n/ # echo\n\n"
    assert read_all(path, timestamps=True) == (
        b"2026-11-28T15:17:57.1+00:00 hello\n"
        b"2026-11-28T15:17:57.2+00:00 oops\n"
        b"2026-11-28T15:17:57.3+00:00 / # echo\n"
        b"2026-11-28T15:17:58.6+00:00 \n"
    )
    assert read_all(tmp_path / "missing.log") == b""


def test_it_keeps_a_terminals_carriage_returns(tmp_path: Path) -> None:
    """A tty's output is full of \\r: line ends (\\r\\n) and redraws (\\r then the line again).
    They are content, not line breaks of the log (the scrollback of a console is built from it)."""
    path = tmp_path / "ctr.log"
    path.write_bytes(
        b"2026-11-28T18:30:57.6+00:00 stdout F BusyBox\r\n"
        b"2026-11-28T18:30:57.6+00:00 stdout P / # \x1b[6n\n"
        b"2026-11-28T18:30:58.7+00:00 stdout P \r/ # \x1b[J\n"
    )
    assert read_all(path) == b"BusyBox\r\n/ # \x1b[6n\r/ # \x1b[J"


def test_it_follows_appends_and_survives_truncation(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(LOG[:43] + LOG[43:60])  # a line cut in the middle of a write
    first = read_log(path)
    assert first.data == b"hello\n"
    with path.open("ab") as f:
        f.write(LOG[60:])
    second = read_log(path, LogCursor.decode(first.cursor.encode()))
    assert second.data == b"oops\n/ # echo\n\n" and not second.truncated
    assert read_log(path, second.cursor).data == b""
    path.write_bytes(b"")  # conmon truncates at --log-size-max
    with path.open("ab") as f:
        f.write(b"2026-11-28T15:18:00.0+00:00 stdout F after\n")
    third = read_log(path, second.cursor)
    assert third.truncated and third.data == b"after\n"


def test_it_reads_only_the_tail_of_a_big_log(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(
        b"".join(b"2026-11-28T15:17:57.1+00:00 stdout F line %d\n" % i for i in range(1000))
    )
    chunk = read_log(path, tail_bytes=200)
    assert chunk.truncated
    assert chunk.data.endswith(b"line 999\n") and chunk.data.startswith(b"line 99")
    assert LogCursor.decode("garbage") == LogCursor()


# -- runc on a hand-made bundle -------------------------------------------------------------


@pytest.mark.privileged
@requires(can_run_containers(), RUNTIME_REASON)
def read_count(counter: Path) -> int:
    """The counter the container writes atomically (temp file, then rename): never half."""
    try:
        return int(counter.read_text())
    except FileNotFoundError:
        return 0


def wait_for_count(counter: Path, above: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (count := read_count(counter)) <= above:
        assert time.monotonic() < deadline, f"the counter stayed at {count}"
        time.sleep(0.02)
    return count


def test_it_pauses_resumes_lists_and_kills(engine: Engine, tmp_path: Path) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    script = (
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new;"
        " mv /tmp/count.new /tmp/count; sleep 0.02; done"
    )
    b = make_bundle(tmp_path, rootfs, ["sh", "-c", script])
    exits = Path(engine.config.root) / "exits"
    spec = MonitorSpec(b.container_id, "t", b.bundle, b.userdata, exits)
    created = engine.get(Conmon).create(spec)
    runc = engine.get(Runc)
    runc.start(b.container_id)
    counter = rootfs / "tmp" / "count"
    try:
        assert runc.list_ids() == [b.container_id]
        assert runc.ps(b.container_id)[0] == created.pid
        state = runc.state(b.container_id)
        assert state is not None and state["status"] == "running" and state["pid"] == created.pid
        wait_for_count(counter, 2)
        runc.pause(b.container_id)
        assert runc.state(b.container_id)["status"] == "paused"  # type: ignore[index]
        frozen = read_count(counter)
        time.sleep(0.3)  # a frozen counter is one that does not move for a while
        assert read_count(counter) == frozen
        with pytest.raises(RuntimeFailedError, match="runc pause"):
            runc.pause(b.container_id)
        runc.resume(b.container_id)
        wait_for_count(counter, frozen)
        runc.kill(b.container_id, signal.SIGTERM)  # sh as pid 1 ignores TERM without a trap
        time.sleep(0.2)
        assert runc.state(b.container_id)["status"] == "running"  # type: ignore[index]
        runc.kill(b.container_id, signal.SIGKILL)
        assert wait_for_file(exits, b.container_id, 10)
        assert (exits / b.container_id).read_text() == "137"
        with pytest.raises(RuntimeFailedError, match="not running"):
            runc.kill(b.container_id, signal.SIGKILL)
    finally:
        runc.delete(b.container_id, force=True)
    assert runc.state(b.container_id) is None
    assert runc.delete(b.container_id) is False
    assert runc.list_ids() == []
    assert not os.path.exists(f"/sys/fs/cgroup/pids/gantry-{b.container_id}")


def test_tail_takes_the_last_lines_across_both_streams() -> None:
    runs = [(b"stdout", b"a\nb\n"), (b"stderr", b"oops\n"), (b"stdout", b"c\nd")]
    assert last_lines(runs, 0) == []
    assert last_lines(runs, 1) == [(b"stdout", b"d")]  # the unfinished last line counts
    assert last_lines(runs, 3) == [(b"stderr", b"oops\n"), (b"stdout", b"c\nd")]
    assert last_lines(runs, 99) == runs
    assert last_lines([(b"stdout", b"x"), (b"stdout", b"y\n")], 1) == [(b"stdout", b"xy\n")]
