"""network: podman's network verbs.

network create [--subnet CIDR [--gateway IP]] [--interface-name BRIDGE] [--internal]
               [--disable-dns] NAME
network ls [--format json|TEMPLATE] [-q]
network inspect NAME... [--format json|TEMPLATE]
network rm NAME...
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.call import call, each_name
from engine.cli.output import (
    add_format,
    is_json,
    is_template,
    print_json,
    print_table,
    print_template,
)
from engine.core import Engine
from engine.protocol import verbs


def register(sub: Any) -> None:
    network = sub.add_parser("network", help="container networks (bridges, by netavark)")
    actions = network.add_subparsers(
        prog=network.prog, dest="action", metavar="ACTION", required=True
    )
    p = actions.add_parser("create", help="create a bridge network")
    p.add_argument("--subnet", default="", help="IPv4 CIDR (default: a free /24 of 10.90/16)")
    p.add_argument("--gateway", default="", help="the gateway (default: the first address)")
    p.add_argument("--interface-name", default="", metavar="BRIDGE", help="the bridge's name")
    p.add_argument("--internal", action="store_true", help="no route out of the network")
    p.add_argument("--disable-dns", action="store_true", help="no aardvark-dns on it")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_create)
    p = actions.add_parser("ls", aliases=["list"], help="list networks")
    add_format(p)
    p.add_argument("-q", "--quiet", action="store_true", help="names only")
    p.set_defaults(func=cmd_ls)
    p = actions.add_parser("inspect", help="a network's definition and its containers")
    add_format(p)
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_inspect)
    p = actions.add_parser("rm", aliases=["remove"], help="remove networks no container uses")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_rm)


def cmd_create(engine: Engine, args: argparse.Namespace) -> int:
    made = call(
        engine,
        verbs.NETWORK_CREATE,
        verbs.CreateNetwork(
            name=args.name,
            subnet=args.subnet,
            gateway=args.gateway,
            bridge=args.interface_name,
            internal=args.internal,
            dns=not args.disable_dns,
        ),
    )
    print(made["name"])
    return 0


def _row(network: dict[str, Any]) -> dict[str, Any]:
    """What a template sees: podman's fields and its title-case ones."""
    [subnet] = network["subnets"]
    return {
        **network,
        "ID": network["id"][:12],
        "Name": network["name"],
        "Driver": network["driver"],
        "Subnet": subnet["subnet"],
        "Gateway": subnet["gateway"],
        "NetworkInterface": network["network_interface"],
    }


def cmd_ls(engine: Engine, args: argparse.Namespace) -> int:
    found = call(engine, verbs.NETWORK_LIST, verbs.NoArgs())
    if args.quiet:
        for network in found:
            print(network["name"])
    elif is_json(args.format):
        print_json(found)
    elif is_template(args.format):
        print_template(args.format, [_row(n) for n in found])
    else:
        rows = [_row(n) for n in found]
        print_table(
            ["NETWORK ID", "NAME", "DRIVER", "SUBNET", "BRIDGE", "CONTAINERS"],
            [
                [r["ID"], r["Name"], r["Driver"], r["Subnet"], r["NetworkInterface"],
                 r["containers"]]
                for r in rows
            ],
        )  # fmt: skip
    return 0


def cmd_inspect(engine: Engine, args: argparse.Namespace) -> int:
    found: list[dict[str, Any]] = []
    status = each_name(
        args.names,
        lambda n: found.append(call(engine, verbs.NETWORK_INSPECT, verbs.NetworkName(name=n))),
    )
    if is_template(args.format):
        print_template(args.format, [_row(n) for n in found])
    else:
        print_json(found)
    return status


def cmd_rm(engine: Engine, args: argparse.Namespace) -> int:
    """podman network rm: 1 when a network is not found, 125 for the others' failures."""
    return each_name(
        args.names,
        lambda n: print(call(engine, verbs.NETWORK_REMOVE, verbs.NetworkName(name=n))["name"]),
        not_found=1,
    )
