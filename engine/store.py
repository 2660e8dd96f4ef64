"""The layer store: content-addressed blobs, extracted layers keyed by chain id, image records.

    <root>/blobs/sha256/<hex>              verified blobs (manifests, configs, layer blobs)
    <root>/layers/<chain-hex>/diff/        one extracted layer in overlayfs form (a lowerdir)
    <root>/layers/<chain-hex>/layer.json   LayerRecord
    <root>/images/<config-hex>.json        ImageRecord
    <root>/tmp/                            work in progress; never referenced; swept at start

Commits are atomic: a layer is extracted into <root>/tmp/<x>/ and renamed into layers/ only
when complete and verified; records are written with engine.atomic. Images share layers
through their chain ids.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import atomic, digests
from engine.core import Engine
from engine.errors import ImageNotFoundError, InvalidInputError


@dataclass
class LayerRecord:
    chain_id: str
    diff_id: str
    parent: str | None = None
    size: int = 0  # bytes of regular-file content in diff/
    entries: int = 0  # tar entries extracted
    blob_digest: str = ""  # the (compressed) blob it was extracted from, if any
    media_type: str = ""
    created: float = field(default_factory=time.time)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class ImageRecord:
    id: str  # the config digest, sha256:<hex>
    digest: str = ""  # the manifest digest the image was pulled by
    names: list[str] = field(default_factory=list)  # "docker.io/library/busybox:latest"
    repo_digests: list[str] = field(default_factory=list)  # "docker.io/library/busybox@sha256:"
    config: dict[str, Any] = field(default_factory=dict)  # the image config document
    diff_ids: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # chain ids, bottom to top
    # The documents walked to get here: [{"kind": "index"|"manifest"|"config"|"layer",
    # "digest", "mediaType", "size", "platform"?}, ...]
    manifest_chain: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    pulled: float = field(default_factory=time.time)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @property
    def created(self) -> str:
        return str(self.config.get("created", ""))


class Store:
    def __init__(self, engine: Engine) -> None:
        self.root = Path(engine.config.root)
        for sub in ("blobs/sha256", "layers", "images", "tmp"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digests.hex_of(digest)

    def layer_path(self, chain_id: str) -> Path:
        return self.root / "layers" / digests.hex_of(chain_id)

    def layer_diff(self, chain_id: str) -> Path:
        return self.layer_path(chain_id) / "diff"

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{digests.hex_of(image_id)}.json"

    def tmp_dir(self, prefix: str) -> Path:
        """A fresh private directory under <root>/tmp (swept at start if abandoned)."""
        return Path(tempfile.mkdtemp(prefix=f"{prefix}.", dir=self.root / "tmp"))

    # -- layers ------------------------------------------------------------------------------
    def has_layer(self, chain_id: str) -> bool:
        return (self.layer_path(chain_id) / "layer.json").is_file()

    def get_layer(self, chain_id: str) -> LayerRecord:
        path = self.layer_path(chain_id) / "layer.json"
        try:
            return LayerRecord.from_dict(atomic.read_json(path))
        except FileNotFoundError as err:
            raise ImageNotFoundError(f"layer {chain_id} not in the store") from err

    def commit_layer(self, work: Path, record: LayerRecord) -> LayerRecord:
        """Move a finished layer into place. ``work`` is a tmp_dir() holding ``diff/``. If the
        layer already exists (another pull won), the work is discarded and the existing
        record returned."""
        if not (work / "diff").is_dir():
            raise InvalidInputError(f"commit layer {record.chain_id}: no diff dir in {work}")
        atomic.write_json(work / "layer.json", asdict(record))
        target = self.layer_path(record.chain_id)
        try:
            os.rename(work, target)
        except OSError:
            if self.has_layer(record.chain_id):
                shutil.rmtree(work, ignore_errors=True)
                return self.get_layer(record.chain_id)
            raise
        atomic.fsync_dir(target.parent)
        return record

    # -- images ------------------------------------------------------------------------------
    def list_images(self) -> list[ImageRecord]:
        out = []
        for path in sorted((self.root / "images").glob("*.json")):
            try:
                out.append(ImageRecord.from_dict(atomic.read_json(path)))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda i: i.pulled, reverse=True)

    def commit_image(self, record: ImageRecord) -> ImageRecord:
        """Write the image record. A name (repo:tag) belongs to one image: other images that
        held one of these names lose it (as podman retags)."""
        for layer in record.layers:
            if not self.has_layer(layer):
                raise InvalidInputError(f"commit image {record.id}: layer {layer} is missing")
        for other in self.list_images():
            if other.id != record.id and set(other.names) & set(record.names):
                other.names = [n for n in other.names if n not in record.names]
                atomic.write_json(self.image_path(other.id), asdict(other))
        try:
            existing = ImageRecord.from_dict(atomic.read_json(self.image_path(record.id)))
            record.names = list(dict.fromkeys(existing.names + record.names))
            record.repo_digests = list(dict.fromkeys(existing.repo_digests + record.repo_digests))
        except FileNotFoundError:
            pass
        atomic.write_json(self.image_path(record.id), asdict(record))
        return record

    def get_image(self, unsafe_ref: str) -> ImageRecord:
        """Find an image by id (sha256:..., full hex or a prefix of 3+ hex digits), or by name
        exactly as recorded."""
        if not isinstance(unsafe_ref, str) or not unsafe_ref or len(unsafe_ref) > 512:
            raise InvalidInputError("image: must be a name or id")
        ref = unsafe_ref.removeprefix("sha256:")
        images = self.list_images()
        if digests.HEX_RE.match(ref):
            found = [i for i in images if i.id == "sha256:" + ref]
        elif 3 <= len(ref) < 64 and all(c in "0123456789abcdef" for c in ref):
            found = [i for i in images if i.id.removeprefix("sha256:").startswith(ref)]
            if len(found) > 1:
                raise InvalidInputError(f"image id prefix {ref} is ambiguous")
        else:
            found = []
        if not found:
            found = [i for i in images if unsafe_ref in i.names or unsafe_ref in i.repo_digests]
        if not found:
            raise ImageNotFoundError(f"image {unsafe_ref[:200]}: not known")
        return found[0]

    def image_layer_dirs(self, image: ImageRecord) -> list[Path]:
        """The diff dirs of an image, bottom to top."""
        return [self.layer_diff(c) for c in image.layers]
