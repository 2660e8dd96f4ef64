"""Template filters of Gantry's pages."""

from __future__ import annotations
