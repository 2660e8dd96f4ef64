"""lab.* verbs: the lab's milestones read from real state, and a container as the lab's steps."""

from __future__ import annotations

from engine.api.base import Context, op
from engine.errors import PolicyError
from engine.hostfs.rmtree import remove_tree
from engine.lab import checks as lab
from engine.protocol import ADMIN, INSTRUCTOR, LEARNER, verbs
from engine.protocol.verbs import Json
from engine.storage import quotas, sandbox
from engine.storage.containers import Containers
from engine.storage.sandbox import sandbox_of


@op(verbs.LAB_CHECK)
def check(ctx: Context, args: verbs.LabCheck) -> Json:
    return lab.check(ctx.engine, args.image, args.container)


@op(verbs.LAB_STEPS)
def steps(ctx: Context, args: verbs.Id) -> Json:
    return lab.steps(ctx.engine, args.id)


@op(verbs.LAB_CLEAR_SANDBOX)
def clear_sandbox(ctx: Context, args: verbs.Sandbox) -> verbs.Cleared:
    """Empty a learner's sandbox (the Class page's "reset lab"): instructors and admins."""
    if ctx.role not in (None, ADMIN, INSTRUCTOR):
        raise PolicyError("only an instructor or an admin may reset a learner's lab")
    top = sandbox_of(ctx.engine.config, args.name)
    existed = top.exists()
    if existed:
        remove_tree(top)
    return {"path": str(top), "existed": existed}


def _own_sandbox(ctx: Context) -> str | None:
    if ctx.role not in (INSTRUCTOR, LEARNER):
        raise PolicyError("an admin has no sandbox: use real host paths (the volume allowlist)")
    return ctx.name


def _disk(ctx: Context, name: str, role: str | None) -> verbs.DiskUse:
    quota = quotas.quota_for(ctx.engine.config, role)
    return quotas.disk_use(ctx.engine.config, ctx.engine.get(Containers), name, quota)


@op(verbs.SANDBOX_LIST)
def sandbox_list(ctx: Context, args: verbs.NoArgs) -> verbs.SandboxListing:
    """What the asking learner's sandbox holds (the "Host files" page), and their disk."""
    name = _own_sandbox(ctx)
    top, entries, truncated = sandbox.listing(ctx.engine.config, name)
    return {
        "root": str(top),
        "entries": [{"path": e["path"], "kind": e["kind"], "size": e["size"]} for e in entries],
        "truncated": truncated,
        "disk": _disk(ctx, str(name), ctx.role),
    }


@op(verbs.SANDBOX_USAGE)
def sandbox_usage(ctx: Context, args: verbs.SandboxUsage) -> list[verbs.DiskUse]:
    """The disk each named user holds, against the quota of ``role`` (the Class page's
    column): instructors and admins ask for anyone, others only for themselves."""
    if ctx.role not in (None, ADMIN, INSTRUCTOR) and set(args.names) - {ctx.name}:
        raise PolicyError("a learner sees only their own disk")
    if args.role not in (LEARNER, INSTRUCTOR, ADMIN):
        raise PolicyError(f"role {args.role[:16]!r}: learner, instructor or admin")
    for name in args.names:
        sandbox_of(ctx.engine.config, name)  # a name that can name one, or PolicyError
    return [_disk(ctx, name, args.role) for name in args.names]


@op(verbs.SANDBOX_TOUCH)
def sandbox_touch(ctx: Context, args: verbs.SandboxPath) -> verbs.SandboxEntry:
    """``touch PATH`` in the asking learner's own sandbox (the lab's touch /mnt/on)."""
    name = _own_sandbox(ctx)
    config = ctx.engine.config
    quota = quotas.quota_for(config, ctx.role)
    quotas.check_disk(config, ctx.engine.get(Containers), quota, str(name))
    made = sandbox.touch(config, name, args.path)
    return {"path": made["path"], "kind": made["kind"], "size": made["size"]}


@op(verbs.LAB_VOLUME_TOUCH)
def volume_touch(ctx: Context, args: verbs.VolumeTouch) -> verbs.Touched:
    """Create an empty file in the host directory behind a container's volume."""
    return {"path": lab.touch_in_volume(ctx.engine, args.id, args.destination, args.name)}
