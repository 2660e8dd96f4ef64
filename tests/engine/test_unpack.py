"""engine.layers.unpack on real tar streams built entry by entry (tests/engine/ocibuild.py), with a
sibling ``victim`` directory that must come out untouched (moby's testBreakout pattern)."""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard

from engine.errors import InvalidImageError
from engine.layers.forked import unpack_forked
from engine.layers.unpack import DEFAULT_BUDGET, UnpackResult, unpack_stream
from tests.conftest import REPO
from tests.engine.ocibuild import (
    Char,
    Dir,
    Entry,
    Fifo,
    File,
    Hardlink,
    Opaque,
    Symlink,
    Whiteout,
    compress,
    sha,
    tar_bytes,
)
from tests.skips import requires


def _can_mknod() -> bool:
    probe = Path(f"/tmp/.gantry-mknod-probe-{os.getpid()}")
    try:
        os.mknod(probe, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        probe.unlink()
        return True
    except OSError:
        return False


pytestmark = requires(_can_mknod(), "needs root (mknod, chown, trusted.* xattrs)")


class Forked(ThreadPoolExecutor):
    """Marks the forked extractor (engine.layers.forked: a child parses and writes, with its
    own writer); never runs a task."""


@pytest.fixture(params=["pool", "serial", "forked"])
def pool(request: pytest.FixtureRequest) -> Iterator[ThreadPoolExecutor | None]:
    if request.param == "serial":
        yield None
        return
    if request.param == "forked":
        yield Forked(1)
        return
    with ThreadPoolExecutor(3) as executor:
        yield executor


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.mkdir()
    (v / "passwd").write_text("victim\n")
    (v / "passwd").chmod(0o600)
    return v


def unpack(
    tmp_path: Path,
    entries: list[Entry],
    pool: ThreadPoolExecutor | None = None,
    how: str = "gzip",
    **kw: object,
) -> tuple[Path, UnpackResult]:
    diff = tmp_path / "layer" / "diff"
    diff.mkdir(parents=True)
    blob = compress(tar_bytes(entries), how)
    if isinstance(pool, Forked):
        return diff, unpack_forked(io.BytesIO(blob).read, diff, budget=DEFAULT_BUDGET, **kw)  # type: ignore[arg-type]
    # adaptive=False: the pool writes from the first file (else it would wait for slowness)
    result = unpack_stream(io.BytesIO(blob).read, diff, pool=pool, adaptive=False, **kw)  # type: ignore[arg-type]
    return diff, result


def intact(victim: Path) -> bool:
    st = (victim / "passwd").stat()
    return (victim / "passwd").read_text() == "victim\n" and stat.S_IMODE(st.st_mode) == 0o600


def test_it_keeps_types_modes_owners_times_and_xattrs(
    tmp_path: Path, pool: ThreadPoolExecutor | None
) -> None:
    big = os.urandom(700_000)
    entries = [
        Dir("usr", mtime=1_000_000),
        Dir("usr/bin"),
        File("usr/bin/su", b"#!setuid\n", mode=0o4755, uid=0, gid=0),
        File("usr/bin/tool", b"x", mode=0o750, uid=1000, gid=1001, mtime=1_234_567),
        File("usr/big", big),
        Dir("tmp", mode=0o1777),
        Symlink("usr/bin/sh", "/bin/busybox", uid=7, gid=8),
        Dir("data"),
        Hardlink("data/su-again", "usr/bin/su"),
        Fifo("data/pipe", mode=0o640),
        Char("data/null", 1, 3),
        File(
            "data/x",
            b"x",
            xattrs={
                "user.keep": b"yes",
                "security.selinux": b"system_u:object_r:etc_t:s0",
                "trusted.overlay.opaque": b"y",
                "user.overlay.redirect": b"/elsewhere",
            },
        ),
    ]
    diff, result = unpack(tmp_path, entries, pool)
    su = diff / "usr/bin/su"
    assert stat.S_IMODE(su.stat().st_mode) == 0o4755
    tool = (diff / "usr/bin/tool").stat()
    assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (1000, 1001, 0o750)
    assert tool.st_mtime == 1_234_567
    assert (diff / "usr/big").read_bytes() == big
    assert stat.S_IMODE((diff / "tmp").stat().st_mode) == 0o1777
    assert os.readlink(diff / "usr/bin/sh") == "/bin/busybox"
    assert (diff / "usr/bin/sh").lstat().st_uid == 7
    assert (diff / "data/su-again").stat().st_ino == su.stat().st_ino
    assert stat.S_ISFIFO((diff / "data/pipe").lstat().st_mode)
    null = (diff / "data/null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    xattrs = set(os.listxattr(diff / "data/x"))
    assert "user.keep" in xattrs and "security.selinux" not in xattrs
    assert "trusted.overlay.opaque" not in xattrs
    assert "trusted.overlay.overlay.opaque" in xattrs
    assert "user.overlay.overlay.redirect" in xattrs
    assert (diff / "usr").stat().st_mtime == 1_000_000  # set after its children were made
    assert result.diff_id == sha(tar_bytes(entries))
    assert (result.entries, result.files) == (len(entries), 4)
    assert result.compression == "gzip"


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def test_it_writes_whiteouts_in_overlay_form(
    tmp_path: Path, pool: ThreadPoolExecutor | None
) -> None:
    diff, _ = unpack(
        tmp_path,
        [Dir("etc"), Whiteout("etc/motd"), Dir("var"), Opaque("var"), Whiteout("gone")],
        pool,
    )
    assert is_whiteout(diff / "etc/motd") and is_whiteout(diff / "gone")
    assert is_opaque(diff / "var") and not is_opaque(diff / "etc")
    assert not list(diff.rglob(".wh.*"))


@pytest.mark.parametrize(
    ("entries", "expect"),
    [
        # A directory whited out and re-made in one layer (podman 4.3 fails this one).
        ([Dir("etc"), Whiteout("etc/conf"), Dir("etc/conf"), File("etc/conf/new")], "opaque"),
        ([Dir("etc"), Dir("etc/conf"), File("etc/conf/new"), Whiteout("etc/conf")], "opaque"),
        ([Whiteout("a"), File("a", b"new")], "file"),
        ([File("a", b"new"), Whiteout("a")], "file"),
        ([Dir("etc"), Dir("etc/conf"), File("etc/conf/new"), Opaque("etc/conf")], "opaque"),
    ],
)
def test_same_layer_entries_survive_their_own_whiteouts(
    tmp_path: Path, pool: ThreadPoolExecutor | None, entries: list[Entry], expect: str
) -> None:
    diff, _ = unpack(tmp_path, entries, pool)
    if expect == "opaque":
        assert is_opaque(diff / "etc/conf")
        assert (diff / "etc/conf/new").is_file()
    else:
        assert (diff / "a").read_bytes() == b"new"


def test_it_replaces_entries_of_the_same_layer(
    tmp_path: Path, pool: ThreadPoolExecutor | None
) -> None:
    diff, _ = unpack(
        tmp_path,
        [
            Dir("x"),
            File("x/inner"),
            File("x", b"now a file"),
            File("y", b"file"),
            Dir("y"),
            File("y/z"),
            Symlink("s", "y"),
            Dir("s"),
            File("f", b"1"),
            File("f", b"2"),
        ],
        pool,
    )
    assert (diff / "x").read_bytes() == b"now a file"
    assert (diff / "y/z").is_file()
    assert (diff / "s").is_dir() and not (diff / "s").is_symlink()
    assert (diff / "f").read_bytes() == b"2"


def test_absolute_names_land_in_the_layer(
    tmp_path: Path, victim: Path, pool: ThreadPoolExecutor | None
) -> None:
    diff, _ = unpack(tmp_path, [File("/etc/passwd", "root:x:0:0::/:/bin/sh\n")], pool)
    assert (diff / "etc/passwd").read_text().startswith("root")
    assert intact(victim)


def test_writes_through_symlinks_stay_inside(
    tmp_path: Path, victim: Path, pool: ThreadPoolExecutor | None
) -> None:
    up = "../" * 8
    diff, _ = unpack(
        tmp_path,
        pool=pool,
        entries=[
            Symlink("localetc", "/etc"),
            File("localetc/unbroken", b"inside"),
            Symlink("up", f"{up}{victim.relative_to('/')}"),
            File("up/passwd", b"overwritten?"),
            Symlink("hostfile", str(victim / "passwd")),
            Hardlink("hostlink", "hostfile", mode=0o777),
            Symlink("dotdot", "../../../.."),
            Hardlink("x", "dotdot/etc/unbroken"),
            Whiteout("localetc/shadow"),
        ],
    )
    assert (diff / "etc/unbroken").read_bytes() == b"inside"
    assert not Path("/etc/unbroken").exists()
    # up -> ../../victim resolves inside the layer: a new tree under diff, not the victim.
    assert (diff / victim.relative_to("/") / "passwd").read_bytes() == b"overwritten?"
    assert (diff / "hostlink").is_symlink()  # the link itself, never its target
    assert (diff / "x").stat().st_ino == (diff / "etc/unbroken").stat().st_ino
    assert is_whiteout(diff / "etc/shadow")
    assert intact(victim)


@pytest.mark.parametrize(
    "entries",
    [
        [File("../escape")],
        [Dir("a"), File("a/../../escape")],
        [File("ok"), Hardlink("h", "../../victim/passwd")],
        [Symlink(".", "/")],
        [Symlink("/.", "/")],
        [File(".wh..")],
        [File(".wh...")],
        [Dir("etc"), File("etc/.wh..")],
        [Hardlink("h", "missing")],
        [File("a"), File("a/b")],
        [File("a"), Entry("b", b"Z")],
    ],
    ids=[
        "dotdot",
        "dotdot-deep",
        "hardlink-dotdot",
        "symlink-dot",
        "symlink-slash-dot",
        "whiteout-dot",
        "whiteout-dotdot",
        "whiteout-nested-dot",
        "hardlink-missing",
        "through-a-file",
        "unknown-type",
    ],
)
def test_it_refuses_hostile_entries(
    tmp_path: Path, victim: Path, entries: list[Entry], pool: ThreadPoolExecutor | None
) -> None:
    with pytest.raises(InvalidImageError):
        unpack(tmp_path, entries, pool)
    assert intact(victim)
    assert not (tmp_path / "escape").exists()


def test_it_stops_a_decompression_bomb(tmp_path: Path) -> None:
    tar = tar_bytes([File("zeros", b"\0" * (48 * 1024 * 1024))])
    blob = gzip.compress(tar, compresslevel=9)
    assert len(blob) < 200_000
    diff = tmp_path / "diff"
    diff.mkdir()
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        unpack_stream(io.BytesIO(blob).read, diff, budget=16 * 1024 * 1024)


def test_it_refuses_a_zstd_window_it_would_have_to_allocate(tmp_path: Path) -> None:
    params = zstandard.ZstdCompressionParameters(window_log=31, write_content_size=False)
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        buf, closefd=False
    ) as writer:
        writer.write(tar_bytes([File("a", b"x")]))
    diff = tmp_path / "diff"
    diff.mkdir()
    with pytest.raises(InvalidImageError, match="too much memory"):
        unpack_stream(io.BytesIO(buf.getvalue()).read, diff)


@pytest.mark.parametrize("how", ["gzip", "zstd", "tar"])
def test_it_sniffs_the_compression(tmp_path: Path, how: str) -> None:
    diff, result = unpack(tmp_path, [File("a", b"x" * 10_000)], how=how)
    assert result.compression == how
    assert (diff / "a").read_bytes() == b"x" * 10_000


def test_it_refuses_data_after_the_archive(tmp_path: Path) -> None:
    diff = tmp_path / "diff"
    diff.mkdir()
    data = tar_bytes([File("a", b"x")], trailing=b"\0" * 4096 + b"junk")
    with pytest.raises(InvalidImageError, match="after the end"):
        unpack_stream(io.BytesIO(data).read, diff)


def test_it_accepts_empty_layers(tmp_path: Path) -> None:
    diff = tmp_path / "diff"
    diff.mkdir()
    blob = gzip.compress(b"\0" * 1024)  # what `docker build` writes for a metadata-only step
    result = unpack_stream(io.BytesIO(blob).read, diff)
    assert result.entries == 0 and list(diff.iterdir()) == []
    assert result.diff_id == sha(b"\0" * 1024)


def test_it_refuses_corrupt_gzip(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(tar_bytes([File("a", os.urandom(50_000))])))
    blob[len(blob) // 2] ^= 0xFF
    diff = tmp_path / "diff"
    diff.mkdir()
    with pytest.raises(InvalidImageError):
        unpack_stream(io.BytesIO(bytes(blob)).read, diff)


def test_it_bounds_the_entry_count(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="more than 10 entries"):
        unpack(tmp_path, [File(f"f{i}") for i in range(20)], max_entries=10)


def test_it_applies_the_root_entry(tmp_path: Path) -> None:
    diff, _ = unpack(tmp_path, [Dir("./", mode=0o751, uid=5, gid=6), File("a")])
    st = diff.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 5, 6)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_fast_header_parser_agrees_with_tarfile(fmt: int) -> None:
    from engine.layers.tarstream import FastTarInfo as _FastTarInfo

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        names = ["a", "dir/", "x" * 90 + "/" + "y" * 90, "deep/" * 40 + "f", "ünïcødé"]
        for i, name in enumerate(names):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = i, 0o4755, 1_700_000_000 + i
            info.uid = info.gid = 2_097_151 if fmt == tarfile.USTAR_FORMAT else 3_000_000_000
            info.uname, info.gname = "user", "group"
            if name.endswith("/"):
                info.type, info.size = tarfile.DIRTYPE, 0
            tar.addfile(info, io.BytesIO(b"x" * info.size))
        long = "l" * (90 if fmt == tarfile.USTAR_FORMAT else 150)
        for kind, link in ((tarfile.SYMTYPE, long), (tarfile.LNKTYPE, "a")):
            info = tarfile.TarInfo(f"link{kind!r}")
            info.type, info.linkname = kind, link
            tar.addfile(info)
        info = tarfile.TarInfo("dev/null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info)
    data = buf.getvalue()

    def parse(**kw: Any) -> list[tuple[Any, ...]]:
        fields = "name mode uid gid size mtime type linkname uname gname devmajor devminor"
        fields += " offset offset_data pax_headers"
        with tarfile.TarFile(fileobj=io.BytesIO(data), mode="r", **kw) as tar:
            return [tuple(getattr(m, f) for f in fields.split()) for m in tar.getmembers()]

    assert parse(tarinfo=_FastTarInfo) == parse()
    assert len(parse()) == 8


def test_the_pool_takes_over_when_creating_files_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.layers.writepool as writepool

    monkeypatch.setattr(writepool, "ADAPT_WINDOW", 8)
    monkeypatch.setattr(writepool, "SLOW_CREATE", -1.0)  # every create counts as slow
    submitted: list[int] = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(1)
            return super().submit(fn, *args, **kwargs)

    entries = [Dir("d")] + [File(f"d/f{i}", str(i)) for i in range(100)]
    diff = tmp_path / "diff"
    diff.mkdir()
    with CountingPool(2) as pool:
        unpack_stream(io.BytesIO(tar_bytes(entries)).read, diff, pool=pool)
    assert submitted, "the pool never took over"
    assert len(submitted) < 100 // writepool.BATCH + 2  # batches, not one task per file
    assert sorted(p.read_text() for p in (diff / "d").iterdir()) == sorted(map(str, range(100)))


# -- header records (GNU longname/longlink, PAX): bounded before tarfile reads them ------------
_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from engine.errors import InvalidImageError
from engine.layers.unpack import unpack_stream

def run(blob, diff):
    Path(diff).mkdir()
    with open(blob, "rb") as f:
        unpack_stream(f.read, Path(diff))

run(sys.argv[1], sys.argv[3])  # warm-up: a normal layer, so the inflater's buffers are counted
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    run(sys.argv[2], sys.argv[4])
    error = ""
except InvalidImageError as err:
    error = str(err)
seconds = time.monotonic() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "error": error, "seconds": seconds}))
"""


def header_block(kind: bytes, size: int, name: str = "././@LongLink") -> bytes:
    """One raw 512-byte tar header (GNU magic) of any type and size."""
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def write_hostile_layer(path: Path, kind: bytes, size: int) -> None:
    """A gzip layer whose first entry is a ``kind`` header record of ``size`` bytes (a valid
    one: a NUL-terminated name, or one PAX record), then one empty file. Written in chunks:
    the test process never holds it whole."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header_block(kind, size))
        if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            digits = len(str(size))
            prefix = f"{size} comment=".encode()
            assert len(prefix) == digits + 9
            body_left, tail = size - len(prefix) - 1, b"\n"
        else:
            prefix, body_left, tail = b"", size - 1, b"\0"
        out.write(prefix)
        chunk = b"a" * (1024 * 1024)
        while body_left:
            out.write(chunk[: min(body_left, len(chunk))])
            body_left -= min(body_left, len(chunk))
        out.write(tail + b"\0" * (-size % 512))
        out.write(tar_bytes([File("after", b"")]))


@pytest.mark.parametrize(
    ("kind", "label"),
    [(tarfile.GNUTYPE_LONGNAME, "'L'"), (tarfile.GNUTYPE_LONGLINK, "'K'"),
     (tarfile.XHDTYPE, "'x'"), (tarfile.XGLTYPE, "'g'")],
)  # fmt: skip
def test_it_refuses_a_huge_header_record_quickly_and_in_little_memory(
    tmp_path: Path, kind: bytes, label: str
) -> None:
    """security.md A12/A13: a 64 MiB name record gzips to ~64 KB; tarfile would read it whole
    (and copy it twice). It is refused from its 512-byte header, before any of it is read."""
    size = 64 * 1024 * 1024
    hostile, normal = tmp_path / "hostile.tar.gz", tmp_path / "normal.tar.gz"
    write_hostile_layer(hostile, kind, size)
    assert hostile.stat().st_size < 1_000_000
    normal.write_bytes(gzip.compress(tar_bytes([File("big", os.urandom(1 << 20) * 16)]), 1))
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(normal), str(hostile),
         str(tmp_path / "d1"), str(tmp_path / "d2")],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    got = json.loads(out.stdout)
    assert got["growth_kib"] < 16 * 1024, got  # before the fix: +190 MiB ('L'), +254 MiB ('x')
    assert got["seconds"] < 5, got
    assert label in got["error"] and str(size) in got["error"], got
    assert "header" in got["error"] and "\n" not in got["error"]
    assert not (tmp_path / "d2" / "after").exists()


def test_it_refuses_long_chains_of_header_records(tmp_path: Path) -> None:
    """Each record is small, but tarfile recurses once per record and keeps every one: 2000
    of them were a RecursionError, and 900 of 1 MiB each would have held 900 MiB."""
    record = b"n" * 99 + b"\0" + b"\0" * 412
    data = (header_block(tarfile.GNUTYPE_LONGNAME, 100) + record) * 2000
    data += tar_bytes([File("after", b"")])
    diff = tmp_path / "diff"
    diff.mkdir()
    with pytest.raises(InvalidImageError, match="header records in a row"):
        unpack_stream(io.BytesIO(gzip.compress(data)).read, diff)


def pax_record(kind: bytes, key: str, value: str) -> bytes:
    """A PAX header record (``kind`` 'x' or 'g') holding one ``key=value``, padded."""
    line = f" {key}={value}\n".encode()
    length = len(line) + len(str(len(line)))
    length = len(line) + len(str(length))
    body = str(length).encode() + line
    return header_block(kind, len(body)) + body + b"\0" * (-len(body) % 512)


def test_it_bounds_the_global_pax_headers_of_a_layer(tmp_path: Path) -> None:
    """tarfile keeps every 'g' record for the rest of the archive, so they are bounded in
    total, not only one by one: eight of 256 KiB, each before its own file, are refused."""
    data = b""
    for i in range(8):
        data += pax_record(tarfile.XGLTYPE, f"k{i}", "v" * (256 * 1024))
        data += tarfile.TarInfo(f"f{i}").tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    data += b"\0" * 1024
    diff = tmp_path / "diff"
    diff.mkdir()
    with pytest.raises(InvalidImageError, match="global"):
        unpack_stream(io.BytesIO(gzip.compress(data)).read, diff)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_link_targets_still_work(tmp_path: Path, fmt: int) -> None:
    name = "dir/" + "n" * 200
    target = "/" + "t" * 300
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        tar.addfile(_info("dir", tarfile.DIRTYPE))
        tar.addfile(_info(name, tarfile.REGTYPE, 5), io.BytesIO(b"hello"))
        tar.addfile(_info("dir/" + "s" * 150, tarfile.SYMTYPE, linkname=target))
    diff = tmp_path / "diff"
    diff.mkdir()
    result = unpack_stream(io.BytesIO(gzip.compress(buf.getvalue())).read, diff)
    assert result.entries == 3
    assert (diff / name).read_bytes() == b"hello"
    assert os.readlink(diff / "dir" / ("s" * 150)) == target


def _info(name: str, kind: bytes, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, linkname
    return info
