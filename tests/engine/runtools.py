"""Helpers for the runtime tests: a hand-made runc bundle (busybox rootfs + a config.json from
`runc spec`), probes for runc/conmon, and a census of what a container can leak (processes,
mounts, runc state, cgroups, fds) to compare before and after."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.network import netns

BUSYBOX = Path("/bin/busybox")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def can_run_containers() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("runc") is not None
        and shutil.which("conmon") is not None
        and BUSYBOX.exists()
    )


RUNTIME_REASON = "needs root, runc, conmon and busybox-static"


def new_id() -> str:
    return secrets.token_hex(32)


def busybox_rootfs(target: Path) -> Path:
    """A rootfs dir with static busybox and every applet linked."""
    (target / "bin").mkdir(parents=True)
    shutil.copyfile(BUSYBOX, target / "bin" / "busybox")
    os.chmod(target / "bin" / "busybox", 0o755)
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", target / "bin" / applet)
    for d in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (target / d).mkdir()
    (target / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return target


_SPEC: dict[str, Any] | None = None


def runc_spec() -> dict[str, Any]:
    global _SPEC
    if _SPEC is None:
        tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
        try:
            subprocess.run(["runc", "spec"], cwd=tmp, check=True)
            _SPEC = json.loads((tmp / "config.json").read_text())
        finally:
            shutil.rmtree(tmp)
    return json.loads(json.dumps(_SPEC))


@dataclass
class Bundle:
    container_id: str
    bundle: Path
    userdata: Path
    rootfs: Path

    def write_config(self, args: list[str], *, tty: bool = False, **process: Any) -> None:
        config = runc_spec()
        config["root"] = {"path": str(self.rootfs), "readonly": False}
        config["process"].update(args=args, terminal=tty, **process)
        config["hostname"] = "handmade"
        config["linux"]["cgroupsPath"] = f"/gantry-{self.container_id}"  # as the engine's
        (self.bundle / "config.json").write_text(json.dumps(config))


def make_bundle(base: Path, rootfs: Path, args: list[str], **kwargs: Any) -> Bundle:
    cid = new_id()
    bundle = base / cid[:12] / "bundle"
    userdata = base / cid[:12] / "userdata"
    bundle.mkdir(parents=True)
    userdata.mkdir()
    b = Bundle(cid, bundle, userdata, rootfs)
    b.write_config(args, **kwargs)
    return b


# -- leak census ----------------------------------------------------------------------------
def conmon_pids() -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith(b"conmon"):
                out.add(int(entry.name))
    return out


def cgroups_named(names: set[str]) -> list[str]:
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_dir():
            for name in names:
                if (hierarchy / name.strip("/")).exists():
                    found.append(str(hierarchy / name.strip("/")))
    return found


def container_cgroups() -> list[str]:
    """Cgroups named like a container's cgroupsPath (/gantry-<64 hex>) in any hierarchy."""
    return [
        str(p)
        for h in CGROUP_ROOT.iterdir()
        if h.is_dir()
        for p in h.glob("gantry-*")
        if re.fullmatch(r"gantry-[0-9a-f]{64}", p.name)
    ]


def mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(path) in line]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def runc_ids(engine: Engine) -> list[str]:
    root = Path(engine.config.root) / "runc"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def wait_no_conmon(before: set[int], timeout: float = 10.0) -> None:
    """conmons exit (and are reaped by PID 1) a little after their container."""
    wait_until(lambda: not (conmon_pids() - before), timeout)


# -- engine-level helpers -------------------------------------------------------------------
ON_OFF_SCRIPT = """#!/bin/sh
# busybox stand-in for the lab's gantry/on-off image
if [ -e /mnt/on ]; then
    echo "on-off: running top"
    if [ -t 1 ]; then exec top; fi
    exec top -b -d 1
fi
echo "on-off: /mnt/on does not exist"
exit 0
"""


def on_off_image(engine: Engine) -> Any:
    from tests.imagetools import File, busybox_image

    return busybox_image(
        engine,
        name="localhost/gantry/on-off:latest",
        extra_layers=[{"/usr/local/bin/on-off": File(ON_OFF_SCRIPT, mode=0o755)}],
        config={"Cmd": ["/usr/local/bin/on-off"]},
    )


def create(engine: Engine, command: list[str] | None = None, **options: Any) -> Any:
    """Create a container from localhost/busybox (the image must exist)."""
    from engine.storage.containers import Containers
    from engine.storage.records import CreateOptions

    image = options.pop("image", "localhost/busybox:latest")
    name = options.pop("name", "")
    return engine.get(Containers).create(
        CreateOptions(command=list(command or []), **options), image, name=name
    )


@dataclass
class Census:
    """What exists on the host that a container could leave behind."""

    conmons: set[int]
    mounts: int
    fds: int
    cgroups: int
    runc: int
    exits: int
    netns: int  # /run/netns/gantry-* (engine.network.netns)

    @classmethod
    def take(cls, engine: Engine) -> Census:
        from engine.images.store import Store

        # The store keeps one flock()ed fd on the last tmp dir it made until its next one:
        # make one now so the count is the same steady state before and after.
        shutil.rmtree(engine.get(Store).tmp_dir("census"))
        root = Path(engine.config.root)
        exits = root / "exits"
        return cls(
            conmons=conmon_pids(),
            mounts=len(mounts_under(root)),
            fds=open_fds(),
            cgroups=len(container_cgroups()),
            runc=len(runc_ids(engine)),
            exits=len(list(exits.iterdir())) if exits.exists() else 0,
            netns=len(netns.ours()),
        )

    def leaks_since(self, before: Census) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.conmons - before.conmons:
            out["conmons"] = sorted(self.conmons - before.conmons)
        for key in ("mounts", "fds", "cgroups", "runc", "exits", "netns"):
            if getattr(self, key) > getattr(before, key):
                out[key] = (getattr(before, key), getattr(self, key))
        return out


def no_leaks(
    engine: Engine, before: Census, timeout: float = 10.0, ignore: tuple[str, ...] = ()
) -> None:
    """Wait (conmons are reaped by PID 1 a little later) until nothing leaked, else fail.
    ``ignore`` names census keys that do not apply (fds when the engine is another process)."""

    def leaks() -> dict[str, Any]:
        found = Census.take(engine).leaks_since(before)
        return {k: v for k, v in found.items() if k not in ignore}

    try:
        wait_until(lambda: not leaks(), timeout, 0.05)
    except TimeoutError:
        raise AssertionError(f"leaked: {leaks()}") from None


def force_cleanup(engine: Engine) -> None:
    """For test teardown: delete whatever runc still has under the engine's root (kills the
    processes; conmon then exits by itself)."""
    for cid in runc_ids(engine):
        subprocess.run(
            ["runc", "--root", str(Path(engine.config.root) / "runc"), "delete", "-f", cid],
            capture_output=True,
        )


@contextmanager
def worker_started(engine: Engine, publisher: Any = None) -> Iterator[Engine]:
    """The engine with the worker's start-up work done (exit watcher + reconciliation), as in
    the worker; on the way out, every terminal closed, every container removed and the
    watcher stopped, whatever a failed test left behind."""
    from engine.api.base import Context
    from engine.api.runtime import watch_exits
    from engine.runtime.lifecycle import Lifecycle
    from engine.terminal.hub import TerminalHub

    engine.ensure_root()
    watch_exits(Context(engine, publisher=publisher) if publisher else Context(engine))
    try:
        yield engine
    finally:
        engine.get(TerminalHub).close_all()
        containers = engine.get(Lifecycle).containers  # removes stop what runs
        for record in containers.list():
            containers.remove(record.id, force=True)
        engine.stopping.set()
        watcher = engine.get(Lifecycle).watcher
        if watcher is not None:
            watcher.stop()
