from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    base.update(
        {
            "DJANGO_SETTINGS_MODULE": "webui.settings",
            "GANTRY_SECRET_KEY": "k" * 60,
            "GANTRY_WEB_HOME": "/nonexistent",
        }
        | env
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_wildcard_allowed_hosts_is_refused() -> None:
    out = run_manage("check", GANTRY_ALLOWED_HOSTS="*")
    assert out.returncode != 0
    assert "never '*'" in out.stderr


def test_deploy_check_is_clean_when_served_over_https() -> None:
    out = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        GANTRY_HTTPS="1",
        GANTRY_SECRET_KEY="a-long-random-" + "Zq8xP2" * 10,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_debug_is_off_by_default() -> None:
    out = run_manage(
        "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.DEBUG)"
    )
    assert out.stdout.strip() == "False"


def test_secret_key_is_generated_once_and_kept() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gantry-key-") as tmp:
        os.chmod(tmp, 0o755)
        _check_secret_key(Path(tmp) / "web")


def _check_secret_key(home: Path) -> None:
    env = {"GANTRY_SECRET_KEY": "", "GANTRY_WEB_HOME": str(home)}
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    if os.geteuid() == 0:
        # Root never writes the web's key (the web user must own it): run as nobody.
        home.mkdir()
        os.chown(home, 65534, 65534)
        first = _as_nobody(code, env)
        second = _as_nobody(code, env)
    else:
        first = run_manage("shell", "-v", "0", "-c", code, **env).stdout
        second = run_manage("shell", "-v", "0", "-c", code, **env).stdout
    assert len(first.strip()) > 40
    assert first == second
    assert (home / "secret_key").stat().st_mode & 0o777 == 0o600


def _as_nobody(code: str, env: dict[str, str]) -> str:
    base = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "webui.settings"} | env
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "manage.py",
            "shell",
            "-v",
            "0",
            "-c",
            code,
        ],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout
