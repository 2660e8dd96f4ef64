"""The container lifecycle through the engine, with real overlay mounts, conmon and runc:
start/exit codes, failed starts, stop/kill/pause/resume/restart, exec, remove -f, the exit
watcher and events, and the lab end to end with a busybox stand-in for gantry/on-off."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.errors import (
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    PolicyError,
    RuntimeFailedError,
)
from engine.events import RecordingPublisher
from engine.protocol import EVENTS_GROUP
from engine.runtime.lifecycle import Lifecycle
from engine.runtime.logs import read_all
from engine.runtime.runc import Runc
from engine.storage.containers import Containers
from engine.storage.volumes import Volume
from tests.engine.runtools import (
    RUNTIME_REASON,
    Census,
    can_run_containers,
    container_cgroups,
    create,
    no_leaks,
    on_off_image,
    wait_until,
    worker_started,
)
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]

TRAP_TERM = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"
IGNORE_TERM = "trap '' TERM; echo ready; while true; do sleep 0.05; done"


@pytest.fixture
def published() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def live(engine: Engine, published: RecordingPublisher) -> Iterator[Engine]:
    """The engine with its worker start-up work done (exit watcher + reconciliation), as in
    the worker, with the events recorded; busybox is in the store."""
    busybox_image(engine)
    with worker_started(engine, published):
        yield engine


def lifecycle(engine: Engine) -> Lifecycle:
    return engine.get(Lifecycle)


def state_of(engine: Engine, name: str) -> str:
    return engine.get(Containers).get(name).state


def wait_state(engine: Engine, name: str, state: str, timeout: float = 10) -> None:
    wait_until(lambda: state_of(engine, name) == state, timeout)


def log_of(engine: Engine, name: str) -> bytes:
    record = engine.get(Containers).get(name)
    return read_all(engine.get(Containers).paths(record.id).userdata / "ctr.log")


def test_it_starts_a_created_container_and_records_its_exit(
    live: Engine, published: RecordingPublisher
) -> None:
    before = Census.take(live)
    record = create(live, ["sh", "-c", "echo hello; echo oops >&2; sleep 0.3; exit 3"], name="c1")
    assert record.state == "created"
    started = lifecycle(live).start("c1", published)
    assert started.state == "running" and started.pid > 0 and started.conmon_pid > 0
    assert started.started_at and started.exit_code is None
    assert live.get(Runc).state(record.id)["status"] == "running"  # type: ignore[index]
    assert live.get(Containers).is_mounted(record.id)
    wait_state(live, "c1", "exited")
    done = live.get(Containers).get("c1")
    assert done.exit_code == 3 and done.pid == 0 and done.finished_at
    assert done.finished_at >= started.started_at
    assert log_of(live, "c1") == b"hello\noops\n"
    assert live.get(Runc).state(record.id) is None
    assert not live.get(Containers).is_mounted(record.id)  # podman unmounts on clean-up

    def actions() -> list[str]:
        return [e["action"] for g, e in published.events if g == EVENTS_GROUP]

    wait_until(lambda: "died" in actions())  # published right after the record is saved
    assert "start" in actions()
    died = [e for _, e in published.events if e.get("action") == "died"][-1]
    assert died["container"] == record.id and died["status"].startswith("Exited (3)")
    no_leaks(live, before)


def test_it_keeps_a_user_mount_after_the_exit(live: Engine) -> None:
    record = create(live, ["true"], name="m1")
    live.get(Containers).mount(record.id)
    lifecycle(live).start("m1")
    wait_state(live, "m1", "exited")
    assert live.get(Containers).is_mounted(record.id)
    live.get(Containers).unmount(record.id)
    assert not live.get(Containers).is_mounted(record.id)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"command": ["/no/such/binary"]}, "/no/such/binary"),
        ({"command": ["sh"], "workdir": "/etc/passwd"}, "not a directory"),
    ],
)
def test_a_failed_start_keeps_the_state_shows_runcs_message_and_leaks_nothing(
    live: Engine, options: dict[str, object], message: str
) -> None:
    before = Census.take(live)
    command = options.pop("command")
    record = create(live, command, name="bad", **options)  # type: ignore[arg-type]
    with pytest.raises(RuntimeFailedError, match=message):
        lifecycle(live).start("bad")
    after = live.get(Containers).get("bad")
    assert after.state == "configured"  # the spec was generated; the run never happened
    assert message in after.error and after.error.startswith("start: ")
    assert after.pid == 0 and after.conmon_pid == 0
    paths = live.get(Containers).paths(record.id)
    assert sorted(p.name for p in paths.bundle.iterdir()) == [
        "config.generated.json",
        "config.json",
        "schema-ok",  # the schema's verdict on config.json (engine/spec/service.py)
    ]
    assert not live.get(Containers).is_mounted(record.id)
    no_leaks(live, before)
    # An exited container that fails to start again stays exited, with its old code.
    ok = create(live, ["sh", "-c", "exit 4"], name="was-ok")
    lifecycle(live).start("was-ok")
    wait_state(live, "was-ok", "exited")
    spec = live.get(Containers).paths(ok.id).config
    spec.write_text(spec.read_text().replace('"sh"', '"/no/such/binary"', 1))
    with pytest.raises(RuntimeFailedError, match="/no/such/binary"):
        lifecycle(live).start("was-ok")
    again = live.get(Containers).get("was-ok")
    assert again.state == "exited" and again.exit_code == 4 and "/no/such/binary" in again.error


def test_stop_sends_sigterm_then_sigkill_after_the_timeout(live: Engine) -> None:
    create(live, ["sh", "-c", TRAP_TERM], name="polite")
    create(live, ["sh", "-c", IGNORE_TERM], name="deaf")
    lifecycle(live).start("polite")
    lifecycle(live).start("deaf")
    wait_until(lambda: b"ready" in log_of(live, "polite") and b"ready" in log_of(live, "deaf"))
    t0 = time.monotonic()
    polite = lifecycle(live).stop("polite", timeout=10)
    assert time.monotonic() - t0 < 5
    assert polite.state == "exited" and polite.exit_code == 7
    assert b"got-term" in log_of(live, "polite")
    t0 = time.monotonic()
    deaf = lifecycle(live).stop("deaf", timeout=1)
    took = time.monotonic() - t0
    assert 1.0 <= took < 6, took
    assert deaf.state == "exited" and deaf.exit_code == 137
    assert lifecycle(live).stop("deaf").state == "exited"  # stopping a stopped one: no-op


def test_kill_sends_the_chosen_signal(live: Engine) -> None:
    script = "trap 'echo usr1' USR1; " + TRAP_TERM
    create(live, ["sh", "-c", script], name="k")
    lifecycle(live).start("k")
    wait_until(lambda: b"ready" in log_of(live, "k"))
    assert lifecycle(live).kill("k", "USR1").state == "running"
    wait_until(lambda: b"usr1" in log_of(live, "k"))
    with pytest.raises(InvalidInputError):
        lifecycle(live).kill("k", "NOPE")
    lifecycle(live).kill("k", "15")
    wait_state(live, "k", "exited")
    assert live.get(Containers).get("k").exit_code == 7
    with pytest.raises(InvalidStateError):
        lifecycle(live).kill("k")
    lifecycle(live).start("k")
    wait_until(lambda: log_of(live, "k").count(b"ready") == 2)
    killed = lifecycle(live).kill("k")  # SIGKILL by default, as podman
    assert killed.state == "exited" and killed.exit_code == 137


def test_pause_freezes_and_resume_thaws(live: Engine, tmp_path: Path) -> None:
    script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done"
    record = create(live, ["sh", "-c", script], name="p")
    lifecycle(live).start("p")
    counter = live.get(Containers).paths(record.id).merged / "tmp" / "n"
    wait_until(counter.exists)
    assert lifecycle(live).pause("p").state == "paused"
    assert live.get(Runc).state(record.id)["status"] == "paused"  # type: ignore[index]
    frozen = counter.read_text()
    time.sleep(0.3)
    assert counter.read_text() == frozen
    with pytest.raises(InvalidStateError):
        lifecycle(live).pause("p")
    with pytest.raises(InvalidStateError):
        lifecycle(live).exec_run("p", ["true"])
    assert lifecycle(live).resume("p").state == "running"
    wait_until(lambda: counter.read_text() != frozen)
    with pytest.raises(InvalidStateError):
        lifecycle(live).resume("p")
    lifecycle(live).pause("p")
    stopped = lifecycle(live).stop("p", timeout=5)  # a paused container is killed and thawed
    assert stopped.state == "exited" and stopped.exit_code == 137


def test_restart_stops_and_starts_again(live: Engine) -> None:
    create(live, ["sh", "-c", TRAP_TERM], name="r")
    first = lifecycle(live).start("r")
    wait_until(lambda: b"ready" in log_of(live, "r"))
    second = lifecycle(live).restart("r", timeout=5)
    assert second.state == "running" and second.pid != first.pid
    assert (second.started_at or 0) > (first.started_at or 0)
    wait_until(lambda: log_of(live, "r").count(b"ready") == 2)
    assert b"got-term" in log_of(live, "r")  # logs keep the first run's output
    assert lifecycle(live).start("r").pid == second.pid  # start of a running one: no-op
    lifecycle(live).kill("r")


def test_exec_returns_output_and_exit_code(live: Engine) -> None:
    record = create(live, ["sleep", "60"], name="x")
    with pytest.raises(InvalidStateError):
        lifecycle(live).exec_run("x", ["true"])
    lifecycle(live).start("x")
    result = lifecycle(live).exec_run(
        "x", ["sh", "-c", "echo $FOO; pwd; id -u; echo err >&2; exit 9"], env=["FOO=bar"],
        workdir="/tmp", user="nobody",
    )  # fmt: skip
    assert result.exit_code == 9
    assert result.stdout == b"bar\n/tmp\n65534\n"
    assert result.stderr == b"err\n"
    with pytest.raises(RuntimeFailedError, match="no/such"):
        lifecycle(live).exec_run("x", ["/no/such"])
    with pytest.raises(InvalidInputError):
        lifecycle(live).exec_run("x", ["id"], user="nosuchuser")
    bundle = live.get(Containers).paths(record.id).bundle
    assert sorted(p.name for p in bundle.iterdir()) == [
        "attach",
        "config.generated.json",
        "config.json",
        "ctl",
        "schema-ok",
        "winsz",
    ]
    lifecycle(live).kill("x")


def test_remove_refuses_a_running_container_unless_forced(live: Engine) -> None:
    before = Census.take(live)
    record = create(live, ["sleep", "60"], name="rm1")
    lifecycle(live).start("rm1")
    live.get(Containers).mount(record.id)  # a user mount too: -f drops it
    with pytest.raises(InvalidStateError, match="stop it first"):
        live.get(Containers).remove(record.id)
    assert state_of(live, "rm1") == "running"
    live.get(Lifecycle).containers.remove(record.id, force=True)
    with pytest.raises(NotFoundError):
        live.get(Containers).get("rm1")
    assert f"gantry-{record.id}" not in " ".join(container_cgroups())
    no_leaks(live, before)


def test_the_watcher_catches_an_exit_caused_from_outside(live: Engine) -> None:
    record = create(live, ["sleep", "60"], name="w")
    lifecycle(live).start("w")
    live.get(Runc).kill(record.id, signal.SIGTERM)  # sleep as pid 1: TERM does nothing
    live.get(Runc).kill(record.id, signal.SIGKILL)
    wait_state(live, "w", "exited")
    assert live.get(Containers).get("w").exit_code == 137


def test_the_lab_end_to_end(live: Engine, tmp_path: Path) -> None:
    """podman create -v /mnt:/mnt on-off; mount; touch test; start (Exited (0)); touch
    /mnt/on; start (runs top); exec ls / (sees test); kill; rm — with a busybox stand-in."""
    before = Census.take(live)
    on_off_image(live)
    mnt = tmp_path / "volumes" / "mnt"
    mnt.mkdir(parents=True)
    volume = Volume(str(mnt), "/mnt")
    record = create(live, [], image="localhost/gantry/on-off:latest", volumes=[volume], name="lab")
    merged = live.get(Containers).mount(record.id)
    (merged / "test").touch()
    first = lifecycle(live).start("lab")
    assert first.state in ("running", "exited")
    wait_state(live, "lab", "exited")
    assert live.get(Containers).get("lab").exit_code == 0
    assert b"does not exist" in log_of(live, "lab")
    (mnt / "on").touch()
    assert lifecycle(live).start("lab").state == "running"
    time.sleep(0.5)
    assert lifecycle(live).get_synced("lab").state == "running"
    seen = lifecycle(live).exec_run("lab", ["ls", "/"])
    assert seen.exit_code == 0 and "test" in seen.stdout.decode().split()
    top = lifecycle(live).exec_run("lab", ["ps"])
    assert "top" in top.stdout.decode()
    killed = lifecycle(live).kill("lab")
    assert killed.state == "exited" and killed.exit_code == 137
    live.get(Containers).remove(record.id)
    assert (mnt / "on").exists()  # the volume is the host's: untouched by rm
    no_leaks(live, before)


def test_reconcile_adopts_a_run_the_record_missed_and_cleans_crash_leftovers(
    live: Engine,
) -> None:
    """The engine died between `runc start` and saving "running": the next one adopts the
    container; a runc container left "created" by a crash before `runc start` is deleted."""
    from engine.runtime.conmon import MonitorSpec

    lc = lifecycle(live)
    containers = live.get(Containers)

    def half_start(name: str, command: list[str], *, run: bool) -> str:
        record = create(live, command, name=name)
        import engine.spec as spec

        spec.generate(live, record)
        containers.ensure_mounted(record.id)
        paths = containers.paths(record.id)
        lc.conmon.create(MonitorSpec(record.id, name, paths.bundle, paths.userdata, lc.exit_dir))
        if run:
            live.get(Runc).start(record.id)
        return str(record.id)

    missed = half_start("missed", ["sleep", "60"], run=True)
    stuck = half_start("stuck", ["sleep", "60"], run=False)
    assert containers.load(missed).state == "configured"
    changed = lc.reconcile()
    assert "missed" in changed
    adopted = containers.load(missed)
    assert adopted.state == "running" and adopted.pid > 0 and adopted.started_at
    assert live.get(Runc).state(stuck) is None  # the half-made one is gone
    assert containers.load(stuck).state == "configured"
    assert lc.kill("missed").exit_code == 137
    lc.start("stuck")
    assert lc.kill("stuck").state == "exited"


def test_a_log_cut_at_its_size_limit_is_still_read(live: Engine) -> None:
    from dataclasses import replace

    live.config = replace(live.config, log_size_max=4096)
    lc = Lifecycle(live)  # a fresh service that sees the small limit
    record = create(
        live, ["sh", "-c", "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done"]
    )
    lc.start(record.id)
    wait_until(lambda: lc.get_synced(record.id).state == "exited")
    log = log_of(live, record.name)
    assert log.endswith(b"line 299\n") and b"line 0\n" not in log  # only what came after a cut
    path = live.get(Containers).paths(record.id).userdata / "ctr.log"
    assert path.stat().st_size <= 4096 + 200


def _swap_for_symlink(path: Path, target: Path) -> None:
    """What a second container with a volume on the parent could do: the checked directory
    moves away and a symlink to somewhere else takes its name."""
    path.rename(path.with_name(path.name + ".moved"))
    path.symlink_to(target)


def test_a_bind_source_swapped_after_the_check_is_not_what_runc_mounts(
    live: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """security.md D2, the race: the source is checked, then swapped for a symlink before runc
    mounts it. runc is given the directory the engine opened, not the path."""
    from engine.runtime.conmon import Conmon

    vols = tmp_path / "volumes"
    (vols / "sub").mkdir(parents=True)
    (vols / "sub" / "marker").write_text("inside\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "marker").write_text("HOST SECRET\n")
    command = ["sh", "-c", "cat /x/marker; echo hi > /x/written"]
    record = create(live, command, volumes=[Volume(str(vols / "sub"), "/x")])
    real_create = Conmon.create

    def create_after_a_swap(self: Conmon, spec: Any) -> Any:
        _swap_for_symlink(vols / "sub", secret)
        return real_create(self, spec)

    monkeypatch.setattr(Conmon, "create", create_after_a_swap)
    lifecycle(live).start(record.id)
    wait_state(live, record.id, "exited")
    out = log_of(live, record.id)
    assert b"inside" in out and b"SECRET" not in out
    assert (vols / "sub.moved" / "written").read_text() == "hi\n"  # a live, writable volume
    assert not (secret / "written").exists()
    config = live.get(Containers).paths(record.id).config
    assert f'"source": "{vols / "sub"}"' in config.read_text()  # the user's file is back
    assert not (live.config.root / "binds" / record.id).exists()  # staging points gone


def test_a_symlink_swapped_in_before_the_pin_refuses_the_start(
    live: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.spec as spec_package

    vols = tmp_path / "volumes"
    (vols / "sub").mkdir(parents=True)
    record = create(live, ["true"], volumes=[Volume(str(vols / "sub"), "/x")])
    real_validate = spec_package.validate_for_start

    def validate_then_swap(engine: Engine, rec: Any) -> Any:
        checked = real_validate(engine, rec)
        _swap_for_symlink(vols / "sub", tmp_path)
        return checked

    monkeypatch.setattr(spec_package, "validate_for_start", validate_then_swap)
    with pytest.raises(PolicyError, match="a symlink is now in its path"):
        lifecycle(live).start(record.id)
    assert live.get(Containers).get(record.id).state != "running"
    assert not (live.get(Containers).paths(record.id).userdata / "config.json.user").exists()


def test_reconcile_sweeps_what_a_start_cut_off_left_pinned(live: Engine, tmp_path: Path) -> None:
    """The engine died inside a start, with a bind staged and the pinned config.json in place:
    the next engine unmounts the staging point (never deleting through it) and puts the
    user's file back."""
    from engine.runtime.reconcile import reconcile
    from engine.storage import mounts

    vols = tmp_path / "volumes"
    (vols / "data").mkdir(parents=True)
    (vols / "data" / "keep").write_text("precious\n")
    record = create(live, ["true"], volumes=[Volume(str(vols / "data"), "/x")])
    lifecycle(live).start(record.id)
    wait_state(live, record.id, "exited")
    paths = live.get(Containers).paths(record.id)
    user_bytes = paths.config.read_bytes()
    keep = paths.userdata / "config.json.user"
    keep.write_bytes(user_bytes)
    paths.config.write_text('{"pinned": true}')
    staging = live.config.root / "binds" / record.id
    staging.mkdir(parents=True)
    (staging / "0").mkdir()
    fd = os.open(vols / "data", os.O_PATH)
    try:
        mounts.bind_fd(fd, staging / "0")
    finally:
        os.close(fd)
    assert mounts.is_mounted(staging / "0")
    reconcile(lifecycle(live))
    assert not staging.exists() and not mounts.is_mounted(staging / "0")
    assert paths.config.read_bytes() == user_bytes and not keep.exists()
    assert (vols / "data" / "keep").read_text() == "precious\n"


@pytest.mark.parametrize(
    "workdir",
    ["/proc", "/proc/self/fd/7", "//proc/self/fd/7", "/tmp/../proc/1/cwd", "/./proc", "rel"],
)
def test_an_exec_cannot_start_in_proc_however_it_is_spelled(tmp_path: Path, workdir: str) -> None:
    """CVE-2024-21626: a cwd under /proc (a leaked host fd). Checked on the cleaned path."""
    from engine.runtime.execs import exec_process

    config = tmp_path / "config.json"
    config.write_text('{"process": {"args": ["sh"], "env": [], "cwd": "/"}}')
    with pytest.raises(InvalidInputError, match="not under /proc"):
        exec_process(config, ["sh"], [], workdir)
    assert exec_process(config, ["sh"], [], "/tmp/../etc//")["cwd"] == "/etc"


def test_a_read_only_volume_is_pinned_and_stays_read_only(live: Engine, tmp_path: Path) -> None:
    vols = tmp_path / "volumes" / "ro"
    vols.mkdir(parents=True)
    (vols / "f").write_text("seen\n")
    command = ["sh", "-c", "cat /x/f; touch /x/new"]
    record = create(live, command, volumes=[Volume(str(vols), "/x", read_only=True)])
    lifecycle(live).start(record.id)
    wait_state(live, record.id, "exited")
    assert b"seen" in log_of(live, record.id) and b"Read-only file system" in log_of(
        live, record.id
    )
    assert live.get(Containers).get(record.id).exit_code == 1
    assert not (vols / "new").exists()
