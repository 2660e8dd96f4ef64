"""The engine is plain Python: importing every engine module pulls in no Django or Channels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter from the repository."""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_engine_imports_no_django() -> None:
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "engine").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m.removesuffix('.__init__'))\n"
        "web = ('django', 'channels', 'channels_redis')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in web)\n"
        "print(','.join(bad))\n"
    )
    assert run_python(code) == ""


def test_webui_never_opens_engine_state() -> None:
    """webui talks to the engine over the channel layer only: it must not import the modules
    that read or write the state root."""
    forbidden = (
        "engine.images.store",
        "engine.storage.containers",
        "engine.storage.rootfs",
        "engine.storage.mounts",
        "engine.files.explorer",
        "engine.files.fsio",
        "engine.files.listing",
        "engine.files.owners",
        "engine.hostfs.securepath",
        "engine.layers.unpack",
        "engine.layers.tree",  # engine.layers.unpack's parts that touch the layer directory
        "engine.layers.tarentry",
        "engine.layers.writepool",
        "engine.runtime.runc",
        "engine.runtime.conmon",
        "engine.rpc.worker",
        "engine.registry.client",
        "engine.registry.blobs",  # reads through engine.registry.client
        # engine.files.transfer's parts that read and write a container's files
        "engine.files.dirtar",
        "engine.files.cptree",
    )
    offenders = []
    for path in (REPO / "webui").rglob("*.py"):
        if path.match("webui/management/commands/engine.py"):
            continue  # the worker entry binds the channel layer to the engine on purpose
        text = path.read_text()
        offenders += [
            f"{path.relative_to(REPO)}: {m}"
            for m in forbidden
            if f"import {m}" in text or f"from {m} " in text or f"from {m}." in text
        ]
    assert offenders == []


def test_the_whole_web_loads_only_the_protocol_and_the_errors_of_the_engine() -> None:
    """The web runs unprivileged: imported whole (ASGI app, URLs, every view, consumer and
    template tag), it loads no engine module but engine.protocol and engine.errors. Only
    the worker entry (a management command, run as root) binds the engine."""
    code = (
        "import importlib, os, pkgutil, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings')\n"
        "import django; django.setup()\n"
        "import webui\n"
        "for info in pkgutil.walk_packages(webui.__path__, 'webui.'):\n"
        "    if not info.name.startswith('webui.management'):\n"
        "        importlib.import_module(info.name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'engine')))\n"
        "import shutil, tests.settings\n"  # the temp dir its import made
        "shutil.rmtree(tests.settings.TEST_TMP, ignore_errors=True)\n"
    )
    loaded = set(run_python(code).split(","))
    assert {"engine", "engine.errors", "engine.protocol", "engine.protocol.verbs"} <= loaded
    assert {m for m in loaded if not m.startswith("engine.protocol")} == {"engine", "engine.errors"}


def test_the_web_calls_the_engine_through_typed_verbs_only() -> None:
    """Views and consumers name a verb of engine.protocol.verbs and build its argument type;
    none sends a verb by its name with a raw dict (engine_client.call is for tests)."""
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "webui").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "engine_client.call(" in line or "engine_client.call_" in line
    ]
    assert offenders == []


def test_no_function_runs_over_60_lines() -> None:
    """Small functions: outside the tests, none is longer than 60 lines (split it by what
    its parts do)."""
    import ast

    long = []
    for top in ("engine", "webui", "bench", "launch"):
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} {lines}")
    assert long == []
