"""Gantry's default seccomp profile (our own, written for this project).

Shape: **deny by default, allow a list** — the shape the runtime-spec examples, Docker and
podman use. ``defaultAction`` is SCMP_ACT_ERRNO with ``defaultErrnoRet`` ENOSYS (38), so a
syscall the list does not know yet looks "not implemented" and libc falls back to an older
one (clone3 -> clone, statx -> newfstatat) instead of failing with a puzzling EPERM.

What is allowed: the ordinary life of a process (files, memory, signals, time, sockets, ipc,
process and thread control), listed by topic below. What is denied on purpose, with EPERM so
programs see "not permitted" (each needs a capability the default set does not give, or is
kernel attack surface a container has no use for):

  kernel modules     init_module finit_module delete_module create_module query_module
                     get_kernel_syms
  kexec / reboot     kexec_load kexec_file_load reboot
  mounts             mount umount umount2 pivot_root mount_setattr move_mount open_tree
                     fsopen fsconfig fsmount fspick (need CAP_SYS_ADMIN; runc mounted all)
  namespaces         unshare setns, and clone with any CLONE_NEW* flag (filtered on the flags
                     argument, as Docker does); clone3 answers ENOSYS because its flags live
                     in memory a filter cannot read, and libc then falls back to clone
  host handles       open_by_handle_at (the "shocker" escape) and name_to_handle_at's partner
  kernel keyring     keyctl add_key request_key (the keyring is not namespaced)
  tracing / bpf      bpf perf_event_open lookup_dcookie kcmp process_madvise
  time               settimeofday stime clock_settime clock_settime64 clock_adjtime
                     (adjtimex stays: it only reads without CAP_SYS_TIME)
  swap, accounting   swapon swapoff acct quotactl nfsservctl
  raw hardware       iopl ioperm vm86 vm86old pciconfig_*
  io_uring           io_uring_setup/enter/register (not listed: ENOSYS; a large kernel
                     attack surface that Docker's profile also dropped)
  odds               userfaultfd (heap-spray aid in kernel exploits), uselib, ustat, sysfs,
                     _sysctl, vhangup, sethostname setdomainname (the UTS name is the spec's
                     ``hostname``)

ptrace is allowed: since Linux 4.8 seccomp is re-checked after a tracer changes a syscall, and
a process can only trace its own (same uid, same pid namespace) processes without
CAP_SYS_PTRACE, which is never in the default set. strace and gdb then work in a container.

Limits: the filter is per architecture family (x86_64 with its 32-bit and x32 ABIs, or aarch64
with arm); an unknown host architecture gets the native arch only.
"""

from __future__ import annotations

from typing import Any

ENOSYS = 38
EPERM = 1

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
# CLONE_NEWNET: clone is allowed only when (flags & mask) == 0.
CLONE_NAMESPACE_MASK = 0x7E020000

ARCHITECTURES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}

# fmt: off
ALLOWED: dict[str, tuple[str, ...]] = {
    "files": (
        "access", "chdir", "chmod", "chown", "chown32", "close", "close_range",
        "copy_file_range", "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2",
        "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat", "fchown",
        "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
        "flock", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
        "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents",
        "getdents64", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
        "inotify_rm_watch", "fanotify_mark", "io_cancel", "io_destroy", "io_getevents",
        "io_pgetevents", "io_setup", "io_submit", "ioctl", "lchown", "lchown32", "lgetxattr",
        "link", "linkat",
        "listxattr", "llistxattr", "lremovexattr", "lseek", "_llseek", "lsetxattr", "lstat",
        "lstat64", "mkdir", "mkdirat", "mknod", "mknodat", "name_to_handle_at", "newfstatat",
        "open", "openat", "openat2", "pipe", "pipe2", "pread64", "preadv", "preadv2",
        "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readdir", "readlink",
        "readlinkat", "readv", "removexattr", "rename", "renameat", "renameat2", "rmdir",
        "sendfile", "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs",
        "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
        "tee", "truncate", "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat",
        "utimensat_time64", "utimes", "write", "writev", "memfd_create",
    ),
    "memory": (
        "brk", "get_mempolicy", "madvise", "mbind", "membarrier", "mincore", "mlock",
        "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync", "munlock",
        "munlockall", "munmap", "pkey_alloc", "pkey_free", "pkey_mprotect",
        "remap_file_pages", "set_mempolicy",
    ),
    "processes": (
        "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork",
        "getcpu", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
        "getgroups", "getgroups32", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
        "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage",
        "getsid", "gettid", "getuid", "getuid32", "ioprio_get", "ioprio_set", "pidfd_getfd",
        "pidfd_open", "pidfd_send_signal", "prctl", "prlimit64", "process_vm_readv",
        "process_vm_writev", "ptrace", "rseq", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
        "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
        "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
        "sched_yield", "seccomp", "set_robust_list", "get_robust_list", "set_tid_address",
        "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
        "setgroups", "setgroups32", "setpgid", "setpriority", "setregid", "setregid32",
        "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
        "setrlimit", "setsid", "setuid", "setuid32", "ugetrlimit", "uname", "vfork", "wait4",
        "waitid", "waitpid", "sysinfo", "syslog", "times", "getrandom", "landlock_add_rule",
        "landlock_create_ruleset", "landlock_restrict_self", "process_mrelease",
        "restart_syscall", "get_thread_area", "set_thread_area", "chroot",
    ),
    "signals": (
        "alarm", "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaction", "sigaltstack", "signal",
        "signalfd", "signalfd4", "sigpending", "sigprocmask", "sigreturn", "sigsuspend",
        "tgkill", "tkill",
    ),
    "time": (
        "adjtimex", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
        "clock_nanosleep", "clock_nanosleep_time64", "getitimer", "gettimeofday",
        "nanosleep", "setitimer", "time", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
        "timer_settime64", "timerfd", "timerfd_create", "timerfd_gettime",
        "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
    ),
    "waiting": (
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
        "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "futex",
        "futex_time64", "futex_waitv", "poll", "ppoll", "ppoll_time64", "pselect6",
        "pselect6_time64", "select", "_newselect",
    ),
    "sockets": (
        "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
        "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
        "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socket", "socketcall",
        "socketpair",
    ),
    "ipc": (
        "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
        "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    ),
}

# The architecture-specific ones (x86 only; absent on arm, where the rule would not resolve).
ALLOWED_X86 = ("arch_prctl", "modify_ldt")

DENIED_EPERM: tuple[str, ...] = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_adjtime64", "clock_settime",
    "clock_settime64", "create_module", "delete_module", "finit_module", "fsconfig", "fsmount",
    "fsopen", "fspick", "get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
    "move_mount", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
    "pivot_root", "process_madvise", "query_module", "quotactl", "reboot", "request_key",
    "setdomainname", "sethostname", "setns", "settimeofday", "stime", "swapoff", "swapon",
    "_sysctl", "sysfs", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vhangup", "vm86", "vm86old", "pciconfig_iobase", "pciconfig_read", "pciconfig_write",
)
# fmt: on

# personality(2) values a program may set: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32
# and the query 0xffffffff (as Docker and podman allow).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Syscalls that no edited profile may allow (policy.py checks this): with these a container
# can load kernel code, replace the kernel or reach host files by handle.
# fmt: off
NEVER_ALLOW = frozenset(
    {
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "create_module", "open_by_handle_at", "bpf", "perf_event_open", "iopl", "ioperm",
        "swapon", "swapoff", "reboot", "acct", "lookup_dcookie", "userfaultfd", "keyctl",
        "add_key", "request_key",
    }
)
# fmt: on


def default_profile(machine: str) -> dict[str, Any]:
    """The profile for linux.seccomp on a host of architecture ``machine`` (platform.machine())."""
    allowed = sorted({name for names in ALLOWED.values() for name in names})
    if machine == "x86_64":
        allowed = sorted({*allowed, *ALLOWED_X86})
    syscalls: list[dict[str, Any]] = [
        {"names": allowed, "action": "SCMP_ACT_ALLOW"},
        *(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
            }
            for value in PERSONALITIES
        ),
        {"names": sorted(DENIED_EPERM), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        # clone only without CLONE_NEW* flags: (flags & mask) == 0.
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [
                {
                    "index": 0,
                    "value": CLONE_NAMESPACE_MASK,
                    "valueTwo": 0,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "architectures": ARCHITECTURES.get(machine, []),
        "syscalls": syscalls,
    }
