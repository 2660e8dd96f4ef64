"""The policy checks on a config.json that passed the schema: each refusal is a SpecIssue
naming its rule and field path. The admin's knobs are in engine/spec/policy.py.

Rules (the ``rule`` of each refusal; the field path says where):
  no-hooks             any hook: hooks run as root on the host
  engine-owned         root.path, linux.cgroupsPath, linux.maskedPaths, linux.readonlyPaths
                       differ from what the engine generates (edits are refused, not merged)
  mount-destination    a destination that is not a clean absolute path, is "/", or lies in
                       /proc, /sys or /dev without being one of the generated default mounts
  mount-type           a user mount of a type outside mount_types
  mount-options        an option outside the known list; id-mapped mounts
  propagation          shared/rshared mount or rootfs propagation (mounts would leak to the host)
  bind-source          a bind source outside the allowlist, not absolute and clean, through a
                       symlink, or missing
  namespaces           pid, network, ipc, uts, mount or cgroup missing; any namespace ``path``
                       (joining a host namespace); user/time namespaces; id mappings
  capabilities         a capability outside the default set plus allow_capabilities
  no-new-privileges    noNewPrivileges not true
  devices              linux.devices entries (host device nodes); a resources.devices list that
                       does not start with deny-all or that allows anything; netDevices
  cwd                  process.cwd in /proc (CVE-2024-21626)
  seccomp              no profile; a default action that allows; a listener (notify) socket;
                       SPEC_ALLOW; a rule that allows a never-allowed syscall
  lsm                  apparmor "unconfined", SELinux unconfined_t/spc_t
  sysctl               a sysctl that is not namespaced (only kernel.msg*/sem/shm*, fs.mqueue.*,
                       net.*)
  rlimits              a hard limit above the host's, soft above hard, a type twice
  oom-score            oomScoreAdj below 0
  scheduler            realtime scheduling (SCHED_FIFO/RR/DEADLINE, IOPRIO_CLASS_RT, cpu rt time)
  annotations          a key outside annotation_prefixes
  resources            a pids limit that is missing, unlimited or above max_pids; intelRdt
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from engine.config import DEFAULT_CONFIG
from engine.hostfs.securepath import clean
from engine.spec import defaults
from engine.spec.policy import Expected, SpecPolicy, allowed_host_path, under
from engine.spec.schema import SpecIssue
from engine.spec.seccomp import NEVER_ALLOW

UINT64_MAX = 2**64 - 1
_FLAG_OPTIONS = frozenset(
    {
        "ro", "rw", "bind", "rbind", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
        "private", "rprivate", "slave", "rslave", "unbindable", "runbindable", "relatime",
        "norelatime", "strictatime", "nostrictatime", "noatime", "atime", "nodiratime",
        "diratime", "sync", "async", "dirsync", "tmpcopyup", "newinstance",
    }
)  # fmt: skip
_VALUE_OPTIONS = frozenset({"mode", "size", "uid", "gid", "nr_inodes", "nr_blocks", "ptmxmode"})
_SHARED = frozenset({"shared", "rshared"})
_SAFE_DEFAULT_ACTIONS = frozenset(
    {"SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
     "SCMP_ACT_TRAP"}
)  # fmt: skip
_ALLOWING = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG"})
_NAMESPACED_SYSCTLS = frozenset(
    {
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
        "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
    }
)  # fmt: skip
_REQUIRED_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


def _config_file() -> str:
    """The engine config file an operator edits (as engine.config.load_config finds it)."""
    return os.environ.get("GANTRY_CONFIG") or str(DEFAULT_CONFIG)


def _get(spec: Mapping[str, Any], *keys: str) -> Any:
    value: Any = spec
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _mount_key(m: Mapping[str, Any]) -> tuple[Any, ...]:
    return (m.get("destination"), m.get("type"), m.get("source"), tuple(m.get("options") or ()))


class _Checker:
    def __init__(self, spec: Mapping[str, Any], policy: SpecPolicy, expected: Expected) -> None:
        self.spec, self.policy, self.expected = spec, policy, expected
        self.issues: list[SpecIssue] = []

    def refuse(self, rule: str, where: str, message: str) -> None:
        self.issues.append(SpecIssue(where, message, rule))

    def run(self) -> list[SpecIssue]:
        for check in (
            self.hooks,
            self.engine_owned,
            self.mounts,
            self.namespaces,
            self.process,
            self.devices,
            self.seccomp,
            self.linux_misc,
            self.annotations,
        ):
            check()
        return self.issues

    def hooks(self) -> None:
        hooks = self.spec.get("hooks")
        if isinstance(hooks, Mapping):
            for kind, entries in hooks.items():
                if entries:
                    self.refuse(
                        "no-hooks",
                        f"hooks.{kind}",
                        "hooks are not allowed (they run as root on the host)",
                    )

    def engine_owned(self) -> None:
        exp = self.expected
        owned: Sequence[tuple[str, Any, Any]] = (
            ("root.path", _get(self.spec, "root", "path"), exp.root_path),
            ("linux.cgroupsPath", _get(self.spec, "linux", "cgroupsPath"), exp.cgroups_path),
            ("linux.maskedPaths", _get(self.spec, "linux", "maskedPaths"), list(exp.masked_paths)),
            (
                "linux.readonlyPaths",
                _get(self.spec, "linux", "readonlyPaths"),
                list(exp.readonly_paths),
            ),
        )
        for where, value, wanted in owned:
            if value != wanted:
                self.refuse(
                    "engine-owned",
                    where,
                    "is set by the engine and cannot be changed (reset it to the generated value)",
                )

    def mounts(self) -> None:
        engine = {_mount_key(m) for m in self.expected.engine_mounts}
        for i, mount in enumerate(self.spec.get("mounts") or []):
            if not isinstance(mount, Mapping):
                continue
            where = f"mounts[{i}]"
            if _mount_key(mount) in engine:
                continue
            self.user_mount(where, mount)

    def user_mount(self, where: str, mount: Mapping[str, Any]) -> None:
        dest = str(mount.get("destination", ""))
        options = [str(o) for o in mount.get("options") or []]
        mtype = str(mount.get("type") or "")
        if clean(dest) != dest or dest == "/":
            self.refuse(
                "mount-destination",
                f"{where}.destination",
                "must be a clean absolute path other than /",
            )
        elif any(under(dest, tree) for tree in defaults.SYSTEM_TREES):
            self.refuse(
                "mount-destination",
                f"{where}.destination",
                f"{dest} is reserved for the default mounts (/proc, /sys and /dev)",
            )
        for option in options:
            name = option.split("=", 1)[0]
            if option in _SHARED:
                self.refuse(
                    "propagation",
                    f"{where}.options",
                    f"{option} propagation is not allowed (mounts would reach the host)",
                )
            elif option not in _FLAG_OPTIONS and not ("=" in option and name in _VALUE_OPTIONS):
                self.refuse(
                    "mount-options", f"{where}.options", f"option {option[:60]!r} is not allowed"
                )
        if mount.get("uidMappings") or mount.get("gidMappings"):
            self.refuse("mount-options", f"{where}.uidMappings", "id-mapped mounts are not allowed")
        is_bind = mtype == "bind" or "bind" in options or "rbind" in options
        kind = "bind" if is_bind else mtype
        allowed = self.policy.mount_types
        if kind not in allowed:
            self.refuse(
                "mount-type",
                f"{where}.type",
                f"mount type {kind[:40]!r} is not allowed (allowed: {', '.join(sorted(allowed))})",
            )
        elif is_bind:
            why = allowed_host_path(str(mount.get("source", "")), self.policy.volume_allowlist)
            if why:
                self.refuse(
                    "bind-source",
                    f"{where}.source",
                    f"host path {str(mount.get('source', ''))[:200]} {why}",
                )

    def _netns(self) -> str:
        """The namespace path the engine gives ("" when it gives none)."""
        netns = self.expected.netns
        return "" if netns in ("", "host") else netns

    def namespaces(self) -> None:
        entries = _get(self.spec, "linux", "namespaces") or []
        seen: set[str] = set()
        for i, ns in enumerate(entries):
            if not isinstance(ns, Mapping):
                continue
            kind = str(ns.get("type"))
            if kind in seen:
                self.refuse(
                    "namespaces",
                    f"linux.namespaces[{i}].type",
                    f"the {kind} namespace is listed twice",
                )
            seen.add(kind)
            if "path" in ns and not (kind == "network" and ns["path"] == self._netns()):
                self.refuse(
                    "namespaces",
                    f"linux.namespaces[{i}].path",
                    "joining an existing namespace is not allowed"
                    + (f" (the network's is {self._netns()})" if kind == "network" else ""),
                )
            elif kind == "network" and "path" not in ns and self._netns():
                self.refuse(
                    "namespaces",
                    f"linux.namespaces[{i}]",
                    f"the network namespace is the engine's ({self._netns()}): the container's "
                    "network is set up there",
                )
            if kind not in _REQUIRED_NAMESPACES:
                self.refuse(
                    "namespaces",
                    f"linux.namespaces[{i}].type",
                    f"the {kind} namespace is not allowed",
                )
        for kind in _REQUIRED_NAMESPACES:
            if kind == "network" and self.expected.netns == "host":
                if kind in seen:
                    self.refuse(
                        "namespaces",
                        "linux.namespaces",
                        "the container runs with --network host: no network namespace",
                    )
                continue
            if kind not in seen:
                self.refuse(
                    "namespaces",
                    "linux.namespaces",
                    f"the {kind} namespace is required (else the container shares the host's)",
                )
        for key in ("uidMappings", "gidMappings"):
            if _get(self.spec, "linux", key):
                self.refuse(
                    "namespaces",
                    f"linux.{key}",
                    "id mappings need a user namespace, which is not allowed",
                )

    def process(self) -> None:
        process = self.spec.get("process")
        if not isinstance(process, Mapping):
            return
        self.capabilities(process.get("capabilities") or {})
        if process.get("noNewPrivileges") is not True and not self.policy.allow_new_privileges:
            self.refuse("no-new-privileges", "process.noNewPrivileges", "must be true")
        cwd = process.get("cwd")
        if isinstance(cwd, str) and cwd.startswith("/") and under(clean(cwd), "/proc"):
            self.refuse("cwd", "process.cwd", "must not be in /proc (CVE-2024-21626)")
        if process.get("apparmorProfile") == "unconfined":
            self.refuse("lsm", "process.apparmorProfile", "unconfined is not allowed")
        label = str(process.get("selinuxLabel") or "")
        if "unconfined_t" in label or "spc_t" in label:
            self.refuse("lsm", "process.selinuxLabel", "an unconfined SELinux type is not allowed")
        self.rlimits(process.get("rlimits") or [])
        self.priorities(process)

    def capabilities(self, caps: Any) -> None:
        """One refusal per capability, at its first place, naming every set that holds it."""
        allowed = self.policy.capabilities
        refused: dict[str, tuple[str, list[str]]] = {}
        for kind, names in caps.items() if isinstance(caps, Mapping) else ():
            for j, cap in enumerate(names or []):
                if cap in allowed:
                    continue
                key = str(cap)[:64]
                where, kinds = refused.setdefault(key, (f"process.capabilities.{kind}[{j}]", []))
                if str(kind)[:20] not in kinds:
                    kinds.append(str(kind)[:20])
        for cap, (where, kinds) in refused.items():
            sets = f" ({', '.join(kinds)})"
            if cap not in defaults.ALL_CAPABILITIES:
                message = f"{cap}{sets} is not a capability"
            else:
                why = (
                    ": it breaks the container boundary"
                    if cap in defaults.DANGEROUS_CAPABILITIES
                    else ": it is not in the default set"
                )
                message = (
                    f"{cap}{sets} is refused by the engine policy{why}; an operator allows it "
                    f"in policy.spec.allow_capabilities of {_config_file()}"
                )
            self.refuse("capabilities", where, message)

    def priorities(self, process: Mapping[str, Any]) -> None:
        """No shield from the OOM killer, no realtime CPU or I/O scheduling."""
        oom = process.get("oomScoreAdj")
        if isinstance(oom, int) and oom < 0:
            self.refuse(
                "oom-score",
                "process.oomScoreAdj",
                "must not be below 0 (it would shield the container from the OOM killer)",
            )
        sched = process.get("scheduler")
        if isinstance(sched, Mapping) and sched.get("policy") in (
            "SCHED_FIFO",
            "SCHED_RR",
            "SCHED_DEADLINE",
        ):
            self.refuse(
                "scheduler", "process.scheduler.policy", "realtime scheduling is not allowed"
            )
        if _get(process, "ioPriority", "class") == "IOPRIO_CLASS_RT":
            self.refuse(
                "scheduler", "process.ioPriority.class", "realtime I/O priority is not allowed"
            )

    def rlimits(self, entries: Sequence[Any]) -> None:
        seen: set[str] = set()
        for i, limit in enumerate(entries):
            if not isinstance(limit, Mapping):
                continue
            kind, soft, hard = limit.get("type"), limit.get("soft"), limit.get("hard")
            if not isinstance(kind, str) or not isinstance(soft, int) or not isinstance(hard, int):
                continue
            where = f"process.rlimits[{i}]"
            if kind in seen:
                self.refuse("rlimits", f"{where}.type", f"{kind} is listed twice")
            seen.add(kind)
            host = self.expected.host_rlimits.get(kind, UINT64_MAX)
            if hard > host:
                self.refuse(
                    "rlimits", f"{where}.hard", f"{hard} is above the host's hard limit {host}"
                )
            if soft > hard:
                self.refuse("rlimits", f"{where}.soft", "must not be above the hard limit")

    def devices(self) -> None:
        for i, _ in enumerate(_get(self.spec, "linux", "devices") or []):
            self.refuse(
                "devices", f"linux.devices[{i}]", "device nodes from the host are not allowed"
            )
        if _get(self.spec, "linux", "netDevices"):
            self.refuse(
                "devices",
                "linux.netDevices",
                "moving host network devices into the container is not allowed",
            )
        rules = _get(self.spec, "linux", "resources", "devices")
        first = rules[0] if isinstance(rules, list) and rules else None
        deny_all = (
            isinstance(first, Mapping)
            and first.get("allow") is False
            and first.get("type", "a") == "a"
            and first.get("major", -1) == -1
            and first.get("minor", -1) == -1
            and set(str(first.get("access", "rwm"))) == {"r", "w", "m"}
        )
        if not deny_all:
            self.refuse(
                "devices",
                "linux.resources.devices",
                'must start with the deny-all rule {"allow": false, "access": "rwm"}',
            )
        for i, rule in enumerate(rules or []):
            if isinstance(rule, Mapping) and rule.get("allow") is True:
                self.refuse(
                    "devices",
                    f"linux.resources.devices[{i}].allow",
                    "allow rules are not allowed (runc allows the default devices itself)",
                )

    def seccomp(self) -> None:
        profile = _get(self.spec, "linux", "seccomp")
        if not isinstance(profile, Mapping):
            self.refuse("seccomp", "linux.seccomp", "a seccomp profile is required")
            return
        if profile.get("defaultAction") not in _SAFE_DEFAULT_ACTIONS:
            self.refuse(
                "seccomp",
                "linux.seccomp.defaultAction",
                "must deny by default (SCMP_ACT_ERRNO, SCMP_ACT_KILL*, SCMP_ACT_TRAP)",
            )
        if "listenerPath" in profile:
            self.refuse(
                "seccomp", "linux.seccomp.listenerPath", "a seccomp notify listener is not allowed"
            )
        if "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in (profile.get("flags") or []):
            self.refuse(
                "seccomp",
                "linux.seccomp.flags",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW turns off speculation mitigations",
            )
        for i, rule in enumerate(profile.get("syscalls") or []):
            if not isinstance(rule, Mapping):
                continue
            action = rule.get("action")
            if action == "SCMP_ACT_NOTIFY":
                self.refuse(
                    "seccomp",
                    f"linux.seccomp.syscalls[{i}].action",
                    "SCMP_ACT_NOTIFY is not allowed",
                )
            if action in _ALLOWING:
                bad = sorted(set(rule.get("names") or []) & NEVER_ALLOW)
                if bad:
                    self.refuse(
                        "seccomp",
                        f"linux.seccomp.syscalls[{i}].names",
                        f"{', '.join(bad)} must never be allowed",
                    )

    def linux_misc(self) -> None:
        linux = self.spec.get("linux")
        if not isinstance(linux, Mapping):
            self.refuse("namespaces", "linux", "the linux section is required")
            return
        for key in (linux.get("sysctl") or {}) if isinstance(linux.get("sysctl"), Mapping) else {}:
            name = str(key).replace("/", ".")
            if not (name in _NAMESPACED_SYSCTLS or name.startswith(("fs.mqueue.", "net."))):
                self.refuse(
                    "sysctl",
                    f"linux.sysctl.{key}",
                    "only namespaced sysctls (kernel.msg*/sem/shm*, fs.mqueue.*, net.*) allowed",
                )
        if str(linux.get("rootfsPropagation", "")) in _SHARED:
            self.refuse(
                "propagation",
                "linux.rootfsPropagation",
                "shared propagation is not allowed (mounts would reach the host)",
            )
        cpu = _get(linux, "resources", "cpu") or {}
        for key in ("realtimeRuntime", "realtimePeriod"):
            if isinstance(cpu, Mapping) and cpu.get(key):
                self.refuse(
                    "scheduler", f"linux.resources.cpu.{key}", "realtime CPU time is not allowed"
                )
        pids = _get(linux, "resources", "pids", "limit")
        if not isinstance(pids, int) or pids < 1 or pids > self.policy.max_pids:
            self.refuse(
                "resources",
                "linux.resources.pids.limit",
                f"must be between 1 and {self.policy.max_pids}",
            )
        self.quota_limits(linux)
        if linux.get("intelRdt"):
            self.refuse("resources", "linux.intelRdt", "Intel RDT settings are not allowed")
        if linux.get("timeOffsets"):
            self.refuse("namespaces", "linux.timeOffsets", "time namespaces are not allowed")

    def quota_limits(self, linux: Mapping[str, Any]) -> None:
        """A learner's container keeps a memory and a CPU limit within their quota."""
        top = self.policy.max_memory
        memory = _get(linux, "resources", "memory", "limit")
        if top is not None and (not isinstance(memory, int) or not 0 < memory <= top):
            self.refuse(
                "quota", "linux.resources.memory.limit", f"must be set, at most {top} bytes"
            )
        most = self.policy.max_cpus
        cpu = _get(linux, "resources", "cpu") or {}
        quota, period = (
            (cpu.get("quota"), cpu.get("period")) if isinstance(cpu, Mapping) else (0, 0)
        )
        if most is not None and not (
            isinstance(quota, int) and isinstance(period, int) and 0 < quota <= most * period
        ):
            self.refuse("quota", "linux.resources.cpu.quota", f"must be set, at most {most:g} CPUs")

    def annotations(self) -> None:
        notes = self.spec.get("annotations")
        prefixes = self.policy.annotation_prefixes
        for key in notes if isinstance(notes, Mapping) else {}:
            if not str(key).startswith(prefixes):
                self.refuse(
                    "annotations",
                    f"annotations.{key}",
                    f"only keys starting with {', '.join(prefixes)} are allowed",
                )


def check_policy(
    spec: Mapping[str, Any], policy: SpecPolicy, expected: Expected
) -> list[SpecIssue]:
    """Every policy refusal for a spec that already passed the schema (so types are right)."""
    return _Checker(spec, policy, expected).run()
