"""Exit files, watched with inotify: how the engine learns that a container ended.

conmon writes ``<exit dir>/<container id>`` atomically (a temp file renamed into place), so
the event to watch is ``IN_MOVED_TO`` (conmon.md §5). One watcher thread per engine watches
the shared exit dir and hands each container id to a callback; there is no polling loop per
container. ``wait_for_file`` uses a short-lived inotify instance for one wait (stop's grace
period), which also works in the CLI where no watcher thread runs.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine.hostfs import libc

log = logging.getLogger("gantry.engine.exits")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")


class Inotify:
    """A non-blocking inotify instance (ctypes: the stdlib has no binding)."""

    def __init__(self) -> None:
        fd = libc.call().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = libc.errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd = fd

    def add_watch(self, path: Path, mask: int) -> int:
        wd = libc.call().inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = libc.errno()
            raise OSError(code, f"inotify_add_watch {path}: {os.strerror(code)}")
        return int(wd)

    def read(self, timeout: float) -> list[tuple[int, str]]:
        """Events (mask, name) that arrived within timeout seconds ([] if none)."""
        if not select.select([self.fd], [], [], max(0.0, timeout))[0]:
            return []
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
            raw = data[pos + _EVENT.size : pos + _EVENT.size + length]
            events.append((mask, os.fsdecode(raw.rstrip(b"\0"))))
            pos += _EVENT.size + length
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_file(directory: Path, name: str, timeout: float) -> bool:
    """Wait until ``directory/name`` exists; True if it does within timeout."""
    with Inotify() as ino:
        ino.add_watch(directory, IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE)
        deadline = time.monotonic() + timeout
        while True:
            if (directory / name).exists():  # checked after the watch: no lost wake-up
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ino.read(remaining)


class ExitWatcher:
    """Watches an exit dir and calls ``on_exit(container_id)`` for each exit file that
    appears (on a small pool, so one slow clean-up never delays the others). ``scan()`` is
    called once after the watch is in place, so exits that happened before are not lost."""

    def __init__(
        self,
        directory: Path,
        on_exit: Callable[[str], None],
        name_ok: Callable[[str], bool],
        stop: threading.Event | None = None,
    ) -> None:
        self.directory = directory
        self.on_exit = on_exit
        self.name_ok = name_ok
        self._stop = stop or threading.Event()
        self._thread: threading.Thread | None = None
        from concurrent.futures import ThreadPoolExecutor  # the worker's only

        self._pool = ThreadPoolExecutor(4, "exit")
        self._inotify: Inotify | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def start(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._inotify = Inotify()
        self._inotify.add_watch(self.directory, IN_MOVED_TO | IN_CLOSE_WRITE)
        self._thread = threading.Thread(target=self._loop, name="exit-watcher", daemon=True)
        self._thread.start()

    def scan(self) -> None:
        """Hand every exit file already present to on_exit."""
        for path in sorted(self.directory.iterdir()):
            if self.name_ok(path.name):
                self._submit(path.name)

    def stop(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _submit(self, name: str) -> None:
        try:
            self._pool.submit(self._call, name)
        except RuntimeError:  # pool shut down: the engine is stopping
            pass

    def _call(self, name: str) -> None:
        try:
            self.on_exit(name)
        except Exception:
            log.exception("handling the exit of %s failed", name)

    def _loop(self) -> None:
        assert self._inotify is not None
        try:
            while not self._stop.is_set():
                try:
                    ready = select.select([self._inotify.fd, self._wake_r], [], [], 1.0)[0]
                    events = self._inotify.read(0) if self._inotify.fd in ready else []
                except OSError as err:
                    if err.errno == errno.EINTR:
                        continue
                    raise
                for mask, name in events:
                    if mask & IN_Q_OVERFLOW:
                        self.scan()
                    elif self.name_ok(name):
                        self._submit(name)
        except Exception:
            log.exception("exit watcher stopped")
        finally:
            self._inotify.close()
            self._pool.shutdown(wait=True)
            os.close(self._wake_r)
            os.close(self._wake_w)
