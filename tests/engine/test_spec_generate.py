"""The pure generator and the user database: podman 4.3.1's rules, as observed with
``podman init`` on this machine (the oracle test checks the same against a live podman)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import InvalidInputError
from engine.spec import defaults
from engine.spec.generator import (
    EnginePaths,
    HostFacts,
    SpecInputs,
    SpecOptions,
    VolumeMount,
    canonical,
    cgroups_path,
    generate,
    hosts_file,
)
from engine.spec.users import additional_gids, parse_group, parse_passwd, resolve_user

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"user:x:1000:1000:User:/home/user:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = b"root:x:0:\nwheel:x:10:user\nuser:x:1000:\nnogroup:x:65534:\n"
CID = "ab" * 32
HOST = HostFacts("x86_64", {"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": 96364})
PATHS = EnginePaths("/state/containers/x/merged", cgroups_path(CID), "/u/hostname", "/u/hosts")


def gen(image: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    return generate(
        SpecInputs(
            container_id=CID,
            image_config=image if image is not None else {"Cmd": ["/bin/sh"]},
            options=SpecOptions(**options),
            passwd=PASSWD,
            group=GROUP,
            host=HOST,
            paths=PATHS,
            name="c1",
        )
    )


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in spec["process"]["env"])


# -- users -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "uid", "gid", "gids", "home"),
    [
        ("", 0, 0, [], "/root"),  # no -u: no additionalGids at all
        ("root", 0, 0, [0], "/root"),
        ("user", 1000, 1000, [1000, 10], "/home/user"),  # wheel lists user
        ("1000", 1000, 1000, [1000, 10], "/home/user"),  # a uid in passwd = that user
        ("1234", 1234, 0, [0], ""),  # unknown uid: fine, gid 0, no HOME
        ("1234:5678", 1234, 5678, [5678], ""),
        ("user:wheel", 1000, 10, [10], "/home/user"),  # explicit group: no membership gids
        ("0:user", 0, 1000, [1000], "/root"),
        ("nobody", 65534, 65534, [65534], "/nonexistent"),
    ],
)
def test_it_resolves_users_like_podman(
    spec: str, uid: int, gid: int, gids: list[int], home: str
) -> None:
    user = resolve_user(spec, PASSWD, GROUP)
    assert (user.uid, user.gid, additional_gids(user), user.home) == (uid, gid, gids, home)


def test_it_refuses_unknown_names_with_podmans_words() -> None:
    with pytest.raises(InvalidInputError, match="unable to find user nosuch: no matching"):
        resolve_user("nosuch", PASSWD, GROUP)
    with pytest.raises(InvalidInputError, match="unable to find group nosuch"):
        resolve_user("user:nosuch", PASSWD, GROUP)


def test_it_handles_missing_databases() -> None:
    assert resolve_user("1000:1000", None, None).uid == 1000
    assert resolve_user("", None, None).uid == 0
    with pytest.raises(InvalidInputError):
        resolve_user("user", None, None)


def test_it_skips_malformed_and_hostile_lines() -> None:
    data = (
        b"# comment\n+nis\nbad\nx:x:notanumber:0::/:/bin/sh\n"
        b"big:x:99999999999:0::/:/bin/sh\n\xff\xfe:x:5:5::/:\nok:x:7:8:::\n"
    )
    names = [e.name for e in parse_passwd(data)]
    assert names[-1] == "ok" and "x" not in names and "big" not in names
    groups = parse_group(b"g:x:1:a,b,,c\nbroken\n")
    assert groups[0].members == ("a", "b", "c")


def test_only_a_newline_ends_a_passwd_line_as_for_runc() -> None:
    """str.splitlines() would also break at \\x85, \\u2028, \\x1c...: a GECOS field could then
    smuggle in an entry runc never sees, and the spec would name a user runc cannot."""
    data = "gecko:x:1000:1000:a\x85ghost:x:0:0::/:/bin/sh\u2028b:/home/g:/bin/sh\r\n".encode()
    assert [e.name for e in parse_passwd(data)] == ["gecko"]
    with pytest.raises(InvalidInputError):
        resolve_user("ghost", data, None)


def test_it_reads_at_most_a_megabyte_of_passwd() -> None:
    huge = b"a:x:1:1::/:/bin/sh\n" * 200_000 + b"late:x:5:5::/late:/bin/sh\n"
    with pytest.raises(InvalidInputError):
        resolve_user("late", huge, None)


# -- process ---------------------------------------------------------------------------------
IMAGE = {
    "Entrypoint": ["/bin/echo", "ep"],
    "Cmd": ["hello"],
    "WorkingDir": "/home/user",
    "User": "user",
    "Env": ["FOO=img", "HOME=/imghome"],
}


@pytest.mark.parametrize(
    ("options", "args"),
    [
        ({}, ["/bin/echo", "ep", "hello"]),
        ({"command": ("x", "y")}, ["/bin/echo", "ep", "x", "y"]),
        ({"entrypoint": ("/bin/sh",)}, ["/bin/sh"]),  # --entrypoint drops the image's Cmd
        ({"entrypoint": ("/bin/sh",), "command": ("-c", "true")}, ["/bin/sh", "-c", "true"]),
        ({"entrypoint": ("/bin/sh", "-c"), "command": ("echo hi",)}, ["/bin/sh", "-c", "echo hi"]),
        ({"entrypoint": ("",), "command": ("/bin/ls", "-l")}, ["/bin/ls", "-l"]),
    ],
)
def test_it_builds_args_like_podman(options: dict[str, Any], args: list[str]) -> None:
    assert gen(IMAGE, **options)["process"]["args"] == args


def test_it_refuses_an_empty_command() -> None:
    with pytest.raises(InvalidInputError, match="no command or entrypoint provided"):
        gen(IMAGE, entrypoint=("",))


def test_it_layers_the_environment() -> None:
    env = env_of(gen(IMAGE, env=("HOME=/x", "FOO=cli", "NOEQUALS", "PATH=/p")))
    assert env == {
        "PATH": "/p",
        "TERM": "xterm",
        "container": "gantry",
        "FOO": "cli",
        "HOME": "/x",
        "HOSTNAME": CID[:12],
    }
    plain = env_of(gen({"Cmd": ["sh"]}))
    assert plain["HOME"] == "/root" and plain["PATH"] == defaults.DEFAULT_PATH
    assert env_of(gen({"Cmd": ["sh"]}, user="1234")).get("HOME") is None
    assert env_of(gen({"Cmd": ["sh"]}, env=("HOSTNAME=h", "TERM=vt100")))["HOSTNAME"] == "h"


def test_it_sets_cwd_user_terminal_and_hostname() -> None:
    spec = gen(IMAGE, tty=True, hostname="box")
    process = spec["process"]
    assert process["cwd"] == "/home/user" and process["terminal"] is True
    user = {"uid": 1000, "gid": 1000, "umask": 0o022, "additionalGids": [1000, 10]}
    assert process["user"] == user
    assert spec["hostname"] == "box"
    assert gen()["hostname"] == CID[:12] and gen()["process"]["cwd"] == "/"
    assert gen(workdir="/tmp/../srv")["process"]["cwd"] == "/srv"
    with pytest.raises(InvalidInputError, match="absolute"):
        gen(workdir="tmp")


def test_it_gives_capabilities_like_podman() -> None:
    root = gen()["process"]["capabilities"]
    assert set(root) == {"bounding", "effective", "permitted"}
    assert root["bounding"] == list(defaults.DEFAULT_CAPABILITIES)
    assert len(root["bounding"]) == 11
    assert set(gen(user="user")["process"]["capabilities"]) == {"bounding"}


def test_it_clamps_rlimits_to_the_host() -> None:
    limits = {r["type"]: (r["soft"], r["hard"]) for r in gen()["process"]["rlimits"]}
    assert limits == {"RLIMIT_NOFILE": (20000, 20000), "RLIMIT_NPROC": (96364, 96364)}
    given = gen(ulimits=("nofile=1024:1024", "nproc=4096", "core=0:-1"))["process"]["rlimits"]
    assert given[0] == {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}
    assert given[1] == {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096}
    assert given[2] == {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 0}
    with pytest.raises(InvalidInputError, match="above the host's hard limit 20000"):
        gen(ulimits=("nofile=30000",))
    with pytest.raises(InvalidInputError, match="soft limit"):
        gen(ulimits=("nofile=10:5",))
    with pytest.raises(InvalidInputError, match="NAME=SOFT"):
        gen(ulimits=("bogus=1",))


def test_it_keeps_no_new_privileges_on() -> None:
    assert gen()["process"]["noNewPrivileges"] is True


# -- mounts, linux ---------------------------------------------------------------------------
def test_it_lists_default_mounts_engine_files_then_volumes() -> None:
    vols = (VolumeMount("/v/b", "/a/b"), VolumeMount("/v/a", "/a", read_only=True))
    mounts = gen(volumes=vols)["mounts"]
    dests = [m["destination"] for m in mounts]
    assert dests == [
        "/proc",
        "/dev",
        "/sys",
        "/dev/pts",
        "/dev/mqueue",
        "/dev/shm",
        "/sys/fs/cgroup",
        "/etc/hostname",
        "/etc/hosts",
        "/a",
        "/a/b",
    ]
    assert mounts[-2] == {
        "destination": "/a",
        "type": "bind",
        "source": "/v/a",
        "options": ["ro", "rprivate", "rbind"],
    }
    assert mounts[-1]["options"] == ["rw", "rprivate", "rbind"]
    assert mounts[7]["source"] == "/u/hostname" and mounts[8]["options"] == ["bind", "rprivate"]


def test_it_fills_the_linux_section() -> None:
    linux = gen(memory=64 * 1024 * 1024, cpus=1.5, pids_limit=100)["linux"]
    assert [n["type"] for n in linux["namespaces"]] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup",
    ]  # fmt: skip
    assert all("path" not in n for n in linux["namespaces"])
    assert linux["cgroupsPath"] == f"/gantry-{CID}"
    assert linux["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}],
        "pids": {"limit": 100},
        "memory": {"limit": 64 * 1024 * 1024},
        "cpu": {"quota": 150000, "period": 100000},
    }
    assert gen()["linux"]["resources"]["pids"] == {"limit": 2048}
    assert linux["maskedPaths"] == list(defaults.MASKED_PATHS)
    assert linux["readonlyPaths"] == list(defaults.READONLY_PATHS)
    assert linux["sysctl"] == {"net.ipv4.ping_group_range": "0 0"}
    seccomp = linux["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["defaultErrnoRet"] == 38
    allowed = seccomp["syscalls"][0]["names"]
    assert "read" in allowed and "execve" in allowed and "arch_prctl" in allowed
    for never in ("kexec_load", "init_module", "bpf", "mount", "unshare", "keyctl"):
        assert never not in allowed


def test_it_is_pure_and_serialises_stably() -> None:
    a, b = gen(IMAGE, tty=True), gen(IMAGE, tty=True)
    assert a == b and canonical(a) == canonical(b)
    assert gen()["root"] == {"path": PATHS.root_path, "readonly": False}
    assert gen()["ociVersion"] == "1.0.2-dev"


def test_hosts_file_names_the_container() -> None:
    text = hosts_file("abc", "web")
    assert "127.0.0.1\tlocalhost" in text and "127.0.0.1\tabc web" in text
