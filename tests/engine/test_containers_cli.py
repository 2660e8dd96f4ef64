"""The CLI verbs of storage, run as a user would (python -m engine ...): create, mount, diff,
cp, ps, inspect, unmount, rm; podman's words and output shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.core import Engine
from tests.engine.storagetools import needs_overlay
from tests.imagetools import busybox_image

REPO = Path(__file__).resolve().parents[2]
pytestmark = needs_overlay


@pytest.fixture
def cli(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (tmp_path / "vol").mkdir()
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"volume_allowlist": [str(tmp_path / "vol")]}))
    busybox_image(Engine(EngineConfig(root=root)))

    def run(
        *args: str, ok: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "engine", "--root", str(root), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": os.environ["PATH"], "GANTRY_CONFIG": str(config), **(env or {})},
        )
        if ok:
            assert out.returncode == 0, out.stderr
        return out

    yield run
    for line in run("ps", "-a", "-q").stdout.split():
        run("rm", "-f", line, ok=False)


def test_the_lab_through_the_cli(cli, tmp_path: Path) -> None:
    cid = cli("create", "--name", "ctr", "-v", f"{tmp_path}/vol:/mnt", "busybox", "top").stdout
    assert len(cid.strip()) == 64
    merged = Path(cli("mount", "ctr").stdout.strip())
    assert merged.name == "merged" and (merged / "bin" / "busybox").exists()
    (merged / "test").touch()
    assert cli("diff", "ctr").stdout == "A /test\n"
    assert json.loads(cli("diff", "--format", "json", "ctr").stdout)["added"] == ["/test"]
    table = cli("ps", "-a").stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"]  # fmt: skip
    assert "Created" in table[1] and table[1].endswith("ctr") and " top " in table[1]
    assert cli("ps").stdout.count("\n") == 1, "ps without -a shows running containers only"
    [row] = json.loads(cli("ps", "-a", "--format", "json").stdout)
    assert row["Names"] == ["ctr"] and row["State"] == "created" and row["Mounts"] == ["/mnt"]
    [info] = json.loads(cli("inspect", "ctr").stdout)
    assert info["Config"]["Cmd"] == ["top"] and info["Mounts"][0]["Destination"] == "/mnt"
    assert cli("unmount", "ctr").stdout.strip() == cid.strip()
    again = cli("unmount", "ctr", ok=False)
    assert again.returncode != 0 and "not mounted" in again.stderr
    merged = Path(cli("mount", "ctr").stdout.strip())
    assert (merged / "test").exists()
    cli("umount", "ctr")
    # cp both ways
    (tmp_path / "hostfile").write_text("from host\n")
    cli("cp", str(tmp_path / "hostfile"), "ctr:/etc/")
    cli("cp", "ctr:/etc/hostfile", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "from host\n"
    assert "A /etc/hostfile" in cli("diff", "ctr").stdout
    bad = cli("cp", str(tmp_path / "hostfile"), str(tmp_path / "x"), ok=False)
    assert bad.returncode != 0 and "NAME:PATH" in bad.stderr
    assert cli("rm", "ctr").stdout.strip() == cid.strip()
    assert cli("ps", "-a", "-q").stdout == ""


def test_errors_are_one_line(cli) -> None:
    out = cli("create", "nosuchimage", ok=False)
    assert out.returncode != 0 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("Error: image nosuchimage")
    out = cli("create", "-v", "/etc:/etc", "busybox", ok=False)
    assert "not under an allowed directory" in out.stderr
    out = cli("mount", "ghost", ok=False)
    assert "no such container" in out.stderr
    cli("create", "--name", "dup", "busybox")
    out = cli("create", "--name", "dup", "busybox", ok=False)
    assert "already in use" in out.stderr
    cli("create", "--name", "ep", "--entrypoint", '["/bin/sh","-c"]', "busybox", "echo hi")
    [info] = json.loads(cli("inspect", "ep").stdout)
    assert info["Config"]["Entrypoint"] == ["/bin/sh", "-c"] and info["Config"]["Cmd"] == [
        "echo hi"
    ]


def test_a_bare_env_name_takes_the_hosts_value(cli) -> None:
    """podman's -e NAME: the value from the calling shell (empty when it has none there)."""
    cli("create", "--name", "envs", "-e", "HOSTV", "-e", "UNSETV", "-e", "A=1", "busybox",
        env={"HOSTV": "from host"})  # fmt: skip
    [info] = json.loads(cli("inspect", "envs").stdout)
    assert {"HOSTV=from host", "UNSETV=", "A=1"} <= set(info["Config"]["Env"])


def test_ps_as_the_seed_types_it(cli) -> None:
    """`podman ps -l -q --no-trunc` and its neighbours: the latest, the last N, full ids, and
    filters by name, id, status and ancestor."""
    ids = {n: cli("create", "--name", n, "busybox", "true").stdout.strip() for n in "abc"}
    assert cli("ps", "-l", "-q", "--no-trunc").stdout == ids["c"] + "\n"
    assert cli("ps", "--latest", "--quiet").stdout == ids["c"][:12] + "\n"
    assert cli("ps", "-n", "2", "-q").stdout.split() == [ids["c"][:12], ids["b"][:12]]
    assert cli("ps", "--filter", "name=^b$", "-q").stdout.split() == [ids["b"][:12]]
    assert cli("ps", "-f", "id=" + ids["a"][:5], "-q").stdout.split() == [ids["a"][:12]]
    assert len(cli("ps", "-f", "status=created", "-q").stdout.split()) == 3
    assert cli("ps", "-f", "status=running", "-q").stdout == ""
    assert len(cli("ps", "-f", "ancestor=busybox", "-f", "name=a", "-q").stdout.split()) == 1
    table = cli("ps", "-a", "--no-trunc").stdout.splitlines()
    assert ids["a"] in table[-1] or any(ids["a"] in line for line in table)
    for hostile, said in [("colour=red", "invalid filter"), ("name=(", "invalid name filter"),
                          ("status=dead", "invalid status"), ("id", "invalid filter")]:  # fmt: skip
        bad = cli("ps", "--filter", hostile, ok=False)
        assert bad.returncode == 125 and said in bad.stderr, bad.stderr


def test_cp_of_one_fifo_fails_instead_of_copying_nothing(cli, tmp_path: Path) -> None:
    cli("create", "--name", "fifo", "busybox", "true")
    merged = Path(cli("mount", "fifo").stdout.strip())
    os.mkfifo(merged / "pipe")
    out = cli("cp", "fifo:/pipe", str(tmp_path / "pipe"), ok=False)
    assert out.returncode == 125 and "not copied" in out.stderr
    assert not (tmp_path / "pipe").exists()
    cli("umount", "fifo")


def test_formats_as_the_seed_types_them(cli) -> None:
    """--format with podman's Go-template fields, on ps, images and inspect, and inspect of
    an image; what is not there or not supported is said, with podman's exit status."""
    ids = {n: cli("create", "--name", n, "busybox", "sh", "-c", "echo hi").stdout.strip()
           for n in ("one", "two")}  # fmt: skip
    lines = cli("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Image}}").stdout
    assert lines.splitlines() == [
        f"{ids['two'][:12]} two Created localhost/busybox:latest",
        f"{ids['one'][:12]} one Created localhost/busybox:latest",
    ]
    assert cli("ps", "-a", "--no-trunc", "--format", "{{.ID}}").stdout.split()[0] == ids["two"]
    assert cli("ps", "-a", "--format", "{{.Command}}").stdout.split("\n")[0] == "sh -c echo hi"
    as_json = json.loads(cli("ps", "-a", "--format", "{{json .}}").stdout)
    assert as_json == json.loads(cli("ps", "-a", "--format", "json").stdout)
    table = cli("ps", "-a", "--format", "table {{.ID}}\\t{{.Names}}").stdout.splitlines()
    assert table[0] == "CONTAINER ID  NAMES" and table[1].endswith("  two")

    assert cli("inspect", "--format", "{{.State.Status}}", "one").stdout == "created\n"
    assert cli("inspect", "--format", "{{.Id}} {{.Name}}", "one").stdout == f"{ids['one']} one\n"
    [image] = json.loads(cli("inspect", "busybox").stdout)  # no container by that name
    assert "localhost/busybox:latest" in image["RepoTags"]
    assert cli("inspect", "-f", "{{.Os}}", "--type", "image", "busybox").stdout == "linux\n"
    images = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout.split()
    assert images[0] == "localhost/busybox:latest" and len(images[1]) == 12

    missing = cli("inspect", "nosuch", ok=False)
    assert missing.returncode == 125 and missing.stdout == "[]\n"
    assert 'no such object: "nosuch"' in missing.stderr
    wrong_type = cli("inspect", "--type", "container", "busybox", ok=False)
    assert wrong_type.returncode == 125 and "busybox" in wrong_type.stderr
    bad = cli("ps", "-a", "--format", "{{.Nope}}", ok=False)
    assert bad.returncode == 125 and "can't evaluate field Nope" in bad.stderr, bad.stderr


def test_logs_since_and_until(cli, tmp_path: Path) -> None:
    """podman logs --since/--until: a time, a date, unix seconds or a duration ago."""
    cid = cli("create", "--name", "talk", "busybox", "true").stdout.strip()
    log = tmp_path / "root" / "containers" / cid / "userdata" / "ctr.log"
    log.write_text(
        "2026-01-01T10:00:00.000000001+00:00 stdout F old\n"
        "2026-01-01T11:00:00.5Z stdout F middle\n"
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.000000000+00:00 stderr F new\n"
    )
    assert cli("logs", "--since", "2026-01-01T10:30:00Z", "talk").stdout == "middle\n"
    assert cli("logs", "--until", "2026-01-01T10:30:00+00:00", "talk").stdout == "old\n"
    assert cli("logs", "--since", "10m", "talk").stderr == "new\n"
    since = str(int(time.mktime((2026, 1, 1, 11, 0, 0, 0, 0, -1))))  # local, as the host reads it
    assert cli("logs", "--since", since, "--until", "1h", "talk").stdout == "middle\n"
    assert cli("logs", "--since", "2026-01-02", "talk").stdout == ""
    bad = cli("logs", "--since", "yesterday", "talk", ok=False)
    assert bad.returncode != 0 and "use an RFC 3339 time" in bad.stderr
