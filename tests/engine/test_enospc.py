"""A full disk (issue 25's fault matrix): the state root on a small tmpfs made for the test,
filled by a pull and by an upload. Each fails with a clear error; no half-written layer,
image, file or temp file is left; and the engine works again once there is room."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import EngineError
from engine.files.transfer import Transfers
from engine.images.service import Images
from engine.images.store import Store
from engine.storage.containers import Containers
from engine.storage.records import CreateOptions
from tests.engine.storagetools import needs_overlay
from tests.imagetools import busybox_image
from tests.registry import PushedImages, Registry
from tests.skips import requires

pytestmark = [pytest.mark.privileged, requires(os.geteuid() == 0, "mounts a tmpfs")]


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, unmounted at the end whatever happened."""
    top = tmp_path / "small"
    top.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(top)], check=True
    )
    try:
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top)], check=False)


def engine_on(root: Path) -> Engine:
    engine = Engine(EngineConfig(root=root, node="enospc"))
    engine.ensure_root()
    return engine


def leftovers(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def fill(path: Path, leave: int) -> None:
    """Fill the filesystem of ``path`` until ``leave`` bytes are free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    (path / "ballast").write_bytes(b"\0" * max(0, free - leave))


def test_a_pull_that_fills_the_disk_fails_clearly_and_leaves_nothing(
    small: Path, registry: Registry, pushed_images: PushedImages
) -> None:
    engine = engine_on(small / "root")
    fill(small, 1024 * 1024)  # 1 MiB free: busybox alone is about 2
    with pytest.raises(EngineError) as err:
        engine.get(Images).pull(registry.ref(PushedImages.OCI), tls_verify=False)
    assert "no space left on the device" in err.value.message, err.value.message
    store = engine.get(Store)
    assert store.list_images() == []
    assert list((small / "root" / "layers").iterdir()) == []  # no half-written layer
    assert leftovers(small / "root") == []
    (small / "ballast").unlink()
    image = engine.get(Images).pull(registry.ref(PushedImages.OCI), tls_verify=False)
    assert image.id == pushed_images.built["oci"].config_digest  # room again: it pulls


@needs_overlay
def test_an_upload_that_fills_the_disk_fails_clearly_and_leaves_nothing(small: Path) -> None:
    engine = engine_on(small / "root")
    busybox_image(engine)
    containers = engine.get(Containers)
    record = containers.create(CreateOptions(), "localhost/busybox:latest", "full")
    transfers = engine.get(Transfers)
    try:
        fill(small, 256 * 1024)
        size = 1024 * 1024
        begun = transfers.upload_begin(record, "/big", size, user="ann")
        with pytest.raises(EngineError) as err:
            for offset in range(0, size, 65536):
                transfers.upload_chunk(begun["upload"], offset, b"x" * 65536, user="ann")
            transfers.upload_commit(begun["upload"], user="ann")
        assert "no space left on the device" in err.value.message, err.value.message
        upper = containers.paths(record.id).upper
        assert sorted(p.name for p in upper.iterdir()) == []  # no /big, no temp file
        (small / "ballast").unlink()
        again = transfers.upload_begin(record, "/small", 5, user="ann")
        transfers.upload_chunk(again["upload"], 0, b"hello", user="ann")
        transfers.upload_commit(again["upload"], user="ann")
        assert (upper / "small").read_bytes() == b"hello"
    finally:
        containers.unmount_all(record.id)
