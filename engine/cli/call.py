"""The CLI's way to the engine: the verbs the web calls (engine.protocol.verbs), with the same
argument checks and handlers the worker runs, in this process. Only what has no verb (a pull
that prints its progress, logs -f, cp, interactive exec) uses the engine's services directly.
"""

from __future__ import annotations

from typing import TypeVar

from engine.core import Engine
from engine.protocol.check import Verb

A = TypeVar("A")
R = TypeVar("R")


def call(engine: Engine, verb: Verb[A, R], args: A) -> R:
    """Run ``verb`` here, as the engine's worker would (imports only that verb's module)."""
    from engine.api.base import Context, invoke

    return invoke(Context(engine), verb, args)
