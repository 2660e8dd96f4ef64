"""The admin's policy for config.json: what a spec may ask of the host. Applied when a spec is
saved and again, on the file as it is on disk, right before start (service.validate_for_start).

Configuration: ``policy.spec`` in the engine config file (engine.config.EngineConfig.policy),
every key optional, unknown keys refused::

    {"policy": {"spec": {
        "allow_capabilities": ["CAP_NET_RAW"],   # beyond podman's default 11 (default: none)
        "mount_types": ["bind", "tmpfs"],        # types a user mount may have (default shown)
        "annotation_prefixes": ["org.opencontainers.", "io.gantry."],   # (default shown)
        "max_pids": 32768,                       # highest linux.resources.pids.limit
        "allow_new_privileges": false            # let process.noNewPrivileges be false
    }}}

Bind-mount sources must lie inside ``volume_allowlist`` (a top-level key of the same file).

The rules themselves are in engine/spec/rules.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.errors import InvalidInputError
from engine.hostfs.securepath import clean
from engine.spec import defaults

_POLICY_KEYS = {
    "allow_capabilities",
    "mount_types",
    "annotation_prefixes",
    "max_pids",
    "allow_new_privileges",
}


@dataclass(frozen=True)
class SpecPolicy:
    allow_capabilities: frozenset[str] = frozenset()
    mount_types: frozenset[str] = frozenset({"bind", "tmpfs"})
    annotation_prefixes: tuple[str, ...] = ("org.opencontainers.", "io.gantry.")
    max_pids: int = 32768
    allow_new_privileges: bool = False
    volume_allowlist: tuple[Path, ...] = ()
    # A learner's container (engine.storage.quotas): memory and CPU must be limited, up to these.
    max_memory: int | None = None
    max_cpus: float | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(defaults.DEFAULT_CAPABILITIES) | self.allow_capabilities

    @classmethod
    def from_config(cls, config: EngineConfig) -> SpecPolicy:
        """Read ``policy.spec``; a typo or a wrong type is an error, never ignored."""
        raw = config.policy.get("spec", {}) if isinstance(config.policy, Mapping) else {}
        if not isinstance(raw, Mapping):
            raise InvalidInputError("engine config: policy.spec: must be an object")
        unknown = sorted(set(raw) - _POLICY_KEYS)
        if unknown:
            raise InvalidInputError(f"engine config: policy.spec: unknown key {unknown[0]!r}")
        out = cls(volume_allowlist=tuple(config.volume_allowlist))
        caps = raw.get("allow_capabilities", [])
        types = raw.get("mount_types", sorted(out.mount_types))
        prefixes = raw.get("annotation_prefixes", list(out.annotation_prefixes))
        for key, value in (
            ("allow_capabilities", caps),
            ("mount_types", types),
            ("annotation_prefixes", prefixes),
        ):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidInputError(f"engine config: policy.spec.{key}: list of strings")
        bad = [c for c in caps if c not in defaults.ALL_CAPABILITIES]
        if bad:
            raise InvalidInputError(f"engine config: policy.spec: unknown capability {bad[0]!r}")
        max_pids = raw.get("max_pids", out.max_pids)
        if isinstance(max_pids, bool) or not isinstance(max_pids, int) or max_pids < 1:
            raise InvalidInputError("engine config: policy.spec.max_pids: a positive integer")
        nnp = raw.get("allow_new_privileges", False)
        if not isinstance(nnp, bool):
            raise InvalidInputError("engine config: policy.spec.allow_new_privileges: boolean")
        return cls(
            allow_capabilities=frozenset(caps),
            mount_types=frozenset(types),
            annotation_prefixes=tuple(prefixes),
            max_pids=max_pids,
            allow_new_privileges=nnp,
            volume_allowlist=out.volume_allowlist,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "allow_capabilities": sorted(self.allow_capabilities),
            "mount_types": sorted(self.mount_types),
            "annotation_prefixes": list(self.annotation_prefixes),
            "max_pids": self.max_pids,
            "allow_new_privileges": self.allow_new_privileges,
            "volume_allowlist": [str(p) for p in self.volume_allowlist],
        }


@dataclass(frozen=True)
class Expected:
    """What the engine owns in this container's spec (from the generator's inputs)."""

    root_path: str
    cgroups_path: str
    # The generator's mounts that may sit in /proc, /sys, /dev or come from userdata.
    engine_mounts: tuple[Mapping[str, Any], ...] = ()
    host_rlimits: Mapping[str, int] = field(default_factory=dict)
    # The network namespace the engine gives: "" a new one, "host" none, else its path.
    netns: str = ""
    masked_paths: tuple[str, ...] = defaults.MASKED_PATHS
    readonly_paths: tuple[str, ...] = defaults.READONLY_PATHS


def under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def allowed_host_path(unsafe_source: str, allowlist: Iterable[Path]) -> str | None:
    """Why a bind source is refused, or None when it is fine: absolute, clean, existing,
    free of symlinks (every component), and inside one of the allowlisted directories (whose
    own symlinks, set by the admin, are resolved first)."""
    # "/x/" is clean enough; "/x/../y", "/x/./y", "//x" and relative paths are not.
    if not unsafe_source.startswith("/") or clean(unsafe_source) != (
        unsafe_source.rstrip("/") or "/"
    ):
        return "must be a clean absolute path"
    try:
        resolved = os.path.realpath(unsafe_source, strict=True)
    except OSError:
        return "does not exist on the host"
    if resolved != clean(unsafe_source):
        return "goes through a symlink"
    for entry in allowlist:
        try:
            root = os.path.realpath(entry, strict=True)
        except OSError:
            continue
        if under(resolved, root):
            return None
    return "is outside the allowed volume directories (volume_allowlist)"
