"""info: what this node is (podman info, in short)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.call import call
from engine.cli.output import add_format, print_json
from engine.core import Engine
from engine.protocol import verbs


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="show the node name and the versions of runc, conmon, kernel")
    add_format(p)
    p.set_defaults(func=info)


def info(engine: Engine, args: argparse.Namespace) -> int:
    data = call(engine, verbs.NODE_INFO, verbs.NoArgs())
    if args.format == "json":
        print_json(data)
    else:
        for key, value in data.items():
            print(f"{key + ':':<10} {value}")
    return 0
