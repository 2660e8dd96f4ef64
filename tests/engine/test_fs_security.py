"""security.md section C: the explorer confined to the container's root, whatever the paths,
symlinks, races and special files. Each test has a sibling "victim" directory on the host that
must come out byte-for-byte untouched (the victim fixture asserts it)."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, NotFoundError
from engine.files.explorer import Files
from engine.files.transfer import Transfers
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord
from tests.engine.storagetools import (
    containers,
    ctr,
    files,
    image,
    needs_overlay,
    rename_exchange,
    victim,
)

__all__ = ["containers", "ctr", "files", "image", "victim"]
pytestmark = needs_overlay


@pytest.fixture
def merged(ctr: ContainerRecord, containers: Containers) -> Path:
    m = containers.mount(ctr.id)
    (m / "etc" / "shadow").write_text("container shadow\n")
    os.symlink("/", m / "data")  # absolute escape attempt
    os.symlink("../../../../../../../../..", m / "up")  # relative escape attempt
    return m


# -- C1: traversal, NUL, length ------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["../../etc/shadow", "/../../../../etc/shadow", "etc/../../../etc/shadow",
     "/data/etc/shadow", "/up/etc/shadow", "/data/data/up/etc/./shadow"],
)  # fmt: skip
def test_c1_c2_paths_stay_in_the_root(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path, path: str
) -> None:
    assert files.read(ctr, path)["text"] == "container shadow\n"


def test_c1_encoded_traversal_is_only_a_name(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    with pytest.raises(NotFoundError):
        files.read(ctr, "%2e%2e%2f%2e%2e%2fetc/shadow")
    files.write(ctr, "..%2f..%2fx", b"inside", create=True)
    assert (merged / "..%2f..%2fx").read_text() == "inside"


@pytest.mark.parametrize("path", ["/etc/\x00passwd", "/" + "a/" * 32768, "x" * 65536])
def test_c1_nul_bytes_and_huge_paths_are_refused(
    ctr: ContainerRecord, files: Files, victim: Path, path: str
) -> None:
    for op in (
        lambda: files.read(ctr, path),
        lambda: files.list_dir(ctr, path),
        lambda: files.touch(ctr, path),
        lambda: files.delete(ctr, path, recursive=True),
    ):
        with pytest.raises(InvalidInputError):
            op()


def test_c2_writes_through_escaping_symlinks_land_inside(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    files.write(ctr, "/data/etc/hostname", b"written via /data\n")
    assert (merged / "etc" / "hostname").read_text() == "written via /data\n"
    os.symlink(str(victim / "secret"), merged / "hostfile")
    os.symlink(str(victim), merged / "hostdir")
    for op in (
        lambda: files.write(ctr, "/hostdir/secret", b"pwned"),
        lambda: files.touch(ctr, "/hostdir/new"),
        lambda: files.mkdir(ctr, "/hostdir/newdir"),
        lambda: files.read(ctr, "/hostdir/secret"),
        lambda: files.list_dir(ctr, "/hostdir"),
    ):
        with pytest.raises(NotFoundError):
            op()
    # a dangling symlink (to a host path) is not written through either
    for create in (True, False):
        with pytest.raises(InvalidInputError, match="dangling"):
            files.write(ctr, "/hostfile", b"pwned", create=create)
    assert (merged / "hostfile").is_symlink()


@pytest.fixture
def host_proc(merged: Path) -> Iterator[Path]:
    """The host's /proc bind-mounted where a running container has its own: magic links."""
    subprocess.run(["mount", "--bind", "/proc", str(merged / "proc")], check=True)
    yield merged / "proc"
    subprocess.run(["umount", "-l", str(merged / "proc")], check=True)


def test_c2_magic_links_are_refused(
    ctr: ContainerRecord, files: Files, merged: Path, host_proc: Path, victim: Path
) -> None:
    os.symlink("/proc/self/root", merged / "ml")
    for path in ("/proc/self/root/etc/hostname", "/proc/1/root/etc/passwd", "/ml/etc/passwd",
                 f"/proc/self/root{victim}/secret", "/proc/self/cwd/x"):  # fmt: skip
        with pytest.raises(InvalidInputError, match="magic link|symbolic|permission denied"):
            files.read(ctr, path)
    with pytest.raises(InvalidInputError):
        files.write(ctr, f"/proc/self/root{victim}/secret", b"pwned")


# -- C3: a racer swaps a directory and a symlink while transfers run ---------------------------
def race(swap: Callable[[], None], work: Callable[[], None], seconds: float = 1.5) -> int:
    stop = threading.Event()
    errors: list[BaseException] = []

    def racer() -> None:
        while not stop.is_set():
            try:
                swap()
            except OSError as err:
                errors.append(err)
                return

    t = threading.Thread(target=racer, daemon=True)
    t.start()
    done = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                work()
                done += 1
            except EngineError:
                pass  # refused is fine; escaping is not
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors
    return done


@pytest.mark.parametrize("target", ["/", "victim"])
def test_c3_upload_and_download_under_a_racing_symlink(
    ctr: ContainerRecord, engine: Engine, merged: Path, victim: Path, target: str
) -> None:
    transfers = engine.get(Transfers)
    marker = f"gantry-race-{secrets.token_hex(4)}"
    (merged / "x").mkdir()
    (merged / "x" / marker).write_text("container file\n")
    os.symlink(str(victim) if target == "victim" else "/", merged / "x.alt")
    swap = lambda: rename_exchange(merged / "x", merged / "x.alt")  # noqa: E731

    def work() -> None:
        up = transfers.upload_begin(ctr, f"/x/{marker}", 5, user=None)
        try:
            transfers.upload_chunk(up["upload"], 0, b"12345", user=None)
            transfers.upload_commit(up["upload"], user=None)
        finally:
            transfers.uploads.pop(up["upload"], None)
        with transfers.download(ctr, f"/x/{marker}") as dl:
            assert b"host secret" not in b"".join(dl.chunks)
        with transfers.download(ctr, "/x") as dl:
            assert b"host secret" not in b"".join(dl.chunks)

    assert race(swap, work) > 0
    assert not Path("/" + marker).exists(), "an upload escaped to the host's /"
    assert not (victim / marker).exists()


def test_c3_recursive_delete_under_a_racing_symlink(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    """While the engine deletes /d, /d/sub flips between a directory and a symlink to the host
    victim. The test's own set-up (host-side writes) holds a lock the racer also takes, so only
    the engine ever meets the swapped state."""
    lock = threading.Lock()

    def reset() -> None:
        if (merged / "alt").is_symlink():
            (merged / "alt").unlink()
        elif (merged / "alt").exists():
            shutil.rmtree(merged / "alt")
        os.symlink(str(victim), merged / "alt")

    def work() -> None:
        with lock:
            reset()
            (merged / "d" / "sub").mkdir(parents=True, exist_ok=True)
            (merged / "d" / "sub" / "f").write_text("x")
        files.delete(ctr, "/d", recursive=True)

    def swap() -> None:
        with lock:
            try:
                rename_exchange(merged / "d" / "sub", merged / "alt")
                time.sleep(0.0002)
                rename_exchange(merged / "d" / "sub", merged / "alt")
            except FileNotFoundError:
                pass
        time.sleep(0.0002)

    assert race(swap, work) > 0
    assert (victim / "secret").exists()


# -- C4: special files ------------------------------------------------------------------------
def no_block(fn: Callable[[], object]) -> BaseException | None:
    """Run fn in a thread; it must finish within 5 s. Returns what it raised."""
    out: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001
            out[0] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "the worker blocked on a special file"
    return out[0]


def test_c4_fifos_and_devices_are_refused_without_blocking(
    ctr: ContainerRecord, files: Files, engine: Engine, merged: Path, victim: Path
) -> None:
    transfers = engine.get(Transfers)
    os.mkfifo(merged / "fifo")
    os.mknod(merged / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.mknod(merged / "disk", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    for name in ("fifo", "zero", "disk"):
        path = f"/{name}"
        for op in (
            lambda p=path: files.read(ctr, p),
            lambda p=path: files.write(ctr, p, b"x"),
            lambda p=path: transfers.upload_begin(ctr, p, 1, user=None),
            lambda p=path: transfers.download(ctr, p).__enter__(),
        ):
            err = no_block(op)
            assert isinstance(err, InvalidInputError), err

    # a folder download stores them as headers, never opening them
    def tar_root() -> None:
        with transfers.download(ctr, "/") as dl:
            for _ in dl.chunks:
                pass

    assert no_block(tar_root) is None
    listing = {e["name"]: e["type"] for e in files.list_dir(ctr, "/")["entries"]}
    assert (listing["fifo"], listing["zero"], listing["disk"]) == ("fifo", "char", "block")


# -- C8: interrupted uploads ---------------------------------------------------------------------
@pytest.mark.parametrize("tmpfile", [True, False], ids=["o_tmpfile", "named-temp"])
def test_c8_an_interrupted_upload_leaves_the_old_file(
    ctr: ContainerRecord,
    engine: Engine,
    containers: Containers,
    merged: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmpfile: bool,
) -> None:
    if not tmpfile:
        monkeypatch.setattr(os, "O_TMPFILE", os.O_DIRECTORY)  # makes O_TMPFILE fail: EISDIR
    transfers = engine.get(Transfers)
    (merged / "etc" / "app.conf").write_text("old and good\n")
    up = transfers.upload_begin(ctr, "/etc/app.conf", 1000, user=None)
    transfers.upload_chunk(up["upload"], 0, b"new but cut" * 10, user=None)
    assert (merged / "etc" / "app.conf").read_text() == "old and good\n"
    transfers.upload_abort(up["upload"], user=None)
    up = transfers.upload_begin(ctr, "/etc/app.conf", 1000, user=None)
    transfers.upload_chunk(up["upload"], 0, b"abandoned", user=None)
    assert transfers.reap(now=time.monotonic() + 3600) == 1
    assert (merged / "etc" / "app.conf").read_text() == "old and good\n"
    leftovers = [n for n in os.listdir(merged / "etc") if "gantry" in n]
    assert leftovers == []
    assert [n for n in os.listdir(containers.paths(ctr.id).upper / "etc") if "gantry" in n] == []


# -- C9, C10: deletes and chmod through symlinks ---------------------------------------------------
def test_c9_recursive_delete_removes_links_not_targets(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    (merged / "d").mkdir()
    os.symlink(str(victim), merged / "d" / "to-host")
    os.symlink("/", merged / "d" / "to-root")
    files.delete(ctr, "/d", recursive=True)
    assert not (merged / "d").exists()
    assert (merged / "etc" / "passwd").exists()
    os.symlink(str(victim), merged / "link")
    files.delete(ctr, "/link", recursive=True)
    assert not (merged / "link").is_symlink()


def test_c9_recursive_delete_of_a_very_deep_tree(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    """1500 levels (within PATH_MAX): shutil.rmtree raised RecursionError here."""
    files.mkdir(ctr, "/d" + "/a" * 1500, parents=True)
    os.symlink(str(victim), merged / "d" / "a" / "a" / "to-host")
    files.delete(ctr, "/d", recursive=True)
    assert not (merged / "d").exists()


def test_c10_chmod_through_symlinks_stays_inside(
    ctr: ContainerRecord, files: Files, merged: Path, victim: Path
) -> None:
    os.symlink(str(victim / "secret"), merged / "hostfile")
    with pytest.raises(NotFoundError):
        files.chmod(ctr, "/hostfile", 0o777)
    files.chmod(ctr, "/data/etc/shadow", 0o600)
    assert stat.S_IMODE((merged / "etc" / "shadow").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("policy", "idle"),
    [({}, 60.0), ({"files.upload_idle_seconds": 2}, 2.0), ({"files.upload_idle_seconds": 0.5}, 0.5),
     ({"files.upload_idle_seconds": "soon"}, 60.0), ({"files.upload_idle_seconds": -1}, 60.0),
     ({"files.upload_idle_seconds": True}, 60.0)],
)  # fmt: skip
def test_the_upload_idle_time_comes_from_policy_and_a_bad_value_is_the_default(
    tmp_path: Path, policy: dict[str, object], idle: float
) -> None:
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.files.transfer import upload_idle

    assert upload_idle(Engine(EngineConfig(root=tmp_path, policy=policy))) == idle
