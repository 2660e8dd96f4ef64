"""The engine CLI: podman's words and flags where they exist, the same engine in-process.

Each domain module (engine/cli/<domain>.py) exposes ``register(sub)`` that adds its verbs to the
argparse subparsers; a verb's function takes (engine, args) and returns the exit status. Errors
are one line on stderr and a non-zero exit.

Start-up stays quick: only the domain of the verb typed is imported and registered (building
every subparser took 15 ms, most of it argparse asking gettext for translations), and
registering imports no engine service: a verb imports the modules it needs when it runs.
tests/engine/test_cli.py holds `info` and `ps` to it, and VERB_DOMAINS to the parsers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.core import Engine
from engine.errors import EngineError

Verb = Callable[[Engine, argparse.Namespace], int]
DOMAINS = [
    "node",
    "images",
    "containers",
    "network",
    "spec",
    "runtime",
    "terminal",
]  # as help lists them
VERB_DOMAINS = {
    **dict.fromkeys(["info", "config", "nodes"], "node"),
    **dict.fromkeys(["pull", "images", "rmi", "load", "login", "logout"], "images"),
    **dict.fromkeys(
        ["create", "mount", "unmount", "umount", "diff", "cp", "ps", "inspect", "port", "rm"],
        "containers",
    ),
    **dict.fromkeys(["init", "spec"], "spec"),
    **dict.fromkeys(
        ["start", "stop", "kill", "pause", "unpause", "restart", "logs", "exec", "top"],
        "runtime",
    ),
    "attach": "terminal",
    "network": "network",
}
GLOBAL_WITH_VALUE = ("--root", "--config", "--log-level")


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb typed (the first word that is not a global option or its value); None when
    there is none or help is asked for first."""
    words = iter(argv)
    for word in words:
        if word in ("-h", "--help"):
            return None
        if word in GLOBAL_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal's width: argparse makes one for every
    add_argument, and left to itself each asks shutil, whose import (with bz2 and lzma)
    cost every command 3 ms."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _columns() - 2)
        super().__init__(prog, **kwargs)


def _columns() -> int:
    """As shutil.get_terminal_size() answers: $COLUMNS, else the terminal's, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    """Every parser and subparser (add_subparsers makes them of the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser: with a known ``verb``, only its domain's verbs (the others are neither
    imported nor built); else all of them, for help and for an unknown verb's error."""
    parser = _Parser(
        prog="python -m engine", description="Gantry engine: build containers step by step."
    )
    parser.add_argument("--root", help="state root (default $GANTRY_ROOT or /var/lib/gantry)")
    parser.add_argument(
        "--config", help="engine config file (default $GANTRY_CONFIG or /etc/gantry/engine.json)"
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    # prog given: argparse would otherwise format a usage line to compute it
    sub = parser.add_subparsers(dest="verb", metavar="VERB", prog=parser.prog)
    sub.required = True
    domain = VERB_DOMAINS.get(verb or "")
    for name in [domain] if domain else DOMAINS:
        importlib.import_module(f"engine.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(verb_of(argv)).parse_args(argv)
    if args.log_level != "warning" or "logging" in sys.modules:
        import logging  # (6 ms) not for ps: Python prints a warning bare without it

        logging.basicConfig(
            level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
        )
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
