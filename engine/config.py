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
from engine.protocol import check_node_name, default_node

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
    # The default network: name, subnet, gateway, bridge (engine.network.networks.DEFAULT).
    network: dict[str, Any] = field(default_factory=dict)


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
        elif key in ("policy", "network"):
            if not isinstance(value, dict):
                raise InvalidInputError(f"engine config {path}: {key}: must be an object")
            out[key] = value
        else:
            out[key] = value
    return out


def config_path(config_file: str | Path | None = None) -> Path:
    """The engine.json in use: the argument, else $GANTRY_CONFIG, else /etc/gantry/engine.json."""
    return Path(config_file or os.environ.get("GANTRY_CONFIG") or DEFAULT_CONFIG)


def first_file(registry_port: int) -> dict[str, Any]:
    """What a fresh install's engine.json holds: the lab's `-v /mnt:/mnt` allowed for admins
    (learners bind from their own sandboxes whatever it says), and the demo registry, plain
    http on loopback, marked insecure. Everything else is EngineConfig's defaults."""
    return {"volume_allowlist": ["/mnt"], "insecure_registries": [f"127.0.0.1:{registry_port}"]}


def init_file(path: Path, registry_port: int) -> bool:
    """Write first_file() at ``path`` unless a file is there already (it is the admin's then);
    True if it was written."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        json.dump(first_file(registry_port), out, indent=2)
        out.write("\n")
    return True


def load_config(
    root: str | Path | None = None, config_file: str | Path | None = None, node: str | None = None
) -> EngineConfig:
    """Build the configuration: explicit arguments, then environment, then the file."""
    values = _from_file(config_path(config_file))
    root_value = root or os.environ.get("GANTRY_ROOT") or DEFAULT_ROOT
    values["root"] = Path(root_value).absolute()
    sandbox = os.environ.get("GANTRY_SANDBOX_ROOT")
    if sandbox:
        if not sandbox.startswith("/"):
            raise InvalidInputError(f"GANTRY_SANDBOX_ROOT {sandbox[:200]!r}: an absolute path")
        values["sandbox_root"] = Path(sandbox)
    node_value = node or os.environ.get("GANTRY_NODE")
    if node_value:
        try:
            values["node"] = check_node_name(node_value)
        except ValueError as err:
            raise InvalidInputError(str(err)) from None
    return EngineConfig(**values)
