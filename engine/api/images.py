"""images.* verbs (see engine/rpc.py for how a verb is registered)."""

from __future__ import annotations
