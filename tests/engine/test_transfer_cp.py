"""cp through a container's volumes (podman cp reads and writes the host directory mounted
there) and cp with "-" (a tar stream on stdout; a tar on stdin is refused)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import InvalidInputError, NotFoundError, PolicyError
from engine.files.transfer import cp, cp_to_tar
from engine.images.store import ImageRecord
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from engine.storage.volumes import parse_volume
from tests.engine.storagetools import containers, image, needs_overlay, snapshot, victim
from tests.imagetools import busybox_image

__all__ = ["containers", "image", "victim"]
pytestmark = needs_overlay
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def vol(tmp_path: Path) -> Path:
    """The volume's host directory (under the engine fixture's allowlist)."""
    v = tmp_path / "volumes" / "data"
    v.mkdir(parents=True)
    (v / "on").write_text("on\n")
    return v


def _create(containers: Containers, *volumes: str) -> ContainerRecord:
    options = CreateOptions(volumes=[parse_volume(v) for v in volumes])
    return containers.create(options, "localhost/busybox:latest", "vc")


def test_it_copies_into_and_out_of_a_volume(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, tmp_path: Path
) -> None:
    ctr = _create(containers, f"{vol}:/mnt")
    host = tmp_path / "host"
    (host / "d" / "sub").mkdir(parents=True)
    (host / "d" / "sub" / "f").write_text("f\n")
    (host / "g").write_text("g\n")
    cp(engine, ctr, str(host / "g"), "/mnt/", into_container=True)
    cp(engine, ctr, str(host / "g"), "/mnt/./x/../renamed", into_container=True)
    cp(engine, ctr, str(host / "d"), "/mnt", into_container=True)
    assert (vol / "g").read_text() == "g\n" and (vol / "renamed").read_text() == "g\n"
    assert (vol / "d" / "sub" / "f").read_text() == "f\n"
    merged = containers.mount(ctr.id)
    assert not (merged / "mnt" / "g").exists(), "nothing lands under the mount point"
    containers.unmount(ctr.id)
    out = tmp_path / "out"
    out.mkdir()
    cp(engine, ctr, "/mnt", str(out), into_container=False)  # the volume, named as in there
    cp(engine, ctr, "/mnt/on", str(out / "on.copy"), into_container=False)
    cp(engine, ctr, "/mnt/.", str(out / "contents"), into_container=False)
    assert (out / "mnt" / "on").read_text() == "on\n"
    assert (out / "mnt" / "d" / "sub" / "f").read_text() == "f\n"
    assert (out / "on.copy").read_text() == "on\n"
    assert sorted(os.listdir(out / "contents")) == ["d", "g", "on", "renamed"]


def test_it_takes_the_longest_volume_and_a_directory_named_like_it(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, tmp_path: Path
) -> None:
    inner = tmp_path / "volumes" / "inner"
    inner.mkdir()
    ctr = _create(containers, f"{vol}:/mnt", f"{inner}:/mnt/deep/in")
    (tmp_path / "f").write_text("f\n")
    cp(engine, ctr, str(tmp_path / "f"), "/mnt/deep/in/", into_container=True)
    assert (inner / "f").exists() and not (vol / "deep").exists()
    src = tmp_path / "src" / "mnt"
    src.mkdir(parents=True)
    (src / "new").write_text("new\n")
    mode = vol.stat().st_mode
    cp(engine, ctr, str(src), "/", into_container=True)  # "/" + "mnt" is the volume itself
    assert (vol / "new").read_text() == "new\n" and vol.stat().st_mode == mode


def test_it_resolves_volume_paths_inside_the_volume(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, victim: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    before = snapshot(victim)
    ctr = _create(containers, f"{vol}:/mnt")
    os.symlink(str(victim), vol / "abs")  # host paths mean nothing inside the volume
    os.symlink("../../../../../../../../victim", vol / "rel")
    (tmp_path / "evil").write_text("evil\n")
    for dst in ("/mnt/abs/secret", "/mnt/rel/secret", "/mnt/../../../victim/secret"):
        with pytest.raises(NotFoundError):  # no such directory: not the host's victim/
            cp(engine, ctr, str(tmp_path / "evil"), dst, into_container=True)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotFoundError):
        cp(engine, ctr, "/mnt/abs/secret", str(out / "s"), into_container=False)
    assert snapshot(victim) == before
    assert not (out / "s").exists()
    (vol / "sub").mkdir()
    os.symlink("/sub", vol / "inlink")  # absolute, from the volume's own root
    cp(engine, ctr, str(tmp_path / "evil"), "/mnt/inlink/", into_container=True)
    assert (vol / "sub" / "evil").read_text() == "evil\n"


def test_it_refuses_to_write_a_read_only_volume(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, tmp_path: Path
) -> None:
    ctr = _create(containers, f"{vol}:/mnt:ro")
    (tmp_path / "f").write_text("f\n")
    with pytest.raises(PolicyError, match="read-only volume"):
        cp(engine, ctr, str(tmp_path / "f"), "/mnt/", into_container=True)
    with pytest.raises(PolicyError, match="read-only volume"):
        cp(engine, ctr, str(tmp_path / "f"), "/mnt/sub/../new", into_container=True)
    assert sorted(os.listdir(vol)) == ["on"]
    cp(engine, ctr, "/mnt/on", str(tmp_path / "on"), into_container=False)  # reading is fine
    assert (tmp_path / "on").read_text() == "on\n"


def test_it_reads_a_file_volume_and_will_not_replace_it(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, tmp_path: Path
) -> None:
    ctr = _create(containers, f"{vol}/on:/etc/on.conf")
    cp(engine, ctr, "/etc/on.conf", str(tmp_path / "got"), into_container=False)
    assert (tmp_path / "got").read_text() == "on\n"
    (tmp_path / "f").write_text("f\n")
    with pytest.raises(InvalidInputError, match="single-file volume"):
        cp(engine, ctr, str(tmp_path / "f"), "/etc/on.conf", into_container=True)
    assert (vol / "on").read_text() == "on\n"


def test_it_refuses_a_volume_source_swapped_for_a_symlink(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path, victim: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    ctr = _create(containers, f"{vol}:/mnt")
    vol.rename(tmp_path / "volumes" / "moved")
    os.symlink(str(victim), vol)
    with pytest.raises(PolicyError, match="symlink"):
        cp(engine, ctr, "/mnt/secret", str(tmp_path / "s"), into_container=False)
    assert not (tmp_path / "s").exists()


def test_it_writes_a_tar_of_a_container_path(
    containers: Containers, image: ImageRecord, engine: Engine, vol: Path
) -> None:
    ctr = _create(containers, f"{vol}:/mnt")
    out = io.BytesIO()
    cp_to_tar(engine, ctr, "/etc", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.extractfile("etc/passwd").read().startswith(b"root:")  # type: ignore[union-attr]
    out = io.BytesIO()
    cp_to_tar(engine, ctr, "/mnt/on", out)
    assert len(out.getvalue()) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getnames() == ["on"]
        assert tar.extractfile("on").read() == b"on\n"  # type: ignore[union-attr]
    out = io.BytesIO()
    cp_to_tar(engine, ctr, "/bin/ls", out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        [link] = tar.getmembers()
        assert link.issym() and link.linkname == "busybox"


@pytest.fixture
def cli(tmp_path: Path, vol: Path):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"volume_allowlist": [str(tmp_path / "volumes")]}))
    busybox_image(Engine(EngineConfig(root=root)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "engine", "--root", str(root), *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=60,
            env={
                "PATH": os.environ["PATH"],
                "GANTRY_CONFIG": str(config),
                "PYTHONPATH": str(REPO),
            },
        )

    yield run, cwd
    for line in run("ps", "-a", "-q").stdout.split():
        run("rm", "-f", line.decode())


def test_it_streams_a_tar_with_dash_and_refuses_one_on_stdin(cli, vol: Path) -> None:
    run, cwd = cli
    assert run("create", "--name", "c", "-v", f"{vol}:/mnt", "busybox").returncode == 0
    out = run("cp", "c:/etc/passwd", "-")
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        assert tar.extractfile("passwd").read().startswith(b"root:")  # type: ignore[union-attr]
    out = run("cp", "c:/mnt", "-")
    assert out.returncode == 0, out.stderr
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        assert tar.extractfile("mnt/on").read() == b"on\n"  # type: ignore[union-attr]
    tar_in = io.BytesIO()
    with tarfile.open(fileobj=tar_in, mode="w") as tar:
        info = tarfile.TarInfo("x")
        tar.addfile(info, io.BytesIO(b""))
    out = run("cp", "-", "c:/tmp", stdin=tar_in.getvalue())
    assert out.returncode == 125
    assert out.stderr.decode().count("\n") == 1 and "stdin" in out.stderr.decode()
    assert os.listdir(cwd) == [], "never a host file named -"
