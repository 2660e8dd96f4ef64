"""Engine configuration: where the state root is, what this node is called, and the admin's
policy (which host directories may be bind-mounted, ...).

Read from environment variables and an optional JSON file (GANTRY_CONFIG, default
/etc/gantry/engine.json). Unknown keys in the file are refused so a typo is not silently ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.errors import InvalidInputError
from engine.protocol import NODE_RE, default_node

DEFAULT_ROOT = Path("/var/lib/gantry")
DEFAULT_CONFIG = Path("/etc/gantry/engine.json")
DEFAULT_SANDBOX = Path("/var/lib/gantry-sandbox")


@dataclass(frozen=True)
class EngineConfig:
    root: Path = DEFAULT_ROOT
    node: str = field(default_factory=default_node)
    # Host directories a container may bind-mount (a volume source must resolve inside one).
    volume_allowlist: tuple[Path, ...] = ()
    runtime: str = "/usr/sbin/runc"
    conmon: str = "/usr/bin/conmon"
    # conmon truncates the log file when it grows past this many bytes.
    log_size_max: int = 16 * 1024 * 1024
    # Policy knobs for config.json and registry access; each module documents its own keys.
    policy: dict[str, Any] = field(default_factory=dict)
    insecure_registries: tuple[str, ...] = ()
    # Where each learner's host-side paths live: <sandbox_root>/<user>/ (engine.storage.sandbox).
    sandbox_root: Path = DEFAULT_SANDBOX


_FILE_KEYS = {f.name for f in fields(EngineConfig)} - {"root"}


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"read engine config {path}: {err}") from err
    if not isinstance(data, dict):
        raise InvalidInputError(f"engine config {path}: must be a JSON object")
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise InvalidInputError(f"engine config {path}: unknown keys {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "volume_allowlist":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidInputError(f"engine config {path}: volume_allowlist: list of paths")
            if not all(v.startswith("/") for v in value):
                raise InvalidInputError(f"engine config {path}: volume_allowlist: absolute paths")
            out[key] = tuple(Path(v) for v in value)
        elif key == "sandbox_root":
            if not isinstance(value, str) or not value.startswith("/"):
                raise InvalidInputError(f"engine config {path}: sandbox_root: an absolute path")
            out[key] = Path(value)
        elif key == "insecure_registries":
            out[key] = tuple(str(v) for v in value)
        elif key == "policy":
            if not isinstance(value, dict):
                raise InvalidInputError(f"engine config {path}: policy: must be an object")
            out[key] = value
        else:
            out[key] = value
    return out


def load_config(
    root: str | Path | None = None, config_file: str | Path | None = None, node: str | None = None
) -> EngineConfig:
    """Build the configuration: explicit arguments, then environment, then the file."""
    path = Path(config_file or os.environ.get("GANTRY_CONFIG") or DEFAULT_CONFIG)
    values = _from_file(path)
    root_value = root or os.environ.get("GANTRY_ROOT") or DEFAULT_ROOT
    values["root"] = Path(root_value).absolute()
    sandbox = os.environ.get("GANTRY_SANDBOX_ROOT")
    if sandbox:
        if not sandbox.startswith("/"):
            raise InvalidInputError(f"GANTRY_SANDBOX_ROOT {sandbox[:200]!r}: an absolute path")
        values["sandbox_root"] = Path(sandbox)
    node_value = node or os.environ.get("GANTRY_NODE")
    if node_value:
        if NODE_RE.search(node_value) or len(node_value) > 60:
            raise InvalidInputError(f"node name {node_value!r}: letters, digits, '-', '_', '.'")
        values["node"] = node_value
    return EngineConfig(**values)
