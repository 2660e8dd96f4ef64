"""The runtime's CLI verbs, podman's words and exit statuses: start, ps -a --format json,
inspect, logs [-t], exec (exit status passed through), pause/unpause, stop -t, kill -s,
restart, rm -f. No worker runs: every verb syncs the state from files by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.core import Engine
from engine.runtime.liveness import exit_dir
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, create, wait_until
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]


def cli(engine: Engine, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--root", str(engine.config.root), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def ps(engine: Engine, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    code, out, _ = cli(engine, capsys, "ps", "-a", "--format", "json")
    assert code == 0
    return {row["Names"][0]: row for row in json.loads(out)}


def test_the_cli_drives_a_container_through_its_life(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("GANTRY_CONFIG", str(tmp_path / "none.json"))
    engine.ensure_root()
    busybox_image(engine)
    script = "trap 'echo term; exit 9' TERM; echo hello; while true; do sleep 0.05; done"
    create(engine, ["sh", "-c", script], name="web")
    create(engine, ["sh", "-c", "echo quick; exit 3"], name="quick")

    assert cli(engine, capsys, "start", "web", "quick")[:2] == (0, "web\nquick\n")
    wait_until(lambda: ps(engine, capsys)["quick"]["State"] == "exited")  # no worker: ps syncs
    rows = ps(engine, capsys)
    assert rows["quick"]["ExitCode"] == 3 and str(rows["quick"]["Status"]).startswith("Exited (3)")
    assert rows["web"]["State"] == "running" and str(rows["web"]["Status"]).startswith("Up ")
    assert int(rows["web"]["Pid"]) > 0 and int(rows["web"]["StartedAt"]) > 0  # type: ignore[call-overload]
    code, out, _ = cli(engine, capsys, "inspect", "web")
    state = json.loads(out)[0]["State"]
    assert state["Status"] == "running" and state["Pid"] == rows["web"]["Pid"]

    wait_until(lambda: cli(engine, capsys, "logs", "web")[1] == "hello\n")
    code, out, _ = cli(engine, capsys, "logs", "-t", "web")
    assert code == 0 and out.endswith(" hello\n") and out[:4].isdigit()
    assert cli(engine, capsys, "exec", "web", "sh", "-c", "echo in; exit 4")[:2] == (4, "in\n")
    code, _, err = cli(engine, capsys, "exec", "web", "/no/such")
    assert code == 127 and "/no/such" in err
    assert cli(engine, capsys, "exec", "quick", "true")[0] != 0  # not running

    assert cli(engine, capsys, "pause", "web")[0] == 0
    assert ps(engine, capsys)["web"]["Status"] == "Paused"
    assert cli(engine, capsys, "unpause", "web")[0] == 0
    code, _, err = cli(engine, capsys, "kill", "-s", "NOPE", "web")
    assert code != 0 and "NOPE" in err
    started = time.monotonic()
    assert cli(engine, capsys, "stop", "-t", "5", "web")[0] == 0
    assert time.monotonic() - started < 5
    assert ps(engine, capsys)["web"]["ExitCode"] == 9
    assert "term" in cli(engine, capsys, "logs", "web")[1]

    assert cli(engine, capsys, "restart", "web")[0] == 0
    assert ps(engine, capsys)["web"]["State"] == "running"
    code, out, _ = cli(engine, capsys, "top", "web")
    assert code == 0 and "sh -c" in out
    code, _, err = cli(engine, capsys, "rm", "web")
    assert code != 0 and "stop it first" in err
    assert cli(engine, capsys, "rm", "-f", "web", "quick")[0] == 0
    assert ps(engine, capsys) == {}


def test_logs_follow_until_the_container_ends(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    monkeypatch.setenv("GANTRY_CONFIG", str(tmp_path / "none.json"))
    engine.ensure_root()
    busybox_image(engine)
    create(engine, ["sh", "-c", "echo a; echo oops >&2; sleep 0.8; echo b; exit 2"], name="f")
    assert cli(engine, capsys, "start", "f")[0] == 0
    started = time.monotonic()
    # the container's stderr goes to ours, as with podman logs
    assert cli(engine, capsys, "logs", "-f", "f") == (0, "a\nb\n", "oops\n")
    assert cli(engine, capsys, "logs", "--tail", "1", "f") == (0, "b\n", "")
    assert cli(engine, capsys, "logs", "-n", "2", "f") == (0, "b\n", "oops\n")
    assert 0.3 < time.monotonic() - started < 10
    assert ps(engine, capsys)["f"]["ExitCode"] == 2
    assert cli(engine, capsys, "rm", "f")[0] == 0


def ps_in_a_new_process(engine: Engine) -> tuple[dict[str, str], set[str]]:
    """``ps -a`` as the shell runs it (a new process): each name's STATUS, and the modules
    that process imported."""
    argv = ["--root", str(engine.config.root), "ps", "-a", "--format", "json"]
    code = (
        "import contextlib, io, json, sys\n"
        "from engine.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    assert main({argv!r}) == 0\n"
        "print(json.dumps([json.loads(out.getvalue()), sorted(sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "GANTRY_CONFIG": "/none"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows, modules = json.loads(done.stdout)
    return {row["Names"][0]: row["Status"] for row in rows}, set(modules)


def test_ps_builds_the_runtime_only_for_a_record_that_must_change(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A new ``ps`` lists running containers whose records are up to date from the records
    alone; a container that exited since its last sync has it synced (exit code and all)."""
    monkeypatch.setenv("GANTRY_CONFIG", str(tmp_path / "none.json"))
    engine.ensure_root()
    busybox_image(engine)
    loop = "while true; do sleep 0.05; done"
    create(engine, ["sh", "-c", loop], name="up")
    soon = create(engine, ["sh", "-c", f"trap 'exit 5' USR1; {loop}"], name="soon")
    try:
        assert cli(engine, capsys, "start", "up", "soon")[0] == 0
        wait_until(lambda: ps(engine, capsys)["soon"]["State"] == "running")  # synced, noted
        status, modules = ps_in_a_new_process(engine)
        assert status["up"].startswith("Up ") and status["soon"].startswith("Up "), status
        assert "engine.runtime.lifecycle" not in modules

        os.kill(int(ps(engine, capsys)["soon"]["Pid"]), signal.SIGUSR1)  # type: ignore[call-overload]
        wait_until(lambda: (exit_dir(engine.config.root) / soon.id).exists())
        status, modules = ps_in_a_new_process(engine)
        assert status["soon"].startswith("Exited (5)") and status["up"].startswith("Up ")
        assert "engine.runtime.lifecycle" in modules
    finally:
        cli(engine, capsys, "rm", "-f", "up", "soon")
