"""Build real images for pull tests: tar layers entry by entry (including the hostile ones a
real tool would never write), compressed with gzip or zstd, put into an OCI image layout with
manifests, configs and multi-arch indexes, ready for ``skopeo copy oci:DIR:tag docker://...``.

    layout = Layout(tmp_path / "oci")
    img = layout.image([busybox_layer(), layer([File("etc/motd", b"hi")])], tag="v1")
    registry.push(layout.path, "v1", "test/busybox:v1")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

BUSYBOX = Path("/bin/busybox")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "tar": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
MTIME = 1_700_000_000


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: float = MTIME
    xattrs: dict[str, bytes] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0


def File(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:  # noqa: N802
    return Entry(name, data=data.encode() if isinstance(data, str) else data, mode=mode, **kw)


def Dir(name: str, mode: int = 0o755, **kw: Any) -> Entry:  # noqa: N802
    return Entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def Symlink(name: str, target: str, **kw: Any) -> Entry:  # noqa: N802
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)


def Hardlink(name: str, target: str, **kw: Any) -> Entry:  # noqa: N802
    return Entry(name, tarfile.LNKTYPE, linkname=target, **kw)


def Whiteout(name: str) -> Entry:  # noqa: N802
    parent, _, base = name.rstrip("/").rpartition("/")
    return Entry(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def Opaque(directory: str) -> Entry:  # noqa: N802
    return Entry(f"{directory.rstrip('/')}/.wh..wh..opq")


def Char(name: str, major: int, minor: int, mode: int = 0o666) -> Entry:  # noqa: N802
    return Entry(name, tarfile.CHRTYPE, mode=mode, devmajor=major, devminor=minor)


def Fifo(name: str, mode: int = 0o644) -> Entry:  # noqa: N802
    return Entry(name, tarfile.FIFOTYPE, mode=mode)


def tar_bytes(entries: list[Entry], *, trailing: bytes = b"") -> bytes:
    """A PAX tar of exactly these entries, in this order (no sanitising at all)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            if e.xattrs:
                info.pax_headers = {
                    f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                    for k, v in e.xattrs.items()
                }
            if e.type == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue() + trailing


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()) - {"busybox"})


def busybox_layer() -> list[Entry]:
    """A small real rootfs: busybox-static with its applets, passwd, group, tmp."""
    entries = [
        Dir("bin"),
        File("bin/busybox", BUSYBOX.read_bytes(), mode=0o755),
        Dir("etc"),
        File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
        File("etc/group", "root:x:0:\nuser:x:1000:\n"),
        Dir("tmp", mode=0o1777),
        Dir("root", mode=0o700),
        Dir("home"),
        Dir("home/user", uid=1000, gid=1000),
    ]
    entries += [Symlink(f"bin/{a}", "busybox") for a in applets()]
    return entries


@dataclass
class Built:
    """A pushed-or-pushable image: its manifest descriptor and what went into it."""

    manifest: dict[str, Any]
    config: dict[str, Any]
    config_digest: str
    layers: list[dict[str, Any]]
    diff_ids: list[str]
    tars: list[bytes]


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(
        self,
        layers: Sequence[Sequence[Entry] | bytes],
        *,
        tag: str | None = None,
        compression: str | list[str] = "gzip",
        arch: str = "amd64",
        variant: str = "",
        config: dict[str, Any] | None = None,
        diff_ids: list[str] | None = None,
    ) -> Built:
        """Write layers, config and manifest; tag it in index.json when ``tag`` is given."""
        tars = [x if isinstance(x, bytes) else tar_bytes(list(x)) for x in layers]
        kinds = compression if isinstance(compression, list) else [compression] * len(tars)
        descs = [
            self.blob(compress(t, how), LAYER_TYPES[how])
            for t, how in zip(tars, kinds, strict=True)
        ]
        ids = diff_ids or [sha(t) for t in tars]
        body: dict[str, Any] = {
            "created": "2026-11-28T10:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
                "WorkingDir": "/",
                "Labels": {"org.example.test": "gantry"},
            },
            "rootfs": {"type": "layers", "diff_ids": ids},
            "history": [{"created_by": f"ocibuild layer {i}"} for i in range(len(tars))],
        }
        if variant:
            body["variant"] = variant
        if config:
            body["config"] = body["config"] | config
        raw = json.dumps(body).encode()
        config_desc = self.blob(raw, OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": descs,
        }
        mdesc = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        mdesc["platform"] = {"architecture": arch, "os": "linux"} | (
            {"variant": variant} if variant else {}
        )
        if tag:
            self.tag(mdesc, tag)
        return Built(mdesc, body, config_desc["digest"], descs, ids, tars)

    def index(self, manifests: list[dict[str, Any]], *, tag: str | None = None) -> dict[str, Any]:
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        desc = self.blob(json.dumps(body).encode(), OCI_INDEX)
        if tag:
            self.tag(desc, tag)
        return desc

    def tag(self, desc: dict[str, Any], tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.entries = [
            e for e in self.entries if e["annotations"]["org.opencontainers.image.ref.name"] != tag
        ]
        self.entries.append(entry)
        (self.path / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries})
        )
