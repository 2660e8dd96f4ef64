"""/class/: the instructors' (and admins') view of a class. One row per learner: the checks
of their lab done (N/9, and which), their lab container and its state, their disk against
their quota, their last activity, links to the container's pages, and "reset lab" (their
containers removed, their sandbox emptied, their lab to start again). The table reloads on
state events (live over the events websocket, coalesced by app.js into "gantry:changes", at
most one reload every 2 s however busy the class) and every 20 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from engine.errors import EngineError, NotFoundError, PolicyError
from engine.protocol import LAB_CHECKS, USER_NAME_RE, verbs
from engine.protocol.check import Verb
from webui import engine_client, users
from webui.answers import error_text
from webui.models import AuditEvent, LabRun, Ownership
from webui.views.common import audit, error_response

RUN_TIMEOUT = 5.0


async def _teacher(request: HttpRequest) -> Any:
    user = await request.auser()
    if not await sync_to_async(users.sees_everyone)(user):
        raise PermissionDenied("the class page is for instructors and admins")
    return user


def _learners() -> list[dict[str, Any]]:
    """Every active learner, with their latest lab run, their newest container (the one the
    row shows when they follow the seed without the Lab page) and their last action (four
    queries, whatever the size of the class)."""
    last = dict(
        AuditEvent.objects.values_list("user").annotate(at=Max("at")).values_list("user", "at")
    )
    people = list(users.learners())
    latest: dict[int, LabRun] = {}
    for run in LabRun.objects.filter(user__in=people).order_by("started_at", "pk"):
        latest[run.user_id] = run  # the newest wins
    newest: dict[int, str] = {}
    for own in Ownership.objects.filter(owner__in=people).order_by("created_at", "pk"):
        newest[own.owner_id] = own.container_id
    return [
        {"user": u, "run": latest.get(u.pk), "last": last.get(u.pk), "newest": newest.get(u.pk)}
        for u in people
    ]


def _container_of(learner: dict[str, Any]) -> str:
    """The container a learner's row shows: their lab's, else their newest ("" if none)."""
    run: LabRun | None = learner["run"]
    return (run.container_id if run else "") or learner["newest"] or ""


async def _row(viewer: Any, learner: dict[str, Any], states: dict[str, Any]) -> dict[str, Any]:
    """One learner's row: their lab's checks as the engine keeps them, merged into their run."""
    run: LabRun | None = learner["run"]
    row = {"name": learner["user"].get_username(), "last": learner["last"], "run": run}
    if run is None:
        return row | {"done": [], "count": 0, "container": states.get(_container_of(learner))}
    reached = dict(run.reached)
    try:
        args = verbs.LabCheck(image=run.image, container=run.container_id)
        state = await engine_client.request(verbs.LAB_CHECK, args, user=viewer, timeout=RUN_TIMEOUT)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        fresh = {k: now for k, ok in state["checks"].items() if ok and k not in reached}
        if fresh:
            run.reached = reached = reached | fresh
            await run.asave(update_fields=["reached"])
    except EngineError as err:
        row["error"] = error_text(err)
    done = [title for key, title in LAB_CHECKS if key in reached]
    return row | {"done": done, "count": len(done), "container": states.get(_container_of(learner))}


async def _keyed(viewer: Any, verb: Verb[Any, Any], args: Any, key: str) -> dict[str, Any]:
    """The rows a verb answers, by ``key``; none if the engine does not answer (the table
    then shows what the database knows)."""
    try:
        rows = await engine_client.request(verb, args, user=viewer, timeout=RUN_TIMEOUT)
    except EngineError:
        return {}
    return {row[key]: row for row in rows}


async def _table_context(viewer: Any) -> dict[str, Any]:
    learners = await sync_to_async(_learners)()
    ids = [cid for cid in map(_container_of, learners) if cid]
    states = await _keyed(viewer, verbs.CONTAINER_LIST, verbs.ListContainers(ids=ids), "Id")
    names = [n for n in (x["user"].get_username() for x in learners) if USER_NAME_RE.match(n)]
    # each learner's disk against the learners' quota (engine.storage.quotas)
    disks = await _keyed(viewer, verbs.SANDBOX_USAGE, verbs.SandboxUsage(names=names), "name")
    rows = list(await asyncio.gather(*(_row(viewer, learner, states) for learner in learners)))
    for row in rows:
        row["disk"] = disks.get(row["name"])
    return {"rows": rows, "total": len(LAB_CHECKS)}


@require_GET
async def class_page(request: HttpRequest) -> HttpResponse:
    viewer = await _teacher(request)
    return render(request, "class/index.html", {"nav": "class"} | await _table_context(viewer))


@require_GET
@never_cache
async def class_table(request: HttpRequest) -> HttpResponse:
    viewer = await _teacher(request)
    return render(request, "class/table.html", await _table_context(viewer))


@require_POST
async def reset_lab(request: HttpRequest, name: str) -> HttpResponse:
    """A learner's lab from the start: their containers removed, their sandbox emptied,
    their lab runs forgotten."""
    viewer = await _teacher(request)
    started = time.monotonic()
    try:
        learner = await sync_to_async(users.find)(name)
        if await sync_to_async(users.role_of)(learner) != users.LEARNER:
            raise PolicyError(f"{name} is not a learner: only a learner's lab is reset here")
        owned = [o async for o in Ownership.objects.filter(owner=learner)]
        for own in owned:
            remove = verbs.Force(id=own.container_id, force=True)
            try:
                await engine_client.request(
                    verbs.CONTAINER_REMOVE, remove, user=viewer, node=own.node, timeout=60
                )
            except NotFoundError:
                pass  # gone already
            await own.adelete()
        await engine_client.request(
            verbs.LAB_CLEAR_SANDBOX, verbs.Sandbox(name=name), user=viewer, timeout=60
        )
        await LabRun.objects.filter(user=learner).adelete()
    except EngineError as err:
        await audit(viewer, "lab.reset", name[:64], started, err.message)
        return error_response(err)
    await audit(viewer, "lab.reset", name, started, containers=len(owned))
    response = render(request, "class/table.html", await _table_context(viewer))
    return trigger_client_event(response, "gantry:container")


urlpatterns: list[URLPattern | URLResolver] = [
    path("class/", class_page, name="ui-class"),
    path("class/table", class_table, name="ui-class-table"),
    path("class/<str:name>/reset", reset_lab, name="ui-class-reset"),
]
