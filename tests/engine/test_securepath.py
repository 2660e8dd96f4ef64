"""securepath: untrusted paths resolve inside the root, whatever symlinks the root holds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine.errors import InvalidInputError
from engine.hostfs.securepath import Root, clean, split


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "shadow").write_text("container shadow")
    (root / "data").symlink_to("/")
    (root / "up").symlink_to("../../../../../../..")
    (root / "rel").symlink_to("etc")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "secret").write_text("host secret")
    return root


def read(root: Root, path: str) -> str:
    fd = root.open(path)
    try:
        return os.read(fd, 1000).decode()
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "etc/shadow",
        "../../etc/shadow",
        "/data/etc/shadow",
        "/up/etc/shadow",
        "/rel/shadow",
        "/data/data/up/etc/../etc/shadow",
        "./etc/./shadow",
    ],
)
def test_it_confines_every_path_to_the_root(rootfs: Path, path: str) -> None:
    with Root(rootfs) as root:
        assert read(root, path) == "container shadow"


def test_it_never_reaches_a_sibling(rootfs: Path) -> None:
    with Root(rootfs) as root, pytest.raises(FileNotFoundError):
        root.open("../victim/secret")


def test_it_refuses_magic_links(tmp_path: Path) -> None:
    root_dir = tmp_path / "r"
    root_dir.mkdir()
    (root_dir / "me").symlink_to(f"/proc/{os.getpid()}/root")
    with Root(root_dir) as root, pytest.raises(OSError):
        root.open("/me/etc/passwd")


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 5000])
def test_it_refuses_nul_and_absurd_lengths(rootfs: Path, bad: str) -> None:
    with Root(rootfs) as root, pytest.raises(InvalidInputError):
        root.open(bad)


def test_lstat_does_not_follow_the_final_symlink(rootfs: Path) -> None:
    with Root(rootfs) as root:
        assert os.path.islink(rootfs / "data")
        st = root.lstat("/data")
        import stat

        assert stat.S_ISLNK(st.st_mode)
        assert root.readlink("/data") == "/"


def test_mkdir_all_creates_inside_the_root_through_symlinks(rootfs: Path, tmp_path: Path) -> None:
    with Root(rootfs) as root:
        os.close(root.mkdir_all("/data/new/deeper"))
    assert (rootfs / "new" / "deeper").is_dir()
    assert not Path("/new").exists()


def test_open_regular_refuses_fifos_without_blocking(rootfs: Path) -> None:
    os.mkfifo(rootfs / "pipe")
    with Root(rootfs) as root, pytest.raises(InvalidInputError, match="not a regular file"):
        root.open_regular("/pipe")


def test_open_regular_refuses_devices(rootfs: Path) -> None:
    import stat

    os.mknod(rootfs / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    with Root(rootfs) as root, pytest.raises(InvalidInputError, match="not a regular file"):
        root.open_regular("/zero")


def test_split_and_clean() -> None:
    assert split("/a/b/c") == ("/a/b", "c")
    assert split("a//b/./") == ("/a", "b")
    assert split("/") == ("/", "")
    assert split("/a/..") == ("/a/..", "")
    assert clean("/a/./b/../../../c") == "/c"


def test_it_holds_against_a_racing_symlink_swap(tmp_path: Path) -> None:
    """A racer swaps /x between a real dir and a symlink to / while we read /x/f."""
    root_dir = tmp_path / "r"
    (root_dir / "real").mkdir(parents=True)
    (root_dir / "real" / "f").write_text("inside")
    (root_dir / "x").symlink_to("real")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "f").write_text("HOST")
    (root_dir / "evil").symlink_to(str(tmp_path / "victim"))
    stop = threading.Event()

    def racer() -> None:
        while not stop.is_set():
            for target in (str(tmp_path / "victim"), "real"):
                tmp = root_dir / "x.tmp"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(target)
                os.replace(tmp, root_dir / "x")

    t = threading.Thread(target=racer)
    t.start()
    try:
        with Root(root_dir) as root:
            for _ in range(3000):
                try:
                    assert read(root, "/x/f") == "inside"
                except FileNotFoundError:
                    pass  # the host path resolved inside the root: nothing there
    finally:
        stop.set()
        t.join()
