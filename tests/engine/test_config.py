"""engine.json: the first one written at set-up (`python -m engine config init`), never over
an admin's, and what `config show` reports in effect."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.errors import InvalidInputError
from tests.engine.clitools import REPO, engine_cli


def test_config_init_writes_the_first_file_once(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "engine.json"
    done = engine_cli(tmp_path / "root", "--config", str(path), "config", "init",
                      "--registry-port", "5123")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {path}\n"
    assert json.loads(path.read_text()) == {
        "volume_allowlist": ["/mnt"],
        "insecure_registries": ["127.0.0.1:5123"],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the web reads no secret from it
    # an admin's file stays as it is
    path.write_text('{"volume_allowlist": ["/srv"]}\n')
    again = engine_cli(tmp_path / "root", "--config", str(path), "config", "init")
    assert again.returncode == 0 and again.stdout == ""
    assert json.loads(path.read_text()) == {"volume_allowlist": ["/srv"]}


def test_config_show_is_what_the_engine_reads(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    path.write_text('{"volume_allowlist": ["/srv"], "policy": {"quotas": {}}}\n')
    done = engine_cli(tmp_path / "root", "--config", str(path), "config", "show")
    shown = json.loads(done.stdout)
    assert shown["file"] == str(path) and shown["root"] == str(tmp_path / "root")
    assert shown["volume_allowlist"] == ["/srv"] and shown["policy"] == {"quotas": {}}
    path.write_text('{"volume_allowlist": "/srv"}\n')  # a typo is an error, not a default
    bad = engine_cli(tmp_path / "root", "--config", str(path), "config", "show")
    assert bad.returncode == 125 and "volume_allowlist: list of paths" in bad.stderr


@pytest.mark.parametrize(
    "bad", ["Lab", "lab_1", "lab.example", "a" * 64, "a/b", "lab 1", "läb", "lab\n"]
)
def test_a_node_name_outside_a_to_z_digits_and_dashes_is_refused(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: a node's name names its channel and its records: [a-z0-9-]{1,63}."""
    monkeypatch.setenv("GANTRY_NODE", bad)
    with pytest.raises(InvalidInputError, match="lower-case letters, digits or '-'"):
        load_config(root=tmp_path, config_file=tmp_path / "none.json")
    assert load_config(root=tmp_path, config_file=tmp_path / "none.json", node="lab-2").node == (
        "lab-2"
    )


def test_the_worker_refuses_to_start_under_a_bad_node_name(tmp_path: Path) -> None:
    """`manage.py engine --node Lab_1` stops at once with the rule, before anything runs."""
    # TMPDIR: the temporary directory tests/settings.py makes goes under tmp_path (cleaned)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DJANGO_SETTINGS_MODULE": "tests.settings",
           "GANTRY_CONFIG": str(tmp_path / "none.json"), "TMPDIR": str(tmp_path)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "manage.py", "engine", "--root", str(tmp_path), "--node", "Lab_1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "lower-case letters, digits or '-'" in done.stderr
    assert not (tmp_path / "containers").exists()  # nothing was set up


@pytest.mark.parametrize(
    ("host", "node"),
    [("Lab_Host.example.org", "lab-host-example-org"), ("gantry-1", "gantry-1"),
     ("__", "node"), ("x" * 80, "x" * 63)],
)  # fmt: skip
def test_the_default_node_name_is_the_host_name_made_valid(
    host: str, node: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from engine.protocol import NODE_NAME_RE, default_node

    real = os.uname()
    fake = os.uname_result((real.sysname, host, real.release, real.version, real.machine))
    monkeypatch.setattr(os, "uname", lambda: fake)
    assert default_node() == node and NODE_NAME_RE.fullmatch(node)
