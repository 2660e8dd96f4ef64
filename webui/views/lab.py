"""The lab (/lab/): the hands-on exercise Gantry grew from, as a guided page whose checks the
engine evaluates from real state; and, on every container page, the container as the lab's
steps (done / next, with the podman and low-level commands each amounted to) and its timeline.

A check turns green by itself: the page re-reads the checks when an engine event arrives
(htmx, on `gantry:container`) and every few seconds (a file created on the host makes no
event). A milestone stays green once reached; the web remembers when (LabRun.reached).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, cast

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from engine.errors import EngineError
from engine.protocol import LAB_CHECKS, verbs
from webui import engine_client
from webui.access import avisible_containers
from webui.answers import error_text
from webui.models import AuditEvent, LabRun
from webui.views.common import engine_action, error_response
from webui.views.containers import container_header

DEFAULT_IMAGE = os.environ.get(
    "GANTRY_LAB_IMAGE",
    f"127.0.0.1:{os.environ.get('GANTRY_REGISTRY_PORT', '5000')}/gantry/on-off:latest",
)
# What to do for each check, in Gantry and with podman.
HOWTO: dict[str, tuple[str, str]] = {
    "pulled": (
        "Images → pull the lab image (tick “skip TLS verification”: the demo registry is "
        "plain http on loopback).",
        "podman pull --tls-verify=false {image}",
    ),
    "created": (
        "Containers → Create container from the lab image, with the volume /mnt:/mnt.",
        "podman create -v /mnt:/mnt:Z --name {name} {image}",
    ),
    "test_file": (
        "Files tab → New file “test” (the overlay is mounted for you).",
        "touch $(podman mount {name})/test",
    ),
    "config": (
        "Spec tab → Generate config.json (or just start: the first start writes it).",
        "podman init {name}",
    ),
    "first_exit": (
        "Run tab → Start. /mnt/on does not exist, so the image exits at once: Exited (0).",
        "podman start {name}",
    ),
    "mnt_on": (
        "Create /mnt/on on the host (button below, or `touch` on the host).",
        "touch /mnt/on",
    ),
    "top_running": ("Run tab → Start again. Now it runs top: Up.", "podman start {name}"),
    "exec_saw_test": (
        "Terminal tab → New shell, type `ls /`: `test` is there.",
        "podman exec -it {name} bash   # then: ls",
    ),
    "gone": ("Run tab → Kill, then Remove.", "podman kill {name}; podman rm {name}"),
}


async def _run_for(user: Any) -> LabRun | None:
    return await LabRun.objects.filter(user=user).order_by("-started_at").afirst()


@require_GET
async def lab_page(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    run = await _run_for(user)
    return render(
        request,
        "lab/index.html",
        {
            "nav": "lab",
            "run": run,
            "default_image": DEFAULT_IMAGE,
        },
    )


@require_POST
async def lab_start(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    image = (request.POST.get("image") or DEFAULT_IMAGE).strip()[:512]
    await LabRun.objects.acreate(user=cast(Any, user), image=image)
    return redirect("ui-lab")


async def follow_new_container(user: Any, row: dict[str, Any]) -> None:
    """A container just made through the web: if it is the first from the image of the
    user's lab run, the lab follows it from now on, whether the Lab page is open or not
    (what it does is then read from the engine, which keeps it: engine.runtime.history)."""
    run = await _run_for(user)
    if run is None or run.container_id or row.get("Created", 0) + 1 < run.started_at.timestamp():
        return
    try:
        image = await engine_client.request(
            verbs.IMAGE_INSPECT, verbs.Image(image=run.image), user=user, timeout=5
        )
    except EngineError:
        return
    if str(image.get("Id", "")).removeprefix("sha256:") == row.get("ImageID"):
        run.container_id, run.container_name = row["Id"], row["Names"][0]
        await run.asave(update_fields=["container_id", "container_name"])


async def _find_container(user: Any, run: LabRun, image_id: str) -> None:
    """The lab follows the newest container the user made from the lab image since the run
    started (owned by them, through the web)."""
    if run.container_id or not image_id:
        return
    mine = {
        o.container_id
        for o in await avisible_containers(user)
        if o.owner_id == user.pk and o.created_at >= run.started_at
    }
    if not mine:
        return
    try:
        listed = await engine_client.request(
            verbs.CONTAINER_LIST, verbs.ListContainers(ids=sorted(mine)), user=user, timeout=5
        )
    except EngineError:
        return
    candidates = [c for c in listed if c.get("Id") in mine and c.get("ImageID") == image_id]
    if candidates:
        newest = max(candidates, key=lambda c: c.get("Created", 0))
        run.container_id, run.container_name = newest["Id"], newest["Names"][0]
        await run.asave(update_fields=["container_id", "container_name"])


@require_GET
@never_cache
async def lab_checks(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    run = await _run_for(user)
    if run is None:
        return HttpResponse(status=204)
    error = ""
    args = verbs.LabCheck(image=run.image, container=run.container_id)
    try:
        state = await engine_client.request(verbs.LAB_CHECK, args, user=user, timeout=5)
        await _find_container(user, run, state["facts"].get("image_id", ""))
        if run.container_id and not state["facts"].get("container"):
            args = verbs.LabCheck(image=run.image, container=run.container_id)
            state = await engine_client.request(verbs.LAB_CHECK, args, user=user, timeout=5)
        now = timezone.now().isoformat()
        checks = dict(state["checks"])
        # the lab follows a container only once it was made: it was created, whatever it
        # did since (a learner who was not on this page at that moment still gets the step)
        checks["created"] = checks.get("created") or bool(run.container_id)
        fresh = {k: now for k, ok in checks.items() if ok and k not in run.reached}
        if fresh:
            run.reached = run.reached | fresh
            await run.asave(update_fields=["reached"])
    except EngineError as err:
        state, error = {"checks": {}, "facts": {}}, error_text(err)
    rows, next_found = [], False
    for key, title in LAB_CHECKS:
        done = key in run.reached
        is_next = not done and not next_found
        next_found = next_found or is_next
        how, podman = HOWTO[key]
        rows.append(
            {
                "key": key,
                "title": title,
                "done": done,
                "next": is_next,
                "at": run.reached.get(key, ""),
                "how": how,
                "podman": podman.format(image=run.image, name=run.container_name or "on-off"),
            }
        )
    response = render(
        request,
        "lab/checks.html",
        {
            "run": run,
            "rows": rows,
            "error": error,
            "facts": state.get("facts", {}),
            "all_done": all(r["done"] for r in rows),
        },
    )
    return response


@require_POST
async def lab_touch_on(request: HttpRequest) -> HttpResponse:
    """The lab's `touch /mnt/on`, done by the engine in the volume's host directory."""
    user = await request.auser()
    run = await _run_for(user)
    if run is None or not run.container_id:
        return HttpResponse(
            "create the lab container first", status=409, content_type="text/plain; charset=utf-8"
        )
    user, own, _ = await container_header(request, run.container_id)
    try:
        await engine_action(
            user,
            verbs.LAB_VOLUME_TOUCH,
            verbs.VolumeTouch(id=run.container_id, destination="/mnt", name="on"),
            target=run.container_id,
            node=own.node,
            done=lambda result: {"path": result["path"]},
        )
    except EngineError as err:
        return error_response(err)
    return trigger_client_event(HttpResponse(status=204), "gantry:container")


# -- a container as the lab's steps, and its timeline ---------------------------------------
@require_GET
@never_cache
async def container_steps(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, _ = await container_header(request, container_id)
    try:
        described = await engine_client.request(
            verbs.LAB_STEPS, verbs.Id(id=container_id), user=user, node=own.node
        )
    except EngineError as err:
        return render(request, "lab/steps.html", {"error": error_text(err)})
    next_found = False
    for step in described["steps"]:
        step["next"] = not step["done"] and not next_found
        next_found = next_found or step["next"]
    response = render(request, "lab/steps.html", {"d": described, "container_id": container_id})
    return response


@require_GET
async def container_timeline(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    events = [
        e
        async for e in AuditEvent.objects.filter(target=container_id)
        .select_related("user")
        .order_by("at")[:500]
    ]
    rows: list[dict[str, Any]] = [
        {
            "at": e.at,
            "who": e.user.get_username() if e.user else "(deleted user)",
            "what": e.action,
            "ok": e.ok,
            "error": e.error,
            "ms": e.duration_ms,
        }
        for e in events
    ]
    state = info.get("State", {})
    for label, stamp in (
        ("started (engine)", state.get("StartedAt")),
        ("finished (engine)", state.get("FinishedAt")),
    ):
        when = _parse_time(stamp)
        if when is not None:
            detail = f"exit code {state.get('ExitCode')}" if "finished" in label else ""
            rows.append(
                {
                    "at": when,
                    "who": "engine",
                    "what": label,
                    "ok": True,
                    "error": detail,
                    "ms": None,
                }
            )
    rows.sort(key=lambda r: r["at"])
    return render(request, "lab/timeline.html", {"rows": rows})


def _parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str) or value.startswith("0001"):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- the learner's host files (their sandbox) --------------------------------------------------
async def _sandbox_page(request: HttpRequest, status: int = 200, **extra: Any) -> HttpResponse:
    user = await request.auser()
    ctx: dict[str, Any] = {"nav": "lab"} | extra
    try:
        ctx["listing"] = await engine_client.request(verbs.SANDBOX_LIST, verbs.NoArgs(), user=user)
    except EngineError as err:
        ctx["error"] = ctx.get("error") or error_text(err)
    return render(request, "lab/host_files.html", ctx, status=status)


@require_GET
@never_cache
async def host_files(request: HttpRequest) -> HttpResponse:
    """Your sandbox: what your containers' -v /mnt:/mnt and the like bind, on the host."""
    return await _sandbox_page(request)


@require_POST
async def host_files_touch(request: HttpRequest) -> HttpResponse:
    """The seed's `touch /mnt/on`, by hand, in the learner's own sandbox."""
    user = await request.auser()
    unsafe_path = request.POST.get("path", "").strip()
    try:
        made = await engine_action(
            user,
            verbs.SANDBOX_TOUCH,
            verbs.SandboxPath(path=unsafe_path),
            target=unsafe_path[:128],
            done=lambda reply: {"path": reply["path"]},
        )
    except EngineError as err:
        return await _sandbox_page(request, status=200, error=error_text(err))
    return await _sandbox_page(request, touched=made["path"])


urlpatterns: list[URLPattern | URLResolver] = [
    path("lab/", lab_page, name="ui-lab"),
    path("lab/start", lab_start, name="ui-lab-start"),
    path("lab/checks", lab_checks, name="ui-lab-checks"),
    path("lab/touch-on", lab_touch_on, name="ui-lab-touch-on"),
    path("lab/host-files", host_files, name="ui-host-files"),
    path("lab/host-files/touch", host_files_touch, name="ui-host-files-touch"),
    path("containers/<str:container_id>/steps", container_steps, name="ui-container-steps"),
    path(
        "containers/<str:container_id>/timeline", container_timeline, name="ui-container-timeline"
    ),
]
