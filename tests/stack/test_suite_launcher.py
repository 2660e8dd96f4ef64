"""`./gantry test`'s checks (launch/suite.py): a failing check stops the run and says what its
failure means; the suite never inherits an installed Gantry's environment."""

from __future__ import annotations

import os
import sys

import pytest

from launch import suite


def test_a_failing_check_stops_the_run_and_says_what_it_means(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    with pytest.raises(SystemExit) as stopped:
        suite.check("mypy", failing, "type errors above")
    assert stopped.value.code == 1
    assert "gantry: mypy: type errors above" in capsys.readouterr().err


def test_a_passing_check_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    suite.check("ruff", [sys.executable, "-c", "pass"], "lint errors above")
    assert capsys.readouterr().err == "gantry: ruff\n"


def test_the_suite_runs_without_the_installed_stacks_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in suite.CLEARED:  # as on a host that runs Gantry (monkeypatch restores them)
        monkeypatch.setenv(name, "from-the-installed-stack")
    monkeypatch.setattr(suite, "CHECKS", [])
    seen: dict[str, object] = {}

    def execv(path: str, argv: list[str]) -> None:
        seen.update(argv=argv, env=dict(os.environ))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", execv)
    with pytest.raises(SystemExit):
        suite.main(["-x", "tests/engine"])
    assert seen["argv"] == [sys.executable, "-m", "pytest", "-x", "tests/engine"]
    env = seen["env"]
    assert isinstance(env, dict)
    assert not {"GANTRY_ROOT", "GANTRY_REDIS_URL", "DJANGO_SETTINGS_MODULE"} & set(env)
