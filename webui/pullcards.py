"""Pull progress cards, rendered by the server only: the Images page draws them from the
engine's job snapshots (image.pulls), and the events socket sends each new snapshot with its
card already rendered, so the page's script only decides which copy is newest and swaps it in.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

TEMPLATE = "images/pull_job.html"
FULL = ("done", "exists", "extracting")  # states whose bar is full


def human(size: Any) -> str:
    """Bytes as podman prints them (decimal units)."""
    value = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def layer_text(layer: dict[str, Any]) -> str:
    """What a layer's row says: its bytes and speed while it downloads, then its step."""
    state, size = layer.get("state", ""), layer.get("size") or 0
    if state == "downloading":
        speed = f" · {human(layer['speed'])}/s" if layer.get("speed") else ""
        return f"{human(layer.get('done'))} / {human(size)}{speed}"
    texts = {
        "waiting": "waiting",
        "extracting": f"{human(size)} · extracting",
        "done": f"{human(size)} · done",
        "exists": "already exists",
        "error": "failed",
    }
    return texts.get(state, str(state))


def decorate(job: dict[str, Any]) -> dict[str, Any]:
    """The job with what its card shows per layer: bar maximum and value, percent, text."""
    for layer in job.get("layers", []):
        size = max(1, int(layer.get("size") or 0))
        done = size if layer.get("state") in FULL else min(size, int(layer.get("done") or 0))
        layer.update(bar_max=size, bar_value=done, percent=100 * done // size)
        layer["text"] = layer_text(layer)
        layer.setdefault("short", str(layer.get("digest", ""))[7:19])
    return job


def decorate_all(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [decorate(job) for job in jobs]


def card_html(job: dict[str, Any]) -> str:
    """One job's card, as the page shows it."""
    return render_to_string(TEMPLATE, {"job": decorate(dict(job))})
