"""info: what this node is (podman info, in short); config: its engine.json; nodes: every
engine node sharing this Redis, as the web sees them.

config init [--registry-port N]   write the first engine.json if there is none (set-up)
config show                       the configuration in effect, as JSON
nodes [ls] [--format json|TEMPLATE]
                                  the nodes in the registry of $GANTRY_REDIS_URL
nodes rm NAME                     forget an offline node's record (nothing on it is touched)
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from typing import Any

from engine.cli.call import call
from engine.cli.output import (
    add_format,
    is_json,
    is_template,
    print_json,
    print_table,
    print_template,
)
from engine.config import config_path, init_file
from engine.core import Engine
from engine.errors import EngineError
from engine.protocol import verbs


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="show the node name and the versions of runc, conmon, kernel")
    add_format(p)
    p.set_defaults(func=info)
    config = sub.add_parser("config", help="the engine's configuration file (engine.json)")
    verbs_ = config.add_subparsers(prog=config.prog, dest="action", metavar="ACTION", required=True)
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
    nodes = sub.add_parser(
        "nodes", help="the engine nodes sharing this Redis ($GANTRY_REDIS_URL), online or not"
    )
    add_format(nodes)
    nodes.add_argument("action", nargs="?", choices=["ls", "rm"], default="ls")
    nodes.add_argument("name", nargs="?", help="rm: the offline node to forget")
    nodes.set_defaults(func=cmd_nodes)


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


def _registry() -> Any:
    import redis

    url = os.environ.get("GANTRY_REDIS_URL") or "unix:///run/gantry/redis/redis.sock"
    return url, redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def cmd_nodes(engine: Engine, args: argparse.Namespace) -> int:
    import redis

    from engine.errors import InvalidInputError, NotFoundError
    from engine.protocol import nodes

    url, client = _registry()
    try:
        if args.action == "rm":
            if not args.name:
                raise InvalidInputError("nodes rm: which node? (nodes rm NAME)")
            if not nodes.forget(client, args.name):
                raise NotFoundError(f"node {args.name[:63]}: no such node")
            print(args.name)
            return 0
        now, records = nodes.listing(client)
    except ValueError as err:
        raise InvalidInputError(str(err)) from err
    except (redis.RedisError, OSError) as err:
        raise EngineError(
            f"cannot reach the node registry at {nodes.redacted(url)} "
            f"(is ./gantry run or ./gantry node running, with this GANTRY_REDIS_URL?): {err}"
        ) from err
    finally:
        client.close()
    _print_nodes(args.format, now, records)
    return 0


def _print_nodes(fmt: str, now: float, records: list[dict[str, Any]]) -> None:
    from engine.storage.podjson import human_duration, rfc3339

    rows = [
        {
            "Name": r.get("Name"),
            "Status": r["Status"],
            "LastSeen": rfc3339(r.get("LastSeen")),
            "Containers": r.get("Containers", 0),
            "Running": r.get("Running", 0),
            "Host": r.get("Host", ""),
            "Pid": r.get("Pid", 0),
            "Versions": r.get("Versions", {}),
        }
        for r in records
    ]
    if is_json(fmt):
        print_json(rows)
    elif is_template(fmt):
        print_template(fmt, rows)
    else:
        table = [
            (r["Name"], r["Status"], human_duration(now - float(src.get("LastSeen") or 0)) + " ago",
             r["Containers"], r["Running"], r["Host"])
            for r, src in zip(rows, records, strict=True)
        ]  # fmt: skip
        print_table(["NAME", "STATUS", "LAST SEEN", "CONTAINERS", "RUNNING", "HOST"], table)
