"""The images facade: pull (in the foreground for the CLI, as a background job with published
progress for the worker), list, inspect, remove and load.

Pull jobs live in the worker's memory: ``jobs()`` returns the running ones and those that
ended in the last minutes, with their per-layer progress, so a page that was reloaded (or a
user who navigated away and came back) rebuilds the bars. Progress events go to the
``gantry.events`` group as {"type": "engine.event", "kind": "pull", "job": ..., ...}, at most
about ten per second per job; a finished pull also sends {"kind": "image", "action": "pull"}.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import (
    ImageNotFoundError,
    InvalidImageError,
    InvalidInputError,
    InvalidStateError,
)
from engine.events import NullPublisher, Publisher
from engine.hostfs import atomic
from engine.images.pull import PullJob, Resolved, run_job, walk_index
from engine.images.shortnames import find_image
from engine.images.store import ImageRecord, Store
from engine.protocol import EVENTS_GROUP
from engine.registry import manifests, refs
from engine.registry.blobs import BlobReader, read_blob
from engine.registry.client import Client
from engine.registry.credentials import Credentials
from engine.registry.manifests import Descriptor, Document
from engine.registry.refs import Platform, Reference

log = logging.getLogger("gantry.engine.images")

PUBLISH_INTERVAL = 0.1
KEEP_FINISHED = 30 * 60.0
MAX_JOBS = 20


class RegistrySource:
    """Pull from an OCI distribution registry."""

    def __init__(self, ref: Reference, client: Client, platform: Platform) -> None:
        self.ref = ref
        self.client = client
        self.platform = platform

    def resolve(self, job: PullJob) -> Resolved:
        what = f"pull {self.ref}"
        repo = self.ref.path
        first = self.client.get_manifest(repo, self.ref.target, what=what)
        if self.ref.digest and first.digest != self.ref.digest:
            raise ImageNotFoundError(f"{what}: registry sent {first.digest}")

        def fetch(desc: Descriptor) -> Document:
            doc = self.client.get_manifest(repo, desc.digest, what=what)
            if len(doc.data) != desc.size:
                raise InvalidImageError(f"{what}: manifest {desc.digest}: size mismatch")
            return doc

        docs, chain = walk_index(first, fetch, self.platform)
        manifest = docs[-1]
        with job.lock:
            job.step = "copying config"
        config_desc = manifest.config
        data = read_blob(self.client, repo, config_desc, manifests.MAX_CONFIG, what=what)
        config = manifests.parse_config(data, config_desc.digest, len(manifest.layers))
        repo_digests = [f"{self.ref.name}@{first.digest}"]
        if manifest.digest != first.digest:
            repo_digests.append(f"{self.ref.name}@{manifest.digest}")
        return Resolved(
            chain=chain,
            documents=docs,
            manifest=manifest,
            config=config,
            names=[f"{self.ref.name}:{self.ref.tag}"] if self.ref.tag else [],
            repo_digests=repo_digests,
            top_digest=first.digest,
            source="registry",
        )

    def open_layer(
        self, desc: Descriptor, progress: Callable[[int], None]
    ) -> Callable[[int], bytes]:
        reader = BlobReader(
            self.client, self.ref.path, desc, what=f"pull {self.ref}", progress=progress
        )
        return reader.read


def created_unix(config: dict[str, Any]) -> int:
    """The config's RFC 3339 ``created`` as a unix time (0 when absent or unreadable)."""
    value = str(config.get("created", ""))[:19]
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0


def list_entry(image: ImageRecord) -> dict[str, Any]:
    """podman images --format json field names."""
    config = image.config.get("config") if isinstance(image.config.get("config"), dict) else {}
    labels = config.get("Labels") if isinstance(config, dict) else None
    return {
        "Id": image.id.removeprefix("sha256:"),
        "ParentId": "",
        "RepoTags": list(image.names),
        "RepoDigests": list(image.repo_digests),
        "Size": image.size,
        "SharedSize": 0,
        "VirtualSize": image.size,
        "Labels": labels if isinstance(labels, dict) else None,
        "Containers": 0,
        "Names": list(image.names),
        "Digest": image.digest,
        "History": list(image.names),
        "Created": created_unix(image.config),
        "CreatedAt": str(image.config.get("created", "")),
        "Layers": len(image.layers),
        "Platform": image.platform,
    }


class Images:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.get(Store)
        self._jobs: dict[str, PullJob] = {}
        self._lock = threading.Lock()
        # <root>/pulls/<job>.json while a background pull runs: what a killed engine was
        # pulling, so the next one can say those pulls failed (recover_interrupted)
        self._ledger = Path(engine.config.root) / "pulls"

    # -- pulling ----------------------------------------------------------------------------
    def _client(self, ref: Reference, tls_verify: bool | None, cancel: threading.Event) -> Client:
        insecure_hosts = set(self.engine.config.insecure_registries)
        insecure = tls_verify is False or (
            tls_verify is None and bool({ref.domain, ref.api_host} & insecure_hosts)
        )
        credentials = self.engine.get(Credentials).get(ref.domain)
        return Client(
            ref.domain, ref.api_host, insecure=insecure, credentials=credentials, cancel=cancel
        )

    def pull(
        self,
        unsafe_ref: str,
        *,
        platform: str | None = None,
        tls_verify: bool | None = None,
        progress: Callable[[PullJob, bool], None] | None = None,
        job: PullJob | None = None,
    ) -> ImageRecord:
        """Pull in this thread; returns the stored image. Raises EngineError."""
        ref = refs.parse(unsafe_ref)
        want = refs.parse_platform(platform)
        job = job or PullJob(str(ref), str(want))
        with self._client(ref, tls_verify, job.cancel) as client:
            return run_job(self.engine, RegistrySource(ref, client, want), job, progress)

    def start_pull(
        self,
        unsafe_ref: str,
        *,
        platform: str | None = None,
        tls_verify: bool | None = None,
        user: str | None = None,
        publisher: Publisher | None = None,
    ) -> PullJob:
        """Start a pull in a background thread and return its job at once. A pull of the same
        reference and platform that is still running is returned instead of a second one."""
        ref = refs.parse(unsafe_ref)
        want = refs.parse_platform(platform)
        publisher = publisher or NullPublisher()
        with self._lock:
            self._prune()
            for existing in self._jobs.values():
                if existing.running and existing.ref == str(ref) and existing.platform == str(want):
                    return existing
            job = PullJob(str(ref), str(want), user=user)
            self._jobs[job.id] = job
            self._remember(job)
        throttle = _Throttle(publisher)
        thread = threading.Thread(
            target=self._run_pull,
            args=(job, tls_verify, throttle, publisher),
            name=f"gantry-pull-{job.id}",
            daemon=True,
        )
        thread.start()
        return job

    def _run_pull(
        self, job: PullJob, tls_verify: bool | None, throttle: _Throttle, publisher: Publisher
    ) -> None:
        try:
            record = self.pull(
                job.ref, platform=job.platform, tls_verify=tls_verify, progress=throttle, job=job
            )
        except Exception as err:
            log.info("pull %s failed: %s", job.ref, getattr(err, "message", err))
            return
        finally:
            with contextlib.suppress(OSError):
                (self._ledger / f"{job.id}.json").unlink(missing_ok=True)
        publisher.publish(
            EVENTS_GROUP,
            {
                "type": "engine.event",
                "kind": "image",
                "action": "pull",
                "image": record.id,
                "names": record.names,
            },
        )

    def _remember(self, job: PullJob) -> None:
        """Best effort: a pull that cannot be written down (a full disk) still runs, and fails
        or succeeds on its own; only its recovery after a crash is lost."""
        saved = {"ref": job.ref, "platform": job.platform, "user": job.user, "started": job.started}
        try:
            self._ledger.mkdir(mode=0o700, exist_ok=True)
            atomic.write_json(self._ledger / f"{job.id}.json", saved)
        except OSError as err:
            log.warning(
                "pull %s: not written down (%s): a crash would not be reported", job.ref, err
            )

    def recover_interrupted(self, publisher: Publisher) -> list[PullJob]:
        """At startup: the pulls a killed engine was running, as failed jobs a page shows
        (and says so to open pages); their partial layers went with the store's sweep."""
        if not self._ledger.is_dir():
            return []
        found = []
        for path in sorted(self._ledger.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
                job = PullJob(str(saved["ref"]), str(saved.get("platform", "")), id=path.stem)
                job.user, job.started = saved.get("user"), float(saved.get("started", 0))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            job.state, job.finished = "error", time.time()
            job.step = job.error = "interrupted: the engine stopped during this pull; pull again"
            with self._lock:
                self._jobs[job.id] = job
            event = {"type": "engine.event", "kind": "pull"} | job.snapshot()
            publisher.publish(EVENTS_GROUP, event)
            path.unlink(missing_ok=True)
            found.append(job)
        return found

    def _prune(self) -> None:
        now = time.time()
        finished = sorted(
            (j for j in self._jobs.values() if not j.running), key=lambda j: j.finished
        )
        for job in finished:
            if now - job.finished > KEEP_FINISHED or len(self._jobs) > MAX_JOBS:
                del self._jobs[job.id]

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            self._prune()
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in sorted(jobs, key=lambda j: j.started, reverse=True)]

    def job(self, job_id: str) -> PullJob:
        with self._lock:
            found = self._jobs.get(job_id)
        if found is None:
            raise ImageNotFoundError(f"pull job {job_id[:40]}: not known")
        return found

    # -- reading ----------------------------------------------------------------------------
    def find(self, unsafe_ref: str) -> ImageRecord:
        """An image by id, id prefix, name as stored, a short name as podman resolves it
        (engine/images/shortnames.py), or a reference that normalises to a stored name."""
        try:
            return find_image(self.store, unsafe_ref)[0]  # localhost/busybox for busybox too
        except ImageNotFoundError:
            try:
                ref = refs.parse(unsafe_ref)
            except InvalidInputError:
                raise ImageNotFoundError(f"image {unsafe_ref[:200]}: not known") from None
            return self.store.get_image(ref.tagged if ref.tag else f"{ref.name}@{ref.digest}")

    def images(self) -> list[ImageRecord]:
        return self.store.list_images()

    def list_json(self) -> list[dict[str, Any]]:
        out = []
        for image in self.images():
            entry = list_entry(image)
            entry["Containers"] = len(self.store.containers_using(image.id))
            out.append(entry)
        return out

    def inspect(self, unsafe_ref: str) -> dict[str, Any]:
        image = self.find(unsafe_ref)
        layers = []
        for chain in image.layers:
            try:
                layers.append(asdict(self.store.get_layer(chain)))
            except ImageNotFoundError:
                layers.append({"chain_id": chain, "missing": True})
        config = image.config
        return list_entry(image) | {
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Config": config.get("config") or {},
            "RootFS": config.get("rootfs") or {},
            "History": config.get("history") or [],
            "Author": config.get("author", ""),
            "ManifestType": image.media_type,
            "ManifestChain": image.manifest_chain,
            "LayerDetails": layers,
            "Source": image.source,
            "Pulled": image.pulled,
            "UsedBy": self.store.containers_using(image.id),
        }

    # -- removing ---------------------------------------------------------------------------
    def remove(self, unsafe_ref: str, *, force: bool = False) -> dict[str, Any]:
        """``podman rmi``: by name, untag it (and remove the image when that was its last
        name); by id, remove the image (with several names only with force). Refused while a
        container uses the image, force or not: remove the container first."""
        image = self.find(unsafe_ref)
        name = self._name_for(unsafe_ref, image)
        if name is not None and len(image.names) > 1:
            image.names = [n for n in image.names if n != name]
            self.store.commit_image(image)
            return {"untagged": [name], "deleted": []}
        if len(image.names) > 1 and not force:
            raise InvalidStateError(
                f"image {image.short_id} is referenced in multiple names "
                f"({', '.join(image.names)}): use force to remove it",
                current="tagged",
            )
        users = self.store.containers_using(image.id)
        if users:
            raise InvalidStateError(
                f"image {image.short_id} is in use by container {users[0]}"
                + (f" and {len(users) - 1} more" if len(users) > 1 else "")
                + ": remove the container first",
                current="in-use",
            )
        self.store.remove_image_record(image.id)
        self.store.gc(wait=5.0)
        return {"untagged": list(image.names), "deleted": [image.id]}

    @staticmethod
    def _name_for(unsafe_ref: str, image: ImageRecord) -> str | None:
        if unsafe_ref in image.names:
            return unsafe_ref
        try:
            ref = refs.parse(unsafe_ref)
        except InvalidInputError:
            return None
        return ref.tagged if ref.tagged in image.names else None

    # -- loading ----------------------------------------------------------------------------
    def load(self, path: Path, *, platform: str | None = None) -> list[ImageRecord]:
        from engine.images.load import load_path

        return load_path(self.engine, path, refs.parse_platform(platform))


class _Throttle:
    """Publish a job's snapshot at most every PUBLISH_INTERVAL (always when forced)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.last = 0.0
        self.lock = threading.Lock()

    def __call__(self, job: PullJob, force: bool) -> None:
        now = time.monotonic()
        with self.lock:  # held while publishing: snapshots leave in the order they were taken
            if not force and now - self.last < PUBLISH_INTERVAL:
                return
            self.last = now
            snapshot = job.snapshot()
            snapshot.pop("user", None)  # every user sees pulls; who started one stays private
            event = {"type": "engine.event", "kind": "pull"} | snapshot
            try:
                self.publisher.publish(EVENTS_GROUP, event)
            except Exception as err:  # progress is a notification: never fail the pull for it
                log.debug("publish pull progress: %s", err)
