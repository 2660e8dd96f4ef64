"""The lab's milestones, read by the engine from real state at every step of the lab (with a
busybox stand-in for gantry/on-off), and a container described as the lab's steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.api.base import Context, invoke
from engine.core import Engine
from engine.lab import checks as lab
from engine.protocol import verbs
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from engine.storage.volumes import Volume
from engine.terminal.consoles import Consoles
from engine.terminal.hub import TerminalHub
from tests.engine.runtools import (
    RUNTIME_REASON,
    can_run_containers,
    create,
    on_off_image,
    worker_started,
)
from tests.engine.test_consoles import Screens
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]
IMAGE = "localhost/gantry/on-off:latest"


@pytest.fixture
def live(engine: Engine) -> Iterator[Engine]:
    with worker_started(engine):
        yield engine


def true_checks(engine: Engine, container_id: str = "") -> set[str]:
    result = lab.check(engine, IMAGE, container_id)["checks"]
    return {name for name, ok in result.items() if ok}


def wait_for(cond: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_every_milestone_turns_true_as_the_lab_is_done(live: Engine, tmp_path: Path) -> None:
    assert true_checks(live) == set()
    on_off_image(live)
    assert true_checks(live) == {"pulled"}
    mnt = tmp_path / "volumes" / "mnt"
    mnt.mkdir(parents=True)
    record = create(live, [], image=IMAGE, volumes=[Volume(str(mnt), "/mnt")], name="lab")
    assert true_checks(live, record.id) == {"pulled", "created"}
    merged = live.get(Containers).mount(record.id)
    (merged / "test").touch()
    assert "test_file" in true_checks(live, record.id)
    live.get(Lifecycle).start("lab")
    wait_for(lambda: "first_exit" in true_checks(live, record.id))
    assert {"created", "config", "test_file"} <= true_checks(live, record.id)  # still created
    (mnt / "on").touch()
    assert "mnt_on" in true_checks(live, record.id)
    live.get(Lifecycle).start("lab")
    wait_for(lambda: "top_running" in true_checks(live, record.id))
    screens = Screens(live)
    shell = live.get(Consoles).create_exec("lab", [], screens)
    live.get(Consoles).attach("lab", "v!1", screens, exec_id=shell["exec"])
    live.get(TerminalHub).get(shell["session"]).send_input(b"ls /\n")
    # seen while the shell is still open (its transcript is kept only when it ends)
    wait_for(lambda: "exec_saw_test" in true_checks(live, record.id))
    assert [s["exec"] for s in live.get(Consoles).live_shells(record.id)] == [shell["exec"]]
    live.get(TerminalHub).get(shell["session"]).send_input(b"exit\n")
    wait_for(lambda: not live.get(Consoles).live_shells(record.id))
    live.get(Lifecycle).kill("lab")
    live.get(Containers).unmount_all(record.id)
    live.get(Containers).remove(record.id)
    assert true_checks(live, record.id) == {"pulled", "gone"}


def test_steps_name_the_real_paths_and_ids(live: Engine, tmp_path: Path) -> None:
    on_off_image(live)
    record = create(live, [], image=IMAGE, name="steps")
    described = lab.steps(live, "steps")
    by_key = {s["key"]: s for s in described["steps"]}
    assert list(by_key) == [
        "pull", "create", "mount", "spec", "network", "start", "terminal", "remove"
    ]  # fmt: skip
    assert "podman create --network none" in by_key["network"]["podman"][0]
    assert not by_key["network"]["done"]
    assert by_key["pull"]["done"] and not by_key["spec"]["done"]
    paths = live.get(Containers).paths(record.id)
    mount_cmd = by_key["mount"]["low"][0]
    assert mount_cmd.startswith("mount -t overlay") and f"upperdir={paths.upper}" in mount_cmd
    assert any(record.id in c and "runc" in c for c in by_key["start"]["low"])
    assert by_key["create"]["podman"][0].startswith("podman create --name steps")


def test_what_happened_stays_done_whoever_did_it(live: Engine, tmp_path: Path) -> None:
    """The engine keeps what a container did: a start that exited 0, then top killed — with
    no page open and nobody asking in between (as the CLI would) — still reads as both done."""
    on_off_image(live)
    mnt = tmp_path / "volumes" / "mnt"
    mnt.mkdir(parents=True)
    record = create(live, [], image=IMAGE, volumes=[Volume(str(mnt), "/mnt")], name="kept")
    lifecycle = live.get(Lifecycle)
    lifecycle.start("kept")
    wait_for(lambda: live.get(Containers).load(record.id).state == "exited", 20)
    (mnt / "on").touch()
    lifecycle.start("kept")
    comm = Path(f"/proc/{live.get(Containers).load(record.id).pid}/comm")
    wait_for(lambda: comm.read_text().strip() == "top")  # on-off execs top
    lifecycle.kill("kept")
    after = lifecycle.get_synced("kept")
    assert after.state == "exited" and after.exit_code == 137
    assert {"first_exit", "top_running", "mnt_on"} <= true_checks(live, record.id)
    assert after.extra["exit_codes"] == [0, 137] and "top" in after.extra["processes_seen"]
    # removed as the web or the CLI removes it (the verb): what it did outlives it
    invoke(Context(live), verbs.CONTAINER_REMOVE, verbs.Force(id=record.id))
    done = true_checks(live, record.id)
    assert {"created", "config", "first_exit", "top_running", "mnt_on", "gone"} <= done
