"""What this node is: names and versions of the parts that build containers here."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

import engine
from engine.config import EngineConfig
from engine.errors import RuntimeFailedError
from engine.hostfs import proc
from engine.network.netavark import NETAVARK


def _version(argv: list[str], pattern: str) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        text = proc.output(argv, timeout=10)
    except RuntimeFailedError:
        return "unknown"
    found = re.search(pattern, text)
    return found.group(1) if found else text.strip().splitlines()[0][:60]


def cgroup_mode() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    if Path("/sys/fs/cgroup/unified").is_dir():
        return "v1 (hybrid)"
    return "v1"


@cache
def _static(runtime: str, conmon: str) -> dict[str, Any]:
    uname = os.uname()
    return {
        "engine": engine.__version__,
        "runc": _version([runtime, "--version"], r"runc version (\S+)"),
        "conmon": _version([conmon, "--version"], r"conmon version (\S+)"),
        "netavark": _version([NETAVARK, "--version"], r"netavark (\S+)"),
        "kernel": uname.release,
        "arch": platform.machine(),
        "os": _os_release(),
        "python": sys.version.split()[0],
        "cgroups": cgroup_mode(),
    }


def _os_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "unknown"
    found = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return found.group(1) if found else "unknown"


def node_info(config: EngineConfig) -> dict[str, Any]:
    """Versions are read once per process; the rest is cheap and current."""
    info = dict(_static(config.runtime, config.conmon))
    info["node"] = config.node
    info["hostname"] = os.uname().nodename
    info["root"] = str(config.root)
    return info
