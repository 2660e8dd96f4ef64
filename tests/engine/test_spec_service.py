# ruff: noqa: E501 (the table of bad edits reads best one per line)
"""SpecService on real containers (overlay-mounted busybox rootfs): generate (created ->
configured, user resolved from the container's own /etc/passwd), get/put/validate/reset/diff,
refusals that keep the old file (security.md D), validate_for_start on a file edited on disk
(D9), the RPC verbs and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api.base import Context
from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError, PolicyError
from engine.events import RecordingPublisher
from engine.protocol import EVENTS_GROUP
from engine.rpc import dispatch as rpc
from engine.spec import validate_for_start
from engine.spec.service import GENERATED, SpecService
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, CreateOptions
from engine.storage.volumes import Volume
from tests.engine.clitools import engine_cli
from tests.imagetools import File, Layer, busybox_image
from tests.skips import requires


def can_mount_overlay() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/filesystems") as f:
            return "overlay" in f.read()
    except OSError:
        return False


pytestmark = [
    requires(can_mount_overlay(), "needs root and overlayfs to mount a container rootfs"),
    pytest.mark.privileged,
]


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "volumes" / "data"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def image(engine: Engine) -> Any:
    engine.ensure_root()
    extra: Layer = {"/etc/group": File("root:x:0:\nwheel:x:10:user\nuser:x:1000:\n")}
    return busybox_image(
        engine,
        extra_layers=[extra],
        config={"Entrypoint": ["/bin/echo"], "Cmd": ["hi"], "WorkingDir": "/srv", "User": "user"},
    )


def create(engine: Engine, name: str = "c1", **options: Any) -> ContainerRecord:
    return engine.get(Containers).create(CreateOptions(**options), "localhost/busybox", name)


@pytest.fixture
def record(engine: Engine, image: Any, volume: Path) -> Iterator[ContainerRecord]:
    made = create(engine, volumes=[Volume(str(volume), "/data", read_only=True)], tty=True)
    yield made
    engine.get(Containers).unmount_all(made.id)


def service(engine: Engine) -> SpecService:
    return engine.get(SpecService)


def config_bytes(engine: Engine, record: ContainerRecord) -> bytes:
    return service(engine).config_path(record.id).read_bytes()


def test_it_generates_and_configures(engine: Engine, record: ContainerRecord) -> None:
    published = RecordingPublisher()
    result = service(engine).generate("c1", published)
    paths = engine.get(Containers).paths(record.id)
    assert result["path"] == str(paths.config) and result["state"] == "configured"
    spec = json.loads(paths.config.read_text())
    assert spec == json.loads((paths.bundle / GENERATED).read_text())
    process = spec["process"]
    assert process["args"] == ["/bin/echo", "hi"] and process["cwd"] == "/srv"
    user = {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [1000, 10]}
    assert process["user"] == user
    assert "HOME=/home/user" in process["env"] and process["terminal"] is True
    assert spec["root"]["path"] == str(paths.merged)
    assert spec["linux"]["cgroupsPath"] == f"/gantry-{record.id}"
    data = [m for m in spec["mounts"] if m["destination"] == "/data"]
    assert data[0]["options"] == ["ro", "rprivate", "rbind"]
    assert (paths.userdata / "hostname").read_text() == f"{record.short_id}\n"
    assert "c1" in (paths.userdata / "hosts").read_text()
    assert engine.get(Containers).get("c1").state == "configured"
    assert not engine.get(Containers).is_mounted(record.id)  # the passwd read left no mount
    events = [e for g, e in published.events if g == EVENTS_GROUP]
    assert events[-1]["action"] == "init" and events[-1]["state"] == "configured"


def test_it_refuses_an_unknown_user_and_stays_created(engine: Engine, image: Any) -> None:
    made = create(engine, "u1", user="ghost")
    with pytest.raises(InvalidInputError, match="unable to find user ghost"):
        service(engine).generate("u1")
    assert engine.get(Containers).get("u1").state == "created"
    assert not service(engine).config_path(made.id).exists()


def test_it_refuses_a_volume_the_admin_no_longer_allows(
    engine: Engine, record: ContainerRecord
) -> None:
    engine.config = EngineConfig(root=engine.config.root, volume_allowlist=())
    with pytest.raises(PolicyError) as err:
        service(engine).generate(record.id)
    assert err.value.rule == "bind-source" and err.value.field == "mounts[9].source"
    assert not service(engine).config_path(record.id).exists()


def test_an_edit_is_saved_exactly_and_diffed(engine: Engine, record: ContainerRecord) -> None:
    svc = service(engine)
    svc.generate(record.id)
    spec = json.loads(config_bytes(engine, record))
    spec["process"]["args"] = ["/bin/sh", "-c", "top"]
    spec["process"]["env"].append("EDITED=1")
    text = json.dumps(spec, indent=4)  # the user's own formatting
    saved = svc.put(record.id, text)
    assert saved["modified"] is True and saved["errors"] == []
    assert config_bytes(engine, record) == (text + "\n").encode()
    diff = svc.diff(record.id)
    assert '-      "/bin/echo",' in diff["diff"] and '+      "/bin/sh",' in diff["diff"]
    fields = {f["field"]: f for f in diff["fields"]}
    assert fields["process.args"]["generated"] == ["/bin/echo", "hi"]
    assert fields["process.args"]["current"] == ["/bin/sh", "-c", "top"]
    assert fields["process.env"]["change"] == "changed"
    reset = svc.reset(record.id)
    assert reset["modified"] is False
    assert svc.diff(record.id) == {"modified": False, "diff": [], "fields": []}
    checked = validate_for_start(engine, engine.get(Containers).load(record.id))
    assert checked["process"]["args"] == ["/bin/echo", "hi"]


# fmt: off
BAD_EDITS: list[tuple[str, Any, type[Exception], str, str]] = [
    (
        "hooks",
        lambda s: s.__setitem__("hooks", {"prestart": [{"path": "/bin/sh"}]}),
        PolicyError,
        "no-hooks",
        "hooks.prestart",
    ),
    (
        "bind /etc",
        lambda s: s["mounts"].append(
            {"destination": "/x", "type": "bind", "source": "/etc", "options": ["rbind"]}
        ),
        PolicyError,
        "bind-source",
        "mounts[10].source",
    ),
    (
        "cwd",
        lambda s: s["process"].__setitem__("cwd", "/proc/self/fd/7"),
        PolicyError,
        "cwd",
        "process.cwd",
    ),
    (
        "no pid ns",
        lambda s: s["linux"]["namespaces"].pop(0),
        PolicyError,
        "namespaces",
        "linux.namespaces",
    ),
    (
        "SYS_ADMIN",
        lambda s: s["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN"),
        PolicyError,
        "capabilities",
        "process.capabilities.bounding[11]",
    ),
    (
        "root.path",
        lambda s: s["root"].__setitem__("path", "/"),
        PolicyError,
        "engine-owned",
        "root.path",
    ),
    (
        "args",
        lambda s: s["process"].__setitem__("args", []),
        InvalidInputError,
        "schema",
        "process.args",
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("mutate", "cls", "rule", "where"), [b[1:] for b in BAD_EDITS], ids=[b[0] for b in BAD_EDITS]
)
def test_a_refused_edit_keeps_the_old_spec(
    engine: Engine,
    record: ContainerRecord,
    mutate: Any,
    cls: type[Exception],
    rule: str,
    where: str,
) -> None:
    svc = service(engine)
    svc.generate(record.id)
    before = config_bytes(engine, record)
    spec = json.loads(before)
    mutate(spec)
    with pytest.raises(cls) as err:
        svc.put(record.id, json.dumps(spec))
    errors = err.value.details["errors"]  # type: ignore[attr-defined]
    assert (rule, where) in [(e["rule"], e["field"]) for e in errors]
    assert where in err.value.message  # type: ignore[attr-defined]
    assert config_bytes(engine, record) == before
    assert svc.validate(record.id, json.dumps(spec))["ok"] is False


@pytest.mark.parametrize(
    "text",
    ["{", '{"ociVersion": "1.0.2", "ociVersion": "1.0.2"}', "[" * 10000, " " * (2 * 1024 * 1024)],
    ids=["broken", "duplicate", "deep", "huge"],
)
def test_malformed_text_is_refused_and_the_old_spec_kept(
    engine: Engine, record: ContainerRecord, text: str
) -> None:
    svc = service(engine)
    svc.generate(record.id)
    before = config_bytes(engine, record)
    with pytest.raises(InvalidInputError):
        svc.put(record.id, text)
    assert config_bytes(engine, record) == before


def test_a_spec_changed_on_disk_is_refused_at_start(
    engine: Engine, record: ContainerRecord
) -> None:
    svc = service(engine)
    svc.generate(record.id)
    assert validate_for_start(engine, record)["hostname"] == record.short_id
    path = svc.config_path(record.id)
    spec = json.loads(path.read_text())
    spec["hooks"] = {"createRuntime": [{"path": "/usr/bin/touch", "args": ["touch", "/pwned"]}]}
    path.write_text(json.dumps(spec))  # behind the engine's back
    with pytest.raises(PolicyError) as err:
        validate_for_start(engine, record)
    assert err.value.rule == "no-hooks" and err.value.field == "hooks.createRuntime"
    path.write_text("{ not json")
    with pytest.raises(InvalidInputError, match="config.json refused at start"):
        validate_for_start(engine, record)
    got = svc.get(record.id)
    assert got["text"] == "{ not json" and got["errors"][0]["rule"] == "json"
    assert got["modified"] is True


def test_validate_for_start_needs_a_spec(engine: Engine, record: ContainerRecord) -> None:
    with pytest.raises(InvalidStateError, match="no config.json"):
        validate_for_start(engine, record)
    with pytest.raises(InvalidStateError, match="generate it first"):
        service(engine).put(record.id, "{}")


def test_a_hostname_edit_updates_etc_hostname(engine: Engine, record: ContainerRecord) -> None:
    svc = service(engine)
    svc.generate(record.id)
    spec = json.loads(config_bytes(engine, record))
    spec["hostname"] = "renamed"
    svc.put(record.id, json.dumps(spec))
    userdata = engine.get(Containers).paths(record.id).userdata
    assert (userdata / "hostname").read_text() == "renamed\n"
    assert "renamed" in (userdata / "hosts").read_text()


def test_the_rpc_verbs(engine: Engine, record: ContainerRecord) -> None:
    ctx = Context(engine, publisher=RecordingPublisher())
    assert rpc.call(ctx, "spec.get", {"id": record.id})["exists"] is False
    generated = rpc.call(ctx, "spec.generate", {"id": record.id})
    assert generated["state"] == "configured" and "spec" not in generated
    got = rpc.call(ctx, "spec.get", {"id": record.id})
    assert got["exists"] and got["modified"] is False and got["errors"] == []
    checked = rpc.call(ctx, "spec.validate", {"id": record.id, "text": '{"ociVersion": 1}'})
    assert checked["ok"] is False and checked["errors"][0]["field"] == "ociVersion"
    request = rpc.Request("r1", "spec.put", {"id": record.id, "text": "[]"}, "x", None)
    reply = rpc.dispatch(engine, request, RecordingPublisher())
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_input"
    assert reply["error"]["details"]["errors"][0]["message"] == "the document must be a JSON object"
    with pytest.raises(InvalidInputError, match="unknown argument"):
        rpc.call(ctx, "spec.diff", {"id": record.id, "extra": 1})
    assert rpc.call(ctx, "spec.policy", {})["max_pids"] == 32768


def run_cli(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return engine_cli(engine.config.root, *args, timeout=60)


def test_the_cli_init_prints_the_path_and_validate_checks_hand_edits(
    engine: Engine, image: Any
) -> None:
    made = create(engine, "cli1")
    out = run_cli(engine, "init", "cli1")
    assert out.returncode == 0, out.stderr
    path = service(engine).config_path(made.id)
    assert out.stdout.strip() == str(path)
    assert run_cli(engine, "spec", "validate", "cli1").returncode == 0
    spec = json.loads(path.read_text())
    spec["process"]["cwd"] = "/proc/self/fd/7"
    path.write_text(json.dumps(spec, indent=1))
    checked = run_cli(engine, "spec", "validate", "cli1")
    assert checked.returncode == 1
    assert "process.cwd: must not be in /proc (CVE-2024-21626) (cwd)" in checked.stdout
    shown = run_cli(engine, "spec", "diff", "cli1")
    assert '+    "cwd": "/proc/self/fd/7",' in shown.stdout
    assert run_cli(engine, "spec", "reset", "cli1").returncode == 0
    assert json.loads(path.read_text())["process"]["cwd"] == "/srv"
    assert run_cli(engine, "init", "nosuch").returncode == 125  # as podman init


def test_the_schema_walks_a_document_once_and_the_policy_every_time(
    engine: Engine, image: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start speed: the schema's verdict depends on the bytes only, so a document it passed is
    not walked again, in this process or (written down next to the bundle) in the next one;
    the generator's own output is not walked at all. The policy (record, admin settings) is
    checked each time, and a file changed on disk behind the engine's back is walked again."""
    import engine.spec.service as module
    from engine.spec.schema import validate_schema

    walks: list[int] = []

    def counted(spec: Any) -> Any:
        walks.append(1)
        return validate_schema(spec)

    monkeypatch.setattr(module, "validate_schema", counted)
    made = create(engine, "once")
    service(engine).generate(made.id)
    assert walks == []  # Gantry's generator writes what the schema passes
    path = service(engine).config_path(made.id)
    text = path.read_text()
    fresh = SpecService(engine)  # another process: nothing remembered in memory
    assert fresh.check(made, text)[1] == [] and walks == []  # the bundle's note says so
    hostile = json.loads(text)
    hostile["process"]["cwd"] = "/proc/self/fd/7"
    assert fresh.check(made, json.dumps(hostile))[1]  # another document: walked
    assert len(walks) == 1
    edited = json.loads(text)
    edited["process"]["args"] = "not a list"
    path.write_text(json.dumps(edited))  # behind the engine's back: the note no longer holds
    with pytest.raises(InvalidInputError, match="process.args"):
        SpecService(engine).validate_for_start(made)
    assert len(walks) == 2


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tty": True, "interactive": True, "hostname": "h" * 63},
        {"command": ["sh", "-c", "echo 'q\" \\\\ é'"], "entrypoint": [], "workdir": "/tmp/x y"},
        {"env": ["A=1", "EMPTY=", "UNICODE=é✓", "LONG=" + "x" * 4000], "user": "1000:1000"},
        {"user": "nobody", "labels": {"k": "v" * 300}},
    ],
)
def test_what_the_generator_writes_passes_the_schema(
    engine: Engine, image: Any, volume: Path, options: dict[str, Any]
) -> None:
    """generate() trusts its generator with the schema (a CLI start never imports the
    validator for a spec Gantry wrote); here the schema walks what it writes, across the
    options a user can give, volumes among them."""
    from engine.spec.schema import parse, validate_schema

    options = options | {"volumes": [Volume(str(volume), "/data", read_only=True)]}
    made = create(engine, "gen", **options)
    service(engine).generate(made.id)
    assert validate_schema(parse(config_bytes(engine, made))) == []
