"""Filters for prose written with `backticks` (the lab's checks and how-tos)."""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
_TICKS = re.compile(r"`([^`]+)`")


@register.filter
def ticks(text: str) -> SafeString:
    """Escape the text, then show each `word` as <code>word</code>."""
    return mark_safe(_TICKS.sub(r"<code>\1</code>", escape(str(text))))  # noqa: S308


@register.filter
def iec_size(size: int | float | None) -> str:
    """Bytes in binary units, as the engine's quota refusals say them: 1536 -> "1.5 KiB"
    (Django's filesizeformat divides by 1024 too but writes "KB"); a no-break space between
    number and unit, so a narrow column never splits them."""
    count = int(size or 0)
    value, unit = float(count), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count}\u00a0bytes" if unit == "bytes" else f"{value:.1f}\u00a0{unit}"


@register.filter
def ports_text(ports: object) -> str:
    """A ps row's published ports as podman's PORTS column (127.0.0.1:8080->80/tcp), one
    per line."""
    if not isinstance(ports, list):
        return ""
    return "\n".join(
        f"{p.get('host_ip')}:{p.get('host_port')}->{p.get('container_port')}/{p.get('protocol')}"
        for p in ports
        if isinstance(p, dict)
    )
