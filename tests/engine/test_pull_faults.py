"""Pulls and faults (issue 25's matrix): a registry killed in the middle of a blob fails the
pull with a clear error within its timeout, its job says so, and no layer, image or temp file
is left; a pull whose engine was killed is a failed job for the next engine."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from engine.api.base import Context
from engine.api.images import recover_pulls
from engine.core import Engine
from engine.errors import EngineError
from engine.events import RecordingPublisher
from engine.images.pull import PullJob
from engine.images.service import Images
from engine.images.store import Store
from tests.engine.ocibuild import Dir, File, Layout
from tests.engine.runtools import wait_until
from tests.registry import PushedImages, Registry, start_registry

BIG = 24 * 1024 * 1024  # incompressible: the blob is as big, far more than socket buffers hold


def test_a_registry_killed_mid_blob_fails_the_pull_and_leaves_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    registry = start_registry(tmp_path / "registry", tmp_path / "registry" / "storage")
    try:
        layout = Layout(tmp_path / "oci")
        layout.image(
            [[Dir("data"), File("data/big", os.urandom(BIG))]], tag="big", compression="tar"
        )
        registry.push(layout.path, "big", "test/big:1")
        job = PullJob(registry.ref("test/big:1"))
        midway, killed = threading.Event(), threading.Event()

        def progress(seen: PullJob, force: bool) -> None:
            """Hold the pull, part of the way into its blob, until the registry is gone."""
            if not midway.is_set() and any(layer.done > 1024 * 1024 for layer in seen.layers):
                midway.set()
                killed.wait(30)

        failed: list[EngineError] = []

        def pull() -> None:
            try:
                engine.get(Images).pull(job.ref, tls_verify=False, progress=progress, job=job)
            except EngineError as err:
                failed.append(err)

        puller = threading.Thread(target=pull)
        puller.start()
        assert midway.wait(60), "the pull never got into its blob"
        registry.proc.kill()
        registry.proc.wait(10)
        killed.set()
        puller.join(120)
        assert not puller.is_alive(), "the pull hung after its registry died"
    finally:
        registry.stop()
    assert len(failed) == 1, "the pull did not fail"
    print(failed[0].message)
    assert job.state == "error" and job.error
    store = engine.get(Store)
    assert store.list_images() == []
    root = engine.config.root
    assert list((root / "layers").iterdir()) == []  # no half-written layer
    assert list((root / "tmp").iterdir()) == []


def test_a_pull_the_engine_was_killed_in_says_it_failed(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    """A background pull is written down while it runs (and forgotten when it ends); the
    pulls a killed engine left written down are failed jobs for the next one, so a page shows
    'interrupted' rather than a card that never moves or vanishes."""
    images = engine.get(Images)
    done = images.start_pull(registry.ref(PushedImages.OCI), tls_verify=False)
    deadline = time.monotonic() + 60
    while done.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ledger = engine.config.root / "pulls"
    wait_until(lambda: list(ledger.iterdir()) == [])  # an ended pull is not written down

    cut = PullJob(registry.ref("test/never:1"), user="ann")
    images._remember(cut)  # what start_pull writes, then the engine is SIGKILLed
    after = Engine(engine.config)  # the next engine process, on the same state root
    events = RecordingPublisher()
    recover_pulls(Context(after, publisher=events))
    [job] = [j for j in after.get(Images).jobs() if j["job"] == cut.id]
    assert job["state"] == "error" and "interrupted: the engine stopped" in job["error"]
    assert job["user"] == "ann" and job["ref"] == cut.ref
    assert [e["job"] for _, e in events.events if e.get("kind") == "pull"] == [cut.id]
    assert list(ledger.iterdir()) == []


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_pull_that_cannot_be_written_down_still_runs(
    engine: Engine, registry: Registry, pushed_images: PushedImages
) -> None:
    """The ledger is best effort: with <root>/pulls unusable (here a file in its place, as a
    full disk would refuse it), the pull runs and ends as it would have."""
    engine.ensure_root()
    (engine.config.root / "pulls").write_text("not a directory")
    job = engine.get(Images).start_pull(registry.ref(PushedImages.OCI), tls_verify=False)
    wait_until(lambda: not job.running, timeout=60)
    assert job.state == "done", job.error
