"""CLI verbs of the spec domain."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this domain's verbs to the argparse subparsers."""
