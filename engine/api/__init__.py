"""The engine's verbs, one module per domain. Importing this package registers them all."""

from __future__ import annotations

from engine.api import containers, files, images, lab, node, runtime, spec, terminal  # noqa: F401
