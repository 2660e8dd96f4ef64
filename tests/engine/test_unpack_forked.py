"""The forked extractor (engine.layers.forked): what only a child process can get wrong. Its
extraction itself runs through every test of test_unpack.py (the "forked" parameter)."""

from __future__ import annotations

import errno
import gzip
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import EngineError, InvalidImageError
from engine.layers.forked import unpack_forked
from engine.layers.unpack import DEFAULT_BUDGET
from tests.engine.ocibuild import File, tar_bytes
from tests.engine.test_unpack import pytestmark as pytestmark  # needs root, as unpacking does


def children() -> set[int]:
    """This process's children (any thread's), from /proc."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
            found.update(int(pid) for pid in f.read().split())
    return found


def blob(files: int = 50, size: int = 1000) -> bytes:
    return gzip.compress(
        tar_bytes([File(f"f{i}", os.urandom(size)) for i in range(files)]), compresslevel=1
    )


def reader(data: bytes, hook: Callable[[int], None] | None = None) -> Callable[[int], bytes]:
    """A blob's read function that calls hook(number of reads so far) before each read."""
    src = io.BytesIO(data)
    calls = [0]

    def read(n: int) -> bytes:
        calls[0] += 1
        if hook is not None:
            hook(calls[0])
        return src.read(min(n, 64 * 1024))

    return read


def test_it_extracts_and_leaves_no_child(tmp_path: Path) -> None:
    before = children()
    result = unpack_forked(reader(blob()), tmp_path, budget=DEFAULT_BUDGET)
    assert (result.entries, result.files, result.size) == (50, 50, 50_000)
    assert len(list(tmp_path.iterdir())) == 50
    assert children() == before


def test_a_killed_child_fails_the_layer_clearly(tmp_path: Path) -> None:
    before = children()

    def kill_the_child(calls: int) -> None:
        if calls == 3:
            for pid in children() - before:
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(EngineError, match=r"extracting process died \(SIGKILL\)"):
        unpack_forked(reader(blob(400, 4000), kill_the_child), tmp_path, budget=DEFAULT_BUDGET)
    assert children() == before


def test_the_parents_error_ends_the_child(tmp_path: Path) -> None:
    """A bomb is stopped by the parent's budget; the child waiting for more tar is killed."""
    before = children()
    bomb = gzip.compress(tar_bytes([File("zeros", b"\0" * (48 * 1024 * 1024))]))
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        unpack_forked(reader(bomb), tmp_path, budget=16 * 1024 * 1024)
    assert children() == before


def test_the_childs_error_keeps_its_class_and_words(tmp_path: Path) -> None:
    hostile = gzip.compress(tar_bytes([File("ok"), File("../escape")]))
    with pytest.raises(InvalidImageError, match=r"layer 1: entry '\.\./escape'"):
        unpack_forked(reader(hostile), tmp_path, what="layer 1", budget=DEFAULT_BUDGET)


def test_layers_extracted_at_once_do_not_hold_each_others_pipes(tmp_path: Path) -> None:
    """The second child is forked while the first layer is being fed: had it kept the first
    pipe's write end open, the first child would never see its end of data."""
    second_started = threading.Event()
    first_done = threading.Event()

    def first_waits(calls: int) -> None:
        if calls == 2:
            assert second_started.wait(30)

    def second_waits(calls: int) -> None:
        second_started.set()
        if calls == 2:
            assert first_done.wait(30), "the first layer never finished"

    results: dict[str, int] = {}

    def extract(name: str, hook: Callable[[int], None], done: threading.Event | None) -> None:
        results[name] = unpack_forked(
            reader(blob(), hook), tmp_path / name, budget=DEFAULT_BUDGET
        ).files
        if done is not None:
            done.set()

    # Daemon threads: a hung extraction fails the test, and does not hold the run at its exit.
    for name, hook, done in (("a", first_waits, first_done), ("b", second_waits, None)):
        (tmp_path / name).mkdir()
        threading.Thread(target=extract, args=(name, hook, done), daemon=True).start()
    deadline = time.monotonic() + 30
    while len(results) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert results == {"a": 50, "b": 50}


def test_no_process_to_fork_is_a_clear_error_and_leaks_no_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    fds = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(EngineError, match="cannot start the extracting process"):
        unpack_forked(reader(blob()), tmp_path, what="layer 1", budget=DEFAULT_BUDGET)
    assert set(os.listdir("/proc/self/fd")) == fds


def test_a_full_disk_met_by_the_writer_thread_is_said_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread's OSError reaches the child bare; the parent hears the same words
    as a full disk met anywhere else (the child is forked: the patches apply in it too)."""
    import engine.layers.unpack as unpack
    import engine.layers.writepool as writepool
    from engine.layers.tarentry import write_file as real

    def full_at_f20(dir_fd: int, name: str, *args: object, **kw: object) -> None:
        if name == "f20":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(dir_fd, name, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(writepool, "ADAPT_WINDOW", 4)
    monkeypatch.setattr(writepool, "SLOW_CREATE", -1.0)  # the writer takes over at once
    monkeypatch.setattr(unpack, "write_file", full_at_f20)
    with pytest.raises(EngineError, match="layer 1: no space left on the device") as err:
        unpack_forked(reader(blob()), tmp_path, what="layer 1", budget=DEFAULT_BUDGET)
    assert not isinstance(err.value, InvalidImageError)
