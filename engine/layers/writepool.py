"""The unpacker's writer: small files and symlinks created on another thread, in order.

When creating inodes turns out slow (it is measured: a busy journal, an allocator walking freed
inodes), small files and symlinks go to a writer in batches while the parser thread parses on;
when it is fast, Python is the bottleneck and the writer stays off. The pull gives each layer
one writer thread of its own: two threads creating files in one directory spin on its lock in
the kernel. Ordering is kept by (parent inode, name) keys: an entry waits for a pending write
at its own key (or its hardlink target's), and removals and unresolvable parents wait for
everything (``barrier``). Directories are never handed to the writer.

Only the parser thread calls these methods; writer tasks only run their batch. An error in a
task is kept and raised on the parser thread at its next wait or check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

ASYNC_MAX = 256 * 1024  # files up to this size are written by the pool
BATCH = 16  # entries per pool task
ADAPT_WINDOW = 64  # files timed before deciding whether the pool should take over
SLOW_CREATE = 0.0003  # seconds per small file above which the pool takes over
IN_FLIGHT = 8  # pool tasks pending per layer (memory: IN_FLIGHT * BATCH * ASYNC_MAX at most)
Key = tuple[int, int, str]  # (st_dev, st_ino) of the parent directory, name


class OrderedWrites:
    """Writes keyed by (parent, name), run on ``pool`` once it is active. With ``adaptive``,
    the pool only becomes active once ``adapt`` finds creating files slow."""

    def __init__(self, pool: ThreadPoolExecutor | None, *, adaptive: bool = True) -> None:
        self._pool = pool
        self.pool: ThreadPoolExecutor | None = None if adaptive else pool
        self._window_n = 0
        self._window_s = 0.0
        self._pending: dict[Key, Future[None]] = {}
        self._batch: list[tuple[Callable[[int], None], int]] = []
        self._batch_keys: set[Key] = set()
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._errors: list[BaseException] = []

    @property
    def active(self) -> bool:
        return self.pool is not None

    def adapt(self, seconds: float) -> None:
        """Serial until creating files turns out slow: then the writer takes them. When
        the kernel is quick (a fresh fs, tmpfs), Python is the bottleneck and threads only add
        GIL traffic; when inode creation is slow (a busy journal, freed space being reused),
        creating files on a second thread, while the parser parses on, wins by far."""
        self._window_n += 1
        self._window_s += seconds
        if self._window_n >= ADAPT_WINDOW:
            if self._window_s / self._window_n > SLOW_CREATE and self._pool is not None:
                self.pool = self._pool
            self._window_n, self._window_s = 0, 0.0

    def wait_key(self, key: Key) -> None:
        """Wait for a pending write at key (raising its error, if any)."""
        if key in self._batch_keys:
            self.flush()
        fut = self._pending.get(key)
        if fut is not None:
            fut.exception()
            self.raise_errors()

    def wait_all(self) -> None:
        """Wait for every pending write (errors stay kept: see barrier)."""
        self.flush()
        for fut in list(self._pending.values()):
            fut.exception()
        self._pending.clear()

    def barrier(self) -> None:
        """Wait for every pending write and raise the first error."""
        self.wait_all()
        self.raise_errors()

    def raise_errors(self) -> None:
        if self._errors:
            raise self._errors[0]

    def submit(self, key: Key, pfd: int, fn: Callable[[int], None]) -> None:
        """Run fn(dup of pfd) on the pool (in batches, to keep the per-file overhead low),
        in order with any later entry at the same key (it waits for this one). Without an
        active pool, fn(pfd) runs here and now."""
        if self.pool is None:
            fn(pfd)
            return
        self._batch.append((fn, os.dup(pfd)))
        self._batch_keys.add(key)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand the batch being filled to the pool (blocks while IN_FLIGHT tasks are pending)."""
        if not self._batch or self.pool is None:
            return
        items, keys = self._batch, self._batch_keys
        self._batch, self._batch_keys = [], set()
        self._slots.acquire()

        def task() -> None:
            try:
                for fn, fd in items:
                    try:
                        fn(fd)
                    except BaseException as err:
                        self._errors.append(err)
                    finally:
                        os.close(fd)
            finally:
                self._slots.release()

        fut = self.pool.submit(task)
        if len(self._pending) > 4096:
            self._pending = {k: f for k, f in self._pending.items() if not f.done()}
        for key in keys:
            self._pending[key] = fut
