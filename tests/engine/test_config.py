"""engine.json: the first one written at set-up (`python -m engine config init`), never over
an admin's, and what `config show` reports in effect."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.engine.clitools import engine_cli


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
