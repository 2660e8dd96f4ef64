"""Filters for showing what comes out of a container: file names, link targets, paths.

``visible`` makes hostile names harmless *and visible*, as ``ls -b`` does: control characters
(CR, LF, ESC and the rest of C0/C1), DEL, and the bidirectional overrides that can make
``evil\u202egpj.exe`` read as ``evilexe.jpg`` are shown as escapes (``\\r``, ``\\x1b``,
``\\u202e``). Django's autoescape then takes care of ``<``, ``>``, ``&`` and quotes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django import template

register = template.Library()

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\\": "\\\\"}
_HOSTILE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\\]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@register.filter
def visible(value: Any) -> str:
    """The text with control and bidi-override characters shown as escapes."""
    return _HOSTILE.sub(_escape, str(value))


@register.filter
def epoch(value: Any) -> str:
    """A Unix timestamp as 'YYYY-MM-DD HH:MM' (UTC)."""
    try:
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


@register.filter
def parent_path(value: Any) -> str:
    """'/a/b/c' -> '/a/b'; '/' stays '/'."""
    text = str(value).rstrip("/")
    head = text.rsplit("/", 1)[0]
    return head or "/"


@register.filter
def basename(value: Any) -> str:
    """'/a/b/c' -> 'c'."""
    return str(value).rstrip("/").rsplit("/", 1)[-1]


@register.filter
def join_path(base: Any, name: Any) -> str:
    """A directory path and an entry name joined with one slash."""
    return str(base).rstrip("/") + "/" + str(name)


@register.filter
def crumbs(value: Any) -> list[tuple[str, str]]:
    """'/a/b' -> [('/', '/'), ('a', '/a'), ('b', '/a/b')] for breadcrumbs."""
    out = [("/", "/")]
    acc = ""
    for part in str(value).split("/"):
        if part:
            acc += "/" + part
            out.append((part, acc))
    return out
