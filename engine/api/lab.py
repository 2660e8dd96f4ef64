"""lab.* verbs: the lab's milestones read from real state, and a container as the lab's steps."""

from __future__ import annotations

from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.lab import checks as lab


@op("lab.check")
def check(ctx: Context, args: Args) -> dict[str, Any]:
    image = args.get_str("image", required=True, max_len=512)
    container = args.get_str("container", default="", max_len=128)
    args.done()
    return lab.check(ctx.engine, image, container)


@op("lab.steps")
def steps(ctx: Context, args: Args) -> dict[str, Any]:
    container = args.get_str("id", required=True, max_len=128)
    args.done()
    return lab.steps(ctx.engine, container)


@op("lab.volume_touch")
def volume_touch(ctx: Context, args: Args) -> dict[str, Any]:
    """Create an empty file in the host directory behind a container's volume."""
    container = args.get_str("id", required=True, max_len=128)
    destination = args.get_str("destination", required=True, max_len=4096)
    name = args.get_str("name", required=True, max_len=255)
    args.done()
    return {"path": lab.touch_in_volume(ctx.engine, container, destination, name)}
