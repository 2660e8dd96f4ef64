# ruff: noqa: E501 (the table of cases reads best one case per line)
"""Schema and policy: the config.json cases of security.md section D, each refused with its rule
and field path; the generated spec passes; the admin's knobs work."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.errors import InvalidInputError
from engine.spec import generator
from engine.spec.policy import Expected, SpecPolicy, allowed_host_path
from engine.spec.rules import check_policy
from engine.spec.schema import MAX_BYTES, SpecParseError, parse, validate_schema
from tests.engine.test_spec_generate import CID, HOST, PATHS, gen

Spec = dict[str, Any]


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    base = tmp_path / "volumes"
    (base / "data").mkdir(parents=True)
    (base / "escape").symlink_to("/etc")
    return base


@pytest.fixture
def policy(volumes: Path) -> SpecPolicy:
    return SpecPolicy(volume_allowlist=(volumes,))


EXPECTED = Expected(
    root_path=PATHS.root_path,
    cgroups_path=PATHS.cgroups_path,
    engine_mounts=tuple(generator.mounts(PATHS, ())),
    host_rlimits=HOST.rlimits_hard,
)


def good(volumes: Path) -> Spec:
    return gen(volumes=(generator.VolumeMount(str(volumes / "data"), "/data"),), tty=True)


def problems(spec: Spec, policy: SpecPolicy) -> list[tuple[str, str]]:
    """(rule, field) of every schema or policy issue, as the service reports them."""
    issues = validate_schema(spec) or check_policy(spec, policy, EXPECTED)
    return [(i.rule, i.field) for i in issues]


def test_it_accepts_the_generated_spec(volumes: Path, policy: SpecPolicy) -> None:
    spec = good(volumes)
    assert validate_schema(spec) == []
    assert check_policy(spec, policy, EXPECTED) == []
    assert parse(generator.canonical(spec)) == spec


def _set(path: str, value: Any) -> Callable[[Spec], None]:
    def apply(spec: Spec) -> None:
        keys = path.split(".")
        target: Any = spec
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        if value is DELETE:
            del target[keys[-1]]
        elif isinstance(target, list):
            target[int(keys[-1])] = value
        else:
            target[keys[-1]] = value

    return apply


DELETE = object()
BIND = {"type": "bind", "options": ["rbind", "rw"]}


def _mount(**fields: Any) -> Callable[[Spec], None]:
    return lambda spec: spec["mounts"].append({"destination": "/mnt", **BIND, **fields})


def _namespaces(keep: Callable[[dict[str, Any]], bool]) -> Callable[[Spec], None]:
    def apply(spec: Spec) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if keep(n)]

    return apply


def _ns_path(spec: Spec) -> None:
    spec["linux"]["namespaces"][1]["path"] = "/proc/1/ns/net"


def _add_cap(cap: str, kind: str = "bounding") -> Callable[[Spec], None]:
    return lambda spec: spec["process"]["capabilities"][kind].append(cap)


def _allow_syscall(name: str) -> Callable[[Spec], None]:
    return lambda spec: spec["linux"]["seccomp"]["syscalls"][0]["names"].append(name)


# fmt: off
CASES: list[tuple[str, Callable[[Spec], None], str, str]] = [
    # D1 hooks
    ("hook", _set("hooks", {"prestart": [{"path": "/bin/sh"}]}), "no-hooks", "hooks.prestart"),
    ("poststop", _set("hooks", {"poststop": [{"path": "/x"}]}), "no-hooks", "hooks.poststop"),
    # D2 bind sources
    ("bind /", _mount(source="/"), "bind-source", "mounts[10].source"),
    ("bind /etc", _mount(source="/etc"), "bind-source", "mounts[10].source"),
    ("bind sock", _mount(source="/run/docker.sock"), "bind-source", "mounts[10].source"),
    ("bind ../", _mount(source="/tmp/../etc"), "bind-source", "mounts[10].source"),
    ("bind relative", _mount(source="../../etc"), "bind-source", "mounts[10].source"),
    ("bind no type", lambda s: s["mounts"].append({"destination": "/m", "source": "/etc", "options": ["bind"]}), "bind-source", "mounts[10].source"),
    # D3 propagation and destinations
    ("rshared", _set("mounts.9.options", ["rbind", "rshared"]), "propagation", "mounts[9].options"),
    ("shared", _set("mounts.9.options", ["rbind", "shared"]), "propagation", "mounts[9].options"),
    ("dest /proc", _set("mounts.9.destination", "/proc"), "mount-destination", "mounts[9].destination"),
    ("dest /sys/x", _set("mounts.9.destination", "/sys/kernel"), "mount-destination", "mounts[9].destination"),
    ("dest /", _set("mounts.9.destination", "/"), "mount-destination", "mounts[9].destination"),
    ("dest unclean", _set("mounts.9.destination", "/x/../proc"), "mount-destination", "mounts[9].destination"),
    ("proc options", _set("mounts.0.options", ["nosuid"]), "mount-destination", "mounts[0].destination"),
    ("odd type", _mount(type="proc", source="proc", options=[]), "mount-type", "mounts[10].type"),
    ("odd option", _set("mounts.9.options", ["rbind", "x-magic"]), "mount-options", "mounts[9].options"),
    ("rootfs shared", _set("linux.rootfsPropagation", "rshared"), "propagation", "linux.rootfsPropagation"),
    # D4 namespaces
    ("no pid ns", _namespaces(lambda n: n["type"] != "pid"), "namespaces", "linux.namespaces"),
    ("no mount ns", _namespaces(lambda n: n["type"] != "mount"), "namespaces", "linux.namespaces"),
    ("no cgroup ns", _namespaces(lambda n: n["type"] != "cgroup"), "namespaces", "linux.namespaces"),
    ("host netns", _ns_path, "namespaces", "linux.namespaces[1].path"),
    ("user ns", lambda s: s["linux"]["namespaces"].append({"type": "user"}), "namespaces", "linux.namespaces[6].type"),
    ("uid maps", _set("linux.uidMappings", [{"containerID": 0, "hostID": 0, "size": 1}]), "namespaces", "linux.uidMappings"),
    # D5 privileges and devices
    ("SYS_ADMIN", _add_cap("CAP_SYS_ADMIN"), "capabilities", "process.capabilities.bounding[11]"),
    ("DAC_READ_SEARCH", _add_cap("CAP_DAC_READ_SEARCH", "effective"), "capabilities", "process.capabilities.effective[11]"),
    ("ambient BPF", _set("process.capabilities.ambient", ["CAP_BPF"]), "capabilities", "process.capabilities.ambient[0]"),
    ("NET_RAW", _add_cap("CAP_NET_RAW"), "capabilities", "process.capabilities.bounding[11]"),
    ("device sda", _set("linux.devices", [{"type": "b", "path": "/dev/sda", "major": 8, "minor": 0}]), "devices", "linux.devices[0]"),
    ("allow-all", _set("linux.resources.devices", [{"allow": True, "access": "rwm"}]), "devices", "linux.resources.devices"),
    ("allow rule", lambda s: s["linux"]["resources"]["devices"].append( {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "rw"} ), "devices", "linux.resources.devices[1].allow"),
    ("netDevices", _set("linux.netDevices", {"eth0": {"name": "eth9"}}), "devices", "linux.netDevices"),
    # D6 cwd
    ("cwd fd", _set("process.cwd", "/proc/self/fd/7"), "cwd", "process.cwd"),
    ("cwd /proc", _set("process.cwd", "/proc"), "cwd", "process.cwd"),
    ("cwd sneaky", _set("process.cwd", "/tmp/../proc/1/cwd"), "cwd", "process.cwd"),
    # D7 engine-owned and security profiles
    ("no seccomp", _set("linux.seccomp", DELETE), "seccomp", "linux.seccomp"),
    ("unconfined", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW"}), "seccomp", "linux.seccomp.defaultAction"),
    ("allow kexec", _allow_syscall("kexec_load"), "seccomp", "linux.seccomp.syscalls[0].names"),
    ("listener", _set("linux.seccomp.listenerPath", "/run/x.sock"), "seccomp", "linux.seccomp.listenerPath"),
    ("maskedPaths []", _set("linux.maskedPaths", []), "engine-owned", "linux.maskedPaths"),
    ("readonly gone", _set("linux.readonlyPaths", DELETE), "engine-owned", "linux.readonlyPaths"),
    ("root /", _set("root.path", "/"), "engine-owned", "root.path"),
    ("cgroups ../..", _set("linux.cgroupsPath", "../.."), "engine-owned", "linux.cgroupsPath"),
    ("nnp off", _set("process.noNewPrivileges", False), "no-new-privileges", "process.noNewPrivileges"),
    ("nnp gone", _set("process.noNewPrivileges", DELETE), "no-new-privileges", "process.noNewPrivileges"),
    ("apparmor", _set("process.apparmorProfile", "unconfined"), "lsm", "process.apparmorProfile"),
    ("selinux", _set("process.selinuxLabel", "system_u:system_r:spc_t:s0"), "lsm", "process.selinuxLabel"),
    # resources and the rest
    ("sysctl host", _set("linux.sysctl", {"kernel.core_pattern": "|/x"}), "sysctl", "linux.sysctl.kernel.core_pattern"),
    ("rlimit high", _set("process.rlimits.0.hard", 10**6), "rlimits", "process.rlimits[0].hard"),
    ("rlimit soft", _set("process.rlimits.0.soft", 20001), "rlimits", "process.rlimits[0].soft"),
    ("oom", _set("process.oomScoreAdj", -500), "oom-score", "process.oomScoreAdj"),
    ("fifo", _set("process.scheduler", {"policy": "SCHED_FIFO", "priority": 50}), "scheduler", "process.scheduler.policy"),
    ("io rt", _set("process.ioPriority", {"class": "IOPRIO_CLASS_RT", "priority": 0}), "scheduler", "process.ioPriority.class"),
    ("cpu rt", _set("linux.resources.cpu", {"realtimeRuntime": 950000}), "scheduler", "linux.resources.cpu.realtimeRuntime"),
    ("pids unlimited", _set("linux.resources.pids.limit", -1), "resources", "linux.resources.pids.limit"),
    ("annotation", _set("annotations", {"run.oci.hooks": "x"}), "annotations", "annotations.run.oci.hooks"),
    # D8 structure (schema)
    ("unknown top", _set("vm", {}), "schema", "vm"),
    ("unknown linux", _set("linux.foo", 1), "schema", "linux.foo"),
    ("args empty", _set("process.args", []), "schema", "process.args"),
    ("args type", _set("process.args", "sh"), "schema", "process.args"),
    ("uid type", _set("process.user.uid", "0"), "schema", "process.user.uid"),
    ("cwd relative", _set("process.cwd", "tmp"), "schema", "process.cwd"),
    ("cwd missing", _set("process.cwd", DELETE), "schema", "process.cwd"),
    ("ns type", _set("linux.namespaces.0.type", "pod"), "schema", "linux.namespaces[0].type"),
]
# fmt: on


@pytest.mark.parametrize(
    ("mutate", "rule", "where"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_it_refuses_each_bad_edit_naming_rule_and_field(
    volumes: Path, policy: SpecPolicy, mutate: Callable[[Spec], None], rule: str, where: str
) -> None:
    spec = good(volumes)
    mutate(spec)
    assert (rule, where) in problems(spec, policy)


def test_schema_messages_read_well(volumes: Path) -> None:
    spec = good(volumes)
    spec["process"]["args"] = []
    spec["root"]["extra"] = 1
    messages = {str(i) for i in validate_schema(spec)}
    assert "process.args: must be a non-empty array" in messages
    assert "root.extra: unknown field" in messages


def test_a_symlinked_bind_source_is_refused(volumes: Path) -> None:
    assert allowed_host_path(str(volumes / "data"), [volumes]) is None
    assert allowed_host_path(str(volumes / "escape"), [volumes]) == "goes through a symlink"
    assert allowed_host_path(str(volumes / "nope"), [volumes]) == "does not exist on the host"
    assert "outside" in (allowed_host_path("/etc", [volumes]) or "")
    assert allowed_host_path(str(volumes / "data/"), [volumes]) is None
    assert allowed_host_path(str(volumes) + "/./data", [volumes]) == "must be a clean absolute path"


def test_a_symlinked_allowlist_entry_is_resolved(tmp_path: Path, volumes: Path) -> None:
    link = tmp_path / "link-to-volumes"
    link.symlink_to(volumes)
    assert allowed_host_path(str(volumes / "data"), [link]) is None


# -- parsing (D8) ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"ociVersion": ', "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"process": {"cwd": "/", "cwd": "/proc"}}', "duplicate key 'cwd'"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ("[" * 10_000 + "]" * 10_000, "nested deeper than 32 levels"),
        ('{"a":' * 40 + "1" + "}" * 40, "nested deeper than 32 levels"),
        (" " * (MAX_BYTES + 1), "larger than"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_it_refuses_malformed_documents(text: str | bytes, message: str) -> None:
    with pytest.raises(SpecParseError, match=message):
        parse(text)


def test_it_refuses_a_50_megabyte_body_quickly() -> None:
    with pytest.raises(SpecParseError, match="larger than"):
        parse('{"x": "' + "a" * (50 * 1024 * 1024) + '"}')


# -- the admin's knobs -------------------------------------------------------------------------
def test_admin_may_allow_more_capabilities(volumes: Path) -> None:
    config = EngineConfig(
        root=Path("/nonexistent"),
        volume_allowlist=(volumes,),
        policy={"spec": {"allow_capabilities": ["CAP_NET_RAW"], "allow_new_privileges": True}},
    )
    relaxed = SpecPolicy.from_config(config)
    spec = good(volumes)
    spec["process"]["capabilities"]["bounding"].append("CAP_NET_RAW")
    spec["process"]["noNewPrivileges"] = False
    assert problems(spec, relaxed) == []
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    assert problems(spec, relaxed) == [("capabilities", "process.capabilities.bounding[12]")]


def test_it_refuses_a_capability_once_naming_the_operators_setting(
    volumes: Path, policy: SpecPolicy
) -> None:
    """Asked in three sets, CAP_SYS_ADMIN is one refusal, and it says what the engine policy
    is and where an operator changes it (not "only an admin", which the admin reads too)."""
    spec = good(volumes)
    for kind in ("bounding", "effective", "permitted"):
        spec["process"]["capabilities"][kind].append("CAP_SYS_ADMIN")
    issues = [i for i in check_policy(spec, policy, EXPECTED) if i.rule == "capabilities"]
    assert len(issues) == 1, issues
    assert issues[0].field == "process.capabilities.bounding[11]"
    message = issues[0].message
    assert "admin" not in message
    assert "(bounding, effective, permitted)" in message
    assert "refused by the engine policy" in message
    assert "policy.spec.allow_capabilities" in message and "engine.json" in message


@pytest.mark.parametrize(
    "raw",
    [
        {"allow_capabilitys": []},
        {"allow_capabilities": "CAP_NET_RAW"},
        {"allow_capabilities": ["CAP_FLY"]},
        {"max_pids": 0},
        {"allow_new_privileges": "yes"},
    ],
)
def test_a_bad_policy_config_is_an_error(raw: dict[str, Any]) -> None:
    config = EngineConfig(root=Path("/nonexistent"), policy={"spec": raw})
    with pytest.raises(InvalidInputError, match="policy.spec"):
        SpecPolicy.from_config(config)


def test_mount_types_are_configurable(volumes: Path, policy: SpecPolicy) -> None:
    spec = good(volumes)
    spec["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "size=1m"]})  # fmt: skip
    assert problems(spec, policy) == []
    only_bind = SpecPolicy(mount_types=frozenset({"bind"}), volume_allowlist=(volumes,))
    assert problems(spec, only_bind) == [("mount-type", "mounts[10].type")]


def test_every_refusal_carries_a_message(volumes: Path, policy: SpecPolicy) -> None:
    spec = good(volumes)
    spec["hooks"] = {"prestart": [{"path": "/bin/sh"}]}
    spec["process"]["cwd"] = "/proc/self/fd/7"
    issues = check_policy(spec, policy, EXPECTED)
    assert [str(i) for i in issues] == [
        "hooks.prestart: hooks are not allowed (they run as root on the host)",
        "process.cwd: must not be in /proc (CVE-2024-21626)",
    ]
    assert json.dumps([i.to_dict() for i in issues])


def test_the_checks_do_not_mutate_the_spec(volumes: Path, policy: SpecPolicy) -> None:
    spec = good(volumes)
    before = copy.deepcopy(spec)
    check_policy(spec, policy, EXPECTED)
    validate_schema(spec)
    assert spec == before
    assert os.path.isdir(volumes) and CID
