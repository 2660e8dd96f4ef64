"""engine.hostfs.rmtree: removing trees that untrusted content shaped (deep, symlinked, overlay
whiteouts, moved while being removed) without recursion, without following a symlink and with
a bounded number of descriptors."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from engine.hostfs import rmtree
from engine.hostfs.rmtree import remove_tree, remove_tree_at
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord
from tests.engine.storagetools import containers, ctr, image, needs_overlay, victim

__all__ = ["containers", "ctr", "image", "victim"]


def deep_tree(top: Path, depth: int, name: str = "a") -> None:
    """``top/a/a/...`` ``depth`` levels deep (past PATH_MAX thanks to dir fds), with a file,
    a symlink to / and a FIFO every 100 levels."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            os.mkdir(name, dir_fd=fd)
            if i % 100 == 0:
                os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
                os.symlink("/", f"root{i}", dir_fd=fd)
                os.mkfifo(f"pipe{i}", dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def fds_below(root: Path) -> list[str]:
    """This process's descriptors that name something below root. Not all of them: other
    threads of the test process open and close their own meanwhile (a run failed on 177 ==
    179 when two sockets of an earlier test were closed during the removal)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        if target.startswith(str(root)):
            found.append(target)
    return found


def test_shutil_rmtree_fails_on_such_a_tree(tmp_path: Path) -> None:
    """The reason for the module: CPython 3.11 recurses once per level."""
    deep_tree(tmp_path / "t", 1500)
    with pytest.raises(RecursionError):
        shutil.rmtree(tmp_path / "t")
    remove_tree(tmp_path / "t")


@pytest.mark.parametrize("depth", [1500, 2500])  # 2500: past PATH_MAX
def test_it_removes_a_very_deep_tree_with_few_descriptors(tmp_path: Path, depth: int) -> None:
    deep_tree(tmp_path / "t", depth)
    (tmp_path / "keep").write_text("sibling")
    remove_tree(tmp_path / "t")
    assert fds_below(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["keep"]


def test_it_never_follows_symlinks(tmp_path: Path, victim: Path) -> None:
    top = tmp_path / "t"
    (top / "d").mkdir(parents=True)
    os.symlink(victim, top / "d" / "to-dir")
    os.symlink(victim / "secret", top / "d" / "to-file")
    os.symlink(victim, tmp_path / "link")
    remove_tree(top)
    remove_tree(tmp_path / "link")  # the link goes, not what it names
    assert not top.exists() and not (tmp_path / "link").is_symlink()


def test_it_walks_back_up_through_dotdot_when_descriptors_were_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rmtree, "MAX_OPEN", 3)
    deep_tree(tmp_path / "t", 40)
    remove_tree(tmp_path / "t")
    assert fds_below(tmp_path) == [] and not (tmp_path / "t").exists()


def test_a_directory_moved_away_meanwhile_stops_the_removal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process moves a level whose descriptor was closed out of the tree: its '..' is no
    longer the level above, so the removal stops there instead of going on outside."""
    monkeypatch.setattr(rmtree, "MAX_OPEN", 3)
    deep_tree(tmp_path / "t", 12)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    real_level = rmtree._level
    moved: list[bool] = []

    def level_then_move(fd: int, name: str, *args: object) -> rmtree._Level:
        out = real_level(fd, name, *args)  # type: ignore[arg-type]
        if not moved and not out.subdirs:  # the bottom: a/a/a/a was closed long ago
            os.rename(tmp_path / "t" / "a" / "a" / "a" / "a", outside / "a")
            moved.append(True)
        return out

    monkeypatch.setattr(rmtree, "_level", level_then_move)
    with pytest.raises(OSError) as info:
        remove_tree(tmp_path / "t")
    assert info.value.errno == errno.ESTALE
    assert (outside / "precious").read_text() == "keep me"
    remove_tree(tmp_path / "t", ignore_errors=True)  # what is left in place still goes
    assert not (tmp_path / "t").exists()


def test_it_does_not_cross_into_another_mount(tmp_path: Path) -> None:
    (tmp_path / "t" / "mnt").mkdir(parents=True)
    (tmp_path / "t" / "file").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(tmp_path / "t" / "mnt")], check=True)
    try:
        (tmp_path / "t" / "mnt" / "kept").write_text("on the mount")
        with pytest.raises(OSError) as info:
            remove_tree(tmp_path / "t")
        assert info.value.errno == errno.EXDEV
        remove_tree(tmp_path / "t", ignore_errors=True)
        assert (tmp_path / "t" / "mnt" / "kept").read_text() == "on the mount"
        assert not (tmp_path / "t" / "file").exists()
    finally:
        subprocess.run(["umount", str(tmp_path / "t" / "mnt")], check=True)
    remove_tree(tmp_path / "t")


def test_errors_are_raised_or_ignored(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "missing")
    remove_tree(tmp_path / "missing", ignore_errors=True)
    with pytest.raises(ValueError):
        remove_tree_at(os.open(tmp_path, os.O_RDONLY), "..")


@needs_overlay
def test_it_removes_image_directories_on_the_merged_root_and_whiteouts_in_upper(
    containers: Containers, ctr: ContainerRecord
) -> None:
    merged, upper = containers.mount(ctr.id), containers.paths(ctr.id).upper
    try:
        deep_tree(merged / "etc" / "deep", 300)
        fd = os.open(merged, os.O_RDONLY | os.O_DIRECTORY)
        try:
            remove_tree_at(fd, "etc")  # a directory of the image, with an upper part
            remove_tree_at(fd, "bin")  # only in the image
        finally:
            os.close(fd)
        assert not (merged / "etc").exists() and not (merged / "bin").exists()
    finally:
        containers.unmount_all(ctr.id)
    for name in ("etc", "bin"):
        st = os.lstat(upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name  # whiteouts
    remove_tree(upper)  # the upper dir with its whiteouts, as remove does
    assert not upper.exists()
