"""bench/start: how long a container takes to start and to run /bin/true to its end, for
Gantry's engine and its peers, side by side in one run (rounds interleaved: this machine is
noisy, so every peer sees the same noise).

    /opt/gantry/venv/bin/python -m bench.start [--rounds 10]

Measured, per round (medians over the rounds, in ms):
  gantry (API)     Lifecycle.start() of a configured container, in process: spec checked again,
                   rootfs mounted, conmon + runc create, runc start  ->  "running" when it
                   returns; "exited" when the exit watcher has cleaned up (runc delete, unmount)
                   and published the "died" event
  gantry (API, bridge)
                   the same with the default bridge network (netavark setup before runc
                   create; teardown before "exited"), on a subnet of the bench's own
  gantry (CLI)     `python -m engine start NAME` (a new Python process each time), the exit seen
                   by the same in-process watcher
  conmon + runc    the minimal protocol of conmon.md with no Gantry: spawn conmon, start byte,
                   sync pid, `runc start`; exit = the exit file appears (inotify) + `runc delete`
  runc run         `runc run -d` (running) / `runc run` (to the end), no conmon
  podman start     `podman start NAME` of a created container (returns once it runs);
                   `podman start -a NAME` to the end; with podman's default network (as the
                   issue measured it) and with --network none
  podman run --rm  `podman run --rm IMAGE /bin/true`, to the end (both networks)
Every runtime gets the same config.json (Gantry's generated spec, rootfs repointed at a plain
busybox dir for the peers) except podman, which writes its own; podman runs with a private
--root/--runroot, runc, cgroupfs (no systemd here) and the ulimit flags of the house rules.
Targets (issue 6): Gantry <= 1.5x conmon + runc, and <= 0.3x podman. Issue 16: the bridge
start within 1.5x of Gantry's start without a network, and faster than podman's networked start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.api.base import Context  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.core import Engine  # noqa: E402
from engine.runtime.exits import wait_for_file  # noqa: E402
from engine.runtime.lifecycle import Lifecycle  # noqa: E402
from engine.storage.containers import Containers  # noqa: E402
from engine.storage.records import CreateOptions  # noqa: E402

ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
NO_NET = " (no net)"
# podman as the issue measured it (its default bridge network, netavark), and with
# --network none (no network at all, as Gantry's containers: only a new net namespace).
NETWORKS: dict[str, list[str]] = {"": [], NO_NET: ["--network", "none"]}
BENCH_NETWORK = {"name": "gbench", "subnet": "10.91.240.0/24", "bridge": "gbench0"}
BRIDGE = "gantry (API, bridge)"


def podman_base(tmp: Path) -> list[str]:
    """podman on private storage under ``tmp``, with runc and cgroupfs (no systemd here)."""
    return [
        "podman", "--root", str(tmp / "podman"), "--runroot", str(tmp / "podman-run"),
        "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
        "--storage-driver", "overlay",
    ]  # fmt: skip


class DiedEvents:
    """A Publisher that wakes a waiter when a container's "died" event is published."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.died: set[str] = set()

    def publish(self, group: str, event: dict[str, Any]) -> None:
        if event.get("action") == "died":
            with self.cond:
                self.died.add(str(event.get("container")))
                self.cond.notify_all()

    def send(self, channel: str, event: dict[str, Any]) -> None:
        return None

    def wait(self, container_id: str, timeout: float = 30) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: container_id in self.died, timeout):
                raise TimeoutError(f"no exit of {container_id[:12]}")
            self.died.discard(container_id)


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.run(argv, check=True, capture_output=True, **kw)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"{' '.join(argv[:6])}...: {err.stderr.decode(errors='replace')}") from err


class Bench:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-start-"))
        self.root = self.tmp / "root"
        self.engine = Engine(EngineConfig(root=self.root, node="bench", network=BENCH_NETWORK))
        self.events = DiedEvents()
        self.results: dict[str, dict[str, list[float]]] = {}
        self.podman = podman_base(self.tmp)
        self.runc_root = self.tmp / "runc"

    def record(self, peer: str, what: str, seconds: float) -> None:
        self.results.setdefault(peer, {}).setdefault(what, []).append(seconds * 1000)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from engine.api.runtime import watch_exits
        from tests.imagetools import busybox_image

        self.engine.ensure_root()
        busybox_image(self.engine)
        watch_exits(Context(self.engine, publisher=self.events))
        containers = self.engine.get(Containers)
        self.api_ctr = containers.create(CreateOptions(command=["/bin/true"]), "localhost/busybox")
        self.cli_ctr = containers.create(CreateOptions(command=["/bin/true"]), "localhost/busybox")
        self.net_ctr = containers.create(
            CreateOptions(command=["/bin/true"], network="gbench"), "localhost/busybox"
        )
        import engine.spec as spec

        for record in (self.api_ctr, self.cli_ctr, self.net_ctr):
            spec.generate(self.engine, containers.load(record.id))
        # The peers' bundle: the same config.json on a plain busybox rootfs dir.
        from tests.engine.runtools import busybox_rootfs

        self.rootfs = busybox_rootfs(self.tmp / "rootfs")
        config = json.loads(containers.paths(self.api_ctr.id).config.read_text())
        userdata = containers.paths(self.api_ctr.id).userdata
        self.bundle = self.tmp / "bundle"
        self.bundle.mkdir()
        for name in ("hostname", "hosts"):
            shutil.copy(userdata / name, self.bundle / name)
        config["root"] = {"path": str(self.rootfs), "readonly": False}
        for mount in config.get("mounts", []):
            if str(mount.get("source", "")).startswith(str(userdata)):
                mount["source"] = str(self.bundle / Path(mount["source"]).name)
        config["linux"].pop("cgroupsPath", None)
        config.get("annotations", {}).clear()
        (self.bundle / "config.json").write_text(json.dumps(config))
        # podman: the same busybox rootfs as an image.
        tar = subprocess.Popen(["tar", "-C", str(self.rootfs), "-c", "."], stdout=subprocess.PIPE)
        run([*self.podman, "import", "-", "localhost/bench-busybox"], stdin=tar.stdout)
        tar.wait()
        self.podman_ctr: dict[str, str] = {}
        for net, flags in NETWORKS.items():
            out = run([*self.podman, "create", *ULIMITS, *flags, "localhost/bench-busybox",
                       "/bin/true"])  # fmt: skip
            self.podman_ctr[net] = out.stdout.decode().strip()

    # -- peers ----------------------------------------------------------------------------------
    def gantry_api(self, bridge: bool = False) -> None:
        lifecycle = self.engine.get(Lifecycle)
        ctr, peer = (self.net_ctr, BRIDGE) if bridge else (self.api_ctr, "gantry (API)")
        t0 = time.perf_counter()
        lifecycle.start(ctr.id)
        self.record(peer, "running", time.perf_counter() - t0)
        self.events.wait(ctr.id)
        self.record(peer, "exited", time.perf_counter() - t0)

    def gantry_cli(self) -> None:
        env = dict(os.environ, GANTRY_CONFIG=str(self.tmp / "none.json"))
        t0 = time.perf_counter()
        run([sys.executable, "-m", "engine", "--root", str(self.root), "start", self.cli_ctr.id],
            cwd=REPO, env=env)  # fmt: skip
        self.record("gantry (CLI)", "running", time.perf_counter() - t0)
        # The CLI runs no watcher: an exit that came before it returned was finished by the
        # CLI itself; a later one is finished by this process's watcher.
        if self.engine.get(Containers).load(self.cli_ctr.id).state != "exited":
            self.events.wait(self.cli_ctr.id)
        self.record("gantry (CLI)", "exited", time.perf_counter() - t0)

    def conmon_runc(self, i: int) -> None:
        """conmon.md's protocol with nothing else around it."""
        cid = f"bench-conmon-{i}"
        userdata = self.tmp / "cm" / cid
        userdata.mkdir(parents=True)
        exits = self.tmp / "cm-exits"
        exits.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        sync_parent, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        start_parent, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            "conmon", "--api-version", "-c", cid, "-u", cid, "-r", "/usr/sbin/runc",
            "-b", str(self.bundle), "-p", str(userdata / "pidfile"), "-n", cid,
            "--exit-dir", str(exits), "-l", f"k8s-file:{userdata / 'ctr.log'}",
            "--log-level", "warning", "--conmon-pidfile", str(userdata / "conmon.pid"),
            "--socket-dir-path", str(userdata), "--runtime-arg", f"--root={self.runc_root}",
        ]  # fmt: skip
        env = {
            "PATH": os.environ["PATH"],
            "_OCI_SYNCPIPE": str(sync_child.fileno()),
            "_OCI_STARTPIPE": str(start_child.fileno()),
        }
        proc = subprocess.Popen(
            argv, env=env, cwd=userdata, stdin=subprocess.DEVNULL, process_group=0,
            pass_fds=(sync_child.fileno(), start_child.fileno()),
        )  # fmt: skip
        sync_child.close()
        start_child.close()
        start_parent.send(b"\0")
        proc.wait()
        pid = json.loads(sync_parent.recv(4096))["data"]
        assert pid > 0, pid
        run(["runc", f"--root={self.runc_root}", "start", cid])
        self.record("conmon + runc", "running", time.perf_counter() - t0)
        assert wait_for_file(exits, cid, 30)
        run(["runc", f"--root={self.runc_root}", "delete", cid])
        self.record("conmon + runc", "exited", time.perf_counter() - t0)
        sync_parent.close()
        start_parent.close()

    def runc_run(self, i: int) -> None:
        cid = f"bench-runc-{i}"
        t0 = time.perf_counter()
        run(["runc", f"--root={self.runc_root}", "run", "-d", "--bundle", str(self.bundle), cid])
        self.record("runc run", "running", time.perf_counter() - t0)
        with contextlib.suppress(subprocess.CalledProcessError):
            run(["runc", f"--root={self.runc_root}", "delete", "-f", cid])
        t0 = time.perf_counter()
        run(["runc", f"--root={self.runc_root}", "run", "--bundle", str(self.bundle), cid + "f"])
        self.record("runc run", "exited", time.perf_counter() - t0)

    def podman_start(self, net: str) -> None:
        ctr, peer = self.podman_ctr[net], f"podman start{net}"
        t0 = time.perf_counter()
        run([*self.podman, "start", ctr])
        self.record(peer, "running", time.perf_counter() - t0)
        run([*self.podman, "wait", ctr])
        t0 = time.perf_counter()
        run([*self.podman, "start", "-a", ctr])
        self.record(peer, "exited", time.perf_counter() - t0)

    def podman_run_rm(self, net: str) -> None:
        t0 = time.perf_counter()
        run([*self.podman, "run", "--rm", *ULIMITS, *NETWORKS[net], "localhost/bench-busybox",
             "/bin/true"])  # fmt: skip
        self.record(f"podman run --rm{net}", "exited", time.perf_counter() - t0)

    # -- the run --------------------------------------------------------------------------------
    def main(self) -> None:
        self.setup()
        peers: list[Callable[[int], None]] = [
            lambda i: self.gantry_api(),
            lambda i: self.gantry_api(bridge=True),
            lambda i: self.gantry_cli(),
            self.conmon_runc,
            self.runc_run,
            lambda i: self.podman_start(""),
            lambda i: self.podman_run_rm(""),
            lambda i: self.podman_start(NO_NET),
            lambda i: self.podman_run_rm(NO_NET),
        ]
        for peer in peers:  # one warm-up round (page cache, first-use costs)
            peer(-1)
        self.results.clear()
        for i in range(self.rounds):
            for peer in peers:
                peer(i)
        self.report()

    def report(self) -> None:
        def med(peer: str, what: str) -> float | None:
            values = self.results.get(peer, {}).get(what)
            return statistics.median(values) if values else None

        print(f"\nbench/start: /bin/true in busybox, medians of {self.rounds} rounds, ms\n")
        print(f"{'peer':<28}{'start->running':>16}{'start->exited':>16}")
        for peer in self.results:
            cells = []
            for what in ("running", "exited"):
                value = med(peer, what)
                cells.append(f"{value:>16.1f}" if value is not None else f"{'-':>16}")
            print(f"{peer:<28}{''.join(cells)}")
        print()
        for what in ("running", "exited"):
            g, base = med("gantry (API)", what), med("conmon + runc", what)
            if g and base:
                print(f"{what:>8}: gantry / (conmon + runc)      = {g / base:.2f}  (target <= 1.5)")
            for net in NETWORKS:
                pod = med(f"podman start{net}", what)
                if g and pod:
                    print(
                        f"{what:>8}: gantry / podman start{net:<9} = {g / pod:.2f}  (target <= 0.3)"
                    )
                rm = med(f"podman run --rm{net}", "exited")
                if what == "exited" and g and rm:
                    print(f"{what:>8}: gantry / podman run --rm{net:<6} = {g / rm:.2f}")
        for what in ("running", "exited"):
            g, br, pod = med("gantry (API)", what), med(BRIDGE, what), med("podman start", what)
            if g and br:
                print(f"{what:>8}: gantry bridge / gantry none   = {br / g:.2f}  (target <= 1.5)")
            if br and pod:
                print(f"{what:>8}: gantry bridge / podman start  = {br / pod:.2f}  (target < 1)")
        rr = med("runc run", "exited")
        for net in NETWORKS:
            rm = med(f"podman run --rm{net}", "exited")
            if rr and rm:
                print(f"podman run --rm{net} / runc run = {rm / rr:.1f}x (the issue: about 13x)")

    def cleanup(self) -> None:
        self.engine.stopping.set()
        containers = self.engine.get(Lifecycle).containers  # removes stop what runs
        for record in containers.list():
            with contextlib.suppress(Exception):
                containers.remove(record.id, force=True)
        with contextlib.suppress(Exception):
            run([*self.podman, "rm", "-af"])
            run([*self.podman, "rmi", "-af"])
        for state in self.runc_root.glob("*") if self.runc_root.exists() else []:
            subprocess.run(["runc", f"--root={self.runc_root}", "delete", "-f", state.name],
                           capture_output=True)  # fmt: skip
        subprocess.run(["umount", "-R", str(self.tmp / "podman")], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def bench_main(make: Callable[[int], Any], doc: str, name: str) -> None:
    """A bench's command line: --rounds, root only, cleanup() whatever happens."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"bench/{name} needs root (runc, conmon, overlay mounts)")
    bench = make(max(1, args.rounds))
    try:
        bench.main()
    finally:
        bench.cleanup()


def main() -> None:
    bench_main(Bench, __doc__ or "", "start")


if __name__ == "__main__":
    main()
