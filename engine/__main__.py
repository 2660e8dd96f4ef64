"""python -m engine: the podman-like command line of Gantry's engine."""

from __future__ import annotations

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
