"""Getting an image into the store, whatever it comes from (a registry, an OCI layout, a
docker-archive): walk index -> manifest -> config, then download and extract every layer in
parallel, each straight from the network into its own tmp dir (decompressed and hashed on
the way, no temp file of the blob), verified, and renamed into the store.

Guarantees: nothing is committed unverified (blob digest and size, diff id); a layer another
image already has is not fetched again (layers are keyed by chain id); two pulls of the same
image do not collide (a per-layer lock: the second waits, then reuses); a failed pull leaves
no partial layer, and the blobs and layers it stored without an image record are collected.

Policy (engine config, ``policy.images``): ``max_layer_bytes``, the decompressed-size budget
of one layer (default 64 GiB) against decompression bombs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core import Engine
from engine.errors import EngineError, InvalidImageError
from engine.hostfs import digests
from engine.hostfs.locks import locked
from engine.images.store import ImageRecord, LayerRecord, Store
from engine.layers.forked import unpack_forked
from engine.layers.unpack import DEFAULT_BUDGET
from engine.registry import manifests
from engine.registry.manifests import Config, Descriptor, Document

log = logging.getLogger("gantry.engine.pull")

PARALLEL_LAYERS = 4
SPEED_WINDOW = 1.0


@dataclass
class LayerProgress:
    digest: str
    size: int
    media_type: str
    state: str = "waiting"  # waiting | downloading | extracting | done | exists | error
    done: int = 0
    speed: float = 0.0  # bytes/s over the last second or so
    started: float = 0.0
    finished: float = 0.0
    _mark: tuple[float, int] = (0.0, 0)

    def advance(self, count: int) -> None:
        now = time.monotonic()
        if not self.started:
            self.started, self._mark = now, (now, 0)
        self.done += count
        if self.state == "waiting":
            self.state = "downloading"
        if self.size and self.done >= self.size:
            self.state = "extracting"
        mark_time, mark_done = self._mark
        if now - mark_time >= SPEED_WINDOW / 4:
            instant = (self.done - mark_done) / (now - mark_time)
            self.speed = instant if not self.speed else 0.5 * self.speed + 0.5 * instant
            self._mark = (now, self.done)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "short": self.digest.removeprefix("sha256:")[:12],
            "size": self.size,
            "media_type": self.media_type,
            "state": self.state,
            "done": self.done,
            "speed": round(self.speed),
        }


@dataclass
class PullJob:
    ref: str
    platform: str = ""
    user: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "resolving"  # resolving | pulling | done | error
    step: str = "resolving the reference"
    error: str = ""
    image_id: str = ""
    layers: list[LayerProgress] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seq: int = 0  # one more for each snapshot: a page keeps the newest it has seen

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            self.seq += 1
            return {
                "job": self.id,
                "seq": self.seq,
                "ref": self.ref,
                "platform": self.platform,
                "state": self.state,
                "step": self.step,
                "error": self.error,
                "image": self.image_id,
                "user": self.user,
                "started": self.started,
                "finished": self.finished,
                "layers": [layer.to_dict() for layer in self.layers],
            }

    @property
    def running(self) -> bool:
        return self.state in ("resolving", "pulling")


Progress = Callable[[PullJob, bool], None]  # (job, force)


@dataclass
class Resolved:
    """What a source found: the documents walked, the image manifest and its config."""

    chain: list[dict[str, Any]]
    documents: list[Document]
    manifest: Document
    config: Config
    names: list[str]
    repo_digests: list[str]
    top_digest: str
    source: str


class Source(Protocol):
    def resolve(self, job: PullJob) -> Resolved: ...

    def open_layer(
        self, desc: Descriptor, progress: Callable[[int], None]
    ) -> Callable[[int], bytes]: ...


def chain_entry(
    kind: str, doc_digest: str, media_type: str, size: int, **extra: Any
) -> dict[str, Any]:
    return {"kind": kind, "digest": doc_digest, "mediaType": media_type, "size": size} | extra


def walk_index(
    first: Document, fetch: Callable[[Descriptor], Document], platform: Any
) -> tuple[list[Document], list[dict[str, Any]]]:
    """Follow an index to the manifest of ``platform`` (depth-limited; loops refused)."""
    docs = [first]
    chain: list[dict[str, Any]] = []
    doc = first
    seen = {doc.digest}
    while doc.kind == "index":
        if len(docs) > manifests.MAX_INDEX_DEPTH:
            raise InvalidImageError(f"index {first.digest}: nested more than 3 deep")
        pick = manifests.select_platform(doc, platform)
        chain.append(chain_entry("index", doc.digest, doc.media_type, len(doc.data)))
        if pick.digest in seen:
            raise InvalidImageError(f"index {doc.digest}: refers to itself")
        seen.add(pick.digest)
        doc = fetch(pick)
        docs.append(doc)
    chain.append(chain_entry("manifest", doc.digest, doc.media_type, len(doc.data)))
    return docs, chain


class Puller:
    """One pull: resolve through a Source, then fetch and extract the layers."""

    def __init__(
        self,
        engine: Engine,
        source: Source,
        job: PullJob,
        progress: Progress | None = None,
        *,
        budget: int | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.get(Store)
        self.source = source
        self.job = job
        self.progress = progress or (lambda job, force: None)
        policy = engine.config.policy.get("images", {}) if engine.config.policy else {}
        self.budget = budget or int(policy.get("max_layer_bytes", DEFAULT_BUDGET))

    def _notify(self, force: bool = False) -> None:
        if self.engine.stopping.is_set():
            self.job.cancel.set()
        self.progress(self.job, force)

    def run(self) -> ImageRecord:
        job = self.job
        resolved = self.source.resolve(job)
        layers = resolved.manifest.layers
        diff_ids = resolved.config.diff_ids
        if len(diff_ids) != len(layers):
            raise InvalidImageError(
                f"config {resolved.config.digest}: {len(diff_ids)} diff_ids for "
                f"{len(layers)} layers"
            )
        chains = digests.chain_ids(diff_ids)
        with job.lock:
            job.layers = [LayerProgress(d.digest, d.size, d.media_type) for d in layers]
            job.state, job.step = "pulling", "copying blobs"
            job.platform = resolved.config.platform
        self._notify(force=True)
        try:
            with self.store.pulling():
                for doc in resolved.documents:
                    self.store.write_blob(doc.data, doc.digest)
                self.store.write_blob(resolved.config.data, resolved.config.digest)
                records = self._layers(layers, diff_ids, chains)
                with job.lock:
                    job.step = "writing manifest to image destination"
                self._notify(force=True)
                record = self._record(resolved, layers, records, chains)
                with locked(self.store.root, "image", digests.hex_of(record.id)):
                    record = self.store.commit_image(record)
        except BaseException:
            self.store.gc()  # what this pull stored without an image record goes
            raise
        # Collect what an earlier rmi had to leave while pulls held the store (skipped if
        # another pull still runs: never waits).
        self.store.gc()
        return record

    def _layers(
        self, layers: list[Descriptor], diff_ids: list[str], chains: list[str]
    ) -> list[LayerRecord]:
        results: dict[int, LayerRecord] = {}
        # The biggest blobs first: they are the long poles.
        order = sorted(range(len(layers)), key=lambda i: -layers[i].size)
        with ThreadPoolExecutor(min(PARALLEL_LAYERS, max(1, len(layers))), "gantry-layer") as pool:
            futures: list[Future[LayerRecord]] = [Future() for _ in layers]
            for i in order:
                futures[i] = pool.submit(self._layer, i, layers[i], diff_ids, chains)
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self.job.cancel.set()
                wait(futures)
                # The first real error, not the cancellations it caused.
                errors = [f.exception() for f in futures if f.exception() is not None]
                real = [e for e in errors if "cancelled" not in str(e)] or errors
                raise real[0]  # type: ignore[misc]
            for i, fut in enumerate(futures):
                results[i] = fut.result()
        return [results[i] for i in range(len(layers))]

    def _layer(
        self,
        index: int,
        desc: Descriptor,
        diff_ids: list[str],
        chains: list[str],
    ) -> LayerRecord:
        chain = chains[index]
        progress = self.job.layers[index]
        if self.store.has_layer(chain):
            return self._exists(progress, chain)
        with locked(self.store.root, "layer", digests.hex_of(chain), timeout=3600):
            if self.store.has_layer(chain):  # another pull made it while we waited
                return self._exists(progress, chain)
            work = self.store.tmp_dir("layer")
            try:
                diff = work / "diff"
                diff.mkdir(mode=0o755)
                what = f"layer {index + 1} ({desc.digest[:19]})"

                def advance(count: int) -> None:
                    with self.job.lock:
                        progress.advance(count)
                    self._notify()

                read = self.source.open_layer(desc, advance)
                result = unpack_forked(read, diff, what=what, budget=self.budget)
                if result.diff_id != diff_ids[index]:
                    raise InvalidImageError(
                        f"{what}: diff_id mismatch (config says {diff_ids[index]}, "
                        f"content is {result.diff_id})"
                    )
                record = self.store.commit_layer(
                    work,
                    LayerRecord(
                        chain_id=chain,
                        diff_id=diff_ids[index],
                        parent=chains[index - 1] if index else None,
                        size=result.size,
                        entries=result.entries,
                        blob_digest=desc.digest,
                        media_type=desc.media_type,
                        compressed_size=desc.size,
                        files=result.files,
                        tar_size=result.tar_size,
                    ),
                )
            except BaseException:
                self.store.discard(work)
                with self.job.lock:
                    progress.state = "error"
                raise
        with self.job.lock:
            progress.state, progress.done, progress.finished = "done", desc.size, time.time()
        self._notify(force=True)
        return record

    def _exists(self, progress: LayerProgress, chain: str) -> LayerRecord:
        with self.job.lock:
            progress.state, progress.done = "exists", progress.size
        self._notify(force=True)
        return self.store.get_layer(chain)

    def _record(
        self,
        resolved: Resolved,
        layers: list[Descriptor],
        records: list[LayerRecord],
        chains: list[str],
    ) -> ImageRecord:
        config = resolved.config
        chain = list(resolved.chain)
        chain.append(
            chain_entry(
                "config", config.digest, resolved.manifest.config.media_type, len(config.data)
            )
        )
        for desc, rec in zip(layers, records, strict=True):
            chain.append(
                chain_entry(
                    "layer",
                    desc.digest,
                    desc.media_type,
                    desc.size,
                    diff_id=rec.diff_id,
                    chain_id=rec.chain_id,
                )
            )
        return ImageRecord(
            id=config.digest,
            digest=resolved.top_digest,
            names=resolved.names,
            repo_digests=resolved.repo_digests,
            config=config.body,
            diff_ids=config.diff_ids,
            layers=chains,
            manifest_chain=chain,
            size=sum(r.tar_size or r.size for r in records),
            platform=config.platform,
            media_type=resolved.manifest.media_type,
            source=resolved.source,
        )


def run_job(
    engine: Engine, source: Source, job: PullJob, progress: Progress | None = None
) -> ImageRecord:
    """Run a pull to the end, recording the outcome on the job (never leaves it running)."""
    notify = progress or (lambda job, force: None)
    try:
        record = Puller(engine, source, job, notify).run()
    except EngineError as err:
        _finish(job, "error", err.message)
        notify(job, True)
        raise
    except Exception as err:
        log.exception("pull %s crashed", job.ref)
        _finish(job, "error", f"internal error: {err}")
        notify(job, True)
        raise EngineError(f"pull {job.ref}: internal error: {err}") from err
    with job.lock:
        job.image_id = record.id
    _finish(job, "done", "")
    notify(job, True)
    return record


def _finish(job: PullJob, state: str, error: str) -> None:
    with job.lock:
        job.state, job.error, job.finished = state, error, time.time()
        job.step = "done" if state == "done" else "failed"
        for layer in job.layers:
            if state == "error" and layer.state in ("waiting", "downloading", "extracting"):
                layer.state = "error"
