"""The engine killed mid-extraction (docs/security.md G2): the partial layer is never
referenced, the next start (worker or CLI) sweeps it, and a re-pull works. Work another live
process holds is never swept."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api.base import Context
from engine.core import Engine
from engine.images.store import Store
from engine.rpc.dispatch import run_startup
from tests.engine.hostile import Hostile, Reply
from tests.engine.ocibuild import File, sha, tar_bytes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def evil() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.stop()


def cli(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--root", str(root), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GANTRY_CONFIG": "/nonexistent"},
    )


def partial_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root / "tmp"))


def serve_stalling_image(evil: Hostile) -> tuple[dict[str, Any], threading.Event]:
    """An image whose only layer stops after 60% until ``release`` is set."""
    tar = tar_bytes([File(f"dir{i % 20}/file{i}", os.urandom(2000)) for i in range(1500)])
    parts = evil.serve_image(tar=tar)
    blob = gzip.compress(tar, mtime=0)
    assert blob == parts["blob"]
    release = threading.Event()

    def stall(req: Any) -> Reply:
        if release.is_set():
            return Reply(body=blob)
        sent = int(len(blob) * 0.6)
        req.send_response(200)
        req.send_header("Content-Length", str(len(blob)))
        req.end_headers()
        req.wfile.write(blob[:sent])
        req.wfile.flush()
        release.wait(60)
        raise ConnectionResetError  # drop the connection without a reply

    evil.routes[f"/v2/evil/image/blobs/{sha(blob)}"] = stall
    return parts, release


def kill_mid_extraction(root: Path, ref: str) -> None:
    proc = cli(root, "pull", "--tls-verify=false", ref)
    deadline = time.monotonic() + 30
    while partial_files(root) < 50:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the pull never started extracting"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.communicate()


@pytest.fixture
def stalling(evil: Hostile) -> Iterator[tuple[Hostile, threading.Event]]:
    _, release = serve_stalling_image(evil)
    yield evil, release
    release.set()


def test_a_killed_pull_is_swept_by_the_next_cli_run_and_repulled(
    tmp_root: Path, stalling: tuple[Hostile, threading.Event]
) -> None:
    evil, release = stalling
    kill_mid_extraction(tmp_root, evil.ref())
    assert partial_files(tmp_root) >= 50
    assert list((tmp_root / "layers").iterdir()) == []
    assert list((tmp_root / "images").iterdir()) == []
    release.set()
    done = cli(tmp_root, "pull", "--tls-verify=false", evil.ref())
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert list((tmp_root / "tmp").iterdir()) == []
    assert len(list((tmp_root / "images").iterdir())) == 1


def test_a_killed_pull_is_swept_at_worker_start(
    tmp_root: Path, engine: Engine, stalling: tuple[Hostile, threading.Event]
) -> None:
    evil, _ = stalling
    kill_mid_extraction(tmp_root, evil.ref())
    held = Engine(engine.config).get(Store).tmp_dir("live")  # another process's live work
    (held / "x").write_text("in progress")
    run_startup(Context(engine))
    assert [p.name for p in (tmp_root / "tmp").iterdir()] == [held.name]
    assert (held / "x").read_text() == "in progress"
