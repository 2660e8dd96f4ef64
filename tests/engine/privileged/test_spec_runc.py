"""runc accepts every generated spec: ``runc create`` + ``runc state`` + ``runc delete`` on
bundles made by the generator (a plain busybox directory as rootfs) and by the service (a
container's overlay-mounted rootfs), with volumes, a non-root user and a tty (the pty arrives
on a console socket a tiny receiver in the test listens on). One container also runs to the
end, to show the process really gets what the spec says (no new privileges, seccomp, the
capabilities, a read-only volume, the hostname)."""

from __future__ import annotations

import array
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core import Engine
from engine.spec import generator
from engine.spec.service import SpecService, host_facts
from engine.storage.containers import Containers
from engine.storage.records import CreateOptions
from engine.storage.volumes import Volume
from tests.imagetools import busybox_image
from tests.skips import requires

RUNC = shutil.which("runc")
CGROUP_ROOT = Path("/sys/fs/cgroup")

pytestmark = [
    requires(os.geteuid() == 0 and RUNC is not None, "needs root and runc"),
    pytest.mark.privileged,
]


@pytest.fixture
def runc_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "runc"
    root.mkdir()
    yield root
    for state in root.iterdir():  # nothing may stay behind, even after a failed assertion
        if state.is_dir():
            subprocess.run(["runc", "--root", str(root), "delete", "--force", state.name])


def runc(root: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run runc. For ``create`` the container inherits runc's stdio and keeps it open, so
    its output goes to files rather than pipes (a pipe would never see EOF)."""
    argv = ["runc", "--root", str(root), *args]
    if args[0] != "create":
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    with open(root / "create.out", "w+") as out, open(root / "create.err", "w+") as err:
        done = subprocess.run(
            argv, stdout=out, stderr=err, timeout=timeout, stdin=subprocess.DEVNULL
        )
        err.seek(0)
        return subprocess.CompletedProcess(argv, done.returncode, "", err.read())


def busybox_rootfs(target: Path) -> Path:
    (target / "bin").mkdir(parents=True)
    shutil.copyfile("/bin/busybox", target / "bin" / "busybox")
    os.chmod(target / "bin" / "busybox", 0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", target / "bin" / applet)
    for d in ("proc", "sys", "dev", "tmp", "etc", "root", "home/user"):
        (target / d).mkdir(parents=True)
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    )
    (target / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\n")
    return target


def make_bundle(tmp_path: Path, **options: Any) -> tuple[str, Path, dict[str, Any]]:
    """A bundle whose config.json is the generator's, for a directory rootfs."""
    container_id = secrets.token_hex(32)
    bundle = tmp_path / "bundle"
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    bundle.mkdir()
    paths = generator.EnginePaths(
        root_path=str(rootfs),
        cgroups_path=generator.cgroups_path(container_id),
        hostname_file=str(bundle / "hostname"),
        hosts_file=str(bundle / "hosts"),
    )
    spec = generator.generate(
        generator.SpecInputs(
            container_id=container_id,
            image_config={"Cmd": ["sleep", "60"]},
            options=generator.SpecOptions(**options),
            passwd=(rootfs / "etc/passwd").read_bytes(),
            group=(rootfs / "etc/group").read_bytes(),
            host=host_facts(),
            paths=paths,
        )
    )
    (bundle / "hostname").write_text(generator.hostname_file(spec["hostname"]))
    (bundle / "hosts").write_text(generator.hosts_file(spec["hostname"]))
    (bundle / "config.json").write_text(generator.canonical(spec))
    return container_id[:32], bundle, spec


def cgroup_dirs(spec: dict[str, Any]) -> list[Path]:
    return [p for p in CGROUP_ROOT.glob(f"*{spec['linux']['cgroupsPath']}") if p.is_dir()]


def create_state_delete(
    root: Path, name: str, bundle: Path, spec: dict[str, Any], *extra: str
) -> None:
    done = runc(root, "create", "--bundle", str(bundle), *extra, name)
    assert done.returncode == 0, done.stderr
    state = json.loads(runc(root, "state", name).stdout)
    assert state["status"] == "created" and state["pid"] > 0
    assert cgroup_dirs(spec), "runc made the container's cgroup"
    status = Path(f"/proc/{state['pid']}/status").read_text()
    assert "NoNewPrivs:\t1" in status
    done = runc(root, "delete", "--force", name)
    assert done.returncode == 0, done.stderr
    assert runc(root, "state", name).returncode != 0
    assert cgroup_dirs(spec) == [], "runc removed the container's cgroup"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"user": "user", "workdir": "/home/user", "env": ("A=1",)},
        {"ulimits": ("nofile=1024:1024", "nproc=4096:4096"), "pids_limit": 64},
        {"memory": 64 * 1024 * 1024, "cpus": 0.5, "hostname": "box"},
    ],
    ids=["defaults", "user", "ulimits", "resources"],
)
def test_runc_creates_and_deletes_a_generated_bundle(
    tmp_path: Path, runc_root: Path, options: dict[str, Any]
) -> None:
    name, bundle, spec = make_bundle(tmp_path, **options)
    create_state_delete(runc_root, name, bundle, spec)


def test_runc_accepts_volumes(tmp_path: Path, runc_root: Path) -> None:
    (tmp_path / "vol-ro").mkdir()
    (tmp_path / "vol-rw").mkdir()
    volumes = (
        generator.VolumeMount(str(tmp_path / "vol-ro"), "/data", read_only=True),
        generator.VolumeMount(str(tmp_path / "vol-rw"), "/srv/out"),
    )
    name, bundle, spec = make_bundle(tmp_path, volumes=volumes)
    create_state_delete(runc_root, name, bundle, spec)


class ConsoleReceiver:
    """The other end of ``runc create --console-socket``: receives the pty master fd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.server.settimeout(30)
        self.fds: list[int] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            fds = array.array("i")
            _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            self.fds = list(fds)

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()
        for fd in self.fds:
            os.close(fd)


def test_runc_accepts_a_tty_spec(tmp_path: Path, runc_root: Path) -> None:
    name, bundle, spec = make_bundle(tmp_path, tty=True)
    assert spec["process"]["terminal"] is True
    receiver = ConsoleReceiver(tmp_path / "console.sock")
    try:
        create_state_delete(runc_root, name, bundle, spec, "--console-socket", str(receiver.path))
        receiver.thread.join(10)
        assert len(receiver.fds) == 1 and os.isatty(receiver.fds[0])
    finally:
        receiver.close()


def test_the_process_gets_what_the_spec_says(tmp_path: Path, runc_root: Path) -> None:
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "hello").write_text("from the host\n")
    script = (
        "grep -E '^(NoNewPrivs|Seccomp|CapEff):' /proc/self/status; hostname; cat /data/hello; "
        "touch /data/x 2>/dev/null || echo ro-ok; "
        "unshare -n true 2>/dev/null || echo unshare-denied; "
        "echo keys=$(cat /proc/keys | wc -c); cat /etc/hostname; id"
    )
    name, bundle, spec = make_bundle(
        tmp_path,
        command=("sh", "-c", script),
        entrypoint=(),
        hostname="box",
        user="user",
        volumes=(generator.VolumeMount(str(tmp_path / "vol"), "/data", read_only=True),),
    )
    done = runc(runc_root, "run", "--bundle", str(bundle), name, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "NoNewPrivs:\t1" in lines and "Seccomp:\t2" in lines
    assert "CapEff:\t0000000000000000" in lines  # a non-root user: bounding set only
    assert lines.count("box") == 2 and "from the host" in lines and "ro-ok" in lines
    assert "unshare-denied" in lines
    assert "keys=0" in lines  # /proc/keys is masked (an empty /dev/null over it)
    assert lines[-1].startswith("uid=1000(user) gid=1000")
    assert cgroup_dirs(spec) == []


@pytest.fixture
def store_engine(engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    engine.ensure_root()
    busybox_image(engine)
    (tmp_path / "volumes" / "v").mkdir(parents=True)
    yield engine
    containers = engine.get(Containers)
    for record in containers.list():
        containers.unmount_all(record.id)


def test_runc_accepts_a_spec_generated_for_a_real_container(
    store_engine: Engine, runc_root: Path, tmp_path: Path
) -> None:
    containers = store_engine.get(Containers)
    record = containers.create(
        CreateOptions(
            command=["sleep", "60"],
            tty=False,
            volumes=[Volume(str(tmp_path / "volumes" / "v"), "/v")],
        ),
        "localhost/busybox",
        "r1",
    )
    spec = store_engine.get(SpecService).generate(record.id)["spec"]
    paths = containers.paths(record.id)
    containers.mount(record.id)
    try:
        create_state_delete(runc_root, record.id, paths.bundle, spec)
    finally:
        containers.unmount(record.id)
    assert not containers.is_mounted(record.id)
