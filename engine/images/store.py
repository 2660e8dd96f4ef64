"""The layer store: content-addressed blobs, extracted layers keyed by chain id, image records.

    <root>/blobs/sha256/<hex>              verified blobs (manifests, configs, layer blobs)
    <root>/layers/<chain-hex>/diff/        one extracted layer in overlayfs form (a lowerdir)
    <root>/layers/<chain-hex>/layer.json   LayerRecord
    <root>/images/<config-hex>.json        ImageRecord
    <root>/tmp/                            work in progress; never referenced; swept at start

Commits are atomic: a layer is extracted into <root>/tmp/<x>/ and renamed into layers/ only
when complete and verified; records are written with engine.hostfs.atomic. Images share layers
through their chain ids.

Every <root>/tmp/<x> made by tmp_dir() is flock()ed by the process that made it until it is
committed, discarded or that process dies (even by SIGKILL), so sweep_tmp() (at worker start
and before CLI pulls) removes abandoned work only, never another process's work in progress.
Removing an image deletes its record; gc() then deletes layers and blobs no image and no
container refers to. gc() holds the "gc" lock exclusively and pulls hold it shared, so a
layer a pull just committed (before its image record exists) is never collected.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.core import Engine
from engine.errors import EngineError, ImageNotFoundError, InvalidImageError, InvalidInputError
from engine.hostfs import atomic, digests
from engine.hostfs.locks import LockTimeoutError, locked
from engine.hostfs.rmtree import remove_tree

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    """The store's logger, made when something is logged (ps never imports logging)."""
    import logging

    return logging.getLogger("gantry.engine.store")


TMP_ATTEMPTS = 5  # a fresh tmp dir swept away before it was locked is made again


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
    compressed_size: int = 0  # bytes of the blob
    files: int = 0  # regular files among the entries
    tar_size: int = 0  # bytes of the uncompressed tar

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
    platform: str = ""  # "linux/amd64"
    media_type: str = ""  # of the image manifest
    source: str = ""  # "registry" | "oci-layout" | "docker-archive" | ...

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


@dataclass
class GcResult:
    layers: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    skipped: bool = False  # another operation held the store (a pull): try later


class Store:
    def __init__(self, engine: Engine) -> None:
        self.root = Path(engine.config.root)
        for sub in ("blobs/sha256", "layers", "images", "tmp"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        # tmp dirs this process holds: path -> fd carrying the flock
        self._held: dict[Path, int] = {}
        self._held_lock = threading.Lock()

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
        """A fresh private directory under <root>/tmp (swept at start if abandoned). It stays
        locked by this process until committed, discard()ed or renamed away."""
        import tempfile  # (with shutil, bz2 and lzma) only when a pull or create needs it

        self._prune_held()
        for _ in range(TMP_ATTEMPTS):
            path = Path(tempfile.mkdtemp(prefix=f"{prefix}.", dir=self.root / "tmp"))
            fd = self._lock_fresh(path)
            if fd >= 0:
                with self._held_lock:
                    self._held[path] = fd
                return path
        raise EngineError(f"no working directory could be kept under {self.root / 'tmp'}")

    @staticmethod
    def _lock_fresh(path: Path) -> int:
        """Lock a directory just made; -1 if a sweep (another process's start) removed it
        between its creation and the lock: it is unlocked for that moment."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return -1
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for a sweep that holds it, if one does
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return -1
        return fd

    def _release(self, path: Path) -> None:
        with self._held_lock:
            fd = self._held.pop(path, None)
        if fd is not None:
            os.close(fd)

    def _prune_held(self) -> None:
        """Drop the locks of tmp dirs that were renamed away or deleted by their users."""
        with self._held_lock:
            gone = [p for p in self._held if not p.exists()]
            for path in gone:
                os.close(self._held.pop(path))

    def discard(self, path: Path) -> None:
        """Delete a tmp_dir() and release it."""
        remove_tree(path, ignore_errors=True)
        self._release(path)

    def sweep_tmp(self) -> int:
        """Remove abandoned work under <root>/tmp (entries no live process holds locked).
        An entry that cannot be removed is logged and left: it stops neither the others nor
        what runs after the sweep (gc)."""
        removed = 0
        tmp = self.root / "tmp"
        for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
            try:
                removed += self._sweep_entry(entry)
            except Exception as err:  # noqa: BLE001  (one bad entry must not stop the sweep)
                _log().warning("sweep %s: not removed: %s", entry, err)
        if removed:
            _log().info("swept %d abandoned entries from %s", removed, tmp)
        return removed

    @staticmethod
    def _sweep_entry(entry: Path) -> int:
        """Remove one tmp entry unless a live process holds it locked: 1 if removed."""
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            fd = -1
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # someone is working in it
            remove_tree(entry)  # a directory with all below it, or a file or a symlink
            return 1
        finally:
            if fd >= 0:
                os.close(fd)

    # -- blobs -------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store verified content under its digest (checked against ``digest`` if given)."""
        actual = digests.of_bytes(data)
        if digest is not None and actual != digests.check(digest):
            raise InvalidImageError(f"blob {digest}: digest mismatch (got {actual})")
        path = self.blob_path(actual)
        if not path.is_file():
            atomic.write_bytes(path, data)
        return actual

    def read_blob(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError as err:
            raise ImageNotFoundError(f"blob {digest} not in the store") from err
        if digests.of_bytes(data) != digest:
            raise InvalidImageError(f"blob {digest}: corrupt in the store")
        return data

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
        os.chmod(work, 0o700)  # setuid binaries inside: nobody but root may traverse
        target = self.layer_path(record.chain_id)
        try:
            os.rename(work, target)
        except OSError:
            if self.has_layer(record.chain_id):
                self.discard(work)
                return self.get_layer(record.chain_id)
            raise
        self._release(work)
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

    def containers_using(self, image_id: str) -> list[str]:
        """Names (or ids) of containers whose record names this image."""
        out = []
        for record in self._container_records():
            if record.get("image_id") == image_id:
                out.append(str(record.get("name") or record.get("id") or "?"))
        return out

    def _container_records(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.root / "containers").glob("*/container.json"):
            try:
                data = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                out.append(data)
        return out

    def remove_image_record(self, image_id: str) -> None:
        """Delete the record (the image's layers and blobs go at the next gc())."""
        with locked(self.root, "image", digests.hex_of(image_id)):
            try:
                self.image_path(image_id).unlink()
            except FileNotFoundError as err:
                raise ImageNotFoundError(f"image {image_id}: not known") from err
            atomic.fsync_dir(self.image_path(image_id).parent)

    def gc(self, *, wait: float = 0.0) -> GcResult:
        """Delete layers and blobs that no image record and no container refers to. Skipped
        (``skipped``) when a pull holds the store and ``wait`` runs out."""
        result = GcResult()
        try:
            with locked(self.root, "gc", "store", timeout=wait):
                self._collect(result)
        except LockTimeoutError:
            result.skipped = True
        return result

    def _collect(self, result: GcResult) -> None:
        images = self.list_images()
        keep_layers = {c for image in images for c in image.layers}
        keep_blobs = {
            str(doc.get("digest"))
            for image in images
            for doc in image.manifest_chain
            if doc.get("kind") in ("index", "manifest", "config")
        }
        for record in self._container_records():
            layers = record.get("layers")
            if isinstance(layers, list):
                keep_layers.update(str(c) for c in layers)
        trash: Path | None = None
        for entry in sorted((self.root / "layers").iterdir()):
            chain = f"sha256:{entry.name}"
            if chain in keep_layers or not digests.HEX_RE.match(entry.name):
                continue
            if trash is None:
                trash = self.tmp_dir("gc")
            # Rename first: layers/ never shows a half-deleted layer.
            os.rename(entry, trash / entry.name)
            result.layers.append(chain)
        for entry in sorted((self.root / "blobs" / "sha256").iterdir()):
            digest = f"sha256:{entry.name}"
            if digest not in keep_blobs and digests.HEX_RE.match(entry.name):
                entry.unlink(missing_ok=True)
                result.blobs.append(digest)
        if trash is not None:
            atomic.fsync_dir(self.root / "layers")
            self.discard(trash)
        if result.layers or result.blobs:
            _log().info("gc: %d layers, %d blobs", len(result.layers), len(result.blobs))

    @contextlib.contextmanager
    def pulling(self) -> Iterator[None]:
        """Held (shared) by a pull from its first layer to its image record: gc() waits."""
        with locked(self.root, "gc", "store", shared=True, timeout=3600):
            yield
