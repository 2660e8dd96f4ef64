"""info: what this node is (podman info, in short); config: its engine.json.

config init [--registry-port N]   write the first engine.json if there is none (set-up)
config show                       the configuration in effect, as JSON
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import Any

from engine.cli.call import call
from engine.cli.output import add_format, is_json, is_template, print_json, print_template
from engine.config import config_path, init_file
from engine.core import Engine
from engine.protocol import verbs


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="show the node name and the versions of runc, conmon, kernel")
    add_format(p)
    p.set_defaults(func=info)
    config = sub.add_parser("config", help="the engine's configuration file (engine.json)")
    verbs_ = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = verbs_.add_parser("init", help="write the first engine.json, unless there is one")
    init.add_argument(
        "--registry-port",
        type=int,
        default=int(os.environ.get("GANTRY_REGISTRY_PORT") or 5000),
        help="the demo registry's port, marked insecure (default $GANTRY_REGISTRY_PORT or 5000)",
    )
    init.set_defaults(func=config_init)
    show = verbs_.add_parser("show", help="the configuration in effect, as JSON")
    show.set_defaults(func=config_show)


def info(engine: Engine, args: argparse.Namespace) -> int:
    data = call(engine, verbs.NODE_INFO, verbs.NoArgs())
    if is_json(args.format):
        print_json(data)
    elif is_template(args.format):
        print_template(args.format, [data])
    else:
        for key, value in data.items():
            print(f"{key + ':':<10} {value}")
    return 0


def config_init(engine: Engine, args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if init_file(path, args.registry_port):
        print(f"wrote {path}")
    return 0


def config_show(engine: Engine, args: argparse.Namespace) -> int:
    shown = json.loads(json.dumps(asdict(engine.config), default=str))  # paths as strings
    print_json({"file": str(config_path(args.config))} | shown)
    return 0
