"""diff: podman diff's A/C/D, read from the overlay dirs, and which layer an entry comes from."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from engine.api.containers import changes
from engine.core import Engine
from engine.files.explorer import Files
from engine.storage.containers import Containers
from engine.storage.diff import UPPER, LayerView, attribute
from engine.storage.records import ContainerRecord, CreateOptions
from tests.engine.storagetools import containers, ctr, files, image, needs_overlay
from tests.imagetools import Dir, Whiteout, make_image
from tests.skips import requires

__all__ = ["containers", "ctr", "files", "image"]
pytestmark = needs_overlay


def lines(engine: Engine, record: ContainerRecord) -> list[str]:
    return [c.line() for c in changes(engine, record)]


def test_it_reports_what_podman_diff_reports(
    ctr: ContainerRecord, containers: Containers, engine: Engine
) -> None:
    assert lines(engine, ctr) == []
    m = containers.mount(ctr.id)
    (m / "test").touch()
    (m / "etc" / "newf").touch()
    (m / "bin" / "ls").unlink()
    (m / "a" / "b").mkdir(parents=True)
    with open(m / "etc" / "passwd", "a") as f:
        f.write("x:x:5:5::/:/bin/sh\n")
    assert lines(engine, ctr) == [
        "A /a",
        "A /a/b",
        "C /bin",
        "D /bin/ls",
        "C /etc",
        "A /etc/newf",
        "C /etc/passwd",
        "A /test",
    ]


def test_the_engines_own_mount_points_are_not_the_containers_changes(
    ctr: ContainerRecord, containers: Containers, engine: Engine
) -> None:
    """runc leaves empty files where /etc/hostname and /etc/hosts are bound; podman diff does
    not list them. A hosts file the container really wrote is listed."""
    m = containers.mount(ctr.id)
    assert not (m / "etc" / "hosts").exists()
    (m / "etc" / "hosts").touch()  # what runc leaves
    assert lines(engine, ctr) == ["C /etc"]
    (m / "etc" / "hosts").write_text("10.0.0.1 mine\n")
    assert lines(engine, ctr) == ["C /etc", "A /etc/hosts"]


def test_a_copied_up_directory_alone_is_no_change(containers: Containers, engine: Engine) -> None:
    make_image(engine, [{"/a": Dir(), "/a/b": Dir(), "/a/b/f": "x"}], name="localhost/t:1")
    record = containers.create(CreateOptions(), "localhost/t:1")
    m = containers.mount(record.id)
    os.chmod(m / "a" / "b" / "f", 0o600)  # copies up /a and /a/b, changing neither
    assert lines(engine, record) == ["C /a/b/f"]


def test_whiteouts_in_image_layers_count(containers: Containers, engine: Engine) -> None:
    make_image(
        engine,
        [
            {"/x": "1", "/d": Dir(), "/d/old": "o"},
            {"/x": Whiteout(), "/d": Dir(opaque=True), "/d/new": "n"},
        ],
        name="localhost/wh:1",
    )
    record = containers.create(CreateOptions(), "localhost/wh:1")
    m = containers.mount(record.id)
    assert not (m / "x").exists() and not (m / "d" / "old").exists()
    (m / "x").write_text("again")  # deleted by the image: the container adds it back
    assert lines(engine, record) == ["A /x"]


def test_it_names_the_layer_of_each_entry(
    containers: Containers, engine: Engine, files: Files
) -> None:
    make_image(
        engine,
        [{"/etc": Dir(), "/etc/base": "0", "/etc/both": "0"}, {"/etc": Dir(), "/etc/both": "1"}],
        name="localhost/two:1",
    )
    record = containers.create(CreateOptions(), "localhost/two:1")
    m = containers.mount(record.id)
    (m / "etc" / "mine").touch()
    (m / "etc" / "base").unlink()
    layers = files.layers(record)
    with LayerView(layers) as view:
        attr = attribute(view, "/etc")
    assert attr.source("both")[0] == "1"
    assert attr.source("mine")[0] == UPPER
    assert attr.source("base") == ("", -1)
    assert attr.deleted() == ["base"]
    listing = {e["name"]: e for e in files.list_dir(record, "/etc")["entries"]}
    assert listing["both"]["layer"] == "1" and listing["both"]["change"] == ""
    assert listing["mine"]["layer"] == UPPER and listing["mine"]["change"] == "A"
    assert listing["base"]["type"] == "deleted" and listing["base"]["change"] == "D"


def test_a_symlink_in_the_upper_dir_is_not_followed(
    ctr: ContainerRecord, containers: Containers, engine: Engine, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    m = containers.mount(ctr.id)
    (m / "link").symlink_to(outside)
    assert "A /link" in lines(engine, ctr)
    assert not any("/link/" in line for line in lines(engine, ctr))


PODMAN = shutil.which("podman")


@requires(PODMAN is not None, "podman is the oracle for diff output")
@pytest.mark.timeout(120)
def test_it_agrees_with_podman_diff(
    ctr: ContainerRecord, containers: Containers, engine: Engine
) -> None:
    """The same changes in a podman container (private --root) and in ours."""
    ops = ["touch /test", "touch /etc/newf", "rm /bin/ls", "mkdir -p /a/b", "echo x >> /etc/passwd"]
    base = Path(tempfile.mkdtemp(prefix="gantry-podman-"))
    podman = [
        str(PODMAN), "--root", str(base / "root"), "--runroot", str(base / "run"),
        "--tmpdir", str(base / "tmp"),  # libpod's state too: /run/libpod is shared otherwise
        "--storage-driver", "overlay", "--runtime", "runc",
    ]  # fmt: skip
    try:
        merged = containers.mount(ctr.id)
        with tarfile.open(base / "rootfs.tar", "w") as tar:
            tar.add(containers.paths(ctr.id).merged, arcname=".")
        subprocess.run([*podman, "import", str(base / "rootfs.tar"), "localhost/bb:1"],
                       check=True, capture_output=True)  # fmt: skip
        # Not "c": podman diff takes an image too, and "c" is a prefix of one image id in 16
        # (the imported one's), whose diff lists every file as added. A name, and `container`.
        subprocess.run([*podman, "create", "--name", "oracle", "localhost/bb:1", "sh"],
                       check=True, capture_output=True)  # fmt: skip
        pm = Path(subprocess.run([*podman, "mount", "oracle"], check=True, capture_output=True,
                                 text=True).stdout.strip())  # fmt: skip
        for root in (pm, merged):
            for op in ops:
                subprocess.run(
                    ["/bin/busybox", "chroot", str(root), "/bin/sh", "-c", op], check=True
                )
        theirs = subprocess.run(
            [*podman, "container", "diff", "oracle"], check=True, capture_output=True, text=True
        )
        subprocess.run([*podman, "unmount", "oracle"], capture_output=True)
        assert sorted(lines(engine, ctr)) == sorted(theirs.stdout.split("\n")[:-1])
    finally:
        subprocess.run([*podman, "rm", "-af"], capture_output=True)
        subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
