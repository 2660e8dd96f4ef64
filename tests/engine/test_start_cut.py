"""The engine killed between `runc create` and `runc start` (issue 25's fault matrix): the CLI
that was starting a container is SIGKILLed the moment it runs `runc start` (a runc wrapper
does it), leaving runc's container created and its conmon waiting. Afterwards the container
never shows as running, a new start runs it, and a remove leaves no runc state, conmon,
mount or staging directory behind."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from engine.core import Engine
from tests.engine.clitools import engine_cli
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, create, wait_until
from tests.imagetools import busybox_image
from tests.procs import alive, conmon_pids
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]

KILL_AT_START = """#!/bin/sh
# runc, except that `runc start` SIGKILLs whoever called it (the engine) and starts nothing
for arg in "$@"; do
    if [ "$arg" = start ]; then kill -KILL "$PPID"; exit 1; fi
done
exec /usr/sbin/runc "$@"
"""


def runc_states(root: Path) -> dict[str, str]:
    import subprocess

    done = subprocess.run(
        ["runc", "--root", str(root / "runc"), "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {c["id"]: c["status"] for c in json.loads(done.stdout or "null") or []}


def test_an_engine_killed_between_create_and_start_leaves_nothing_stuck(
    engine: Engine, tmp_path: Path
) -> None:
    engine.ensure_root()
    busybox_image(engine)
    record = create(engine, ["sleep", "600"], name="cut")
    root = engine.config.root
    wrapper = tmp_path / "runc-kills-at-start"
    wrapper.write_text(KILL_AT_START)
    wrapper.chmod(0o755)
    cut_config = tmp_path / "cut.json"
    cut_config.write_text(json.dumps({"runtime": str(wrapper)}))

    cut = engine_cli(root, "--config", str(cut_config), "start", "cut")
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    assert runc_states(root) == {record.id: "created"}  # created, never started
    conmons = conmon_pids(record.id)
    assert len(conmons) == 1  # waiting for a start that never comes

    listed = engine_cli(root, "ps", "-a", "--format", "json")
    row = json.loads(listed.stdout)[0]
    assert row["State"] != "running", row
    started = engine_cli(root, "start", "cut")  # the real runc: it runs now
    assert started.returncode == 0, started.stderr
    wait_until(lambda: runc_states(root) == {record.id: "running"})
    row = json.loads(engine_cli(root, "ps", "-a", "--format", "json").stdout)[0]
    assert row["State"] == "running"

    removed = engine_cli(root, "rm", "-f", "cut")
    assert removed.returncode == 0, removed.stderr
    assert runc_states(root) == {}
    assert not [pid for pid in conmons if alive(pid)], "the cut start's conmon was left"
    assert conmon_pids(record.id) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    assert not (root / "binds" / record.id).exists()
