"""The engine CLI: podman's words and flags where they exist, the same engine in-process.

Each domain module (engine/cli/<domain>.py) exposes ``register(sub)`` that adds its verbs to the
argparse subparsers; a verb's function takes (engine, args) and returns the exit status. Errors
are one line on stderr and a non-zero exit.

Start-up stays quick because registering imports no engine service: a verb imports the modules
it needs when it runs (the registry client, the spec schema and the container stack are each
a few hundred milliseconds of imports). tests/engine/test_cli.py holds `info` and `ps` to it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from engine.cli import containers, images, node, runtime, spec, terminal
from engine.core import Engine
from engine.errors import EngineError

Verb = Callable[[Engine, argparse.Namespace], int]
DOMAINS = [node, images, containers, spec, runtime, terminal]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="Gantry engine: build containers step by step."
    )
    parser.add_argument("--root", help="state root (default $GANTRY_ROOT or /var/lib/gantry)")
    parser.add_argument(
        "--config", help="engine config file (default $GANTRY_CONFIG or /etc/gantry/engine.json)"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for domain in DOMAINS:
        domain.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        engine = Engine.from_env(root=args.root, config_file=args.config)
        func: Verb = args.func
        return func(engine, args)
    except EngineError as err:
        print(f"Error: {err.message}", file=sys.stderr)
        return 125  # podman's "the error is with the engine itself"; verbs say more
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
