"""Containers: create (podman create), records, lookup, names, removal, status text."""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

from engine.core import Engine
from engine.errors import (
    ContainerNotFoundError,
    ImageNotFoundError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    PolicyError,
)
from engine.events import RecordingPublisher
from engine.files.explorer import Files
from engine.hostfs import locks
from engine.images.service import Images
from engine.images.store import GcResult, ImageRecord, Store
from engine.protocol import EVENTS_GROUP
from engine.storage import containers as engine_containers
from engine.storage.containers import Containers
from engine.storage.names import generate_name
from engine.storage.podjson import human_duration, inspect_json, ps_json, status_text
from engine.storage.records import (
    CONFIGURED,
    CREATED,
    EXITED,
    PAUSED,
    RUNNING,
    ContainerRecord,
    CreateOptions,
    apply_image_defaults,
)
from engine.storage.volumes import parse_volume
from tests.engine.storagetools import containers, ctr, files, image, needs_overlay, victim
from tests.imagetools import busybox_image, make_image

__all__ = ["containers", "ctr", "files", "image", "victim"]


def test_it_creates_storage_and_a_record_like_podman_create(
    containers: Containers, image: ImageRecord
) -> None:
    events = RecordingPublisher()
    record = containers.create(CreateOptions(), "localhost/busybox:latest", "", publisher=events)
    assert re.fullmatch(r"[0-9a-f]{64}", record.id)
    assert re.fullmatch(r"[a-z]+_[a-z]+\d*", record.name)
    assert record.state == CREATED and record.mount_count == 0
    assert record.image_id == image.id and record.image_name == "localhost/busybox:latest"
    assert record.layers == image.layers
    p = containers.paths(record.id)
    assert stat.S_IMODE(p.root.stat().st_mode) == 0o700
    for d in (p.upper, p.work, p.merged, p.bundle, p.userdata):
        assert d.is_dir() and not d.is_symlink()
    assert p.record.is_file()
    assert containers.load(record.id) == record
    assert ps_json(record)["Status"] == "Created"
    assert ps_json(record)["Names"] == [record.name]
    assert [e for _, e in events.events][0]["action"] == "create"
    assert events.events[0][0] == EVENTS_GROUP
    assert not containers.is_mounted(record.id)


def test_it_takes_the_image_defaults_and_the_overrides(
    containers: Containers, engine: Engine
) -> None:
    make_image(
        engine,
        [{"/bin/true": "x"}],
        name="localhost/app:1",
        config={
            "Entrypoint": ["/entry"],
            "Cmd": ["serve"],
            "Env": ["A=1", "B=2"],
            "WorkingDir": "/srv",
            "User": "app",
        },
    )
    plain = containers.create(CreateOptions(), "localhost/app:1")
    assert plain.options.entrypoint == ["/entry"] and plain.options.command == ["serve"]
    assert plain.options.workdir == "/srv" and plain.options.user == "app"
    over = containers.create(
        CreateOptions(command=["x"], env=["B=3", "C=4"], workdir="/w", user="0:0"),
        "localhost/app:1",
    )
    assert over.options.entrypoint == ["/entry"] and over.options.command == ["x"]
    assert over.options.env == ["A=1", "B=3", "C=4"]
    assert over.options.workdir == "/w" and over.options.user == "0:0"
    # --entrypoint drops the image's Cmd (podman and docker do)
    entry = containers.create(CreateOptions(entrypoint=["/bin/sh"]), "localhost/app:1")
    assert entry.options.entrypoint == ["/bin/sh"] and entry.options.command == []


def test_it_finds_images_by_short_name(containers: Containers, image: ImageRecord) -> None:
    assert containers.create(CreateOptions(), "busybox").image_id == image.id
    assert containers.create(CreateOptions(), image.id[7:19]).image_id == image.id


def test_a_short_name_finds_an_image_of_any_registry_once(
    containers: Containers, engine: Engine
) -> None:
    """podman create on-off finds 127.0.0.1:5000/gantry/on-off:latest, the only local one;
    with two different images of that name it asks for the full name rather than guess."""
    from tests.imagetools import File

    demo = busybox_image(engine, name="127.0.0.1:5000/gantry/on-off:latest")
    assert containers.create(CreateOptions(), "on-off").image_id == demo.id
    assert containers.create(CreateOptions(), "gantry/on-off:latest").image_id == demo.id
    other = busybox_image(
        engine, name="quay.io/x/on-off:latest", extra_layers=[{"/other": File(b"2")}]
    )
    assert other.id != demo.id
    with pytest.raises(InvalidInputError, match="matches several images"):
        containers.create(CreateOptions(), "on-off")
    with pytest.raises(ImageNotFoundError):
        containers.create(CreateOptions(), "on-off:2")


def test_it_refuses_an_unknown_image_and_leaves_nothing(
    containers: Containers, engine: Engine
) -> None:
    with pytest.raises(ImageNotFoundError):
        containers.create(CreateOptions(), "nope:1")
    assert containers.list() == []
    assert list((Path(engine.config.root) / "tmp").iterdir()) == []


def test_it_holds_gc_off_while_create_resolves_the_image(
    containers: Containers, engine: Engine, image: ImageRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rmi racing a create (its record removed and gc run after create found the image,
    before the container's record exists) cannot collect the layers create copied: gc is
    held off until the record that names them is in place, then keeps them."""
    store = engine.get(Store)
    during: list[GcResult] = []

    def rmi_meanwhile(taken: set[str]) -> str:
        store.remove_image_record(image.id)
        during.append(store.gc())
        return generate_name(taken)

    monkeypatch.setattr(engine_containers, "generate_name", rmi_meanwhile)
    record = containers.create(CreateOptions(), "busybox")
    assert [r.skipped for r in during] == [True]
    assert record.layers == image.layers
    after = store.gc()
    assert not after.skipped and after.layers == []
    assert all(store.layer_diff(c).is_dir() for c in record.layers)
    assert containers.lower_dirs(record) == store.image_layer_dirs(image)


def test_it_refuses_to_create_from_a_removed_image_and_leaves_nothing(
    containers: Containers, engine: Engine, image: ImageRecord
) -> None:
    engine.get(Images).remove(image.id)
    assert not any(engine.get(Store).layer_diff(c).exists() for c in image.layers)
    with pytest.raises(ImageNotFoundError):
        containers.create(CreateOptions(), "busybox")
    assert containers.list() == []
    assert list((Path(engine.config.root) / "tmp").iterdir()) == []


def test_names_are_unique_and_checked(containers: Containers, image: ImageRecord) -> None:
    containers.create(CreateOptions(), "busybox", "web")
    with pytest.raises(InvalidStateError, match="already in use"):
        containers.create(CreateOptions(), "busybox", "web")
    for bad in ("-x", "a/b", "a b", "../x", "x" * 200, "é"):
        with pytest.raises(InvalidInputError):
            containers.create(CreateOptions(), "busybox", bad)
    assert [r.name for r in containers.list()] == ["web"]


def test_it_finds_containers_by_id_prefix_and_name(
    containers: Containers, image: ImageRecord
) -> None:
    a = containers.create(CreateOptions(), "busybox", "alpha")
    b = containers.create(CreateOptions(), "busybox", "beta")
    assert containers.get(a.id).id == a.id
    assert containers.get("beta").id == b.id
    assert containers.get(a.id[:8]).id == a.id
    with pytest.raises(ContainerNotFoundError):
        containers.get("gamma")
    with pytest.raises(InvalidInputError):
        containers.get("")
    # a prefix shared by both is ambiguous
    common = os.path.commonprefix([a.id, b.id])
    if len(common) >= 3:
        with pytest.raises(InvalidInputError, match="ambiguous"):
            containers.get(common)


@pytest.mark.parametrize(
    "options",
    [
        CreateOptions(env=["NOEQUALS"]),
        CreateOptions(env=["=x"]),
        CreateOptions(workdir="relative"),
        CreateOptions(workdir="/proc/self/fd/7"),
        CreateOptions(user="root; rm -rf /"),
        CreateOptions(command=["a\x00b"]),
        CreateOptions(hostname="bad host"),
    ],
)
def test_it_refuses_bad_options(
    containers: Containers, image: ImageRecord, options: CreateOptions
) -> None:
    with pytest.raises(InvalidInputError):
        containers.create(options, "busybox")
    assert containers.list() == []


def test_volumes_must_be_under_the_allowlist(
    containers: Containers, image: ImageRecord, tmp_path: Path, victim: Path
) -> None:
    vols = tmp_path / "volumes"
    (vols / "data").mkdir(parents=True)
    (vols / "escape").symlink_to(victim)
    record = containers.create(
        CreateOptions(volumes=[parse_volume(f"{vols}/data/../data:/mnt:ro")]), "busybox"
    )
    assert [v.spec() for v in record.options.volumes] == [f"{vols}/data:/mnt:ro"]
    assert ps_json(record)["Mounts"] == ["/mnt"]
    for spec, err in [
        (f"{victim}:/mnt", PolicyError),
        (f"{vols}/escape:/mnt", PolicyError),
        (f"{vols}/../victim:/mnt", PolicyError),
        (f"{vols}/data:/proc/x", PolicyError),
        (f"{vols}/missing:/mnt", NotFoundError),
        ("relative:/mnt", InvalidInputError),
        (f"{vols}/data:/mnt:shared", InvalidInputError),
    ]:
        with pytest.raises(err):
            containers.create(CreateOptions(volumes=[parse_volume(spec)]), "busybox")
    assert len(containers.list()) == 1


def test_records_keep_keys_they_do_not_know(ctr: ContainerRecord, containers: Containers) -> None:
    data = ctr.to_dict()
    data["runtime_cgroup"] = "/gantry/x"
    data["options"]["seccomp"] = "default"
    again = ContainerRecord.from_dict(data)
    assert again.extra == {"runtime_cgroup": "/gantry/x"}
    assert again.to_dict() == data
    assert ContainerRecord.from_dict(again.to_dict()).options.extra == {"seccomp": "default"}


def test_status_text_reads_like_podman_ps(ctr: ContainerRecord) -> None:
    now = 1_000_000.0
    assert status_text(ctr, now) == "Created"
    ctr.state = CONFIGURED
    assert status_text(ctr, now) == "Created"
    ctr.state, ctr.started_at = RUNNING, now - 5
    assert status_text(ctr, now) == "Up 5 seconds"
    ctr.state = PAUSED
    assert status_text(ctr, now) == "Paused"
    ctr.state, ctr.exit_code, ctr.finished_at = EXITED, 0, now - 3
    assert status_text(ctr, now) == "Exited (0) 3 seconds ago"
    assert [human_duration(s) for s in (0.5, 1, 59, 60, 3599, 3600, 86400 * 3)] == [
        "Less than a second", "1 second", "59 seconds", "About a minute", "59 minutes",
        "About an hour", "3 days",
    ]  # fmt: skip


def test_inspect_has_podmans_fields(ctr: ContainerRecord, containers: Containers) -> None:
    data = inspect_json(ctr, containers.paths(ctr.id), containers.lower_dirs(ctr))
    assert data["Id"] == ctr.id and data["Name"] == "ctr"
    assert data["State"]["Status"] == "created" and data["State"]["Running"] is False
    assert data["Config"]["Cmd"] == ["/bin/sh"]
    assert data["GraphDriver"]["Name"] == "overlay"
    assert data["GraphDriver"]["Data"]["MergedDir"].endswith("/merged")
    assert containers.inspect(ctr)["GraphDriver"] == data["GraphDriver"]


@needs_overlay
def test_remove_deletes_everything_and_unmounts(
    ctr: ContainerRecord, containers: Containers
) -> None:
    containers.mount(ctr.id)
    events = RecordingPublisher()
    containers.remove(ctr.id, publisher=events)
    assert not containers.paths(ctr.id).root.exists()
    assert not containers.is_mounted(ctr.id)
    assert events.events[-1][1]["action"] == "remove"
    with pytest.raises(ContainerNotFoundError):
        containers.get("ctr")


@needs_overlay
def test_remove_copes_with_a_tree_deeper_than_the_recursion_limit(
    ctr: ContainerRecord, containers: Containers, files: Files, engine: Engine
) -> None:
    """security.md A13: any web user can mkdir -p 1500 levels (shutil.rmtree hit
    RecursionError after the directory was already renamed into tmp/)."""
    files.mkdir(ctr, "/a" * 1500, parents=True)
    events = RecordingPublisher()
    containers.remove(ctr.id, publisher=events)
    assert events.events[-1][1]["action"] == "remove"
    assert not containers.paths(ctr.id).root.exists()
    assert list((engine.config.root / "tmp").iterdir()) == []
    with pytest.raises(ContainerNotFoundError):
        containers.get("ctr")


def test_remove_refuses_a_running_container_without_a_hook(
    ctr: ContainerRecord, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "pre_remove_hooks", [])
    with containers.lock(ctr.id):
        record = containers.load(ctr.id)
        record.state = RUNNING
        containers.save(record)
    with pytest.raises(InvalidStateError, match="running"):
        containers.remove(ctr.id, force=True)
    assert containers.paths(ctr.id).root.exists()


def test_remove_runs_the_hooks_first(
    ctr: ContainerRecord, containers: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []

    def hook(engine: Engine, record: ContainerRecord, force: bool) -> None:
        seen.append((record.id, force))
        record.state = EXITED
        containers.save(record)

    monkeypatch.setattr(containers, "pre_remove_hooks", [hook])
    with containers.lock(ctr.id):
        record = containers.load(ctr.id)
        record.state = RUNNING
        containers.save(record)
    containers.remove(ctr.id, force=True)
    assert seen == [(ctr.id, True)]
    assert containers.list() == []


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across(
    ctr: ContainerRecord, containers: Containers
) -> None:
    order: list[str] = []
    with containers.lock(ctr.id):
        with containers.lock(ctr.id):
            order.append("inner")

        def other() -> None:
            with containers.lock(ctr.id):
                order.append("other")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.2)
        order.append("outer-done")
    t.join(5)
    assert order == ["inner", "outer-done", "other"]
    failures: list[Exception] = []

    def try_lock() -> None:
        try:
            with containers.lock(ctr.id, timeout=0.1):
                pass
        except locks.LockTimeoutError as err:
            failures.append(err)

    with containers.lock(ctr.id):
        th = threading.Thread(target=try_lock)
        th.start()
        th.join(5)
    assert len(failures) == 1


def test_apply_image_defaults_uses_root_workdir_when_image_has_none(image: ImageRecord) -> None:
    options = apply_image_defaults(CreateOptions(), image)
    assert options.workdir == "/" and options.command == ["/bin/sh"]
