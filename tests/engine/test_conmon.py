"""conmon driven from Python on a hand-made bundle (busybox rootfs + `runc spec`): the create
protocol, failures with runc's message, the cgroup move, attach socket, ctl FIFO, exit files,
exec sessions and the exit watcher. No engine records involved: this is the layer below."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Engine
from engine.errors import RuntimeFailedError
from engine.runtime.conmon import (
    CONMON_CGROUP,
    Conmon,
    MonitorSpec,
    connect_attach,
    read_exit_file,
    write_ctl,
)
from engine.runtime.execs import ExecSession, exec_bundles, run_exec
from engine.runtime.exits import ExitWatcher, wait_for_file
from engine.runtime.liveness import pid_is_conmon
from engine.runtime.logs import read_all
from engine.runtime.runc import Runc
from tests.engine.runtools import (
    RUNTIME_REASON,
    Bundle,
    busybox_rootfs,
    can_run_containers,
    cgroups_named,
    conmon_pids,
    force_cleanup,
    make_bundle,
    wait_no_conmon,
    wait_until,
)
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture(autouse=True)
def _cleanup(engine: Engine) -> Iterator[None]:
    yield
    force_cleanup(engine)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    # Longer than sun_path allows, so every socket path must go through /proc/self/fd.
    path = tmp_path / ("d" * 60) / ("e" * 60)
    path.mkdir(parents=True)
    return path


def spec_for(engine: Engine, b: Bundle, **kwargs: object) -> MonitorSpec:
    return MonitorSpec(
        container_id=b.container_id,
        name="t-" + b.container_id[:8],
        bundle=b.bundle,
        userdata=b.userdata,
        exit_dir=Path(engine.config.root) / "exits",
        **kwargs,  # type: ignore[arg-type]
    )


def cleanup(engine: Engine, b: Bundle) -> None:
    runc = engine.get(Runc)
    state = runc.state(b.container_id)
    if state is not None:
        runc.delete(b.container_id, force=True)


def test_it_creates_starts_and_records_the_exit_code(engine: Engine, rootfs: Path, base: Path):
    before = conmon_pids()
    b = make_bundle(base, rootfs, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    spec = spec_for(engine, b)
    created = engine.get(Conmon).create(spec)
    runc = engine.get(Runc)
    assert runc.state(b.container_id)["status"] == "created"  # type: ignore[index]
    assert pid_is_conmon(created.conmon_pid, b.container_id)
    assert len(str(spec.bundle / "attach")) > 108
    runc.start(b.container_id)
    assert wait_for_file(spec.exit_dir, b.container_id, 10)
    assert read_exit_file(spec.exit_file) == 3
    log = read_all(spec.log_path)
    assert b"out\n" in log and b"err\n" in log
    assert runc.state(b.container_id)["status"] == "stopped"  # type: ignore[index]
    assert runc.delete(b.container_id)
    assert runc.state(b.container_id) is None
    wait_no_conmon(before)
    assert cgroups_named({f"gantry-{b.container_id}"}) == []


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        ({"args": ["/no/such/binary"]}, "/no/such/binary"),
        ({"args": ["sh"], "cwd": "/etc/passwd"}, "not a directory"),
    ],
)
def test_it_reports_runcs_message_and_leaks_nothing_when_create_fails(
    engine: Engine, rootfs: Path, base: Path, process: dict[str, object], expected: str
):
    before = conmon_pids()
    b = make_bundle(base, rootfs, ["true"])
    b.write_config(**process)  # type: ignore[arg-type]
    with pytest.raises(RuntimeFailedError) as err:
        engine.get(Conmon).create(spec_for(engine, b))
    assert expected in err.value.message
    assert "create container:" in err.value.message
    assert engine.get(Runc).state(b.container_id) is None
    assert sorted(os.listdir(b.bundle)) == ["config.json"]
    wait_no_conmon(before)
    assert cgroups_named({f"gantry-{b.container_id}"}) == []


def test_it_moves_conmon_out_of_the_engines_cgroup(engine: Engine, rootfs: Path, base: Path):
    b = make_bundle(base, rootfs, ["sleep", "30"])
    created = engine.get(Conmon).create(spec_for(engine, b))
    try:
        groups = Path(f"/proc/{created.conmon_pid}/cgroup").read_text()
        moved = [ln for ln in groups.splitlines() if ln.endswith("/" + CONMON_CGROUP)]
        for controller in ("pids", "memory", "cpu", "name=systemd"):
            assert any(controller in ln.split(":")[1].split(",") for ln in moved), groups
    finally:
        cleanup(engine, b)


def test_it_passes_stdin_through_the_attach_socket_with_i(engine: Engine, rootfs: Path, base: Path):
    b = make_bundle(base, rootfs, ["sh", "-c", "read line; echo got:$line; exit 5"])
    spec = spec_for(engine, b, stdin=True)
    engine.get(Conmon).create(spec)
    sock = connect_attach(b.bundle)
    try:
        engine.get(Runc).start(b.container_id)
        sock.sendall(b"hello\n")
        data = b""
        while b"got:hello" not in data:
            assert select.select([sock], [], [], 10)[0]
            packet = sock.recv(8193)
            assert packet
            assert packet[0] == 2
            data += packet[1:]
    finally:
        sock.close()
    assert wait_for_file(spec.exit_dir, b.container_id, 10)
    assert read_exit_file(spec.exit_file) == 5
    cleanup(engine, b)


def _read_until(sock: socket.socket, needle: bytes, timeout: float = 10) -> bytes:
    data = b""
    while needle not in data:
        assert select.select([sock], [], [], timeout)[0], data
        packet = sock.recv(8193)
        assert packet, data
        data += packet[1:]
    return data


def test_it_resizes_the_pty_through_the_ctl_fifo(engine: Engine, rootfs: Path, base: Path):
    b = make_bundle(base, rootfs, ["sh"], tty=True)
    spec = spec_for(engine, b, tty=True)
    engine.get(Conmon).create(spec)
    sock = connect_attach(b.bundle)
    try:
        engine.get(Runc).start(b.container_id)
        assert write_ctl(b.bundle, 1, 37, 123)
        sock.sendall(b"stty size\n")
        assert b"37 123" in _read_until(sock, b"37 123")
        sock.sendall(b"exit 4\n")
    finally:
        sock.close()
    assert wait_for_file(spec.exit_dir, b.container_id, 10)
    assert read_exit_file(spec.exit_file) == 4
    assert not write_ctl(b.bundle, 1, 10, 10) or True  # FIFO may linger until cleanup
    cleanup(engine, b)


def test_it_runs_exec_sessions_with_output_and_exit_code(engine: Engine, rootfs: Path, base: Path):
    before = conmon_pids()
    b = make_bundle(base, rootfs, ["sleep", "60"])
    spec = spec_for(engine, b)
    engine.get(Conmon).create(spec)
    runc = engine.get(Runc)
    runc.start(b.container_id)
    try:
        process: dict[str, object] = {
            "args": ["sh", "-c", "echo out; echo err >&2; hostname; exit 7"]
        }
        process |= {"cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}
        result = run_exec(ExecSession(engine, b.container_id, "t", b.bundle, process))
        assert result.exit_code == 7
        assert result.stdout == b"out\nhandmade\n"
        assert result.stderr == b"err\n"
        assert exec_bundles(b.bundle) == []
        missing = dict(process, args=["/no/such/tool"])
        with pytest.raises(RuntimeFailedError, match="/no/such/tool"):
            run_exec(ExecSession(engine, b.container_id, "t", b.bundle, missing))
        assert exec_bundles(b.bundle) == []
        big = dict(process, args=["sh", "-c", "seq 1 200000"])
        result = run_exec(ExecSession(engine, b.container_id, "t", b.bundle, big), max_output=1000)
        assert result.exit_code == 0 and result.truncated and len(result.stdout) == 1000
    finally:
        runc.kill(b.container_id, signal.SIGKILL)
        assert wait_for_file(spec.exit_dir, b.container_id, 10)
        cleanup(engine, b)
    assert read_exit_file(spec.exit_file) == 137
    wait_no_conmon(before)


def test_it_times_out_and_kills_a_hanging_exec(engine: Engine, rootfs: Path, base: Path):
    b = make_bundle(base, rootfs, ["sleep", "60"])
    spec = spec_for(engine, b)
    engine.get(Conmon).create(spec)
    engine.get(Runc).start(b.container_id)
    try:
        process: dict[str, object] = {"args": ["sleep", "100"], "cwd": "/", "env": ["PATH=/bin"]}
        process["user"] = {"uid": 0, "gid": 0}
        with pytest.raises(RuntimeFailedError, match="timed out"):
            run_exec(ExecSession(engine, b.container_id, "t", b.bundle, process), timeout=0.5)
        assert exec_bundles(b.bundle) == []
    finally:
        cleanup(engine, b)


def test_the_exit_watcher_sees_each_exit_once_it_happens(engine: Engine, rootfs: Path, base: Path):
    seen: list[str] = []
    got = threading.Event()

    def on_exit(cid: str) -> None:
        seen.append(cid)
        got.set()

    exit_dir = Path(engine.config.root) / "exits"
    watcher = ExitWatcher(exit_dir, on_exit, lambda name: len(name) == 64)
    watcher.start()
    try:
        b = make_bundle(base, rootfs, ["true"])
        engine.get(Conmon).create(spec_for(engine, b))
        engine.get(Runc).start(b.container_id)
        assert got.wait(10)
        assert seen == [b.container_id]
        cleanup(engine, b)
    finally:
        watcher.stop()
    assert not watcher.running


def test_connect_attach_fails_cleanly_when_nothing_listens(tmp_path: Path):
    with pytest.raises(OSError):
        connect_attach(tmp_path)
    assert wait_until(lambda: True)
