"""CLI verbs of the spec domain.

init NAME...                  write bundle/config.json (podman init's first half: podman
                              also runs ``runc create``; here ``start`` does that) and
                              print its path
spec show NAME                print config.json as it is on disk
spec validate NAME [--file F] check config.json (or F) as start will: exit 1 with one
                              "field: message (rule)" line per problem
spec diff NAME                the edits against the generated spec (unified diff)
spec reset NAME               back to the generated spec
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.call import call, each_name
from engine.core import Engine
from engine.protocol import verbs

if TYPE_CHECKING:
    from engine.spec.service import SpecService


def _service(engine: Engine) -> SpecService:
    """The spec service, imported when a verb runs (it brings the JSON schema validator)."""
    from engine.spec.service import SpecService

    return engine.get(SpecService)


def cmd_init(engine: Engine, args: argparse.Namespace) -> int:
    return each_name(
        args.names, lambda n: print(call(engine, verbs.SPEC_GENERATE, verbs.Id(id=n))["path"])
    )


def cmd_show(engine: Engine, args: argparse.Namespace) -> int:
    found = call(engine, verbs.SPEC_GET, verbs.Id(id=args.name))
    if not found["exists"]:
        print(f"Error: container {found['name']} has no config.json (run init)", file=sys.stderr)
        return 1
    sys.stdout.write(found["text"])
    return 0


def cmd_validate(engine: Engine, args: argparse.Namespace) -> int:
    service = _service(engine)
    record = service.containers.get(args.name)
    path = args.file or str(service.config_path(record.id))
    try:
        with open(path, "rb") as f:
            raw = f.read(service_limit() + 1)
    except OSError as err:
        print(f"Error: read {path}: {err.strerror}", file=sys.stderr)
        return 1
    _, issues = service.check(record, raw)
    for issue in issues:
        print(f"{issue} ({issue.rule})")
    if not issues:
        print(f"{path}: ok")
    return 1 if issues else 0


def service_limit() -> int:
    from engine.spec.schema import MAX_BYTES

    return MAX_BYTES


def cmd_diff(engine: Engine, args: argparse.Namespace) -> int:
    result = call(engine, verbs.SPEC_DIFF, verbs.Id(id=args.name))
    for line in result["diff"]:
        print(line)
    return 0


def cmd_reset(engine: Engine, args: argparse.Namespace) -> int:
    print(call(engine, verbs.SPEC_RESET, verbs.Id(id=args.name))["path"])
    return 0


def register(sub: Any) -> None:
    """Add this domain's verbs to the argparse subparsers."""
    p = sub.add_parser("init", help="write a container's config.json and print its path")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_init)

    spec = sub.add_parser("spec", help="show, check, diff or reset a container's config.json")
    subverbs = spec.add_subparsers(prog=spec.prog, dest="spec_verb", metavar="VERB")
    subverbs.required = True
    for name, func, text in (
        ("show", cmd_show, "print config.json"),
        ("validate", cmd_validate, "check config.json as start will"),
        ("diff", cmd_diff, "show edits against the generated spec"),
        ("reset", cmd_reset, "undo every edit (back to the generated spec)"),
    ):
        p = subverbs.add_parser(name, help=text)
        p.add_argument("name", metavar="NAME")
        p.set_defaults(func=func)
        if name == "validate":
            p.add_argument("--file", help="check this file instead (for a draft)")
