"""A registry killed in the middle of a blob (issue 25's fault matrix): the pull fails with a
clear error within its timeout, its job says so, and no layer, image or temp file is left."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from engine.core import Engine
from engine.errors import EngineError
from engine.images.pull import PullJob
from engine.images.service import Images
from engine.images.store import Store
from tests.engine.ocibuild import Dir, File, Layout
from tests.registry import start_registry

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
