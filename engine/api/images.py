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

import os
import re
from pathlib import Path
from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.errors import InvalidInputError, PolicyError
from engine.images.service import Images, list_entry
from engine.images.store import Store
from engine.protocol import EVENTS_GROUP
from engine.registry import refs
from engine.registry.credentials import Credentials

JOB_RE = re.compile(r"^[0-9a-f]{16}$")


@op("image.pull")
def pull(ctx: Context, args: Args) -> dict[str, Any]:
    ref = args.get_str("ref", required=True, max_len=refs.MAX_REF)
    platform = args.get_str("platform", default="", max_len=100)
    tls_verify = args.raw("tls_verify")
    if tls_verify is not None and not isinstance(tls_verify, bool):
        raise InvalidInputError("tls_verify: must be true or false")
    args.done()
    job = ctx.engine.get(Images).start_pull(
        ref,
        platform=platform or None,
        tls_verify=tls_verify,
        user=ctx.user,
        publisher=ctx.publisher,
    )
    return job.snapshot()


@op("image.pulls")
def pulls(ctx: Context, args: Args) -> list[dict[str, Any]]:
    job = args.get_str("job", default="", pattern=JOB_RE)
    args.done()
    jobs = ctx.engine.get(Images).jobs()
    return [j for j in jobs if j["job"] == job] if job else jobs


@op("image.list")
def list_(ctx: Context, args: Args) -> list[dict[str, Any]]:
    args.done()
    return ctx.engine.get(Images).list_json()


@op("image.inspect")
def inspect(ctx: Context, args: Args) -> dict[str, Any]:
    image = args.get_str("image", required=True, max_len=refs.MAX_REF)
    args.done()
    return ctx.engine.get(Images).inspect(image)


@op("image.remove")
def remove(ctx: Context, args: Args) -> dict[str, Any]:
    image = args.get_str("image", required=True, max_len=refs.MAX_REF)
    force = args.get_bool("force")
    args.done()
    result = ctx.engine.get(Images).remove(image, force=force)
    ctx.publisher.publish(
        EVENTS_GROUP,
        {"type": "engine.event", "kind": "image", "action": "remove"} | result,
    )
    return result


@op("image.load")
def load(ctx: Context, args: Args) -> list[dict[str, Any]]:
    unsafe_path = args.get_str("path", required=True, max_len=4096)
    platform = args.get_str("platform", default="", max_len=100)
    args.done()
    imports = (Path(ctx.engine.config.root) / "imports").resolve()
    # Absolute, or relative to the imports directory; symlinks resolved before the check.
    path = Path(os.path.realpath(imports / unsafe_path))
    if not path.is_relative_to(imports) or path == imports:
        raise PolicyError(
            f"load: {unsafe_path[:200]!r} is not inside {imports}", rule="imports", field="path"
        )
    records = ctx.engine.get(Images).load(path, platform=platform or None)
    for record in records:
        ctx.publisher.publish(
            EVENTS_GROUP,
            {"type": "engine.event", "kind": "image", "action": "load", "image": record.id},
        )
    return [list_entry(r) for r in records]


@op("registry.login")
def login(ctx: Context, args: Args) -> dict[str, str]:
    registry = refs.normalize_domain(args.get_str("registry", required=True, max_len=255))
    username = args.get_str("username", required=True, max_len=256)
    password = args.get_str("password", required=True, max_len=4096)
    tls_verify = args.get_bool("tls_verify", default=True)
    args.done()
    login = ctx.engine.get(Credentials).login(registry, username, password, tls_verify=tls_verify)
    return {"registry": login.registry, "username": login.username}


@op("registry.logout")
def logout(ctx: Context, args: Args) -> dict[str, bool]:
    registry = args.get_str("registry", required=True, max_len=255)
    args.done()
    return {"removed": ctx.engine.get(Credentials).remove(registry)}


@op("registry.list")
def logins(ctx: Context, args: Args) -> list[dict[str, str]]:
    args.done()
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
