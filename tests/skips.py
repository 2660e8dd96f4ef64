"""``requires(ok, reason)``: skip unless a capability is there, saying why. A module of its
own, free of side effects, so that scripts (bench/) may import test helpers without creating
the suite's temporary directories (tests/settings.py makes one when imported)."""

from __future__ import annotations

import pytest


def requires(ok: bool, reason: str) -> pytest.MarkDecorator:
    """Skip unless ok. Every skip must say why (podman's rule: a reason of 5+ characters)."""
    if len(reason.strip()) < 5:
        raise ValueError("requires(): give a real reason for the skip")
    return pytest.mark.skipif(not ok, reason=reason)
