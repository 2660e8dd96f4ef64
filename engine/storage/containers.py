"""Containers: the records, their storage, and the service every other part goes through.

    <root>/containers/<id>/container.json    ContainerRecord (atomic writes)
    <root>/containers/<id>/upper/            the container's overlay upper dir (its changes)
    <root>/containers/<id>/work/             overlayfs work dir
    <root>/containers/<id>/merged/           the mount point (a real directory: runc refuses a
                                             symlinked rootfs)
    <root>/containers/<id>/bundle/           config.json lives here (written by engine.spec)
    <root>/containers/<id>/userdata/         conmon files (engine.runtime.runc)

Contracts (other modules rely on them):
- ids are 64 lowercase hex; names are unique, ``[A-Za-z0-9][A-Za-z0-9_.-]*`` and generated
  (adjective_noun, like podman) when not given. ``Containers.get`` finds a container by full id,
  by name, or by a unique id prefix of 3+ hex digits.
- Every state change happens under ``Containers.lock(id)`` (a per-container file lock, re-entrant
  within one thread) and is written with ``Containers.save`` (atomic).
- Mounting has a count, as ``podman mount`` keeps one: ``mount`` adds one, ``unmount`` takes one
  (at 0 it is an InvalidStateError, "not mounted"), ``unmount(force=True)``/``unmount_all`` drop
  it to 0. The runtime's own use is a separate flag (``ensure_mounted``/``release_runtime_mount``)
  and the explorer's short uses are holds by process id (``open_rootfs``); the overlay is
  unmounted when none of the three holds it.
- ``remove`` runs ``pre_remove_hooks`` first (the runtime, once built for this engine, plugs
  in one that stops the container and deletes its runc state: engine.runtime.lifecycle); without
  a hook, a running or paused container is refused.
- Events: ``publish_container_event(ctx_or_publisher, record, action)``.

The records themselves (states, ``CreateOptions``, ``ContainerRecord``) are in
engine.storage.records,
podman's views of them (``ps_json``, ``inspect_json``, ``status_text``) in engine.storage.podjson,
the
generated names and the image lookup in engine.storage.names, and the storage below the locks (the
directory, the overlay, ``reconcile_mounts``) in engine.storage.rootfs.
"""

from __future__ import annotations

import builtins
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import (
    ContainerNotFoundError,
    EngineError,
    ImageNotFoundError,
    InvalidInputError,
    InvalidStateError,
)
from engine.events import Publisher
from engine.hostfs import atomic, digests, locks, securepath
from engine.hostfs.rmtree import remove_tree
from engine.images.shortnames import find_image
from engine.images.store import Store
from engine.protocol import CONTAINER_ID_RE, EVENTS_GROUP, NAME_RE
from engine.storage import mounts, rootfs
from engine.storage.names import generate_name
from engine.storage.podjson import inspect_json, status_text
from engine.storage.records import (
    ACTIVE_STATES,
    EXITED,
    ContainerPaths,
    CreateOptions,
    apply_image_defaults,
    check_options,
)

# Re-exported: engine.spec and engine.files.transfer import these from here.
from engine.storage.records import CONFIGURED as CONFIGURED
from engine.storage.records import CREATED as CREATED
from engine.storage.records import ContainerRecord as ContainerRecord
from engine.storage.sandbox import sandboxed
from engine.storage.volumes import check_volumes

_HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{3,63}$")


# -- events ---------------------------------------------------------------------------------
def publish_container_event(
    ctx_or_publisher: Any, record: ContainerRecord, action: str, **extra: Any
) -> None:
    """Tell every listener (the web's /ws/events/) that something happened to a container:
    ``{"type": "engine.event", "kind": "container", "container": id, "name", "action",
    "state", "status", ...}``. Takes an rpc Context, a Publisher, or None (nothing sent)."""
    publisher: Publisher | None = getattr(ctx_or_publisher, "publisher", ctx_or_publisher)
    if publisher is None:
        return
    event = {
        "type": "engine.event",
        "kind": "container",
        "container": record.id,
        "name": record.name,
        "action": action,
        "state": record.state,
        "status": status_text(record),
        "mount_count": record.mount_count,
        "node": record.node,
        "time": time.time(),
    }
    event.update(extra)
    publisher.publish(EVENTS_GROUP, event)


# -- the service ----------------------------------------------------------------------------
RemoveHook = Callable[[Engine, ContainerRecord, bool], None]
SyncHook = Callable[[Engine, ContainerRecord], ContainerRecord]

_held = threading.local()


class Containers:
    """The containers of one state root. ``engine.get(Containers)``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Called with (engine, record, force) before a container is removed, under its lock.
        self.pre_remove_hooks: list[RemoveHook] = []
        # Called by readers (ps, inspect, the web's list) to bring a record up to date with
        # reality (the runtime plugs in one that checks conmon/runc); each returns the fresh
        # record. Both lists belong to this engine: nothing is registered by an import.
        self.sync_hooks: list[SyncHook] = []
        self.dir = Path(engine.config.root) / "containers"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.store = engine.get(Store)

    # -- paths and locks ----------------------------------------------------------------------
    def paths(self, container_id: str) -> ContainerPaths:
        if not isinstance(container_id, str) or not CONTAINER_ID_RE.match(container_id):
            raise InvalidInputError(f"container id {str(container_id)[:80]!r} is not valid")
        return ContainerPaths.under(self.dir / container_id)

    @contextmanager
    def lock(self, container_id: str, timeout: float = 300.0) -> Iterator[None]:
        """Hold the container's lock (a file lock shared with the CLI). Re-entrant within a
        thread, so a helper that locks may call another that locks too."""
        self.paths(container_id)  # validates the id
        held: dict[str, int] = _held.__dict__.setdefault("ids", {})
        if held.get(container_id):
            held[container_id] += 1
            try:
                yield
            finally:
                held[container_id] -= 1
            return
        with locks.locked(
            Path(self.engine.config.root), "container", container_id, timeout=timeout
        ):
            held[container_id] = 1
            try:
                yield
            finally:
                held.pop(container_id, None)

    # -- records ------------------------------------------------------------------------------
    def load(self, container_id: str) -> ContainerRecord:
        """The record of a container by its full id (no lookup by name)."""
        try:
            data = atomic.read_json(self.paths(container_id).record)
        except FileNotFoundError as err:
            raise ContainerNotFoundError(
                f"container {container_id[:12]}: no such container"
            ) from err
        return ContainerRecord.from_dict(data)

    def save(self, record: ContainerRecord) -> None:
        """Write container.json atomically. The caller holds the lock."""
        atomic.write_json(self.paths(record.id).record, record.to_dict())

    def list(self) -> list[ContainerRecord]:
        """Every container, newest first. Unreadable records are skipped."""
        out = []
        for entry in os.scandir(self.dir):
            if not CONTAINER_ID_RE.match(entry.name):
                continue
            try:
                out.append(
                    ContainerRecord.from_dict(atomic.read_json(Path(entry.path) / "container.json"))
                )
            except (OSError, ValueError, TypeError):
                continue
        return sorted(out, key=lambda r: r.created, reverse=True)

    def get(self, unsafe_ref: str) -> ContainerRecord:
        """Find a container by full id, by name, or by a unique id prefix (3+ hex digits)."""
        if not isinstance(unsafe_ref, str) or not unsafe_ref or len(unsafe_ref) > 128:
            raise InvalidInputError("container: must be a name or id")
        if CONTAINER_ID_RE.match(unsafe_ref):
            try:
                return self.load(unsafe_ref)
            except ContainerNotFoundError:
                pass
        records = self.list()
        for r in records:
            if r.name == unsafe_ref:
                return r
        if _HEX_PREFIX_RE.match(unsafe_ref):
            found = [r for r in records if r.id.startswith(unsafe_ref)]
            if len(found) > 1:
                raise InvalidInputError(f"container id prefix {unsafe_ref} is ambiguous")
            if found:
                return found[0]
        raise ContainerNotFoundError(f"container {unsafe_ref[:80]}: no such container")

    def synced(self, record: ContainerRecord) -> ContainerRecord:
        """The record after every sync hook ran (unchanged without hooks). A failing hook is
        ignored: readers must still get an answer."""
        for hook in list(self.sync_hooks):
            try:
                record = hook(self.engine, record)
            except EngineError:
                continue
        return record

    # -- create -------------------------------------------------------------------------------
    def create(
        self,
        options: CreateOptions,
        image_ref: str,
        name: str = "",
        publisher: Publisher | None = None,
    ) -> ContainerRecord:
        """Create a container from an image: record + overlay dirs, state "created", nothing
        mounted. All or nothing: the directory is built under tmp/ and renamed into place.

        From the moment the image is resolved until the record is in containers/, nothing
        ``Store.gc()`` can see names the image's layers: an ``rmi`` racing this call could
        collect them. gc() holds the store's "gc" lock exclusively, so create holds it shared
        (``Store.pulling``) for that stretch: gc waits (or skips), then finds the record."""
        check_options(options)
        config = self.engine.config
        if options.sandbox:  # a learner's: its sources lie in their sandbox only
            config = sandboxed(config, options.sandbox)
        options.volumes = check_volumes(config, options.volumes)
        with self.store.pulling():
            record = self._create_from(options, image_ref, name)
        publish_container_event(publisher, record, "create")
        return record

    def _create_from(self, options: CreateOptions, image_ref: str, name: str) -> ContainerRecord:
        image, image_name = find_image(self.store, image_ref)
        for chain in image.layers:
            digests.check(chain, "layer")
            if not self.store.layer_diff(chain).is_dir():
                raise ImageNotFoundError(f"image {image_name}: layer {chain} is missing")
        apply_image_defaults(options, image)
        if name and not NAME_RE.match(name):
            raise InvalidInputError(
                f"name {name[:80]!r}: letters, digits, '_', '.', '-' (starting with a letter "
                "or digit), at most 128"
            )
        import secrets  # with hmac and OpenSSL: only when a container is made

        container_id = secrets.token_hex(32)
        options.hostname = options.hostname or container_id[:12]
        root = Path(self.engine.config.root)
        with locks.locked(root, "containers", "names"):
            taken = {r.name for r in self.list()}
            if name in taken:
                raise InvalidStateError(
                    f"name {name!r} is already in use by another container (remove it or "
                    "choose another name)",
                    current="in-use",
                )
            name = name or generate_name(taken)
            record = ContainerRecord(
                id=container_id,
                name=name,
                image_id=image.id,
                image_name=image_name,
                node=self.engine.config.node,
                options=options,
                layers=list(image.layers),
            )
            rootfs.build_dir(self.store, self.paths(record.id), record, image)
        return record

    # -- mounting -----------------------------------------------------------------------------
    def lower_dirs(self, record: ContainerRecord) -> builtins.list[Path]:
        """The image layer dirs, bottom to top."""
        return rootfs.lower_dirs(self.store, record)

    def overlay(self, record: ContainerRecord) -> mounts.OverlayMount:
        return rootfs.overlay(self.store, self.paths(record.id), record)

    def is_mounted(self, container_id: str) -> bool:
        return mounts.is_mounted(self.paths(container_id).merged)

    def mount(self, container_id: str, publisher: Publisher | None = None) -> Path:
        """``podman mount``: mount the container's storage (if it is not) and add one to its
        mount count. Returns the merged dir."""
        with self.lock(container_id):
            record = self.load(container_id)
            rootfs.mount_now(self.store, self.paths(record.id), record)
            record.mount_count += 1
            self.save(record)
        publish_container_event(publisher, record, "mount")
        return self.paths(container_id).merged

    def unmount(
        self, container_id: str, force: bool = False, publisher: Publisher | None = None
    ) -> ContainerRecord:
        """``podman unmount``: take one from the mount count (all of it with force) and
        unmount the storage when nothing else (the runtime, the explorer) uses it."""
        with self.lock(container_id):
            record = self.load(container_id)
            if record.mount_count <= 0 and not force:
                raise InvalidStateError(
                    f"container {record.name} is not mounted",
                    current="unmounted",
                    wanted=("mounted",),
                )
            record.mount_count = 0 if force else record.mount_count - 1
            rootfs.unmount_if_unused(self.paths(record.id), record)
            self.save(record)
        publish_container_event(publisher, record, "unmount")
        return record

    def unmount_all(self, container_id: str) -> None:
        """Drop every use (users, runtime, explorer holds) and unmount. For removal and
        cleanup; the caller makes sure no process runs in it."""
        with self.lock(container_id):
            record = self.load(container_id)
            record.mount_count = 0
            record.runtime_mounted = False
            record.mount_holders = []
            mounts.unmount(self.paths(container_id).merged)
            self.save(record)

    def ensure_mounted(self, container_id: str) -> Path:
        """For the runtime: mount if needed and mark the runtime's own use, which the user's
        mount count does not see (no double counting however often it is called)."""
        with self.lock(container_id):
            record = self.load(container_id)
            rootfs.mount_now(self.store, self.paths(record.id), record)
            if not record.runtime_mounted:
                record.runtime_mounted = True
                self.save(record)
        return self.paths(container_id).merged

    def release_runtime_mount(self, container_id: str) -> None:
        """For the runtime, after the container stopped: drop its use; unmount if unused."""
        with self.lock(container_id):
            record = self.load(container_id)
            record.runtime_mounted = False
            rootfs.unmount_if_unused(self.paths(record.id), record)
            self.save(record)

    @contextmanager
    def open_rootfs(self, container_id: str) -> Iterator[securepath.Root]:
        """The merged root, mounted for as long as the block runs (a hold by this process if
        nobody else had it mounted), as a securepath.Root. The Root's descriptor is opened
        under the lock, so it refers to the overlay even if it is unmounted meanwhile."""
        paths = self.paths(container_id)
        held = False
        with self.lock(container_id):
            record = self.load(container_id)
            up = mounts.is_mounted(paths.merged)
            if not up or not (record.mount_count > 0 or record.runtime_mounted):
                rootfs.mount_now(self.store, self.paths(record.id), record)
                record.mount_holders = rootfs.live_holders(record)
                record.mount_holders.append(os.getpid())
                self.save(record)
                held = True
            root = securepath.Root(paths.merged)
        try:
            yield root
        finally:
            root.close()
            if held:
                self._release_hold(container_id)

    def _release_hold(self, container_id: str) -> None:
        try:
            with self.lock(container_id):
                record = self.load(container_id)
                if os.getpid() in record.mount_holders:
                    record.mount_holders.remove(os.getpid())
                rootfs.unmount_if_unused(self.paths(record.id), record)
                self.save(record)
        except ContainerNotFoundError:
            pass  # removed meanwhile

    # -- remove -------------------------------------------------------------------------------
    def remove(
        self, container_id: str, force: bool = False, publisher: Publisher | None = None
    ) -> ContainerRecord:
        """``podman rm``: run the pre-remove hooks (the runtime stops it and deletes its runc
        state), refuse a container that still runs, unmount, delete its directory. The
        directory is first renamed away, so a crash leaves it either whole or gone."""
        with self.lock(container_id):
            record = self.load(container_id)
            for hook in list(self.pre_remove_hooks):
                hook(self.engine, record, force)
            record = self.load(container_id)
            if record.state in ACTIVE_STATES:
                raise InvalidStateError(
                    f"cannot remove container {record.name} as it is {record.state} - "
                    "stop it first",
                    current=record.state,
                    wanted=(CREATED, CONFIGURED, EXITED),
                )
            paths = self.paths(container_id)
            mounts.unmount(paths.merged)
            trash = self.store.tmp_dir("removed")
            os.rename(paths.root, trash / container_id)
            atomic.fsync_dir(self.dir)
        remove_tree(trash, ignore_errors=True)  # iterative: trees of any depth
        lock_file = Path(self.engine.config.root) / "locks" / f"container-{container_id}.lock"
        try:
            lock_file.unlink()
        except FileNotFoundError:
            pass
        publish_container_event(publisher, record, "remove")
        return record

    # -- reads for views ------------------------------------------------------------------------
    def inspect(self, record: ContainerRecord) -> dict[str, Any]:
        return inspect_json(record, self.paths(record.id), self.lower_dirs(record))
