"""Offline images: ``load`` from an OCI image layout directory, an oci-archive (a tar of a
layout) or a docker-archive (``docker save`` / ``podman save`` output).

The input is untrusted like any registry: blobs are read through securepath (a layout
directory) or as tar members (never extracted to disk), capped, and verified for digest and
size; layers go through the same verified, parallel extraction as a pull (engine.images.pull).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from engine.core import Engine
from engine.errors import (
    ImageNotFoundError,
    InvalidImageError,
    InvalidInputError,
)
from engine.hostfs import digests, securepath
from engine.images.pull import PullJob, Resolved, chain_entry, run_job, walk_index
from engine.images.store import ImageRecord
from engine.layers.tarstream import FastTarInfo, HeaderRecordError
from engine.registry import manifests, refs
from engine.registry.manifests import Descriptor, Document
from engine.registry.refs import Platform

MAX_ARCHIVE_MEMBERS = 100_000
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1024 * 1024


class Blobs(Protocol):
    def open(self, digest: str) -> tuple[Callable[[int], bytes], int, Callable[[], None]]:
        """(read, size, close) of the blob with this (checked) digest."""


class LayoutDir:
    """Blobs of an OCI layout directory, resolved inside it (symlinks cannot leave it)."""

    def __init__(self, path: Path) -> None:
        self.root = securepath.Root(path)

    def open(self, digest: str) -> tuple[Callable[[int], bytes], int, Callable[[], None]]:
        hexd = digests.hex_of(digest)
        try:
            fd = self.root.open_regular(f"blobs/sha256/{hexd}")
        except FileNotFoundError as err:
            raise ImageNotFoundError(f"blob {digest} is missing from the layout") from err
        return (lambda n: os.read(fd, n)), os.fstat(fd).st_size, lambda: os.close(fd)

    def read_file(self, name: str, cap: int) -> bytes:
        try:
            fd = self.root.open_regular(name)
        except FileNotFoundError as err:
            raise InvalidInputError(f"{name}: missing (not an OCI layout?)") from err
        try:
            data = os.read(fd, cap + 1)
        finally:
            os.close(fd)
        if len(data) > cap:
            raise InvalidImageError(f"{name}: larger than {cap} bytes")
        return data


class ArchiveMembers:
    """Members of a tar archive by name (oci-archive blobs, docker-archive files)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # FastTarInfo: header records (GNU long names, PAX) are bounded before tarfile
            # reads one whole into memory.
            self.tar = tarfile.open(path, "r:", tarinfo=FastTarInfo)  # noqa: S202, SIM115
        except HeaderRecordError as err:
            raise InvalidImageError(f"{path}: {err}") from None
        except (tarfile.TarError, OSError) as err:
            raise InvalidInputError(f"{path}: not a tar archive ({err})") from err
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for count, member in enumerate(self.tar):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise InvalidImageError(f"{path}: more than {MAX_ARCHIVE_MEMBERS} members")
                key = "/".join(p for p in member.name.split("/") if p not in ("", "."))
                self.members[key] = member
        except HeaderRecordError as err:
            raise InvalidImageError(f"{path}: {err}") from None
        self.tar.members = []  # type: ignore[attr-defined]

    def member(self, name: str) -> tarfile.TarInfo:
        key = "/".join(p for p in name.split("/") if p not in ("", "."))
        found = self.members.get(key)
        if found is None:
            raise InvalidImageError(f"archive member {name[:200]!r} is missing")
        return found

    def open_member(self, name: str) -> tuple[_MemberReader, int]:
        """A reader of one member's bytes. Readers are independent (pread on a private fd),
        so layers can be read by parallel threads."""
        member = self.member(name)
        for _ in range(8):  # symlinks between members (docker save shares layers so)
            if not member.issym():
                break
            base = os.path.dirname(member.name)
            member = self.member(os.path.normpath(os.path.join(base, member.linkname)))
        if member.islnk():
            member = self.member(member.linkname)
        if not member.isreg() or member.issparse():
            raise InvalidImageError(f"archive member {name[:200]!r} is not a plain file")
        return _MemberReader(self.path, member.offset_data, member.size), member.size

    def read_file(self, name: str, cap: int) -> bytes:
        handle, size = self.open_member(name)
        try:
            if size > cap:
                raise InvalidImageError(f"{name}: larger than {cap} bytes")
            return handle.read(cap)
        finally:
            handle.close()

    def open(self, digest: str) -> tuple[Callable[[int], bytes], int, Callable[[], None]]:
        handle, size = self.open_member(f"blobs/sha256/{digests.hex_of(digest)}")
        return handle.read, size, handle.close

    def close(self) -> None:
        self.tar.close()


class _MemberReader:
    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.offset = offset
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.left
        data = os.pread(self.fd, min(n, self.left, 16 * CHUNK), self.offset) if self.left else b""
        self.offset += len(data)
        self.left -= len(data)
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


class VerifiedRead:
    """Read a blob and check its size and digest at the end (InvalidImageError)."""

    def __init__(
        self,
        read: Callable[[int], bytes],
        desc: Descriptor,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._read = read
        self.desc = desc
        self.progress = progress
        self.hasher = hashlib.sha256()
        self.count = 0
        self.done = False

    def __call__(self, n: int) -> bytes:
        if self.done:
            return b""
        chunk = self._read(min(n, CHUNK))
        self.count += len(chunk)
        if self.count > self.desc.size:
            raise InvalidImageError(f"blob {self.desc.digest}: larger than declared")
        self.hasher.update(chunk)
        if self.progress and chunk:
            self.progress(len(chunk))
        if not chunk:
            self.done = True
            if self.count != self.desc.size:
                raise InvalidImageError(f"blob {self.desc.digest}: size mismatch")
            if "sha256:" + self.hasher.hexdigest() != self.desc.digest:
                raise InvalidImageError(f"blob {self.desc.digest}: digest mismatch")
        return chunk


def read_blob(blobs: Blobs, desc: Descriptor, cap: int) -> bytes:
    if desc.size > cap:
        raise InvalidImageError(f"blob {desc.digest}: larger than {cap} bytes")
    read, _, close = blobs.open(desc.digest)
    try:
        verified = VerifiedRead(read, desc)
        out = bytearray()
        while chunk := verified(CHUNK):
            out += chunk
        return bytes(out)
    finally:
        close()


class LayoutSource:
    """One image (an index.json entry) of an OCI layout."""

    def __init__(self, blobs: Blobs, entry: Descriptor, platform: Platform, names: list[str]):
        self.blobs = blobs
        self.entry = entry
        self.platform = platform
        self.names = names

    def _doc(self, desc: Descriptor) -> Document:
        data = read_blob(self.blobs, desc, manifests.MAX_MANIFEST)
        return manifests.parse_document(data, desc.media_type, desc.digest, f"load {desc.digest}")

    def resolve(self, job: PullJob) -> Resolved:
        first = self._doc(self.entry)
        docs, chain = walk_index(first, self._doc, self.platform)
        manifest = docs[-1]
        data = read_blob(self.blobs, manifest.config, manifests.MAX_CONFIG)
        config = manifests.parse_config(data, manifest.config.digest, len(manifest.layers))
        bare = [n.rsplit(":", 1)[0] for n in self.names]
        return Resolved(
            chain, docs, manifest, config, self.names, [f"{b}@{first.digest}" for b in bare],
            first.digest, "oci-layout",
        )  # fmt: skip

    def open_layer(
        self, desc: Descriptor, progress: Callable[[int], None]
    ) -> Callable[[int], bytes]:
        read, _, _ = self.blobs.open(desc.digest)
        return VerifiedRead(read, desc, progress)


class DockerArchiveSource:
    """One entry of a docker-archive's manifest.json. There are no registry manifests in
    such an archive: an OCI manifest is made for it from the (hashed) layer members."""

    def __init__(self, archive: ArchiveMembers, entry: dict[str, Any]) -> None:
        self.archive = archive
        self.entry = entry
        self.layer_paths: dict[str, str] = {}

    def resolve(self, job: PullJob) -> Resolved:
        config_path, layer_paths = self.entry.get("Config"), self.entry.get("Layers")
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise InvalidImageError("manifest.json: Config and Layers are required")
        data = self.archive.read_file(config_path, manifests.MAX_CONFIG)
        config_digest = digests.of_bytes(data)
        config = manifests.parse_config(data, config_digest, len(layer_paths))
        layers = []
        for path in layer_paths:
            if not isinstance(path, str):
                raise InvalidImageError("manifest.json: Layers must be paths")
            handle, size = self.archive.open_member(path)
            hasher = hashlib.sha256()
            head = handle.read(4)
            hasher.update(head)
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
            handle.close()
            digest = "sha256:" + hasher.hexdigest()
            self.layer_paths[digest] = path
            media = "application/vnd.oci.image.layer.v1.tar"
            if head.startswith(b"\x1f\x8b"):
                media += "+gzip"
            elif head.startswith(b"\x28\xb5\x2f\xfd"):
                media += "+zstd"
            layers.append({"mediaType": media, "digest": digest, "size": size})
        body = {
            "schemaVersion": 2,
            "mediaType": manifests.OCI_MANIFEST,
            "config": {
                "mediaType": manifests.OCI_CONFIG,
                "digest": config_digest,
                "size": len(data),
            },
            "layers": layers,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        manifest = manifests.parse_document(
            raw, manifests.OCI_MANIFEST, digests.of_bytes(raw), "docker-archive manifest"
        )
        names = []
        for tag in self.entry.get("RepoTags") or []:
            if isinstance(tag, str):
                ref = refs.parse(tag)
                names.append(ref.tagged)
        chain = [chain_entry("manifest", manifest.digest, manifest.media_type, len(raw))]
        return Resolved(
            chain, [manifest], manifest, config, names, [], manifest.digest, "docker-archive"
        )

    def open_layer(
        self, desc: Descriptor, progress: Callable[[int], None]
    ) -> Callable[[int], bytes]:
        handle, _ = self.archive.open_member(self.layer_paths[desc.digest])
        return VerifiedRead(handle.read, desc, progress)


def _layout_names(entry: Descriptor, path: Path) -> list[str]:
    name = entry.annotations.get(REF_NAME, "")
    if not name:
        return []
    if refs.TAG_RE.match(name):
        base = refs.PATH_RE.match(path.name.lower()) and path.name.lower() or "image"
        return [f"localhost/{base}:{name}"]
    return [refs.parse(name).tagged]


def _load_layout(
    engine: Engine, blobs: LayoutDir | ArchiveMembers, path: Path, platform: Platform
) -> list[ImageRecord]:
    data = blobs.read_file("index.json", manifests.MAX_MANIFEST)
    index = manifests.parse_document(
        data, manifests.OCI_INDEX, digests.of_bytes(data), "index.json"
    )
    if index.kind != "index":
        raise InvalidImageError(f"{path}: index.json is not an image index")
    entries = index.manifests
    if not entries:
        raise InvalidImageError(f"{path}: index.json lists no images")
    out = []
    for entry in entries:
        if (
            entry.platform
            and len(entries) > 1
            and (entry.platform.os, entry.platform.architecture)
            != (platform.os, platform.architecture)
        ):
            continue
        source = LayoutSource(blobs, entry, platform, _layout_names(entry, path))
        out.append(run_job(engine, source, PullJob(str(path), str(platform))))
    if not out:
        raise InvalidImageError(f"{path}: no image for platform {platform}")
    return out


def load_path(engine: Engine, path: Path, platform: Platform) -> list[ImageRecord]:
    """Load every image found at path (a layout dir, an oci-archive or a docker-archive)."""
    if path.is_dir():
        layout = LayoutDir(path)
        try:
            return _load_layout(engine, layout, path, platform)
        finally:
            layout.root.close()
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file or directory")
    archive = ArchiveMembers(path)
    try:
        if "manifest.json" in archive.members:
            listing = json.loads(archive.read_file("manifest.json", manifests.MAX_MANIFEST))
            if not isinstance(listing, list) or not listing:
                raise InvalidImageError(f"{path}: manifest.json must list images")
            return [
                run_job(engine, DockerArchiveSource(archive, e), PullJob(str(path)))
                for e in listing
                if isinstance(e, dict)
            ]
        if "index.json" in archive.members:
            return _load_layout(engine, archive, path, platform)
        raise InvalidInputError(f"{path}: neither a docker-archive nor an oci-archive")
    except ValueError as err:  # manifest.json is not JSON
        raise InvalidImageError(f"{path}: manifest.json: {err}") from err
    finally:
        archive.close()
