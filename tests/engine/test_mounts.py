"""Overlay mounts: podman mount's count, the runtime's own use, the explorer's holds, deep
images past mount(2)'s option limit, recovery after a restart."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.core import Engine
from engine.errors import InvalidStateError, RuntimeFailedError
from engine.files.explorer import Files
from engine.images.store import ImageRecord
from engine.storage import mounts, rootfs
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from tests.engine.storagetools import (
    containers,
    ctr,
    files,
    image,
    mount_count_of,
    needs_overlay,
)
from tests.imagetools import Layer, Whiteout, make_image

__all__ = ["containers", "ctr", "files", "image"]
pytestmark = needs_overlay


def test_it_counts_mounts_like_podman(ctr: ContainerRecord, containers: Containers) -> None:
    merged = containers.mount(ctr.id)
    assert merged == containers.paths(ctr.id).merged
    assert containers.mount(ctr.id) == merged
    assert mount_count_of(containers, ctr) == 2
    assert (merged / "bin" / "busybox").is_file()
    containers.unmount(ctr.id)
    assert containers.is_mounted(ctr.id) and mount_count_of(containers, ctr) == 1
    containers.unmount(ctr.id)
    assert not containers.is_mounted(ctr.id) and mount_count_of(containers, ctr) == 0
    with pytest.raises(InvalidStateError, match="not mounted"):
        containers.unmount(ctr.id)
    containers.mount(ctr.id)
    containers.mount(ctr.id)
    containers.unmount(ctr.id, force=True)
    assert not containers.is_mounted(ctr.id) and mount_count_of(containers, ctr) == 0


def test_the_mount_is_nodev_and_shows_in_mountinfo(
    ctr: ContainerRecord, containers: Containers
) -> None:
    merged = containers.mount(ctr.id)
    [info] = mounts.mounts_at(merged)
    assert info.fs_type == "overlay"
    assert "nodev" in info.mount_options.split(",")
    assert str(containers.paths(ctr.id).upper) in info.super_options
    findmnt = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(merged)], capture_output=True, text=True
    )
    assert findmnt.stdout.startswith("overlay") and "nodev" in findmnt.stdout


def test_the_runtime_mount_is_not_counted_twice(
    ctr: ContainerRecord, containers: Containers
) -> None:
    containers.ensure_mounted(ctr.id)
    containers.ensure_mounted(ctr.id)
    assert containers.is_mounted(ctr.id) and mount_count_of(containers, ctr) == 0
    containers.mount(ctr.id)
    containers.unmount(ctr.id)
    assert containers.is_mounted(ctr.id), "the user's unmount must not pull the runtime's root"
    with pytest.raises(InvalidStateError):
        containers.unmount(ctr.id)
    containers.release_runtime_mount(ctr.id)
    assert not containers.is_mounted(ctr.id)


def test_the_explorer_mounts_for_a_call_only(ctr: ContainerRecord, containers: Containers) -> None:
    with containers.open_rootfs(ctr.id) as root:
        assert containers.is_mounted(ctr.id)
        assert containers.load(ctr.id).mount_holders == [os.getpid()]
        assert root.exists("/etc/passwd")
    assert not containers.is_mounted(ctr.id)
    assert containers.load(ctr.id).mount_holders == []
    containers.mount(ctr.id)
    with containers.open_rootfs(ctr.id):
        assert containers.load(ctr.id).mount_holders == []
    assert containers.is_mounted(ctr.id)


def test_writes_survive_unmount_and_mount(ctr: ContainerRecord, containers: Containers) -> None:
    merged = containers.mount(ctr.id)
    (merged / "test").write_text("hello")
    containers.unmount(ctr.id)
    assert (containers.paths(ctr.id).upper / "test").read_text() == "hello"
    assert not (merged / "test").exists()
    merged = containers.mount(ctr.id)
    assert (merged / "test").read_text() == "hello"


def test_a_deep_image_mounts_past_the_option_limit(containers: Containers, engine: Engine) -> None:
    layers: list[Layer] = [{f"/layer{i:03d}": f"{i}\n", "/top": f"{i}\n"} for i in range(200)]
    layers[10]["/gone"] = "x"
    layers[20]["/gone"] = Whiteout()
    make_image(engine, layers, name="localhost/deep:latest")
    record = containers.create(CreateOptions(), "localhost/deep:latest", "deep")
    overlay = containers.overlay(record)
    assert len(overlay.option_string()) > 4096
    merged = containers.mount(record.id)
    names = os.listdir(merged)
    assert len([n for n in names if n.startswith("layer")]) == 200
    assert (merged / "top").read_text() == "199\n", "the last layer is on top"
    assert not (merged / "gone").exists()
    assert "lowerdir" in mounts.mounts_at(merged)[0].super_options


def test_mount2_fallback_refuses_clearly_what_does_not_fit(
    containers: Containers, engine: Engine, tmp_path: Path
) -> None:
    make_image(engine, [{f"/f{i}": "x"} for i in range(120)], name="localhost/deep2:latest")
    record = containers.create(CreateOptions(), "localhost/deep2:latest")
    with pytest.raises(RuntimeFailedError, match="more than mount"):
        mounts._mount_legacy(containers.overlay(record))
    assert not containers.is_mounted(record.id)


def test_mount2_fallback_mounts_a_small_image(ctr: ContainerRecord, containers: Containers) -> None:
    overlay = containers.overlay(ctr)
    mounts._mount_legacy(overlay)
    try:
        assert (overlay.target / "etc" / "passwd").is_file()
        assert "nodev" in mounts.mounts_at(overlay.target)[0].mount_options
    finally:
        mounts.unmount(overlay.target)


def test_the_command_line_lists_lowers_top_first(
    ctr: ContainerRecord, containers: Containers
) -> None:
    cmd = containers.overlay(ctr).command_line()
    assert cmd.startswith("mount -t overlay -o nodev,lowerdir=")
    assert f"upperdir={containers.paths(ctr.id).upper}" in cmd
    assert "index=off" in cmd and cmd.endswith(f"overlay {containers.paths(ctr.id).merged}")


def test_reconcile_after_a_restart(
    containers: Containers, image: ImageRecord, files: Files
) -> None:
    lost = containers.create(CreateOptions(), "busybox", "lost")
    stray = containers.create(CreateOptions(), "busybox", "stray")
    kept = containers.create(CreateOptions(), "busybox", "kept")
    # "lost": the record says mounted, the kernel has no mount (a reboot)
    with containers.lock(lost.id):
        rec = containers.load(lost.id)
        rec.mount_count, rec.runtime_mounted = 2, True
        containers.save(rec)
    # "stray": mounted, held by a process that died (a crashed explorer call)
    containers.mount(stray.id)
    with containers.lock(stray.id):
        rec = containers.load(stray.id)
        rec.mount_count, rec.mount_holders = 0, [2**22 + 12345]
        containers.save(rec)
    containers.mount(kept.id)
    changed = rootfs.reconcile_mounts(containers)
    assert sorted(changed) == ["lost", "stray"]
    assert containers.load(lost.id).mount_count == 0
    assert not containers.load(lost.id).runtime_mounted
    assert not containers.is_mounted(stray.id) and containers.load(stray.id).mount_holders == []
    assert containers.is_mounted(kept.id) and containers.load(kept.id).mount_count == 1


def test_mountinfo_unescapes_spaces(tmp_path: Path) -> None:
    odd = tmp_path / "a dir"
    odd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(odd)], check=True)
    try:
        assert mounts.is_mounted(odd)
        assert mounts.mounts_at(odd)[0].fs_type == "tmpfs"
    finally:
        assert mounts.unmount(odd)
    assert not mounts.is_mounted(odd)
