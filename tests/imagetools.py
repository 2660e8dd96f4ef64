"""Build test images straight into a store (no registry, no tar): for tests of the parts that
come after a pull (storage, explorer, spec, runtime). Pull tests build real tar layers and push
them with skopeo instead (see tests/engine/ocibuild.py).

A layer is a dict path -> content: bytes/str (a regular file), Dir(), Link(target) (symlink),
Whiteout() (overlayfs 0/0 char device), or File(content, mode, uid, gid).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.hostfs.digests import chain_ids, of_bytes
from engine.images.store import ImageRecord, LayerRecord, Store

BUSYBOX = Path("/bin/busybox")


@dataclass
class File:
    content: bytes | str = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    opaque: bool = False


@dataclass
class Link:
    target: str


@dataclass
class Whiteout:
    pass


@dataclass
class Copy:
    """A host file copied in (for binaries such as busybox)."""

    source: Path
    mode: int = 0o755


Entry = bytes | str | File | Dir | Link | Whiteout | Copy
Layer = dict[str, Entry]


def _write_entry(diff: Path, rel: str, entry: Entry) -> int:
    path = diff / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(entry, bytes | str):
        entry = File(entry)
    if isinstance(entry, File):
        data = entry.content.encode() if isinstance(entry.content, str) else entry.content
        path.write_bytes(data)
        os.chmod(path, entry.mode)
        os.chown(path, entry.uid, entry.gid)
        return len(data)
    if isinstance(entry, Copy):
        shutil.copyfile(entry.source, path)
        os.chmod(path, entry.mode)
        return path.stat().st_size
    if isinstance(entry, Dir):
        path.mkdir(exist_ok=True)
        os.chmod(path, entry.mode)
        os.chown(path, entry.uid, entry.gid)
        if entry.opaque:
            os.setxattr(path, "trusted.overlay.opaque", b"y")
        return 0
    if isinstance(entry, Link):
        os.symlink(entry.target, path)
        return 0
    if isinstance(entry, Whiteout):
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return 0
    raise TypeError(entry)


def make_image(
    engine: Engine,
    layers: list[Layer],
    *,
    name: str = "localhost/test:latest",
    config: dict[str, Any] | None = None,
) -> ImageRecord:
    """Write layers and an image record into the engine's store and return the record."""
    store = engine.get(Store)
    # A deterministic stand-in diff id per layer (these layers never existed as tars).
    diff_ids = [
        of_bytes(
            json.dumps(sorted((k, repr(v)) for k, v in layer.items())).encode() + str(i).encode()
        )
        for i, layer in enumerate(layers)
    ]
    chains = chain_ids(diff_ids)
    for i, (layer, chain) in enumerate(zip(layers, chains, strict=True)):
        if store.has_layer(chain):
            continue
        work = store.tmp_dir("layer")
        diff = work / "diff"
        diff.mkdir(mode=0o755)
        size = sum(_write_entry(diff, rel, entry) for rel, entry in sorted(layer.items()))
        store.commit_layer(
            work,
            LayerRecord(
                chain_id=chain,
                diff_id=diff_ids[i],
                parent=chains[i - 1] if i else None,
                size=size,
                entries=len(layer),
            ),
        )
    image_config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-28T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"test layer {i}"} for i in range(len(layers))],
    }
    if config:
        image_config["config"] = dict(image_config["config"]) | config
    raw = json.dumps(image_config, sort_keys=True).encode()
    image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    record = ImageRecord(
        id=image_id,
        digest=of_bytes(raw + b"manifest"),
        names=[name],
        config=image_config,
        diff_ids=diff_ids,
        layers=chains,
        size=sum(store.get_layer(c).size for c in chains),
    )
    return store.commit_image(record)


def busybox_layer(extra: Layer | None = None) -> Layer:
    """A small but real rootfs: static busybox with every applet linked, passwd and group."""
    layer: Layer = {
        "/bin": Dir(),
        "/bin/busybox": Copy(BUSYBOX),
        "/etc": Dir(),
        "/tmp": Dir(mode=0o1777),
        "/root": Dir(mode=0o700),
        "/home/user": Dir(uid=1000, gid=1000),
        "/proc": Dir(),
        "/sys": Dir(),
        "/dev": Dir(),
        "/usr/bin": Dir(),
        "/usr/sbin": Dir(),
        "/sbin": Dir(),
        "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:User:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "/etc/group": "root:x:0:\nwheel:x:10:user\nuser:x:1000:\nnogroup:x:65534:\n",
        "/etc/hostname": "busybox\n",
    }
    for applet in _applets():
        if applet not in ("busybox",) and f"/bin/{applet}" not in layer:
            layer[f"/bin/{applet}"] = Link("busybox")
    layer.update(extra or {})
    return layer


def _applets() -> list[str]:
    import subprocess

    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()))


def busybox_image(
    engine: Engine,
    name: str = "localhost/busybox:latest",
    extra_layers: list[Layer] | None = None,
    **kwargs: Any,
) -> ImageRecord:
    return make_image(engine, [busybox_layer(), *(extra_layers or [])], name=name, **kwargs)


__all__ = [
    "File",
    "Dir",
    "Link",
    "Whiteout",
    "Copy",
    "make_image",
    "busybox_layer",
    "busybox_image",
    "field",
]
