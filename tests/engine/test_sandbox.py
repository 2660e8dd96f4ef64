"""A private sandbox per learner (engine/storage/sandbox.py): a learner's ``-v /mnt:/mnt``
binds their own directory, two learners never share one, hostile sources are refused with the
reason, a config.json edit cannot reach another sandbox, and the lab's first start exits 0
for one learner while the other has /mnt/on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.api.base import Context, invoke
from engine.core import Engine
from engine.errors import InvalidInputError, InvalidStateError, PolicyError
from engine.protocol import ADMIN, LEARNER, verbs
from engine.runtime.lifecycle import Lifecycle
from engine.spec.service import SpecService
from engine.storage.containers import Containers
from engine.storage.sandbox import MAX_DEPTH, sandbox_path
from tests.engine.runtools import RUNTIME_REASON, can_run_containers, wait_until, worker_started
from tests.imagetools import busybox_image
from tests.skips import requires

IMAGE = "localhost/busybox:latest"


def as_user(engine: Engine, name: str, role: str = LEARNER) -> Context:
    return Context(engine, user=name, role=role, name=name)


def create(ctx: Context, name: str, *volumes: str, command: list[str] | None = None) -> Any:
    args = verbs.Create(image=IMAGE, name=name, volumes=list(volumes), command=command or [])
    row = invoke(ctx, verbs.CONTAINER_CREATE, args)
    return ctx.engine.get(Containers).get(row["Id"])


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("mnt", "an absolute path"),
        ("/mnt/../etc", "'..' is not a plain name"),
        ("/..", "'..' is not a plain name"),
        ("/mnt/./x", "'.' is not a plain name"),
        ("/mnt/a b", "is not a plain name"),
        ("/" + "/".join(["d"] * (MAX_DEPTH + 1)), f"at most {MAX_DEPTH} levels"),
        ("/", "name a directory"),
    ],
)
def test_a_learners_source_must_be_a_plain_path(source: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason.replace(".", r"\.")):
        sandbox_path(source)


def test_two_learners_get_their_own_mnt(engine: Engine) -> None:
    busybox_image(engine)
    ann = create(as_user(engine, "ann"), "lab", "/mnt:/mnt")
    bob = create(as_user(engine, "bob"), "lab2", "/mnt:/mnt:ro")
    sandbox = Path(engine.config.sandbox_root)
    assert [v.source for v in ann.options.volumes] == [str(sandbox / "ann" / "mnt")]
    assert [v.source for v in bob.options.volumes] == [str(sandbox / "bob" / "mnt")]
    assert ann.options.volumes[0].requested == "/mnt" and bob.options.volumes[0].read_only
    assert ann.options.sandbox == "ann" and (sandbox / "bob" / "mnt").is_dir()
    assert os.stat(sandbox / "ann").st_uid == 0  # root-owned


def test_a_symlink_out_of_the_sandbox_is_refused(engine: Engine, tmp_path: Path) -> None:
    busybox_image(engine)
    top = Path(engine.config.sandbox_root) / "ann"
    top.mkdir(parents=True)
    (top / "mnt").symlink_to("/etc")
    with pytest.raises(PolicyError, match="is not a directory of it"):
        create(as_user(engine, "ann"), "lab", "/mnt:/mnt")
    assert engine.get(Containers).list() == []
    with pytest.raises(PolicyError, match="cannot name a sandbox"):
        create(Context(engine, role=LEARNER, name=None), "lab", "/mnt:/mnt")


def test_an_admin_keeps_real_host_paths(engine: Engine) -> None:
    busybox_image(engine)
    allowed = engine.config.volume_allowlist[0]
    allowed.mkdir(parents=True)
    record = create(as_user(engine, "root", ADMIN), "admins", f"{allowed}:/data")
    assert record.options.volumes[0].source == str(allowed) and not record.options.sandbox
    with pytest.raises(PolicyError, match="not under an allowed directory"):
        create(as_user(engine, "root", ADMIN), "nope", "/mnt:/mnt")


def test_a_spec_edit_cannot_bind_another_learners_sandbox(engine: Engine) -> None:
    busybox_image(engine)
    create(as_user(engine, "bob"), "bobs", "/mnt:/mnt")
    ann = create(as_user(engine, "ann"), "anns", "/mnt:/mnt")
    service = engine.get(SpecService)
    service.generate(ann.id)
    text = service.get(ann.id)["text"]
    bobs = str(Path(engine.config.sandbox_root) / "bob" / "mnt")
    edited = text.replace(str(Path(engine.config.sandbox_root) / "ann" / "mnt"), bobs)
    assert edited != text
    result = service.validate(ann.id, edited)
    assert not result["ok"]
    assert any(e["rule"] == "bind-source" for e in result["errors"]), result["errors"]
    assert service.validate(ann.id, text)["ok"]


@requires(can_run_containers(), RUNTIME_REASON)
@pytest.mark.privileged
def test_the_first_start_exits_0_for_one_while_the_other_has_mnt_on(engine: Engine) -> None:
    """The lab's 'first start exits 0' (no /mnt/on yet) for bob, while ann created hers."""
    busybox_image(engine)
    probe = ["sh", "-c", "test -e /mnt/on && exit 3; exit 0"]
    with worker_started(engine):
        ann_ctx, bob_ctx = as_user(engine, "ann"), as_user(engine, "bob")
        ann = create(ann_ctx, "ann-lab", "/mnt:/mnt", command=probe)
        bob = create(bob_ctx, "bob-lab", "/mnt:/mnt", command=probe)
        touch = verbs.VolumeTouch(id=ann.id, destination="/mnt", name="on")
        assert invoke(ann_ctx, verbs.LAB_VOLUME_TOUCH, touch)["path"].endswith("/ann/mnt/on")
        lifecycle = engine.get(Lifecycle)
        for ctx, record in ((bob_ctx, bob), (ann_ctx, ann)):
            invoke(ctx, verbs.CONTAINER_START, verbs.Id(id=record.id))
        codes = {
            name: wait_until(lambda r=record: _exited(lifecycle, r.id), 20)
            for name, record in (("ann", ann), ("bob", bob))
        }
        assert codes == {"ann": ("exited", 3), "bob": ("exited", 0)}


def _exited(lifecycle: Lifecycle, container_id: str) -> tuple[str, int | None] | None:
    """(state, exit code) once the container has exited (a tuple: an exit 0 is an answer)."""
    record = lifecycle.get_synced(container_id)
    return (record.state, record.exit_code) if record.state == "exited" else None


def test_the_sandbox_root_comes_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.config import DEFAULT_SANDBOX, load_config
    from engine.errors import InvalidInputError

    monkeypatch.delenv("GANTRY_SANDBOX_ROOT", raising=False)
    cfg = tmp_path / "engine.json"
    assert load_config(tmp_path / "r", cfg).sandbox_root == DEFAULT_SANDBOX
    cfg.write_text('{"sandbox_root": "/srv/sandboxes"}')
    assert load_config(tmp_path / "r", cfg).sandbox_root == Path("/srv/sandboxes")
    monkeypatch.setenv("GANTRY_SANDBOX_ROOT", str(tmp_path / "sb"))
    assert load_config(tmp_path / "r", cfg).sandbox_root == tmp_path / "sb"
    cfg.write_text('{"sandbox_root": "relative"}')
    with pytest.raises(InvalidInputError, match="sandbox_root: an absolute path"):
        load_config(tmp_path / "r", cfg)


def test_names_are_per_user(engine: Engine) -> None:
    """Thirty learners may each call theirs on-off: engine-wide it is <user>.on-off."""
    busybox_image(engine)
    ann = create(as_user(engine, "ann"), "on-off")
    bob = create(as_user(engine, "bob"), "on-off")
    admins = create(as_user(engine, "root", ADMIN), "on-off")
    assert (ann.name, bob.name, admins.name) == ("ann.on-off", "bob.on-off", "on-off")
    with pytest.raises(InvalidStateError, match="already in use"):
        create(as_user(engine, "ann"), "on-off")
    with pytest.raises(InvalidInputError, match="at most 124 characters"):
        create(as_user(engine, "ann"), "x" * 125)


def test_learners_pull_only_from_the_allowed_registries(engine: Engine) -> None:
    from dataclasses import replace

    from engine.api.images import check_registry_for

    learner, admin = as_user(engine, "ann"), as_user(engine, "root", ADMIN)
    check_registry_for(learner, "busybox")  # docker.io
    check_registry_for(learner, "quay.io/fatherlinux/on-off")
    for ref in ("127.0.0.1:5000/x:1", "10.0.0.7/x", "registry.internal/x"):
        with pytest.raises(PolicyError, match="learners may pull from docker.io, quay.io"):
            check_registry_for(learner, ref)
        check_registry_for(admin, ref)  # admins: anywhere (the host policy still applies)
    engine.config = replace(
        engine.config,
        insecure_registries=("127.0.0.1:5000",),
        policy={"registries": {"learners": ["registry.internal"]}},
    )
    check_registry_for(learner, "127.0.0.1:5000/x:1")  # the lab's own registry
    check_registry_for(learner, "registry.internal/x")
    with pytest.raises(PolicyError, match="not docker.io"):
        check_registry_for(learner, "busybox")
    engine.config = replace(engine.config, policy={"registries": {"learners": "docker.io"}})
    with pytest.raises(PolicyError, match="a list of registries"):
        check_registry_for(learner, "busybox")


def test_host_files_list_and_touch_never_follow_a_symlink(engine: Engine) -> None:
    from engine.storage import sandbox

    assert sandbox.touch(engine.config, "ann", "/mnt/on")["path"] == "/mnt/on"
    top = Path(engine.config.sandbox_root) / "ann"
    (top / "out").symlink_to("/etc")
    root, entries, cut = sandbox.listing(engine.config, "ann")
    assert root == top and not cut
    assert [(e["path"], e["kind"]) for e in entries] == [
        ("/mnt", "dir"),
        ("/mnt/on", "file"),
        ("/out", "link"),
    ]
    with pytest.raises(PolicyError, match="is not a directory of it"):
        sandbox.touch(engine.config, "ann", "/out/passwd")
    assert not Path("/etc/passwd.gantry-test").exists()
    with pytest.raises(PolicyError, match="a directory, or a symlink"):
        sandbox.touch(engine.config, "ann", "/out")
