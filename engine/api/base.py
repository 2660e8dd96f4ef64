"""What a verb is: a handler registered with ``@op("container.start")`` that takes a Context
and an Args and returns something JSON-serialisable. Handlers are synchronous and run on a
worker thread, so a slow one never blocks the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.api.args import Args
from engine.core import Engine
from engine.events import NullPublisher, Publisher
from engine.protocol import OP_RE


@dataclass
class Context:
    engine: Engine
    request_id: str = ""
    user: str | None = None
    reply_to: str = ""
    publisher: Publisher = field(default_factory=NullPublisher)


Handler = Callable[[Context, Args], Any]
OPS: dict[str, Handler] = {}


def op(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for verb ``name``."""
    if not OP_RE.match(name):
        raise ValueError(f"bad op name {name!r}")

    def register(fn: Handler) -> Handler:
        if name in OPS:
            raise ValueError(f"op {name!r} registered twice")
        OPS[name] = fn
        return fn

    return register


# Run once when the worker starts, before it serves requests (sweeps, reconciliation,
# watchers), in the order engine.api.verbs.STARTUP lists them. A hook may start daemon
# threads; they should stop when engine.stopping is set.
StartupHook = Callable[[Context], None]
