"""Oracle: podman 4.3.1 and Gantry generate config.json for the same image and the same
options; the two are compared field by field. Every difference we keep on purpose is listed in
DELIBERATE_DIFFERENCES with its reason, and the test fails on any other.

The image: the busybox rootfs of tests/imagetools, written into our store, copied into an OCI
layout with umoci (same bytes), and pulled into a private podman root (never the host's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.core import Engine
from engine.images.store import Store
from engine.spec.service import SpecService, field_diff
from engine.storage.containers import Containers
from engine.storage.records import CreateOptions
from engine.storage.volumes import Volume
from tests.imagetools import busybox_image
from tests.skips import requires

ULIMITS = ["nofile=1024:1024", "nproc=4096:4096"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
IMAGE_CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"Cmd": ["/bin/sh"]},
    "entry": {
        "Entrypoint": ["/bin/echo", "ep"],
        "Cmd": ["hello"],
        "WorkingDir": "/home/user",
        "User": "user",
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=img"],
    },
}

# field path -> why Gantry differs from podman there (checked below: exactly these differ).
DELIBERATE_DIFFERENCES = {
    "process.noNewPrivileges": "kept true: setuid binaries cannot raise privileges; the "
    "policy requires it (podman: false unless --security-opt no-new-privileges)",
    "process.env:container": "container=gantry names the engine (podman: container=podman)",
    "linux.namespaces:cgroup": "a cgroup namespace always (podman: host cgroupns on cgroup v1), "
    "so the container does not see the host's cgroup paths",
    "mounts:/dev/shm": "runc mounts a private tmpfs (same options) instead of podman's bind of "
    "a tmpfs it mounts under userdata/shm: no host-side mount for the engine to track",
    "mounts:/run/.containerenv": "podman's marker file for podman-aware tools; not written",
    "linux.seccomp": "our own profile (engine/spec/seccomp.py): deny by default like podman's, "
    "but mount/umount/unshare/setns/keyctl/io_uring are denied and clone may not create "
    "namespaces",
    "linux.cgroupsPath": "engine-owned: /gantry-<id> (podman: /libpod_parent/libpod-<id>)",
    "root.path": "engine-owned: our merged dir",
    "annotations": "io.gantry.* keys instead of podman's io.podman.*/io.kubernetes.* ones",
    "root.readonly": "written explicitly as false (podman leaves it out: the same meaning)",
    "process.terminal": "written explicitly as false without -t (podman leaves it out)",
    "process.consoleSize": "24x80 with -t, so a shell that prompts before any client sized "
    "the pty edits at 80 columns (podman takes the size of the terminal it runs in)",
    "hostname": "each engine's own short container id (equal when --hostname is given)",
    "process.env:HOSTNAME": "the hostname, as above",
    "mounts:/etc/hostname.source": "each engine's own userdata file",
    "mounts:/etc/hosts.source": "each engine's own userdata file (podman copies the host's "
    "/etc/hosts into it; ours has loopback and the container only)",
}


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


pytestmark = [
    requires(
        os.geteuid() == 0 and have("podman", "umoci", "runc"), "needs root, podman, umoci, runc"
    ),  # fmt: skip
    pytest.mark.privileged,
]


@dataclass
class Podman:
    root: Path
    runroot: Path
    images: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [
            "podman", "--root", str(self.root), "--runroot", str(self.runroot),
            "--tmpdir", str(self.runroot / "libpod"),  # not the host's shared /run/libpod
            "--runtime", "runc", "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
            "--events-backend", "none", *args,
        ]  # fmt: skip

    def run(self, *args: str) -> str:
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"podman {args}: {done.stderr}"
        return done.stdout.strip()

    def config(self, image: str, flags: list[str], command: list[str]) -> dict[str, Any]:
        args = ["create", *[f"--ulimit={u}" for u in ULIMITS], "--network", "none"]
        cid = self.run(*args, *flags, self.images[image], *command).splitlines()[-1]
        try:
            self.run("init", cid)
            path = self.root / "overlay-containers" / cid / "userdata" / "config.json"
            return dict(json.loads(path.read_text()))
        finally:
            self.run("rm", "-f", cid)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The busybox rootfs (from our store) and an OCI layout of it with both image configs."""
    base = tmp_path_factory.mktemp("oracle")
    engine = Engine(EngineConfig(root=base / "seed"))
    engine.ensure_root()
    image = busybox_image(engine)
    diff = engine.get(Store).layer_diff(image.layers[0])
    oci = base / "oci"
    bundle = base / "unpacked"
    subprocess.run(["umoci", "init", "--layout", str(oci)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{oci}:plain"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{oci}:plain", str(bundle)], check=True)
    subprocess.run(["cp", "-a", f"{diff}/.", str(bundle / "rootfs")], check=True)
    subprocess.run(["umoci", "repack", "--image", f"{oci}:plain", str(bundle)], check=True)
    for tag, config in IMAGE_CONFIGS.items():
        argv = ["umoci", "config", "--image", f"{oci}:plain", "--tag", tag]
        for key, flag in (("Entrypoint", "entrypoint"), ("Cmd", "cmd"), ("Env", "env")):
            argv += [a for v in config.get(key, []) for a in (f"--config.{flag}", v)]
        for key, flag in (("WorkingDir", "workingdir"), ("User", "user")):
            if key in config:
                argv += [f"--config.{flag}", str(config[key])]
        if tag == "plain":
            argv += ["--config.env", IMAGE_CONFIGS["entry"]["Env"][0]]
        subprocess.run(argv, check=True)
    yield diff, oci
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(layout: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    _, oci = layout
    base = tmp_path_factory.mktemp("podman")
    p = Podman(base / "root", base / "runroot", {})
    for tag in IMAGE_CONFIGS:
        p.images[tag] = p.run("pull", "-q", f"oci:{oci}:{tag}").splitlines()[-1]
    yield p
    subprocess.run(p.argv("rm", "-af"), capture_output=True, timeout=120)
    subprocess.run(p.argv("rmi", "-af"), capture_output=True, timeout=120)
    subprocess.run(["umount", "-R", str(p.root / "overlay")], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    # podman leaves its parent cgroup (and conmon's under it) behind. Remove them when empty
    # (rmdir refuses a cgroup that still holds a process or a child: then it is in use).
    for parent in CGROUP_ROOT.glob("*/libpod_parent"):
        for cgroup in (parent / "conmon", parent):
            try:
                cgroup.rmdir()
            except OSError:
                pass


def ours(engine: Engine, image_tag: str, options: dict[str, Any]) -> dict[str, Any]:
    engine.ensure_root()
    busybox_image(engine, name=f"localhost/oracle:{image_tag}", config=IMAGE_CONFIGS[image_tag])
    extra = {"ulimits": list(ULIMITS)}
    record = engine.get(Containers).create(
        CreateOptions(**options, extra=extra), f"localhost/oracle:{image_tag}"
    )
    spec = engine.get(SpecService).generate(record.id)["spec"]
    assert isinstance(spec, dict)
    return spec


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    """Take out what DELIBERATE_DIFFERENCES names, so everything else must be equal.
    Mounts become a dict by destination, env a dict, namespaces a sorted list: podman's
    ordering comes from Go maps and is not part of the meaning."""
    out = json.loads(json.dumps(spec))
    process, linux = out["process"], out["linux"]
    for key in ("noNewPrivileges", "terminal"):
        if process.get(key) in (False, None):
            process.pop(key, None)
    process.pop("noNewPrivileges", None)
    process.pop("consoleSize", None)
    env = dict(e.split("=", 1) for e in process.pop("env"))
    for key in ("container", "HOSTNAME"):
        env.pop(key, None)
    process["env"] = env
    for key in ("seccomp", "cgroupsPath"):
        linux.pop(key, None)
    linux["namespaces"] = sorted(
        (n for n in linux["namespaces"] if n["type"] != "cgroup"), key=lambda n: n["type"]
    )
    out.pop("annotations", None)
    out.pop("hostname", None)
    out["root"] = {}
    mounts = {}
    for m in out.pop("mounts"):
        if m["destination"] in ("/dev/shm", "/run/.containerenv"):
            continue
        if m["destination"] in ("/etc/hostname", "/etc/hosts"):
            m.pop("source")
        mounts[m["destination"]] = m
    out["mounts"] = mounts
    return dict(out)


CASES: list[tuple[str, str, list[str], dict[str, Any], list[str]]] = [
    ("defaults", "plain", [], {}, []),
    ("flags", "plain", ["-e", "FOO=bar", "-w", "/tmp", "-u", "user", "-t"],
     {"env": ["FOO=bar"], "workdir": "/tmp", "user": "user", "tty": True}, []),
    ("command", "plain", ["-u", "1234:5678"], {"user": "1234:5678"}, ["/bin/ls", "-l"]),
    ("image entrypoint", "entry", [], {}, []),
    ("image entrypoint + command", "entry", ["-e", "HOME=/x"], {"env": ["HOME=/x"]}, ["x", "y"]),
    ("--entrypoint", "entry", ["--entrypoint", "/bin/sh", "-u", "root"],
     {"entrypoint": ["/bin/sh"], "user": "root"}, []),
    ("--entrypoint + command", "entry", ["--entrypoint", '["/bin/sh","-c"]', "-u", "0:wheel"],
     {"entrypoint": ["/bin/sh", "-c"], "user": "0:wheel"}, ["echo hi"]),
    ("hostname", "plain", ["--hostname", "box"], {"hostname": "box"}, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("image", "flags", "options", "command"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_it_generates_what_podman_generates(
    engine: Engine,
    podman: Podman,
    image: str,
    flags: list[str],
    options: dict[str, Any],
    command: list[str],
) -> None:
    theirs = podman.config(image, flags, command)
    mine = ours(engine, image, {**options, "command": command})
    # The fields the issue names, one by one, for a readable failure.
    for key in ("args", "cwd", "user", "capabilities", "rlimits"):
        assert mine["process"][key] == theirs["process"][key], key
    assert mine["process"].get("terminal", False) == theirs["process"].get("terminal", False)
    assert normalise(mine)["process"]["env"] == normalise(theirs)["process"]["env"]
    if "hostname" in options:
        assert mine["hostname"] == theirs["hostname"] == options["hostname"]
    for spec in (mine, theirs):
        assert f"HOSTNAME={spec['hostname']}" in spec["process"]["env"]
    # Then everything: only the deliberate differences may remain.
    assert field_diff(normalise(theirs), normalise(mine)) == []
    # And the deliberate differences are really there (the list is not stale).
    assert mine["process"]["noNewPrivileges"] is True
    assert not theirs["process"].get("noNewPrivileges")
    assert {"type": "cgroup"} in mine["linux"]["namespaces"]
    assert {"type": "cgroup"} not in theirs["linux"]["namespaces"]


def test_volumes_match_podman(engine: Engine, podman: Podman, tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    (volumes / "a" / "sub").mkdir(parents=True)  # a ro bind: the mount point must exist
    (volumes / "b").mkdir()
    flags = ["-v", f"{volumes / 'a'}:/data:ro", "-v", f"{volumes / 'b'}:/data/sub"]
    theirs = podman.config("plain", flags, [])
    mine = ours(
        engine,
        "plain",
        {
            "volumes": [
                Volume(str(volumes / "a"), "/data", read_only=True),
                Volume(str(volumes / "b"), "/data/sub"),
            ]
        },
    )
    assert field_diff(normalise(theirs), normalise(mine)) == []
    by_dest = {m["destination"]: m for m in mine["mounts"]}
    assert by_dest["/data"]["options"] == ["ro", "rprivate", "rbind"]
    assert by_dest["/data/sub"]["source"] == str(volumes / "b")


def test_the_deliberate_differences_each_have_a_reason() -> None:
    assert all(len(reason) > 20 for reason in DELIBERATE_DIFFERENCES.values())
