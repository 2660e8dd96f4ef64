"""deploy/systemd: the units that run Gantry as a service check clean with systemd-analyze,
and keep what ./gantry run's supervisord keeps (conmon outlives the engine worker)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.skips import requires

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"


@requires(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
def test_the_units_verify_clean() -> None:
    files = sorted(str(p) for p in UNITS.iterdir() if p.suffix in (".service", ".target"))
    assert len(files) == 5
    done = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and (done.stdout + done.stderr).strip() == "", done.stderr


def test_the_engine_unit_lets_conmon_outlive_it() -> None:
    engine = (UNITS / "gantry-engine.service").read_text()
    assert "KillMode=process" in engine and "User=root" in engine
    for name in ("redis", "web", "registry"):
        assert "User=gantry" in (UNITS / f"gantry-{name}.service").read_text()
