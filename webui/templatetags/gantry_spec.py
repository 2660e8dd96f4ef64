"""Filters of the Spec tab."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.filter
def help_for(titles: Mapping[str, str], field: str) -> str:
    """The hover text of a config.json field (engine/spec/help.py is the one table)."""
    return str(titles.get(field, "")) if isinstance(titles, Mapping) else ""


@register.filter
def diff_class(line: str) -> str:
    """CSS class of a unified-diff line."""
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "ctx")


@register.filter
def as_json(value: Any) -> str:
    """A value of the field diff, compact (rendered escaped by the template)."""
    import json

    if value is None:
        return "—"
    return json.dumps(value, ensure_ascii=False)[:300]
