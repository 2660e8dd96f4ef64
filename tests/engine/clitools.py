"""The engine's CLI as a subprocess (``python -m engine``), as an admin runs it: a state root
of the test's own and an environment without the host's config or proxies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def engine_cli(
    root: Path, *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine --root ROOT ARGS...`` to the end; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(root), *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GANTRY_CONFIG": "/nonexistent"},
    )
