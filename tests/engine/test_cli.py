from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GANTRY_CONFIG": "/nonexistent"},
    )


def test_info_prints_versions(tmp_root: Path) -> None:
    out = run_cli("info", "--format", "json", root=tmp_root)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["root"] == str(tmp_root)
    assert data["runc"] not in ("", "not installed")
    assert data["kernel"]


def test_unknown_verb_fails_with_usage(tmp_root: Path) -> None:
    out = run_cli("explode", root=tmp_root)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_bad_config_is_one_line_error(tmp_path: Path) -> None:
    cfg = tmp_path / "engine.json"
    cfg.write_text('{"volume_allowlsit": ["/mnt"]}')
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg), "info"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert out.stderr.startswith("Error: ")
    assert "volume_allowlsit" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# engine.api.verbs: every verb module at once (a CLI verb imports only its own, see
# engine.api.base.handler)
HEAVY = (
    "requests",
    "jsonschema",
    "engine.api.verbs",
    "engine.images.service",
    "engine.spec.service",
)


def _modules_after(root: Path, *argv: str) -> set[str]:
    code = (
        "import contextlib, io, json, sys\n"
        "from engine.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = main({['--root', str(root), *argv]!r})\n"
        "assert status == 0, status\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout))


def test_it_imports_only_what_a_verb_needs(tmp_root: Path) -> None:
    """Start-up speed: building the parser imports no engine service; `info` needs none of
    the container stack, `ps` none of the registry client or the spec schema."""
    loaded = _modules_after(tmp_root, "info")
    assert not loaded & {
        *HEAVY,
        "engine.storage.containers",
        "engine.runtime.lifecycle",
        "engine.images.store",
    }
    loaded = _modules_after(tmp_root, "ps", "-a")
    # nothing to sync: no runtime stack, no verb classes, no OpenSSL (test_lifecycle_cli has
    # the ps that must sync)
    assert not loaded & {"engine.runtime.lifecycle", "engine.protocol.verbs", "hashlib"}
    assert not loaded & {"shutil", "tempfile", "lzma", "logging"}
    assert not loaded & set(HEAVY)
    assert not loaded & {"engine.cli.images", "engine.cli.spec", "engine.cli.terminal"}


def test_each_verb_is_registered_by_the_domain_the_launcher_imports_for_it() -> None:
    """Only the typed verb's domain is built; VERB_DOMAINS must name it for every verb."""
    import argparse
    import importlib

    from engine.cli import DOMAINS, VERB_DOMAINS, build_parser, verb_of

    for domain in DOMAINS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"engine.cli.{domain}").register(sub)
        for verb in sub.choices:
            assert VERB_DOMAINS.get(verb) == domain, verb
    [every] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(every.choices) == set(VERB_DOMAINS)
    assert verb_of(["--root", "/r", "--log-level=debug", "ps", "-a"]) == "ps"
    assert verb_of(["--config", "ps", "inspect"]) == "inspect"  # "ps" was the option's value
    assert verb_of(["-h", "ps"]) is None and verb_of([]) is None


def test_help_and_unknown_verbs_still_see_every_verb(tmp_root: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(tmp_root), "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and all(v in out.stdout for v in ("attach", "pull", "spec"))
