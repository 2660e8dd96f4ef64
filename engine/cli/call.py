"""The CLI's way to the engine: the verbs the web calls (engine.protocol.verbs), with the same
argument checks and handlers the worker runs, in this process. Only what has no verb (a pull
that prints its progress, logs -f, cp, interactive exec) uses the engine's services directly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from engine.core import Engine
from engine.errors import EngineError
from engine.protocol.check import Verb

A = TypeVar("A")
R = TypeVar("R")


def call(engine: Engine, verb: Verb[A, R], args: A) -> R:
    """Run ``verb`` here, as the engine's worker would (imports only that verb's module)."""
    from engine.api.base import Context, invoke

    return invoke(Context(engine), verb, args)


def each_name(names: list[str], act: Callable[[str], object], not_found: int = 125) -> int:
    """``act`` on every name, as podman's verbs that take several: a failure is one line on
    stderr and the others go on; the status is 125 (``not_found`` for a missing one) if any
    failed."""
    status = 0
    for name in names:
        try:
            act(name)
        except EngineError as err:
            print(f"Error: {err.message}", file=sys.stderr)
            status = not_found if err.code == "not_found" else 125
    return status
