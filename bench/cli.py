"""bench/cli: the common verbs from the shell, Gantry's `./gantry VERB` (the launcher and a new
Python process each time, as a person types them) beside `podman VERB`, on the same kind of
container (busybox `sleep 600`), in one run, rounds interleaved (this machine is noisy).

    /opt/gantry/venv/bin/python -m bench.cli [--rounds 10]

Each round: start, ps -a, inspect, exec NAME true, logs, stop -t 0 (SIGKILL at once: the
stop itself, not a grace period). Medians in ms, and gantry / podman per verb. podman runs
with a private --root/--runroot, runc, cgroupfs and the house ulimits (bench/start.py).
Targets (issue 17): start <= 0.8x podman start, ps <= 60 ms.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.start import ULIMITS, bench_main, podman_base, run  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from engine.core import Engine  # noqa: E402

VERBS: list[tuple[str, list[str]]] = [  # (row, argv after the command; NAME is the container)
    ("start", ["start", "NAME"]),
    ("ps -a", ["ps", "-a"]),
    ("inspect", ["inspect", "NAME"]),
    ("exec true", ["exec", "NAME", "true"]),
    ("logs", ["logs", "NAME"]),
    ("stop -t 0", ["stop", "-t", "0", "NAME"]),
]
TARGETS = {"start": "<= 0.8x podman", "ps -a": "<= 60 ms"}


class Bench:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.tmp = Path(tempfile.mkdtemp(prefix="gantry-bench-cli-"))
        self.root = self.tmp / "root"
        self.podman = podman_base(self.tmp)
        self.env = dict(
            os.environ, GANTRY_ROOT=str(self.root), GANTRY_CONFIG=str(self.tmp / "none.json")
        )
        self.times: dict[tuple[str, str], list[float]] = {}

    def setup(self) -> None:
        from tests.engine.runtools import busybox_rootfs
        from tests.imagetools import busybox_image

        engine = Engine(EngineConfig(root=self.root, node="bench"))
        engine.ensure_root()
        busybox_image(engine)
        # --network none on both sides: the CLI's own cost (bench.start has the networks)
        run(["./gantry", "create", "--network", "none", "--name", "benchcli",
             "localhost/busybox", "sleep", "600"], cwd=REPO, env=self.env)  # fmt: skip
        rootfs = busybox_rootfs(self.tmp / "rootfs")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run([*self.podman, "import", "-", "localhost/bench-busybox"], stdin=tar.stdout)
        tar.wait()
        run([*self.podman, "create", *ULIMITS, "--network", "none", "--name", "benchcli",
             "localhost/bench-busybox", "sleep", "600"])  # fmt: skip

    def time_one(self, peer: str, row: str, argv: list[str]) -> None:
        t0 = time.perf_counter()
        if peer == "gantry":
            run(["./gantry", *argv], cwd=REPO, env=self.env)
        else:
            run([*self.podman, *argv])
        self.times.setdefault((peer, row), []).append((time.perf_counter() - t0) * 1000)

    def main(self) -> None:
        self.setup()
        for i in range(self.rounds + 1):  # round 0 warms the page cache and is not counted
            for row, words in VERBS:
                argv = [("benchcli" if w == "NAME" else w) for w in words]
                for peer in ("gantry", "podman"):
                    self.time_one(peer, row, argv)
            if i == 0:
                self.times.clear()
        self.report()

    def report(self) -> None:
        print(f"\nbench/cli: medians of {self.rounds} rounds, ms (each a new process)\n")
        print(f"{'verb':<12}{'./gantry':>10}{'podman':>10}{'ratio':>8}  target")
        for row, _ in VERBS:
            g = statistics.median(self.times[("gantry", row)])
            p = statistics.median(self.times[("podman", row)])
            print(f"{row:<12}{g:>10.1f}{p:>10.1f}{g / p:>8.2f}  {TARGETS.get(row, '')}")

    def cleanup(self) -> None:
        subprocess.run(["./gantry", "rm", "-f", "benchcli"], cwd=REPO, env=self.env,
                       capture_output=True)  # fmt: skip
        subprocess.run([*self.podman, "rm", "-f", "benchcli"], capture_output=True)
        subprocess.run([*self.podman, "rmi", "-af"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.tmp / "podman")], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    bench_main(Bench, __doc__ or "", "cli")


if __name__ == "__main__":
    main()
