# ruff: noqa: E501 (one help text per line reads better than wrapped strings)
"""One table of help texts for the fields of config.json: what each does and the podman flag
that sets it. The Spec tab shows them on hover (title attributes) and in its field list; the
CLI's ``spec explain`` prints them. Plain data: the web may import this module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldHelp:
    field: str  # dotted path, [] for "every item"
    label: str
    text: str
    podman: str = ""  # the podman flag (or "" when podman has none)

    def title(self) -> str:
        """The text of a title attribute: what it does, then how podman sets it."""
        flag = f" podman: {self.podman}." if self.podman else " podman: no flag."
        return f"{self.text}{flag}"


# fmt: off
FIELDS: tuple[FieldHelp, ...] = (
    FieldHelp("ociVersion", "OCI version", "Version of the runtime spec the file follows."),
    FieldHelp("process.args", "Command (args)", "The program and its arguments, run as PID 1 of the container: the image's Entrypoint followed by its Cmd, or the overrides.", "--entrypoint, and the command after the image name"),
    FieldHelp("process.env", "Environment", "Environment variables, one NAME=value each. Starts with PATH, TERM and container, then the image's Env, then yours; HOME and HOSTNAME are added when not set.", "-e / --env, --env-file"),
    FieldHelp("process.cwd", "Working directory", "The directory the process starts in. Absolute; never under /proc.", "-w / --workdir"),
    FieldHelp("process.user.uid", "User id", "The uid the process runs as, resolved from the container's /etc/passwd when a name was given.", "-u / --user"),
    FieldHelp("process.user.gid", "Group id", "The primary gid of the process.", "-u USER:GROUP"),
    FieldHelp("process.user.additionalGids", "Supplementary groups", "Extra gids: the primary one and the groups in /etc/group that list the user.", "--group-add"),
    FieldHelp("process.user.umask", "umask", "File mode creation mask (18 = 0022).", "--umask"),
    FieldHelp("process.terminal", "Terminal", "Give the process a pseudo-terminal (needed for an interactive shell).", "-t / --tty"),
    FieldHelp("process.capabilities", "Capabilities", "Root's privileges split into pieces. The default set is podman's 11; others need the admin's policy.", "--cap-add, --cap-drop"),
    FieldHelp("process.capabilities.bounding", "Bounding set", "The most the process (and anything it runs) can ever have.", "--cap-add, --cap-drop"),
    FieldHelp("process.capabilities.effective", "Effective set", "The capabilities the kernel checks right now (root only by default).", "--cap-add, --cap-drop"),
    FieldHelp("process.capabilities.permitted", "Permitted set", "The capabilities the process may make effective.", "--cap-add, --cap-drop"),
    FieldHelp("process.rlimits", "Resource limits", "ulimits (RLIMIT_NOFILE, RLIMIT_NPROC, ...). Never above the host's hard limits.", "--ulimit"),
    FieldHelp("process.noNewPrivileges", "No new privileges", "setuid binaries and file capabilities cannot raise privileges. Gantry keeps it on (podman's default is off).", "--security-opt no-new-privileges"),
    FieldHelp("process.oomScoreAdj", "OOM score adjustment", "How eagerly the kernel's OOM killer picks this container (0..1000 here).", "--oom-score-adj"),
    FieldHelp("root.path", "Root filesystem", "The container's merged overlay directory. Owned by the engine.", "(podman's storage)"),
    FieldHelp("root.readonly", "Read-only root", "Mount the root filesystem read-only.", "--read-only"),
    FieldHelp("hostname", "Host name", "The UTS host name inside the container (default: the short container id).", "-h / --hostname"),
    FieldHelp("mounts", "Mounts", "Filesystems mounted into the container, in order: the defaults (/proc, /dev, /sys, ...), /etc/hostname and /etc/hosts, then your volumes.", "-v / --volume, --mount, --tmpfs"),
    FieldHelp("mounts[].destination", "Destination", "Where the mount appears inside the container (absolute; not under /proc, /sys or /dev).", "-v SRC:DEST"),
    FieldHelp("mounts[].source", "Source", "For a bind mount, the host directory (must be inside the admin's volume allowlist).", "-v SRC:DEST"),
    FieldHelp("mounts[].type", "Type", "bind for host directories, tmpfs for memory-backed ones.", "--mount type=..."),
    FieldHelp("mounts[].options", "Options", "Mount options: ro/rw, rbind, rprivate, nosuid, nodev, noexec, size=...; shared propagation is refused.", "-v SRC:DEST:ro"),
    FieldHelp("annotations", "Annotations", "Key/value notes for tools. Only org.opencontainers.* and io.gantry.* keys.", "--annotation"),
    FieldHelp("linux.namespaces", "Namespaces", "What the container gets its own copy of: pid, network, ipc, uts, mount and cgroup are all required.", "--pid, --network, --ipc, --uts, --cgroupns"),
    FieldHelp("linux.resources.memory.limit", "Memory limit", "Bytes of memory the container may use before the OOM killer acts.", "-m / --memory"),
    FieldHelp("linux.resources.cpu.quota", "CPU quota", "Microseconds of CPU time per period; quota/period = number of CPUs.", "--cpus, --cpu-quota"),
    FieldHelp("linux.resources.cpu.period", "CPU period", "Length of a CPU accounting period in microseconds (100000 = 0.1 s).", "--cpu-period"),
    FieldHelp("linux.resources.pids.limit", "Process limit", "Most processes and threads the container may have at once (podman's default 2048).", "--pids-limit"),
    FieldHelp("linux.resources.devices", "Device access", "The device cgroup: deny everything; runc then allows the standard devices (null, zero, tty, ...).", "--device, --device-cgroup-rule"),
    FieldHelp("linux.cgroupsPath", "cgroup path", "The cgroup runc creates for the container and deletes afterwards. Owned by the engine.", "--cgroup-parent"),
    FieldHelp("linux.sysctl", "sysctls", "Kernel settings inside the container's namespaces (only namespaced keys).", "--sysctl"),
    FieldHelp("linux.seccomp", "seccomp profile", "The system-call filter: deny by default, allow the usual calls. Required.", "--security-opt seccomp=FILE"),
    FieldHelp("linux.maskedPaths", "Masked paths", "Paths in /proc and /sys hidden from the container. Owned by the engine.", "--security-opt mask=..."),
    FieldHelp("linux.readonlyPaths", "Read-only paths", "Paths in /proc made read-only. Owned by the engine.", "--security-opt unmask=..."),
    FieldHelp("hooks", "Hooks", "Programs the runtime runs on the host at lifecycle points. Refused: they run as root on the host.", "--hooks-dir"),
)
# fmt: on

BY_FIELD: dict[str, FieldHelp] = {h.field: h for h in FIELDS}


def help_for(field: str) -> FieldHelp | None:
    """The help of a field path, with indexes generalised ("mounts[3].source" ->
    "mounts[].source"), falling back to the nearest parent that has help."""
    import re

    path = re.sub(r"\[\d+\]", "[]", field)
    while path:
        if path in BY_FIELD:
            return BY_FIELD[path]
        if "." not in path and "[" not in path:
            return None
        path = re.sub(r"(\.[^.\[]*|\[\])$", "", path)
    return None


def titles() -> dict[str, str]:
    """field -> title text, for templates."""
    return {h.field: h.title() for h in FIELDS}
