"""`./gantry test [PYTEST ARGS]`: the checks first (ruff, ruff format, mypy, import-linter),
then pytest in this process's place. The suite makes its own temporary roots, sockets and
settings (tests/settings.py): nothing of an installed Gantry's environment is passed on.

    python -m launch.suite [PYTEST ARGS]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLEARED = (
    "DJANGO_SETTINGS_MODULE", "GANTRY_ROOT", "GANTRY_WEB_HOME", "GANTRY_RUN", "GANTRY_CONFIG",
    "GANTRY_REDIS_URL", "GANTRY_PORT", "GANTRY_BIND",
)  # fmt: skip
PY = sys.executable
CHECKS: list[tuple[str, list[str], str]] = [  # (name, command, what a failure means)
    ("ruff", [PY, "-m", "ruff", "check", "."], "lint errors above"),
    ("ruff format", [PY, "-m", "ruff", "format", "--check", "."], "not formatted (diff above)"),
    ("mypy", [PY, "-m", "mypy"], "type errors above"),
    (
        "import-linter",
        [str(Path(PY).parent / "lint-imports"), "--no-cache", "--no-logo"],
        "an import breaks the direction (pyproject.toml)",
    ),
]


def say(text: str) -> None:
    print(f"gantry: {text}", file=sys.stderr, flush=True)


def check(name: str, command: list[str], meaning: str) -> None:
    say(name)
    quiet = name == "ruff format"  # its list of files is noise; the diff says what to do
    done = subprocess.run(command, stdout=subprocess.DEVNULL if quiet else None, check=False)
    if done.returncode == 0:
        return
    if quiet:
        diff = subprocess.run(
            [PY, "-m", "ruff", "format", "--diff", "."], capture_output=True, text=True
        )
        print("\n".join(diff.stdout.splitlines()[:50]), file=sys.stderr)
    say(f"{name}: {meaning}")
    sys.exit(1)


def main(argv: list[str]) -> None:
    for name in CLEARED:
        os.environ.pop(name, None)
    for name, command, meaning in CHECKS:
        check(name, command, meaning)
    say("pytest")
    os.execv(PY, [PY, "-m", "pytest", *argv])  # noqa: S606 (pytest itself, no shell between)


if __name__ == "__main__":
    main(sys.argv[1:])
