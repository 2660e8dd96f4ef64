"""image.* and registry.* verbs.

image.pull      {ref, platform?, tls_verify?}   -> the job snapshot (returns at once; the
                                                   pull runs on; progress: kind "pull")
image.pulls     {}                               -> [job snapshot] (running and recent)
image.list      {}                               -> [podman images --format json entry]
image.inspect   {image}                          -> podman-like inspect + manifest chain,
                                                   layer details, containers using it
image.remove    {image, force?}                  -> {untagged: [...], deleted: [...]}
image.load      {path, platform?}                -> [image list entry]; path must lie in
                                                   <root>/imports (the web is not root)
registry.login  {registry, username, password, tls_verify?} -> {registry, username}
registry.logout {registry}                       -> {removed: bool}
registry.list   {}                               -> [{registry, username}] (no passwords)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.api.base import Context, op
from engine.errors import PolicyError
from engine.images.service import Images, list_entry
from engine.images.store import Store
from engine.protocol import EVENTS_GROUP, INSTRUCTOR, LEARNER, verbs
from engine.protocol.verbs import Json
from engine.registry import refs
from engine.registry.credentials import Credentials

DEFAULT_LEARNER_REGISTRIES = ("docker.io", "quay.io", "ghcr.io")

log = logging.getLogger("gantry.engine.images")


def learner_registries(ctx: Context) -> tuple[str, ...]:
    """Where an instructor or a learner may pull from: engine.json
    ``policy.registries.learners`` (default: docker.io, quay.io, ghcr.io), and the registries
    the admin marked insecure (the lab's own, on this host)."""
    policy = ctx.engine.config.policy.get("registries", {}) if ctx.engine.config.policy else {}
    listed = policy.get("learners", DEFAULT_LEARNER_REGISTRIES) if isinstance(policy, dict) else ()
    if not isinstance(listed, list | tuple) or not all(isinstance(r, str) for r in listed):
        raise PolicyError("engine config: policy.registries.learners: a list of registries")
    domains = [*listed, *ctx.engine.config.insecure_registries]
    return tuple(refs.normalize_domain(d) for d in domains)


def check_registry_for(ctx: Context, ref: str) -> None:
    """Only admins pull from anywhere: the root engine must not probe local services or
    arbitrary hosts for a learner."""
    if ctx.role not in (INSTRUCTOR, LEARNER):
        return
    domain = refs.parse(ref).domain
    allowed = learner_registries(ctx)
    if domain not in allowed:
        raise PolicyError(
            f"pull {ref[:200]}: learners may pull from {', '.join(allowed)} only "
            f"(not {domain}); an admin can pull it for the class",
            rule="registries",
            field="ref",
        )


@op(verbs.IMAGE_PULL)
def pull(ctx: Context, args: verbs.Pull) -> Json:
    check_registry_for(ctx, args.ref)
    job = ctx.engine.get(Images).start_pull(
        args.ref,
        platform=args.platform or None,
        tls_verify=args.tls_verify,
        user=ctx.user,
        publisher=ctx.publisher,
    )
    return job.snapshot()


@op(verbs.IMAGE_PULLS)
def pulls(ctx: Context, args: verbs.Pulls) -> list[Json]:
    jobs = ctx.engine.get(Images).jobs()
    return [j for j in jobs if j["job"] == args.job] if args.job else jobs


@op(verbs.IMAGE_LIST)
def list_(ctx: Context, args: verbs.NoArgs) -> list[Json]:
    return ctx.engine.get(Images).list_json()


@op(verbs.IMAGE_INSPECT)
def inspect(ctx: Context, args: verbs.Image) -> Json:
    return ctx.engine.get(Images).inspect(args.image)


@op(verbs.IMAGE_REMOVE)
def remove(ctx: Context, args: verbs.RemoveImage) -> Json:
    result = ctx.engine.get(Images).remove(args.image, force=args.force)
    ctx.publisher.publish(
        EVENTS_GROUP,
        {"type": "engine.event", "kind": "image", "action": "remove"} | result,
    )
    return result


@op(verbs.IMAGE_LOAD)
def load(ctx: Context, args: verbs.Load) -> list[Json]:
    unsafe_path = args.path
    imports = (Path(ctx.engine.config.root) / "imports").resolve()
    # Absolute, or relative to the imports directory; symlinks resolved before the check.
    path = Path(os.path.realpath(imports / unsafe_path))
    if not path.is_relative_to(imports) or path == imports:
        raise PolicyError(
            f"load: {unsafe_path[:200]!r} is not inside {imports}", rule="imports", field="path"
        )
    records = ctx.engine.get(Images).load(path, platform=args.platform or None)
    for record in records:
        ctx.publisher.publish(
            EVENTS_GROUP,
            {"type": "engine.event", "kind": "image", "action": "load", "image": record.id},
        )
    return [list_entry(r) for r in records]


@op(verbs.REGISTRY_LOGIN)
def login(ctx: Context, args: verbs.Login) -> verbs.LoggedIn:
    registry = refs.normalize_domain(args.registry)
    login = ctx.engine.get(Credentials).login(
        registry, args.username, args.password, tls_verify=args.tls_verify
    )
    return {"registry": login.registry, "username": login.username}


@op(verbs.REGISTRY_LOGOUT)
def logout(ctx: Context, args: verbs.Registry) -> verbs.LoggedOut:
    return {"removed": ctx.engine.get(Credentials).remove(args.registry)}


@op(verbs.REGISTRY_LIST)
def logins(ctx: Context, args: verbs.NoArgs) -> list[verbs.LoggedIn]:
    return [
        {"registry": login.registry, "username": login.username}
        for login in ctx.engine.get(Credentials).list()
    ]


def sweep_store(ctx: Context) -> None:
    """At startup: partial downloads and extractions of a crashed engine are never referenced;
    delete them, then collect what no image refers to any more."""
    store = ctx.engine.get(Store)
    store.sweep_tmp()
    store.gc()


def recover_pulls(ctx: Context) -> None:
    """At startup: the pulls a killed engine was running are said to have failed."""
    for job in ctx.engine.get(Images).recover_interrupted(ctx.publisher):
        log.warning("pull %s (job %s) was interrupted by an engine stop", job.ref, job.id)
