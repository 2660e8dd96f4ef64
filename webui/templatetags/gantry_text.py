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
