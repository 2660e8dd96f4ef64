"""What a verb's handler is: a function registered with ``@op(verbs.CONTAINER_START)`` that
takes a Context and the verb's argument dataclass (engine.protocol.verbs), already checked, and
returns the verb's reply. Handlers are synchronous and run on a worker thread, so a slow one
never blocks the others.

The worker (engine.rpc.dispatch) and the CLI (``invoke``) reach a handler the same way: the
arguments in their wire form, decoded by engine.protocol.check.decode, then the handler."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from engine.core import Engine
from engine.errors import InvalidInputError
from engine.events import NullPublisher, Publisher
from engine.protocol import OP_RE
from engine.protocol.check import Verb, decode, encode

A = TypeVar("A")
R = TypeVar("R")


@dataclass
class Context:
    engine: Engine
    request_id: str = ""
    user: str | None = None
    reply_to: str = ""
    publisher: Publisher = field(default_factory=NullPublisher)
    role: str | None = None  # who asks (engine.protocol.ROLES); None: the CLI, as root
    name: str | None = None  # their user name (a learner's sandbox is named by it)


@dataclass(frozen=True)
class Handler(Generic[A, R]):
    verb: Verb[A, R]
    fn: Callable[[Context, A], R]

    def __call__(self, ctx: Context, raw_args: Any) -> R:
        return self.fn(ctx, decode(self.verb.args, raw_args, self.verb.name))


OPS: dict[str, Handler[Any, Any]] = {}


def op(verb: Verb[A, R]) -> Callable[[Callable[[Context, A], R]], Callable[[Context, A], R]]:
    """Register a handler for ``verb``."""
    if not OP_RE.match(verb.name):
        raise ValueError(f"bad op name {verb.name!r}")

    def register(fn: Callable[[Context, A], R]) -> Callable[[Context, A], R]:
        if verb.name in OPS:
            raise ValueError(f"op {verb.name!r} registered twice")
        OPS[verb.name] = Handler(verb, fn)
        return fn

    return register


def handler(name: str, module: str = "") -> Handler[Any, Any]:
    """The handler of verb ``name``, importing engine.api.<module> (or every verb module) when
    it is not registered yet."""
    found = OPS.get(name)
    if found is None:
        importlib.import_module(f"engine.api.{module}" if module else "engine.api.verbs")
        found = OPS.get(name)
    if found is None:
        raise InvalidInputError(f"unknown operation {name[:64]!r}")
    return found


def invoke(ctx: Context, verb: Verb[A, R], args: A) -> R:
    """Run ``verb`` in this process as the worker would: its arguments in wire form, checked
    by the same decode, then its handler. The CLI's way to the engine."""
    result: R = handler(verb.name, verb.module)(ctx, encode(args))
    return result


# Run once when the worker starts, before it serves requests (sweeps, reconciliation,
# watchers), in the order engine.api.verbs.STARTUP lists them. A hook may start daemon
# threads; they should stop when engine.stopping is set.
StartupHook = Callable[[Context], None]
