"""The explorer's operations on a container's root: list, read, write (with conflicts), touch,
mkdir, delete, rename, chmod, uploads, downloads, cp; the lab's steps end to end."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from engine.api.base import Context
from engine.api.containers import changes
from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError, NotFoundError, PolicyError
from engine.events import RecordingPublisher
from engine.files.explorer import Files, read_container_file
from engine.files.transfer import CHUNK, Transfers, cp
from engine.images.store import ImageRecord
from engine.protocol.verbs import MAX_VIEW
from engine.rpc.dispatch import call as rpc_call
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from engine.storage.volumes import parse_volume
from tests.engine.storagetools import containers, ctr, files, image, needs_overlay, victim

__all__ = ["containers", "ctr", "files", "image", "victim"]
pytestmark = needs_overlay


def names(listing: dict[str, Any]) -> list[str]:
    return [e["name"] for e in listing["entries"]]


def test_the_lab_steps(
    containers: Containers, image: ImageRecord, files: Files, engine: Engine, tmp_path: Path
) -> None:
    """podman create -v /mnt:/mnt, podman mount, touch $(podman mount ctr)/test, podman diff,
    podman unmount, podman mount: the file is still there."""
    (tmp_path / "volumes").mkdir()
    record = containers.create(
        CreateOptions(volumes=[parse_volume(f"{tmp_path}/volumes:/mnt")]),
        "localhost/busybox:latest",
        "lab",
    )
    merged = containers.mount(record.id)
    assert files.touch(record, "/test")["created"] is True
    listing = {e["name"]: e for e in files.list_dir(record, "/")["entries"]}
    assert listing["test"]["type"] == "file" and listing["test"]["change"] == "A"
    assert listing["test"]["layer"] == "upper" and listing["bin"]["layer"] == "0"
    assert [c.line() for c in changes(engine, record)] == ["A /test"]
    containers.unmount(record.id)
    assert not (merged / "test").exists()
    merged = containers.mount(record.id)
    assert (merged / "test").is_file()
    assert "test" in names(files.list_dir(record, "/"))


def test_listing_is_sorted_and_complete(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    (m / "zdir").mkdir()
    (m / "afile").write_text("abc")
    os.chown(m / "afile", 1000, 10)
    os.symlink("/etc/passwd", m / "alink")
    listing = files.list_dir(ctr, "/")
    entries = {e["name"]: e for e in listing["entries"]}
    kinds = [e["type"] for e in listing["entries"]]
    assert kinds.index("file") > max(i for i, k in enumerate(kinds) if k == "dir")
    assert entries["afile"]["user"] == "user" and entries["afile"]["group"] == "wheel"
    assert entries["afile"]["size"] == 3 and entries["afile"]["mode"] == "-rw-r--r--"
    assert entries["afile"]["perm"] == "0644"
    assert entries["alink"]["type"] == "link" and entries["alink"]["target"] == "/etc/passwd"
    assert entries["tmp"]["mode"] == "drwxrwxrwt"
    assert entries["root"]["user"] == "root"
    assert listing["path"] == "/" and listing["total"] == len(os.listdir(m))
    assert listing["layers"][0]["label"] == "upper"


def test_listing_pages_through_ten_thousand_entries(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    big = m / "big"
    big.mkdir()
    for i in range(10_000):
        (big / f"f{i:05d}").touch()
    started = time.monotonic()
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = files.list_dir(ctr, "/big", offset, 2000)
        assert len(page["entries"]) == 2000 or page["next_offset"] is None
        seen += names(page)
        offset = page["next_offset"]
    assert time.monotonic() - started < 10
    assert seen == [f"f{i:05d}" for i in range(10_000)]
    one = files.list_dir(ctr, "/big", 9_999, 500)
    assert names(one) == ["f09999"] and one["total"] == 10_000 and one["next_offset"] is None


def test_later_pages_see_a_changed_directory(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    (m / "d").mkdir()
    for i in range(30):
        (m / "d" / f"f{i:02d}").touch()
    first = files.list_dir(ctr, "/d", 0, 10)
    assert names(first) == [f"f{i:02d}" for i in range(10)]
    assert names(files.list_dir(ctr, "/d", 10, 100))[-1] == "f29"  # from the snapshot
    time.sleep(0.05)  # directory times are coarse (a clock tick)
    (m / "d" / "zz").touch()
    assert names(files.list_dir(ctr, "/d", 10, 100))[-1] == "zz"


def test_a_page_stays_under_512_kib_whatever_the_names(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    (m / "long").mkdir()
    for i in range(2000):
        (m / "long" / (f"{i:04d}" + "\u00e9" * 125)).touch()  # 254 bytes each
    page = files.list_dir(ctr, "/long", 0, 2000)
    assert len(msgpack.packb(page, use_bin_type=True)) < 512 * 1024  # what channels_redis sends
    assert page["next_offset"] == len(page["entries"]) < 2000
    rest = files.list_dir(ctr, "/long", page["next_offset"], 2000)
    assert len(page["entries"]) + len(rest["entries"]) == 2000 or rest["next_offset"]


def test_download_messages_stay_small(
    ctr: ContainerRecord, containers: Containers, engine: Engine
) -> None:
    m = containers.mount(ctr.id)
    (m / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    publisher = RecordingPublisher()
    ctx = Context(engine, request_id="r1", reply_to="reply.x", publisher=publisher)
    result = rpc_call(ctx, "fs.download", {"id": ctr.id, "path": "/big"})
    sizes = [len(e["data"]) for _, e in publisher.events if e.get("type") == "fs.chunk"]
    assert result["size"] == sum(sizes) == 3 * 1024 * 1024
    assert max(sizes) <= 512 * 1024 and result["mib_per_s"] > 0
    assert publisher.events[0][1]["type"] == "fs.begin" and publisher.events[0][0] == "reply.x"


def test_it_lists_through_a_symlinked_directory(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    os.symlink("/etc", m / "config")
    listing = files.list_dir(ctr, "/config")
    assert listing["path"] == "/etc" and "passwd" in names(listing)


def test_read_text_binary_and_big(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    text = files.read(ctr, "/etc/passwd")
    assert text["text"].startswith("root:x:0:0") and not text["binary"] and text["editable"]
    binary = files.read(ctr, "/bin/busybox")
    assert binary["binary"] and "text" not in binary
    assert binary["hex"][0].startswith("00000000  7f 45 4c 46") and binary["hex"][0].endswith(
        "|.ELF............|"
    )
    (m / "big.txt").write_text("x" * (MAX_VIEW + 10))
    big = files.read(ctr, "/big.txt")
    assert big["truncated"] and not big["editable"] and len(big["text"]) == MAX_VIEW
    with pytest.raises(InvalidInputError, match="not a regular file"):
        files.read(ctr, "/etc")
    with pytest.raises(NotFoundError):
        files.read(ctr, "/nope")


def test_write_keeps_owner_and_mode_and_detects_conflicts(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    (m / "conf").write_text("one\n")
    os.chown(m / "conf", 1000, 1000)
    os.chmod(m / "conf", 0o640)
    token = files.read(ctr, "/conf")["token"]
    saved = files.write(ctr, "/conf", b"two\n", token=token)
    assert (m / "conf").read_text() == "two\n"
    st = (m / "conf").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o640)
    # someone else changes it: the stale token is refused and nothing is written
    (m / "conf").write_text("three (theirs)\n")
    with pytest.raises(InvalidStateError, match="changed since it was opened"):
        files.write(ctr, "/conf", b"mine\n", token=saved["token"])
    assert (m / "conf").read_text() == "three (theirs)\n"
    (m / "conf").unlink()
    with pytest.raises(InvalidStateError, match="deleted"):
        files.write(ctr, "/conf", b"mine\n", token=saved["token"])
    assert not (m / "conf").exists()
    assert [n for n in os.listdir(m) if ".gantry-" in n] == []


def test_write_through_a_symlink_changes_the_target(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    os.symlink("etc/hostname", m / "hn")
    files.write(ctr, "/hn", b"renamed\n")
    assert (m / "hn").is_symlink() and (m / "etc" / "hostname").read_text() == "renamed\n"


def test_create_new_file_and_refuse_existing(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    files.write(ctr, "/new.txt", b"hi", create=True)
    assert (m / "new.txt").read_text() == "hi"
    with pytest.raises(InvalidInputError, match="already exists"):
        files.write(ctr, "/new.txt", b"again", create=True)
    with pytest.raises(NotFoundError):
        files.write(ctr, "/no/such/dir/f", b"x", create=True)


def test_touch_mkdir_rename_delete_chmod(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    m = containers.mount(ctr.id)
    files.touch(ctr, "/a")
    before = (m / "a").stat().st_mtime_ns
    time.sleep(0.01)
    assert files.touch(ctr, "/a")["created"] is False
    assert (m / "a").stat().st_mtime_ns > before
    files.mkdir(ctr, "/d")
    files.mkdir(ctr, "/p/q/r", parents=True)
    assert (m / "p" / "q" / "r").is_dir()
    with pytest.raises(InvalidInputError, match="already exists"):
        files.mkdir(ctr, "/d")
    files.rename(ctr, "/a", "/d/b")
    assert (m / "d" / "b").exists() and not (m / "a").exists()
    files.touch(ctr, "/c")
    with pytest.raises(InvalidInputError, match="already exists"):
        files.rename(ctr, "/c", "/d/b")
    files.chmod(ctr, "/d/b", 0o4755)
    assert stat.S_IMODE((m / "d" / "b").stat().st_mode) == 0o4755
    with pytest.raises(InvalidInputError):
        files.chmod(ctr, "/d/b", 0o17777)
    with pytest.raises(InvalidInputError, match="not empty"):
        files.delete(ctr, "/d")
    files.delete(ctr, "/d", recursive=True)
    files.delete(ctr, "/c")
    assert not (m / "d").exists() and not (m / "c").exists()
    with pytest.raises(InvalidInputError, match="cannot be deleted"):
        files.delete(ctr, "/", recursive=True)


def test_rename_a_directory_from_the_image(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    """overlayfs with redirect_dir=off answers EXDEV: it is copied, then removed (as mv)."""
    m = containers.mount(ctr.id)
    files.rename(ctr, "/home", "/house")
    assert (m / "house" / "user").is_dir() and not (m / "home").exists()
    assert (m / "house" / "user").stat().st_uid == 1000


def test_it_works_on_an_unmounted_container(
    ctr: ContainerRecord, containers: Containers, files: Files
) -> None:
    assert not containers.is_mounted(ctr.id)
    files.touch(ctr, "/made-while-unmounted")
    assert "made-while-unmounted" in names(files.list_dir(ctr, "/"))
    assert not containers.is_mounted(ctr.id)
    assert (containers.paths(ctr.id).upper / "made-while-unmounted").exists()


def test_upload_in_chunks(ctr: ContainerRecord, containers: Containers, engine: Engine) -> None:
    transfers = engine.get(Transfers)
    data = os.urandom(3 * CHUNK + 17)
    up = transfers.upload_begin(ctr, "/etc/blob", len(data), user="1")
    with pytest.raises(NotFoundError):
        transfers.upload_chunk(up["upload"], 0, data[:10], user="2")  # someone else's upload
    for off in range(0, len(data), CHUNK):
        transfers.upload_chunk(up["upload"], off, data[off : off + CHUNK], user="1")
    done = transfers.upload_commit(up["upload"], user="1")
    assert done["size"] == len(data)
    with containers.open_rootfs(ctr.id) as root:
        fd = root.open_regular("/etc/blob")
        try:
            assert os.read(fd, len(data) + 1) == data
        finally:
            os.close(fd)
    assert transfers.uploads == {}


def test_upload_refuses_wrong_sizes_and_the_limit(ctr: ContainerRecord, engine: Engine) -> None:
    transfers = engine.get(Transfers)
    up = transfers.upload_begin(ctr, "/f", 4, user=None)
    with pytest.raises(InvalidInputError, match="offset"):
        transfers.upload_chunk(up["upload"], 2, b"xx", user=None)
    transfers.upload_chunk(up["upload"], 0, b"ab", user=None)
    with pytest.raises(InvalidInputError, match="2 of 4"):
        transfers.upload_commit(up["upload"], user=None)
    with pytest.raises(PolicyError):
        transfers.upload_begin(ctr, "/f", 1 << 40, user=None)
    up = transfers.upload_begin(ctr, "/f", 1, user=None)
    with pytest.raises(InvalidInputError, match="more data"):
        transfers.upload_chunk(up["upload"], 0, b"xy", user=None)
    assert transfers.uploads == {}


def test_download_a_file_and_a_folder(
    ctr: ContainerRecord, containers: Containers, engine: Engine
) -> None:
    transfers = engine.get(Transfers)
    m = containers.mount(ctr.id)
    blob = os.urandom(CHUNK * 2 + 5)
    (m / "etc" / "blob").write_bytes(blob)
    with transfers.download(ctr, "/etc/blob") as dl:
        assert (dl.kind, dl.name, dl.size) == ("file", "blob", len(blob))
        assert b"".join(dl.chunks) == blob
    with transfers.download(ctr, "/etc") as dl:
        assert dl.kind == "tar" and dl.name == "etc.tar"
        data = b"".join(dl.chunks)
    assert len(data) % 10240 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {t.name: t for t in tar.getmembers()}
        assert members["etc/passwd"].isfile()
        assert tar.extractfile("etc/blob").read() == blob  # type: ignore[union-attr]
        assert members["etc/"].isdir() if "etc/" in members else members["etc"].isdir()
    with transfers.download(ctr, "/bin") as dl:
        data = b"".join(dl.chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        link = tar.getmember("bin/ls")
        assert link.issym() and link.linkname == "busybox"


def test_cp_follows_podman_cp(
    ctr: ContainerRecord, containers: Containers, engine: Engine, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    (host / "dir" / "sub").mkdir(parents=True)
    (host / "dir" / "sub" / "f").write_text("f")
    (host / "one").write_text("one")
    cp(engine, ctr, str(host / "one"), "/etc/", into_container=True)  # into a dir
    cp(engine, ctr, str(host / "one"), "/renamed", into_container=True)  # to a new name
    cp(engine, ctr, str(host / "dir"), "/tmp", into_container=True)  # dir into dir
    cp(engine, ctr, str(host / "dir"), "/newdir", into_container=True)  # dir to new name
    cp(engine, ctr, str(host / "dir") + "/.", "/root", into_container=True)  # contents
    m = containers.mount(ctr.id)
    assert (m / "etc" / "one").read_text() == "one" and (m / "renamed").read_text() == "one"
    assert (m / "tmp" / "dir" / "sub" / "f").exists() and (m / "newdir" / "sub" / "f").exists()
    assert (m / "root" / "sub" / "f").exists()
    with pytest.raises(InvalidInputError, match="onto a file"):
        cp(engine, ctr, str(host / "dir"), "/renamed", into_container=True)
    with pytest.raises(NotFoundError):
        cp(engine, ctr, str(host / "one"), "/missing/", into_container=True)
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(m / "bin" / "busybox", 0o4755)
    cp(engine, ctr, "/etc", str(out), into_container=False)
    cp(engine, ctr, "/bin/busybox", str(out / "bb"), into_container=False)
    assert (out / "etc" / "passwd").read_text().startswith("root:")
    assert stat.S_IMODE((out / "bb").stat().st_mode) == 0o755, "setuid dropped on the host"


def test_read_container_file_for_the_spec(
    ctr: ContainerRecord, engine: Engine, containers: Containers
) -> None:
    assert read_container_file(engine, ctr, "/etc/passwd").startswith(b"root:x:0:0")
    with pytest.raises(InvalidInputError, match="larger"):
        read_container_file(engine, ctr, "/etc/passwd", limit=10)
    with pytest.raises(NotFoundError):
        read_container_file(engine, ctr, "/etc/shadow")
    assert not containers.is_mounted(ctr.id)
