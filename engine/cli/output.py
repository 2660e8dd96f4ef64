"""Output helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

JSON_FORMATS = ("json", "{{json .}}", "{{ json . }}")  # podman prints the JSON list for both


def add_format(p: argparse.ArgumentParser, *short: str) -> None:
    p.add_argument(
        *short,
        "--format",
        default="table",
        metavar="FORMAT",
        help="json (podman's field names), or a Go template such as '{{.ID}} {{.Names}}' "
        "or 'table {{.ID}}\\t{{.Status}}'",
    )


def is_json(fmt: str) -> bool:
    return fmt.strip() in JSON_FORMATS


def is_template(fmt: str) -> bool:
    return fmt not in ("table", "") and not is_json(fmt)


def print_template(fmt: str, items: Sequence[Any], names: dict[str, str] | None = None) -> None:
    """Items through a Go template (engine/cli/gotemplate.py), as podman's --format."""
    from engine.cli.gotemplate import render

    text = render(fmt, list(items), names)
    if text:
        print(text)


def go_time(ts: float | None) -> str:
    """A time as Go prints a time.Time: "2026-12-07 10:57:21.980952659 +0000 UTC"."""
    import time

    seconds = float(ts or 0)
    local = time.localtime(seconds)
    fraction = f"{seconds % 1:.9f}"[2:].rstrip("0")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", local) + (f".{fraction}" if fraction else "")
    return f"{stamp} {time.strftime('%z %Z', local)}"


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
