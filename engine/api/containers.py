"""container.* verbs of storage: create, list, inspect, mount, unmount, diff, remove, storage.

    container.create   {image, name?, command?, entrypoint?, env?, workdir?, user?, tty?,
                        interactive?, volumes?: ["SRC:DST[:ro]"], hostname?}   -> ps row + Id
    container.list     {ids?: [id]}                  -> [ps row]   (podman ps -a --format json)
    container.inspect  {id}                          -> podman inspect
    container.mount    {id}                          -> {path, mount_count}
    container.unmount  {id, force?}                  -> {mount_count, mounted}
    container.diff     {id}                          -> [{kind: A|C|D, path}]
    container.remove   {id, force?}                  -> {id, name}
    container.storage  {id}                          -> the layer stack, overlay options, mountinfo

``id`` is a full id, a name or a unique id prefix. The runtime's verbs (start, stop, ...) live
in engine/api/runtime.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.api.base import Context, op
from engine.api.network import create_choice, reserve_ports
from engine.core import Engine
from engine.errors import InvalidInputError, NotFoundError
from engine.hostfs import securepath
from engine.images.store import Store
from engine.lab import checks as lab
from engine.protocol import CONTAINER_ID_RE, INSTRUCTOR, LEARNER, NAME_RE, verbs
from engine.protocol.verbs import Json
from engine.runtime.lifecycle import Lifecycle
from engine.storage import diff, mounts, quotas, rootfs, usage
from engine.storage.containers import Containers, publish_container_event
from engine.storage.podjson import ps_json
from engine.storage.records import ContainerRecord, CreateOptions
from engine.storage.sandbox import sandbox_of, sandbox_volumes
from engine.storage.volumes import Volume, parse_volume


def with_runtime(ctx: Context) -> Containers:
    """The containers with the runtime plugged in (engine.runtime.lifecycle): removes stop a
    running container first, and readers see records synced with conmon and runc."""
    return ctx.engine.get(Lifecycle).containers


def record_of(ctx: Context, ref: str) -> ContainerRecord:
    """The container a reference names (full id, name, or unique id prefix)."""
    return ctx.engine.get(Containers).get(ref)


def _sandbox(ctx: Context) -> str:
    """Whose sandbox a new container's host paths live in: an instructor's or a learner's
    own (engine.storage.sandbox); "" for an admin (and the CLI): real host paths."""
    if ctx.role in (INSTRUCTOR, LEARNER):
        sandbox_of(ctx.engine.config, ctx.name)  # a name that can name one, or PolicyError
        return str(ctx.name)
    return ""


def _volumes(ctx: Context, sandbox: str, specs: list[str]) -> list[Volume]:
    volumes = [parse_volume(v) for v in specs]
    if sandbox and volumes:
        return sandbox_volumes(ctx.engine.config, sandbox, volumes)
    return volumes


@op(verbs.CONTAINER_CREATE)
def create(ctx: Context, args: verbs.Create) -> Json:
    if args.name and not NAME_RE.match(args.name):
        raise InvalidInputError(f"name {args.name[:80]!r}: letters, digits, '_', '.', '-'")
    sandbox = _sandbox(ctx)
    network, published = create_choice(ctx, args.network, args.publish)
    options = CreateOptions(
        command=args.command,
        entrypoint=args.entrypoint,
        env=args.env,
        workdir=args.workdir,
        user=args.user,
        tty=args.tty,
        interactive=args.interactive,
        volumes=_volumes(ctx, sandbox, args.volumes),
        sandbox=sandbox,
        hostname=args.hostname,
        network=network,
        ports=published,
        dns=list(args.dns),
    )
    name = user_container_name(sandbox, args.name)
    containers = ctx.engine.get(Containers)
    if sandbox:  # an instructor's or a learner's: within their quota, with its limits
        have = len(quotas.mine(containers.list(), sandbox))
        quota = quotas.check_create(ctx.engine.config, ctx.role, have)
        if quota is not None and ctx.role:
            quotas.apply_limits(options, ctx.role, quota)
        quotas.check_disk(ctx.engine.config, containers, quota, sandbox)
    record = containers.create(options, args.image, name, publisher=ctx.publisher)
    return ps_json(reserve_ports(ctx, record))


def user_container_name(sandbox: str, name: str) -> str:
    """Names are per user: thirty learners may each call theirs on-off. Engine-wide, a
    learner's container is named <user>.<name> (ann.on-off), which the CLI shows."""
    if not sandbox or not name:
        return name
    full = f"{sandbox}.{name}"
    if not NAME_RE.match(full):
        raise InvalidInputError(f"name {name[:80]!r}: at most {127 - len(sandbox)} characters")
    return full


@op(verbs.CONTAINER_LIST)
def list_(ctx: Context, args: verbs.ListContainers) -> list[Json]:
    containers = with_runtime(ctx)
    records = containers.list()
    if args.ids is not None:
        wanted = {i for i in args.ids if CONTAINER_ID_RE.match(i)}
        records = [r for r in records if r.id in wanted]
    return [ps_json(containers.synced(r)) for r in records]


@op(verbs.CONTAINER_INSPECT)
def inspect(ctx: Context, args: verbs.Id) -> Json:
    record = record_of(ctx, args.id)
    containers = with_runtime(ctx)
    return containers.inspect(containers.synced(record))


@op(verbs.CONTAINER_MOUNT)
def mount(ctx: Context, args: verbs.Id) -> verbs.Mounted:
    record = record_of(ctx, args.id)
    containers = ctx.engine.get(Containers)
    path = containers.mount(record.id, publisher=ctx.publisher)
    return {"path": str(path), "mount_count": containers.load(record.id).mount_count}


@op(verbs.CONTAINER_UNMOUNT)
def unmount(ctx: Context, args: verbs.Force) -> verbs.Unmounted:
    record = record_of(ctx, args.id)
    containers = ctx.engine.get(Containers)
    after = containers.unmount(record.id, force=args.force, publisher=ctx.publisher)
    return {"mount_count": after.mount_count, "mounted": containers.is_mounted(record.id)}


# Where the engine bind-mounts its own files: runc leaves an empty file in the upper dir as
# the mount point, which the container never wrote. podman diff does not list them either.
ENGINE_MOUNT_POINTS = ("/etc/hostname", "/etc/hosts")
_NO_LINKS_IN_ROOT = securepath.IN_ROOT | securepath.RESOLVE_NO_SYMLINKS


def changes(engine: Engine, record: ContainerRecord) -> list[diff.Change]:
    containers = engine.get(Containers)
    upper = containers.paths(record.id).upper
    layers: list[tuple[str, Path]] = [(diff.UPPER, upper)]
    lowers = containers.lower_dirs(record)
    layers += [(str(i), p) for i, p in reversed(list(enumerate(lowers)))]
    with diff.LayerView(layers) as view:
        found = diff.changes(view)
    return [c for c in found if not _engine_stub(upper, c)]


def _engine_stub(upper: Path, change: diff.Change) -> bool:
    if change.kind != "A" or change.path not in ENGINE_MOUNT_POINTS:
        return False
    try:  # inside the upper dir, no symlink followed (the container shaped that tree)
        root = os.open(upper, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = securepath.openat2(
                root, change.path.lstrip("/"), os.O_PATH, resolve=_NO_LINKS_IN_ROOT
            )
        finally:
            os.close(root)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


@op(verbs.CONTAINER_DIFF)
def diff_(ctx: Context, args: verbs.Id) -> list[verbs.Change]:
    record = record_of(ctx, args.id)
    return [{"kind": c.kind, "path": c.path} for c in changes(ctx.engine, record)]


@op(verbs.CONTAINER_REMOVE)
def remove(ctx: Context, args: verbs.Force) -> verbs.Removed:
    record = record_of(ctx, args.id)
    lab.remember(ctx.engine, record)  # what it did of the lab outlives it
    removed = with_runtime(ctx).remove(record.id, force=args.force, publisher=ctx.publisher)
    return {"id": removed.id, "name": removed.name}


def _owners_disk(ctx: Context, record: ContainerRecord) -> verbs.DiskUse | None:
    """The disk of the container's owner against their quota (None: they have none)."""
    quota = quotas.of_container(ctx.engine.config, record.options)
    if quota is None or not record.options.sandbox:
        return None
    containers = ctx.engine.get(Containers)
    return quotas.disk_use(ctx.engine.config, containers, record.options.sandbox, quota)


@op(verbs.CONTAINER_STORAGE)
def storage(ctx: Context, args: verbs.Id) -> Json:
    """What the Storage tab draws: the image's layers (bottom first) with sizes, the upper,
    work and merged dirs, the overlay options and command line, and what the kernel shows."""
    record = record_of(ctx, args.id)
    containers = ctx.engine.get(Containers)
    store = ctx.engine.get(Store)
    paths = containers.paths(record.id)
    layers = []
    for i, chain in enumerate(record.layers):
        try:
            layer = store.get_layer(chain)
            size, diff_id, entries = layer.size, layer.diff_id, layer.entries
        except NotFoundError:
            size, diff_id, entries = 0, "", 0
        layers.append(
            {
                "index": i,
                "chain_id": chain,
                "diff_id": diff_id,
                "size": size,
                "entries": entries,
                "path": str(store.layer_diff(chain)),
            }
        )
    upper = usage.measure(paths.upper)
    overlay = containers.overlay(record)
    found = mounts.mounts_at(paths.merged)
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "layers": layers,
        "upper": {
            "path": str(paths.upper),
            "size": upper.bytes,
            "entries": upper.entries,
            "complete": upper.complete,
        },
        "disk": _owners_disk(ctx, record),
        "work": str(paths.work),
        "merged": str(paths.merged),
        "mounted": bool(found),
        "mount_count": record.mount_count,
        "runtime_mounted": record.runtime_mounted,
        "options": overlay.option_string(),
        "flags": mounts.MOUNT_FLAGS,
        "command": overlay.command_line(),
        "mountinfo": [m.line for m in found],
        "findmnt": [m.findmnt() for m in found],
    }


def reconcile_mounts(ctx: Context) -> None:
    """After a restart or a reboot: records and the kernel's mount table agree again."""
    changed = rootfs.reconcile_mounts(ctx.engine.get(Containers))
    for name in changed:
        try:
            record = ctx.engine.get(Containers).get(name)
        except NotFoundError:
            continue
        publish_container_event(ctx, record, "reconcile")
