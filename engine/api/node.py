"""node.* verbs."""

from __future__ import annotations

from engine.api.base import Context, op
from engine.protocol import verbs
from engine.protocol.verbs import Json
from engine.runtime.nodeinfo import node_info


@op(verbs.NODE_INFO)
def info(ctx: Context, args: verbs.NoArgs) -> Json:
    return node_info(ctx.engine.config)


@op(verbs.NODE_PING)
def ping(ctx: Context, args: verbs.NoArgs) -> str:
    return "pong"
