"""The lab's demo images, offline. `./gantry run` serves gantry/on-off and gantry/busybox (built
by the set-up from Debian packages, cached as OCI layouts under $GANTRY_DEMO_DIR) from a private
docker-registry on loopback, run as the unprivileged web user, stopped by Ctrl-C, and pushed only
when the registry lacks them. Under runc the on-off image does what the lab says: exit 0 without
/mnt/on, run top while it exists, stop on SIGTERM.

These tests use the layouts the set-up built; they never build them (./gantry setup dev does)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.skips import requires
from tests.stack.stackrun import Stack, free_port, wait_until

DEMO_DIR = Path(os.environ.get("GANTRY_DEMO_DIR") or "/opt/gantry/demo")
NAMES = ("on-off", "busybox")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"
IS_ROOT = os.geteuid() == 0


def layout_digest(name: str) -> str:
    index = json.loads((DEMO_DIR / name / "index.json").read_text())
    [manifest] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest"
    ]
    return str(manifest["digest"])


@pytest.fixture(scope="module")
def layouts() -> Path:
    missing = [n for n in NAMES if not (DEMO_DIR / n / "index.json").is_file()]
    if missing:
        pytest.fail(f"demo layouts {missing} missing in {DEMO_DIR}: ./gantry setup dev builds them")
    return DEMO_DIR


# ---- the registry, started by ./gantry run ------------------------------------------------------


@pytest.fixture(scope="module")
def registry_storage() -> Iterator[Path]:
    """Outlives one stack, so a second start finds the images already pushed."""
    parent = Path(tempfile.mkdtemp(prefix="gantry-registry-"))
    os.chmod(parent, 0o755)  # the registry runs as the web user
    yield parent / "storage"
    shutil.rmtree(parent, ignore_errors=True)


def demo_stack(layouts: Path, storage: Path, port: int) -> Stack:
    stack = Stack(
        extra_env={
            "GANTRY_DEMO": "1",
            "GANTRY_DEMO_DIR": str(layouts),
            "GANTRY_REGISTRY_DIR": str(storage),
            "GANTRY_REGISTRY_PORT": str(port),
        }
    )
    return stack.start()


@pytest.fixture(scope="module")
def stack(layouts: Path, registry_storage: Path) -> Iterator[Stack]:
    s = demo_stack(layouts, registry_storage, free_port())
    yield s
    s.stop()


def registry(stack: Stack) -> str:
    return f"127.0.0.1:{stack.env['GANTRY_REGISTRY_PORT']}"


def http() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # never through a proxy: this is loopback
    return s


def get_manifest(stack: Stack, name: str) -> requests.Response:
    return http().get(
        f"http://{registry(stack)}/v2/gantry/{name}/manifests/latest",
        headers={"Accept": ACCEPT},
        timeout=10,
    )


def image_config(stack: Stack, name: str) -> dict[str, Any]:
    manifest = get_manifest(stack, name).json()
    r = http().get(
        f"http://{registry(stack)}/v2/gantry/{name}/blobs/{manifest['config']['digest']}",
        timeout=10,
    )
    assert r.status_code == 200
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == manifest["config"]["digest"]
    return dict(r.json())


def output(stack: Stack) -> str:
    return "".join(stack.output)


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_it_serves_both_demo_images_as_the_layouts_hold_them(stack: Stack) -> None:
    for name in NAMES:
        r = get_manifest(stack, name)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == OCI_MANIFEST
        want = layout_digest(name)
        assert r.headers["Docker-Content-Digest"] == want
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == want
        assert f"pushing demo image gantry/{name}" in output(stack)


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_it_serves_the_configs_the_lab_needs(stack: Stack) -> None:
    on_off = image_config(stack, "on-off")["config"]
    assert on_off["Cmd"] == ["/usr/local/bin/on-off"]
    assert "Entrypoint" not in on_off  # `exec bash` and a CMD override work as typed
    assert on_off["WorkingDir"] == "/"
    assert on_off["StopSignal"] == "SIGTERM"
    assert any(e.startswith("PATH=") for e in on_off["Env"])
    assert "/mnt/on" in on_off["Labels"]["org.opencontainers.image.description"]
    busybox = image_config(stack, "busybox")["config"]
    assert busybox["Cmd"] == ["sh"]
    assert "Entrypoint" not in busybox


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
@requires(shutil.which("skopeo") is not None, "skopeo is not installed")
def test_skopeo_inspects_them_over_plain_http(stack: Stack) -> None:
    for name in NAMES:
        done = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                f"docker://{registry(stack)}/gantry/{name}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert info["Digest"] == layout_digest(name)
        assert info["Labels"]["org.opencontainers.image.title"] == f"gantry/{name}"


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_the_ready_banner_names_the_references(stack: Stack) -> None:
    for name in NAMES:
        ref = f"{registry(stack)}/gantry/{name}:latest"
        wait_until(lambda ref=ref: ref in output(stack), 5)
    assert "--tls-verify=false" in output(stack)


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_the_registry_runs_unprivileged_on_loopback_only(stack: Stack) -> None:
    pid = stack.pid("registry")
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in uids
    port = int(stack.env["GANTRY_REGISTRY_PORT"])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.append(local.rsplit(":", 1)[0])
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing else
    storage = Path(stack.env["GANTRY_REGISTRY_DIR"]).stat()
    assert storage.st_uid == int(uids[0]) and storage.st_mode & 0o777 == 0o700


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_the_demo_engine_config_treats_the_registry_as_plain_http(stack: Stack) -> None:
    config = json.loads(Path(stack.env["GANTRY_CONFIG"]).read_text())
    assert config["insecure_registries"] == [registry(stack)]
    assert config["volume_allowlist"] == ["/mnt"]


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_ctrl_c_stops_the_registry(stack: Stack) -> None:
    pid = stack.pid("registry")
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(30) == 0
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or zombie(pid), 5)
    with pytest.raises(requests.ConnectionError):
        get_manifest(stack, "busybox")


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_a_restart_finds_the_images_and_pushes_nothing(
    stack: Stack, layouts: Path, registry_storage: Path
) -> None:
    stack.stop()  # the first one is gone (Ctrl-C above, when it ran)
    again = demo_stack(layouts, registry_storage, free_port())
    try:
        assert "pushing demo image" not in output(again)
        for name in NAMES:
            assert get_manifest(again, name).headers["Docker-Content-Digest"] == layout_digest(name)
    finally:
        again.stop()


@pytest.mark.stack
@requires(IS_ROOT, "the stack's engine worker must run as root")
def test_a_busy_registry_port_starts_the_stack_without_the_demo(layouts: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        storage = Path(tempfile.mkdtemp(prefix="gantry-registry-"))
        s = demo_stack(layouts, storage / "storage", port)
        try:
            assert f"port {port} is already in use" in output(s)
            assert not (s.run_dir / "registry.pid").exists()
            assert "demo images" not in output(s)
        finally:
            s.stop()
            shutil.rmtree(storage, ignore_errors=True)


# ---- the images under runc ----------------------------------------------------------------------

RUNC_OK = IS_ROOT and shutil.which("runc") is not None and shutil.which("umoci") is not None


class Runc:
    """runc with a private state root; every container it made is force-deleted at the end."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.ids: list[str] = []

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(
            ["runc", "--root", str(self.state), *args], text=True, timeout=30, check=False, **kw
        )

    def new_id(self) -> str:
        self.ids.append(f"gantry-demo-{os.getpid()}-{len(self.ids)}")
        return self.ids[-1]

    def state_of(self, cid: str) -> dict[str, Any]:
        done = self("state", cid)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def cleanup(self) -> None:
        for cid in self.ids:
            self("delete", "--force", cid)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="gantry-demo-runc-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def runc(scratch: Path) -> Iterator[Runc]:
    r = Runc(scratch / "runc-state")
    yield r
    r.cleanup()


def unpack(layouts: Path, scratch: Path, name: str) -> Path:
    bundle = scratch / name
    done = subprocess.run(
        ["umoci", "unpack", "--image", f"{layouts / name}:latest", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return bundle


@pytest.fixture(scope="module")
def on_off(layouts: Path, scratch: Path) -> Path:
    return unpack(layouts, scratch, "on-off")


def configure(bundle: Path, mnt: Path | None = None, args: list[str] | None = None) -> None:
    """No terminal (the k8s-log case); optionally the lab's -v HOST:/mnt and another command."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/mnt"]
    if mnt is not None:
        spec["mounts"].append(
            {"destination": "/mnt", "type": "bind", "source": str(mnt), "options": ["rbind", "rw"]}
        )
    if args is not None:
        spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.privileged
@requires(RUNC_OK, "needs root, runc and umoci")
def test_on_off_exits_0_at_once_without_mnt_on(on_off: Path, runc: Runc, scratch: Path) -> None:
    empty = scratch / "mnt-off"
    empty.mkdir()
    configure(on_off, mnt=empty)
    started = time.monotonic()
    done = runc("run", "--bundle", str(on_off), runc.new_id())
    assert done.returncode == 0, done.stderr
    assert "/mnt/on does not exist" in done.stdout
    assert time.monotonic() - started < 10


@pytest.mark.privileged
@requires(RUNC_OK, "needs root, runc and umoci")
def test_on_off_runs_top_while_mnt_on_exists_and_stops_on_sigterm(
    on_off: Path, runc: Runc, scratch: Path
) -> None:
    switch = scratch / "mnt-on"
    switch.mkdir()
    (switch / "on").touch()
    configure(on_off, mnt=switch)
    cid = runc.new_id()
    log = scratch / f"{cid}.log"
    with log.open("w") as out:
        done = runc(
            "run",
            "--detach",
            "--bundle",
            str(on_off),
            cid,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    assert done.returncode == 0, log.read_text()
    state = runc.state_of(cid)
    assert state["status"] == "running"
    wait_until(lambda: cmdline(state["pid"])[:1] == ["top"], 10)
    assert cmdline(state["pid"]) == ["top", "-b", "-d", "2"]  # no tty: batch mode
    ps = runc("ps", "--format", "json", cid)
    assert ps.returncode == 0 and json.loads(ps.stdout) == [state["pid"]]
    wait_until(lambda: "top - " in log.read_text(), 10)
    assert "/mnt/on exists: running top" in log.read_text()
    # The image's StopSignal ends it: top is pid 1 and handles SIGTERM.
    assert runc("kill", cid, "TERM").returncode == 0
    wait_until(lambda: runc.state_of(cid)["status"] == "stopped", 10)
    assert runc("delete", cid).returncode == 0
    assert runc("state", cid).returncode != 0


@pytest.mark.privileged
@requires(RUNC_OK, "needs root, runc and umoci")
def test_on_off_has_bash_procps_and_coreutils(on_off: Path, runc: Runc) -> None:
    configure(on_off, args=["bash", "-c", "ps -o comm= -p $$; ls --version | head -n1; id -un"])
    done = runc("run", "--bundle", str(on_off), runc.new_id())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "bash"
    assert "coreutils" in lines[1]
    assert lines[2] == "root"


@pytest.mark.privileged
@requires(RUNC_OK, "needs root, runc and umoci")
def test_busybox_applets_are_symlinks_and_root_has_a_name(
    layouts: Path, runc: Runc, scratch: Path
) -> None:
    bundle = unpack(layouts, scratch, "busybox")
    rootfs = bundle / "rootfs"
    assert os.readlink(rootfs / "bin/sh") == "busybox"
    assert os.readlink(rootfs / "usr/bin/awk") == "../../bin/busybox"
    links = [p for p in rootfs.rglob("*") if p.is_symlink()]
    assert len(links) > 250
    assert all((p.parent / os.readlink(p)).resolve() == rootfs / "bin/busybox" for p in links)
    configure(bundle, args=["sh", "-c", "id -un; id -gn; echo hi | awk '{print toupper($0)}'"])
    done = runc("run", "--bundle", str(bundle), runc.new_id())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["root", "root", "HI"]


def test_the_layouts_are_world_readable(layouts: Path) -> None:
    for name in NAMES:
        for path in (layouts / name).rglob("*"):
            mode = path.stat().st_mode
            assert mode & 0o004, path
            if path.is_dir():
                assert mode & 0o001, path
