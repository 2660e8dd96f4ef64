"""The seed lab word for word: every command a learner types, with `podman` swapped for
`./gantry` and the lab's image reference for the one a test registry serves, typed into an
interactive bash on a terminal, as a person types them. Nothing else is changed; each command
must succeed (or, for the first start, do what the lab says: exit because /mnt/on is missing).

The shell runs in a private mount namespace with a tmpfs on /mnt, so `-v /mnt:/mnt` and
`touch /mnt/on` are the lab's own words without touching this host's /mnt."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.runtools import RUNTIME_REASON, can_run_containers
from tests.registry import Registry, start_registry
from tests.skips import requires
from tests.stack.stackrun import sweep_root

REPO = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("GANTRY_DEMO_DIR") or "/opt/gantry/demo") / "on-off"
pytestmark = [
    requires(can_run_containers(), RUNTIME_REASON),
    requires((DEMO / "index.json").exists(), f"the lab's image ({DEMO}): ./gantry test builds it"),
    requires(Path("/usr/bin/jq").exists(), "jq, as the seed pipes config.json into it"),
    pytest.mark.privileged,
]


class Shell:
    """bash on a pty in a mount namespace of its own; the test types, the shell answers."""

    def __init__(self, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            os.chdir(REPO)
            argv = ["unshare", "--mount", "--propagation", "private", "--",
                    "bash", "--noprofile", "--norc", "-i"]  # fmt: skip
            os.execvpe("unshare", argv, env)  # noqa: S606
        self.pid, self.fd, self.out = pid, fd, b""

    def read(self, wait: float) -> None:
        if select.select([self.fd], [], [], wait)[0]:
            try:
                self.out += os.read(self.fd, 65536)
            except OSError:
                pass

    def wait_for(self, pattern: str, since: int, timeout: float = 60) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern.encode(), self.out[since:])) is None:
            assert time.monotonic() < deadline, f"{pattern!r} not in {self.out[since:][-600:]!r}"
            self.read(0.2)
        return found

    def run(self, line: str, timeout: float = 120) -> tuple[int, str]:
        """Type one command line; its exit status and what it printed."""
        mark = len(self.out)
        os.write(self.fd, f'{line}; echo "__rc=$?"\n'.encode())
        found = self.wait_for(r"__rc=(\d+)", mark, timeout)
        return int(found.group(1)), self.out[mark:].decode(errors="replace")

    def close(self) -> None:
        os.write(self.fd, b"exit\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                os.close(self.fd)
                return
            self.read(0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def lab_registry(tmp_path: Path) -> Iterator[Registry]:
    registry = start_registry(tmp_path / "registry", tmp_path / "registry" / "storage")
    registry.push(DEMO, "latest", "gantry/on-off:latest")
    yield registry
    registry.stop()


@pytest.fixture
def shell(tmp_path: Path, lab_registry: Registry) -> Iterator[Shell]:
    root, config = tmp_path / "root", tmp_path / "engine.json"
    port = lab_registry.host.rsplit(":", 1)[1]
    subprocess.run(  # the first engine.json, as ./gantry run writes it (this registry's port)
        [sys.executable, "-m", "engine", "config", "init", "--registry-port", port],
        cwd=REPO, env={"PATH": os.environ["PATH"], "GANTRY_CONFIG": str(config)},
        check=True, capture_output=True,
    )  # fmt: skip
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "TERM": "xterm",
        "PS1": "seed$ ",
        "GANTRY_ROOT": str(root),
        "GANTRY_CONFIG": str(config),
        "GANTRY_REDIS_URL": f"unix://{tmp_path}/no-stack.sock",  # no stack: the CLI alone
    }
    sh = Shell(env)
    try:
        assert sh.run("mount -t tmpfs seed-mnt /mnt")[0] == 0  # this shell's /mnt only
        yield sh
    finally:
        sh.close()
        sweep_root(root)


def test_the_seed_lab_word_for_word(shell: Shell, lab_registry: Registry) -> None:
    image = lab_registry.ref("gantry/on-off")  # the only change besides podman -> ./gantry

    def ok(line: str) -> str:
        status, out = shell.run(line)
        assert status == 0, f"{line!r} exited {status}:\n{out}"
        return out

    ok(f"./gantry pull {image}")
    ok(f"./gantry create -v /mnt:/mnt --name on-off {image}")
    assert "on-off" in ok("./gantry ps -a")
    merged = ok("./gantry mount on-off")
    assert "/merged" in merged
    ok("cd $(./gantry mount on-off)")
    ok("touch test")
    ok("ls")
    ok("cd -")
    container_id = ok("./gantry ps -l -q --no-trunc")
    assert re.search(r"\b[0-9a-f]{64}\b", container_id)
    ok("./gantry init on-off")
    spec = ok("cat $(./gantry inspect --format '{{.OCIConfigPath}}' on-off) | jq .")
    assert '"ociVersion"' in spec and '"/mnt"' in spec
    assert '"ociVersion"' in ok("./gantry spec show on-off | jq .")

    ok("./gantry start on-off")  # exits at once: /mnt/on does not exist
    ok("sleep 1; until ./gantry ps -a | grep -q Exited; do sleep 0.2; done")  # as a user waits
    assert "Exited (0)" in ok("./gantry ps -a")
    assert "/mnt/on" in ok("./gantry logs on-off")
    ok("touch /mnt/on")
    ok("./gantry start on-off")
    assert "running" in ok("./gantry inspect --format '{{.State.Status}}' on-off")
    assert "Up " in ok("./gantry ps")

    mark = len(shell.out)
    os.write(shell.fd, b'./gantry exec -it on-off bash; echo "__rc=$?"\n')
    shell.wait_for(r"# $", mark)  # root's prompt in the container
    inside = len(shell.out)
    os.write(shell.fd, b"ls\n")
    shell.wait_for(r"\btest\b", inside)
    os.write(shell.fd, b"exit\n")
    assert shell.wait_for(r"__rc=(\d+)", inside).group(1) == b"0"

    ok("./gantry kill on-off")
    ok("./gantry rm on-off")
    assert "on-off" not in ok("./gantry ps -a")
