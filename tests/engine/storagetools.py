"""Fixtures for the storage and explorer tests: a busybox image in the test's store, a created
container (unmounted and removed afterwards, so no mount outlives a test), a sibling "victim"
directory on the host that hostile operations must leave untouched, and the overlay probe."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core import Engine
from engine.files.explorer import Files
from engine.images.store import ImageRecord
from engine.storage import mounts
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from tests.imagetools import busybox_image
from tests.skips import requires


def _probe_overlay() -> bool:
    if os.geteuid() != 0:
        return False
    base = Path(tempfile.mkdtemp(prefix="gantry-ovl-probe-"))
    try:
        for d in ("l", "u", "w", "m"):
            (base / d).mkdir()
        res = subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "-o",
                f"lowerdir={base}/l,upperdir={base}/u,workdir={base}/w",
                "overlay",
                str(base / "m"),
            ],
            capture_output=True,
        )
        if res.returncode != 0:
            return False
        subprocess.run(["umount", str(base / "m")], check=True)
        return True
    finally:
        shutil.rmtree(base, ignore_errors=True)


CAN_OVERLAY = _probe_overlay()
needs_overlay = requires(CAN_OVERLAY, "needs root and overlayfs mounts (probe mount failed)")


@pytest.fixture
def containers(engine: Engine) -> Iterator[Containers]:
    """The service; every container left at the end is unmounted and removed."""
    service = engine.get(Containers)
    yield service
    for record in service.list():
        mounts.unmount(service.paths(record.id).merged)
    for record in service.list():
        shutil.rmtree(service.paths(record.id).root, ignore_errors=True)


@pytest.fixture
def files(engine: Engine) -> Files:
    return engine.get(Files)


@pytest.fixture
def image(engine: Engine) -> ImageRecord:
    return busybox_image(engine)


@pytest.fixture
def ctr(containers: Containers, image: ImageRecord) -> ContainerRecord:
    return containers.create(CreateOptions(), "localhost/busybox:latest", "ctr")


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A host directory next to the state root; asserted byte-for-byte unchanged at the end."""
    v = tmp_path / "victim"
    v.mkdir()
    (v / "secret").write_text("host secret\n")
    (v / "sub").mkdir()
    (v / "sub" / "deep").write_text("deep\n")
    os.chmod(v / "secret", 0o600)
    before = snapshot(v)
    yield v
    assert snapshot(v) == before, "the host victim directory was changed"


def snapshot(path: Path) -> list[tuple[str, int, int, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out.append((str(p.relative_to(path)), st.st_mode, st.st_uid, digest))
    return sorted(out)


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2


def rename_exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically (the racer's tool)."""
    res = _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE)
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount_count_of(containers: Containers, record: ContainerRecord) -> int:
    return containers.load(record.id).mount_count
