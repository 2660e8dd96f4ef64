"""node.* verbs."""

from __future__ import annotations

from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.runtime.nodeinfo import node_info


@op("node.info")
def info(ctx: Context, args: Args) -> dict[str, Any]:
    args.done()
    return node_info(ctx.engine.config)


@op("node.ping")
def ping(ctx: Context, args: Args) -> str:
    args.done()
    return "pong"
