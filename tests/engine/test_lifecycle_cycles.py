"""200 create/start/kill/rm cycles, two at a time, leave nothing behind: no mount, conmon, runc
state, cgroup, exit file or file descriptor of the engine process (counted before and after)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.core import Engine
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from tests.engine.runtools import RUNTIME_REASON, Census, can_run_containers, create, no_leaks
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]

CYCLES = int(os.environ.get("GANTRY_TEST_CYCLES", "200"))


def test_it_leaks_nothing_over_many_cycles(engine: Engine) -> None:
    engine.ensure_root()
    busybox_image(engine)
    containers, lifecycle = engine.get(Containers), engine.get(Lifecycle)
    # One warm-up cycle: caches (the conmon cgroup, runc's root dir) are not leaks.
    warm = create(engine, ["sleep", "30"])
    lifecycle.start(warm.id)
    lifecycle.kill(warm.id)
    containers.remove(warm.id)
    before = Census.take(engine)

    def cycles(names: range) -> None:
        for i in names:
            record = create(engine, ["sleep", "30"], name=f"cycle{i}")
            running = lifecycle.start(record.id)
            assert running.state == "running", running.error
            killed = lifecycle.kill(record.id)
            assert killed.state == "exited" and killed.exit_code == 137
            containers.remove(record.id)

    started = time.monotonic()
    half = CYCLES // 2
    with ThreadPoolExecutor(2) as pool:  # two at a time, as two users would
        for done in [pool.submit(cycles, range(half)), pool.submit(cycles, range(half, CYCLES))]:
            done.result()
    elapsed = time.monotonic() - started
    no_leaks(engine, before)
    assert containers.list() == []
    print(f"{CYCLES} cycles in {elapsed:.1f}s ({elapsed / CYCLES * 1000:.0f} ms each)")
