"""Output helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any


def add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="output format (json uses podman's field names)",
    )


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=4, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded like podman's tables."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def host_env(entries: list[str]) -> list[str]:
    """``-e`` values as podman takes them: ``NAME=VALUE`` as given, a bare ``NAME`` from this
    shell's environment (empty when it is not set there)."""
    return [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in entries]
