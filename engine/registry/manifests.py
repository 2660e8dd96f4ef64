"""OCI and Docker image documents: media types, descriptors, indexes, manifests and configs,
parsed from untrusted bytes and checked before anything else uses them.

A document is refused when it is ambiguous (both ``manifests`` and ``layers``/``config``, or a
``mediaType`` that contradicts the Content-Type it came with: CVE-2021-41190), when it is a
Docker schema 1 manifest (unsupported), or when a descriptor has a bad digest, size or media
type. Platform selection walks an index with depth and count limits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidImageError, InvalidInputError
from engine.hostfs import digests
from engine.registry.refs import Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_V1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}

MAX_MANIFEST = 4 * 1024 * 1024  # distribution-spec: registries accept at least 4 MB
MAX_CONFIG = 8 * 1024 * 1024
MAX_BLOB = 64 * 1024**3
MAX_INDEX_ENTRIES = 1024
MAX_INDEX_DEPTH = 3
MAX_LAYERS = 256
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9!#$&^_.+-]{1,127}$")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        out["size"] = self.size
        if self.platform:
            out["platform"] = str(self.platform)
        if self.urls:
            out["urls"] = list(self.urls)
        return out


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise InvalidImageError(f"{what}: descriptor must be an object")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE_RE.match(media_type):
        raise InvalidImageError(f"{what}: media type {str(media_type)[:80]!r} is not valid")
    try:
        digest = digests.check(obj.get("digest"), f"{what}: digest")
    except InvalidInputError as err:
        raise InvalidImageError(err.message) from err
    size = obj.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB:
        raise InvalidImageError(f"{what}: size {str(size)[:40]!r} is not valid")
    urls = obj.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) and len(u) < 2048 for u in urls):
        raise InvalidImageError(f"{what}: urls must be a list of strings")
    plat = obj.get("platform")
    platform = None
    if isinstance(plat, dict):
        os_name, arch = plat.get("os"), plat.get("architecture")
        variant = plat.get("variant") or ""
        if isinstance(os_name, str) and isinstance(arch, str) and isinstance(variant, str):
            platform = Platform(os_name[:40], arch[:40], variant[:40])
    notes = obj.get("annotations") or {}
    annotations = (
        {str(k)[:256]: str(v)[:1024] for k, v in notes.items()} if isinstance(notes, dict) else {}
    )
    return Descriptor(media_type, digest, size, tuple(urls[:8]), platform, annotations)


@dataclass(frozen=True)
class Document:
    """A verified index or manifest: its bytes, digest, media type and parsed body."""

    kind: str  # "index" | "manifest"
    media_type: str
    digest: str
    data: bytes
    body: dict[str, Any]

    @property
    def manifests(self) -> list[Descriptor]:
        items = self.body.get("manifests") or []
        return [parse_descriptor(d, f"index {self.digest} entry {i}") for i, d in enumerate(items)]

    @property
    def config(self) -> Descriptor:
        return parse_descriptor(self.body.get("config"), f"manifest {self.digest} config")

    @property
    def layers(self) -> list[Descriptor]:
        items = self.body.get("layers") or []
        what = f"manifest {self.digest} layer"
        return [parse_descriptor(d, f"{what} {i}") for i, d in enumerate(items)]


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise InvalidImageError(f"{what}: not valid JSON") from err
    if not isinstance(body, dict):
        raise InvalidImageError(f"{what}: must be a JSON object")
    return body


def parse_document(data: bytes, content_type: str, digest: str, what: str) -> Document:
    """Parse an index or manifest; ``content_type`` is what the registry said (or "")."""
    body = load_json(data, what)
    declared = body.get("mediaType")
    header = content_type.split(";")[0].strip().lower()
    if declared is not None and not isinstance(declared, str):
        raise InvalidImageError(f"{what}: mediaType must be a string")
    if body.get("schemaVersion") == 1 or header in DOCKER_V1 or declared in DOCKER_V1:
        raise InvalidImageError(
            f"{what}: Docker schema 1 manifests are not supported (the image is too old; "
            "re-push it with a current client)"
        )
    if body.get("schemaVersion") != 2:
        raise InvalidImageError(f"{what}: schemaVersion must be 2")
    known = INDEX_TYPES + MANIFEST_TYPES
    if declared and header in known and declared != header:
        raise InvalidImageError(
            f"{what}: mediaType {declared} does not match Content-Type {header} (CVE-2021-41190)"
        )
    has_index = "manifests" in body
    has_image = "layers" in body or "config" in body
    if has_index and has_image:
        raise InvalidImageError(
            f"{what}: document has both manifests and layers/config (ambiguous, CVE-2021-41190)"
        )
    media_type = declared or (header if header in known else "")
    if not media_type:
        media_type = OCI_INDEX if has_index else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        if not has_index or not isinstance(body["manifests"], list):
            raise InvalidImageError(f"{what}: index without a manifests list")
        if len(body["manifests"]) > MAX_INDEX_ENTRIES:
            raise InvalidImageError(f"{what}: index lists more than {MAX_INDEX_ENTRIES} manifests")
        doc = Document("index", media_type, digest, data, body)
        doc.manifests  # noqa: B018  (validates every descriptor now)
        return doc
    if media_type in MANIFEST_TYPES:
        if has_index or not isinstance(body.get("layers"), list):
            raise InvalidImageError(f"{what}: image manifest without a layers list")
        if len(body["layers"]) > MAX_LAYERS:
            raise InvalidImageError(f"{what}: more than {MAX_LAYERS} layers")
        doc = Document("manifest", media_type, digest, data, body)
        if doc.config.media_type not in CONFIG_TYPES:
            raise InvalidImageError(
                f"{what}: config media type {doc.config.media_type} is not a container image "
                "(an artifact, not an image?)"
            )
        if doc.config.size > MAX_CONFIG:
            raise InvalidImageError(f"{what}: config larger than {MAX_CONFIG} bytes")
        for layer in doc.layers:
            if layer.media_type not in LAYER_TYPES:
                raise InvalidImageError(f"{what}: layer media type {layer.media_type} unsupported")
        return doc
    raise InvalidImageError(f"{what}: media type {media_type[:80]} is not an image index/manifest")


def _matches(entry: Platform, want: Platform) -> bool:
    if entry.os != want.os or entry.architecture != want.architecture:
        return False
    return not want.variant or entry.variant in (want.variant, "")


def select_platform(index: Document, want: Platform) -> Descriptor:
    """The index entry for ``want``: exact variant first, then any variant of that arch.
    Attestation entries (unknown/unknown) never match."""
    candidates = [d for d in index.manifests if d.platform and _matches(d.platform, want)]
    exact = [d for d in candidates if d.platform and d.platform.variant == want.variant]
    if not candidates:
        available = sorted(
            {str(d.platform) for d in index.manifests if d.platform and d.platform.os != "unknown"}
        )
        raise InvalidImageError(
            f"no image for platform {want} in index {index.digest[:19]} "
            f"(available: {', '.join(available) or 'none'})"
        )
    pick = (exact or candidates)[0]
    if pick.media_type not in INDEX_TYPES + MANIFEST_TYPES:
        raise InvalidImageError(f"index entry {pick.digest}: media type {pick.media_type}")
    return pick


@dataclass(frozen=True)
class Config:
    digest: str
    data: bytes
    body: dict[str, Any]
    diff_ids: list[str]

    @property
    def platform(self) -> str:
        base = f"{self.body.get('os', '')}/{self.body.get('architecture', '')}"
        variant = self.body.get("variant")
        return f"{base}/{variant}" if isinstance(variant, str) and variant else base


def parse_config(data: bytes, digest: str, layer_count: int | None) -> Config:
    body = load_json(data, f"config {digest}")
    rootfs = body.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidImageError(f"config {digest}: rootfs.type must be 'layers'")
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list) or len(raw_ids) > MAX_LAYERS:
        raise InvalidImageError(f"config {digest}: rootfs.diff_ids must be a list")
    try:
        diff_ids = [digests.check(d, f"config {digest}: diff_id") for d in raw_ids]
    except InvalidInputError as err:
        raise InvalidImageError(err.message) from err
    if layer_count is not None and len(diff_ids) != layer_count:
        raise InvalidImageError(
            f"config {digest}: {len(diff_ids)} diff_ids for {layer_count} layers"
        )
    for key in ("config", "history"):
        if key in body and not isinstance(body[key], dict | list):
            raise InvalidImageError(f"config {digest}: {key} has the wrong type")
    return Config(digest, data, body, diff_ids)
