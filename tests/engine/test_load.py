"""Offline images: load an OCI layout, an oci-archive and a docker-archive (the archives
written by skopeo, a real client), verified like a pull."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.api.base import Context
from engine.core import Engine
from engine.errors import InvalidImageError, PolicyError
from engine.images.service import Images
from engine.images.store import Store
from engine.rpc.dispatch import call
from tests.engine.clitools import engine_cli
from tests.engine.ocibuild import Dir, File, Layout, busybox_layer, tar_bytes


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "myimage")
    lay.image([busybox_layer(), [Dir("etc"), File("etc/motd", "loaded\n")]], tag="v1")
    return lay


def skopeo(*args: str) -> None:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def motd(engine: Engine, image_id: str) -> str:
    store = engine.get(Store)
    top = store.image_layer_dirs(store.get_image(image_id))[-1]
    return (top / "etc/motd").read_text()


def test_it_loads_an_oci_layout_directory(engine: Engine, layout: Layout) -> None:
    (record,) = engine.get(Images).load(layout.path)
    assert record.names == ["localhost/myimage:v1"]
    assert record.source == "oci-layout"
    assert motd(engine, record.id) == "loaded\n"


def test_it_loads_a_docker_archive(engine: Engine, layout: Layout, tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    skopeo("copy", "--quiet", f"oci:{layout.path}:v1", f"docker-archive:{archive}:test/busybox:v1")
    (record,) = engine.get(Images).load(archive)
    assert record.names == ["docker.io/test/busybox:v1"]
    assert record.source == "docker-archive"
    assert motd(engine, record.id) == "loaded\n"


def test_it_loads_an_oci_archive_with_the_cli(
    layout: Layout, tmp_path: Path, tmp_root: Path
) -> None:
    archive = tmp_path / "oci.tar"
    skopeo("copy", "--quiet", f"oci:{layout.path}:v1", f"oci-archive:{archive}:example.com/app:2")
    done = engine_cli(tmp_root, "load", "-i", str(archive), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Loaded image: example.com/app:2"


def test_a_tampered_layout_loads_nothing(engine: Engine, layout: Layout) -> None:
    blobs = sorted((layout.path / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    biggest = blobs[-1]
    data = bytearray(biggest.read_bytes())
    data[100] ^= 0xFF
    biggest.write_bytes(bytes(data))
    with pytest.raises(InvalidImageError):
        engine.get(Images).load(layout.path)
    root = engine.config.root
    for sub in ("images", "layers", "blobs/sha256", "tmp"):
        assert list((root / sub).iterdir()) == [], sub


def test_layout_symlinks_cannot_reach_host_files(engine: Engine, layout: Layout) -> None:
    config = next(p for p in (layout.path / "blobs/sha256").iterdir() if p.stat().st_size < 2000)
    config.unlink()
    os.symlink("/etc/passwd", config)  # resolved inside the layout: no such blob
    with pytest.raises(Exception, match="missing|digest"):
        engine.get(Images).load(layout.path)


def test_rpc_load_only_reads_the_imports_directory(engine: Engine, layout: Layout) -> None:
    with pytest.raises(PolicyError):
        call(Context(engine), "image.load", {"path": str(layout.path)})
    with pytest.raises(PolicyError):
        call(Context(engine), "image.load", {"path": "../../etc"})
    imports = engine.config.root / "imports"
    imports.mkdir()
    os.rename(layout.path, imports / "myimage")
    (entry,) = call(Context(engine), "image.load", {"path": "myimage"})
    assert entry["Names"] == ["localhost/myimage:v1"]


def long_name_record(size: int) -> bytes:
    """A GNU long-name header record of ``size`` bytes ('a's), padded; an entry must follow."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    return header + b"a" * (size - 1) + b"\0" * (1 + -size % 512)


def test_a_layer_with_a_huge_header_record_loads_nothing(engine: Engine, tmp_path: Path) -> None:
    lay = Layout(tmp_path / "hostile")
    hostile = long_name_record(4 * 1024 * 1024) + tar_bytes([File("after", "x")])
    lay.image([busybox_layer(), hostile], tag="v1")
    with pytest.raises(InvalidImageError, match=r"gnu long name \('L'\) of 4194304 bytes"):
        engine.get(Images).load(lay.path)
    root = engine.config.root
    for sub in ("images", "layers", "tmp"):
        assert list((root / sub).iterdir()) == [], sub


def test_an_archive_with_a_huge_header_record_is_refused(engine: Engine, tmp_path: Path) -> None:
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(long_name_record(4 * 1024 * 1024) + tar_bytes([File("manifest.json")]))
    with pytest.raises(InvalidImageError, match=r"header record .* of 4194304 bytes"):
        engine.get(Images).load(archive)
