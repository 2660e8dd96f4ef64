"""The fixed parts of a generated spec, each mirroring podman 4.3.1 unless it says otherwise
(checked with ``podman init`` on this machine; tests/engine/test_spec_oracle.py compares)."""

from __future__ import annotations

from typing import Any

OCI_VERSION = "1.0.2-dev"  # what podman 4.3 writes, and the spec version runc 1.1.5 reports

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# podman sets container=podman (systemd and friends read it); we say who we are.
CONTAINER_ENV = "gantry"
UMASK = 0o022

# podman's (containers.conf) default capability set: 11 capabilities.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# Every capability Linux 6.x knows (for the schema's and the policy's messages).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# Capabilities that break the container boundary outright; policy refuses them unless the admin
# names them in policy.spec.allow_capabilities (a superset of the default set is refused anyway,
# this list only sharpens the message).
DANGEROUS_CAPABILITIES = frozenset(
    {
        "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO",
        "CAP_DAC_READ_SEARCH", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_BOOT", "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE", "CAP_SYS_TIME", "CAP_NET_ADMIN", "CAP_LINUX_IMMUTABLE",
        "CAP_SYSLOG", "CAP_AUDIT_CONTROL", "CAP_SYS_RESOURCE", "CAP_CHECKPOINT_RESTORE",
    }
)  # fmt: skip

# podman's rlimit defaults when no --ulimit is given (as root); we clamp them to the host's
# hard limits, because raising a hard limit needs CAP_SYS_RESOURCE, which runc may not have.
RLIMIT_DEFAULTS: dict[str, int] = {"RLIMIT_NOFILE": 1048576, "RLIMIT_NPROC": 4194304}

# podman's default pids limit (containers.conf pids_limit).
PIDS_LIMIT = 2048

MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
)

READONLY_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# pid, network, ipc, uts, mount: podman's set with --network none. cgroup: podman leaves it out
# on cgroup v1 hosts (cgroupns=host); we always add it, so the container does not see the
# host's cgroup paths (security.md 1.5 requires it).
NAMESPACES: tuple[str, ...] = ("pid", "network", "ipc", "uts", "mount", "cgroup")

# podman's sysctl for every container with its own network namespace: ping works without
# CAP_NET_RAW for gid 0.
SYSCTL: dict[str, str] = {"net.ipv4.ping_group_range": "0 0"}


def system_mounts() -> list[dict[str, Any]]:
    """The default mounts. Same destinations, types and options as podman, except /dev/shm:
    podman bind-mounts a tmpfs it mounts itself under userdata/shm; we let runc mount a
    private tmpfs there, so the engine has no host-side mount to track (same options)."""
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",  # noqa: S108 (the container's own tmpfs)
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


# Destinations only the generator's own mounts may use (policy: no user mount under these).
SYSTEM_TREES: tuple[str, ...] = ("/proc", "/sys", "/dev")
