"""Gantry's engine: plain Python that pulls images, builds container storage, writes OCI specs
and drives conmon + runc. It imports no Django; the web talks to it over the channel layer
(see engine.rpc.worker) and people talk to it through the CLI (python -m engine)."""

from __future__ import annotations

__version__ = "0.1.0"
