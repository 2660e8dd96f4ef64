"""The Class page (/class/): instructors and admins see every learner's lab and container and
may reset a learner's lab; learners may not; instructors may open a learner's container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from engine.core import Engine
from engine.errors import PolicyError
from engine.protocol import LEARNER, verbs
from engine.storage.containers import Containers
from tests.imagetools import busybox_image
from webui import users
from webui.models import AuditEvent, LabRun, Ownership

pytestmark = pytest.mark.django_db(transaction=True)
HX = {"HX-Request": "true"}
IMAGE = "localhost/busybox:latest"


async def client_of(user: Any) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


@pytest.fixture
async def teacher() -> Any:
    return (await sync_to_async(users.add)("teach", users.INSTRUCTOR)).user


async def test_only_instructors_and_admins_see_the_class(
    engine_worker: Engine, alice: Any, teacher: Any, admin_user_: Any
) -> None:
    learner = await client_of(alice)
    assert (await learner.get("/class/")).status_code == 403
    assert (await learner.post("/class/alice/reset")).status_code == 403
    assert ">Class</a>" not in (await learner.get("/containers/")).content.decode()
    for who in (teacher, admin_user_):
        client = await client_of(who)
        page = await client.get("/class/")
        assert page.status_code == 200 and 'data-learner="alice"' in page.content.decode()
        for not_a_learner in ("teach", admin_user_.get_username()):  # rows are learners only
            assert f'data-learner="{not_a_learner}"' not in page.content.decode()
        assert ">Class</a>" in (await client.get("/containers/")).content.decode()


async def test_a_learners_lab_shows_and_resets(
    engine_worker: Engine, alice: Any, bob: Any, teacher: Any
) -> None:
    await sync_to_async(busybox_image)(engine_worker)
    learner = await client_of(alice)
    await learner.post("/lab/start", {"image": IMAGE})
    form = {"image": IMAGE, "name": "lab", "volumes": "/mnt:/mnt"}
    assert (await learner.post("/containers/new", form, headers=HX)).status_code == 200
    own = await Ownership.objects.aget(owner=alice)
    sandbox = Path(engine_worker.config.sandbox_root) / "alice"
    assert await sync_to_async((sandbox / "mnt").is_dir)()

    instructor = await client_of(teacher)
    table = (await instructor.get("/class/table")).content.decode()
    assert 'data-testid="lab-count">2/9' in table  # pulled, created
    assert f'href="/containers/{own.container_id}/"' in table and "alice.lab" in table
    # an instructor may open a learner's container, not the other way round
    assert (await instructor.get(f"/containers/{own.container_id}/")).status_code == 200
    # with their disk against their quota, in the table and on the container's Storage tab
    assert 'aria-label="disk used by alice"' in table and "0\xa0bytes</span> of 1.0\xa0GiB" in table
    storage = (await instructor.get(f"/containers/{own.container_id}/storage/")).content.decode()
    assert "Disk of alice" in storage and "of 1.0\xa0GiB" in storage
    # what alice typed and the host path runc binds, on the Storage and Spec tabs
    real = f'<td class="mono">{sandbox / "mnt"} <span class="hint">'
    spec = (await learner.get(f"/containers/{own.container_id}/spec/")).content.decode()
    for page in (storage, spec):
        assert '<td class="mono">/mnt</td>' in page and real in page
    checks = (await learner.get("/lab/checks")).content.decode()
    assert f"/mnt is <code>{sandbox / 'mnt'}</code> on the host" in checks

    # bob follows the seed without the Lab page: his row shows his container all the same
    bobs = await client_of(bob)
    made = {"image": IMAGE, "name": "own", "volumes": "/mnt:/mnt"}
    assert (await bobs.post("/containers/new", made, headers=HX)).status_code == 200
    table = (await instructor.get("/class/table")).content.decode()
    row = table.split('data-learner="bob"')[1].split("</tr>")[0]
    assert "not started" in row and "bob.own" in row and "none yet" not in row

    r = await instructor.post("/class/alice/reset", headers=HX)
    assert r.status_code == 200 and "not started" in r.content.decode()
    assert not await Ownership.objects.filter(owner=alice).aexists()
    assert not await LabRun.objects.filter(user=alice).aexists()
    left = await sync_to_async(engine_worker.get(Containers).list)()
    assert [r.name for r in left] == ["bob.own"]  # only alice's lab was reset
    assert not await sync_to_async(sandbox.exists)()
    event = await AuditEvent.objects.filter(action="lab.reset").afirst()
    assert event is not None and event.ok and event.target == "alice"


def test_the_engine_lets_only_instructors_and_admins_clear_a_sandbox(engine: Engine) -> None:
    from engine.api.base import Context, invoke

    learner = Context(engine, role=LEARNER, name="ann")
    with pytest.raises(PolicyError, match="only an instructor or an admin"):
        invoke(learner, verbs.LAB_CLEAR_SANDBOX, verbs.Sandbox(name="bob"))


async def test_a_learner_touches_mnt_on_by_hand_in_host_files(
    engine_worker: Engine, alice: Any, bob: Any, admin_user_: Any
) -> None:
    client = await client_of(alice)
    page = (await client.get("/lab/host-files")).content.decode()
    assert "Empty" in page and str(engine_worker.config.sandbox_root) in page
    r = await client.post("/lab/host-files/touch", {"path": "/mnt/on"})
    assert r.status_code == 200 and "Created /mnt/on" in r.content.decode()
    on = Path(engine_worker.config.sandbox_root) / "alice" / "mnt" / "on"
    assert await sync_to_async(on.is_file)()
    listed = (await client.get("/lab/host-files")).content.decode()
    assert '<td class="mono">/mnt/on</td>' in listed
    assert "Your disk" in listed and "0\xa0bytes</span> of 1.0\xa0GiB" in listed
    # bob's sandbox is his own; a hostile path is refused with the reason
    bobs = (await (await client_of(bob)).get("/lab/host-files")).content.decode()
    assert '<td class="mono">/mnt/on</td>' not in bobs and "Empty" in bobs
    r = await client.post("/lab/host-files/touch", {"path": "/mnt/../../etc/passwd"})
    assert "&#x27;..&#x27; is not a plain name" in r.content.decode()
    admin = (await (await client_of(admin_user_)).get("/lab/host-files")).content.decode()
    assert "an admin has no sandbox" in admin


async def test_an_instructor_does_not_see_an_admins_containers(
    engine_worker: Engine, admin_user_: Any, teacher: Any
) -> None:
    """An admin's containers may bind real host paths: they stay the admins'."""
    await sync_to_async(busybox_image)(engine_worker)
    admin = await client_of(admin_user_)
    r = await admin.post("/containers/new", {"image": IMAGE, "name": "admins"}, headers=HX)
    assert r.status_code == 200
    own = await Ownership.objects.aget(owner=admin_user_)
    instructor = await client_of(teacher)
    assert (await instructor.get(f"/containers/{own.container_id}/")).status_code == 404
    table = (await instructor.get("/containers/table")).content.decode()
    assert own.container_id[:12] not in table
    # nor reset anyone but a learner (which would remove their containers)
    r = await instructor.post(f"/class/{admin_user_.get_username()}/reset", headers=HX)
    assert r.status_code == 403 and "is not a learner" in r.content.decode()
    assert await Ownership.objects.filter(owner=admin_user_).aexists()
    r = await instructor.post("/class/nobody/reset", headers=HX)
    assert r.status_code == 404


def test_disk_sizes_are_in_the_units_the_refusals_use() -> None:
    """The meter and the engine's quota refusal say the same thing: binary units, KiB."""
    from webui.templatetags.gantry_text import iec_size

    sizes = [iec_size(n).replace("\xa0", " ") for n in (0, 1023, 1536, 40_000, 1 << 30, None)]
    assert sizes == ["0 bytes", "1023 bytes", "1.5 KiB", "39.1 KiB", "1.0 GiB", "0 bytes"]
    assert iec_size(1536) == "1.5\xa0KiB"  # never split across lines
