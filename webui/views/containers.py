"""The containers pages: the `podman ps -a` table (live), the create form, the container page
(header + tabs) and its Storage tab (layer stack, overlay options, mount/unmount).

Every view that touches a container asks webui.access first (the owner, or an admin; anyone
else gets a 404). Engine calls go to the container's own node. Actions are POST only (CSRF
applies) and are written to the audit log.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from typing import Any, cast

from asgiref.sync import sync_to_async
from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from engine.errors import EngineError, EngineOfflineError, ImageNotFoundError, NotFoundError
from engine.protocol import nodes, verbs
from webui import engine_client, placement, users
from webui.access import aget_container_for_user, avisible_containers
from webui.answers import error_text
from webui.models import Ownership
from webui.views.common import HtmxHttpRequest, audit, engine_action, error_response, htmx_redirect

LIST_TIMEOUT = 5.0
PULL_WAIT = 600.0  # seconds the create form waits for a pull of its image on the chosen node
PULL_POLL = 0.3


async def container_header(
    request: HttpRequest, container_id: str
) -> tuple[Any, Ownership, dict[str, Any]]:
    """(user, ownership, podman-inspect of the container) for a page of one container."""
    user = await request.auser()
    own = await aget_container_for_user(user, container_id)
    try:
        info = await engine_client.request(
            verbs.CONTAINER_INSPECT, verbs.Id(id=container_id), user=user, node=own.node
        )
    except NotFoundError:
        info = {"Id": container_id, "Name": own.name, "State": {"Status": "removed"}}
    return user, own, info


# -- the list --------------------------------------------------------------------------------
@require_GET
def container_list(request: HttpRequest) -> HttpResponse:
    return render(request, "containers/list.html", {"nav": "containers"})


def _by_node(
    owned: list[Ownership], records: list[dict[str, Any]], admin: bool
) -> dict[str, list[Ownership]]:
    """The nodes to ask, each with the containers this user may see there: those of their
    ownerships; for an admin also every online node (its CLI-made containers too)."""
    by_node: dict[str, list[Ownership]] = {}
    for own in owned:
        by_node.setdefault(own.node, []).append(own)
    if admin:
        for name in [engine_client.node_name(), *placement.online_names(records)]:
            by_node.setdefault(name, [])
    return by_node


def _offline_rows(node: str, owns: list[Ownership]) -> list[dict[str, Any]]:
    """Rows for the containers of a node that is offline: what the web knows of them (name,
    id), their state unknown, their actions disabled. Nothing is asked of the node."""
    return [
        {"Id": o.container_id, "Names": [o.name], "Node": node, "State": "node-offline",
         "Status": "node offline", "node_offline": True, "Created": o.created_at.timestamp()}
        for o in owns
    ]  # fmt: skip


async def _node_rows(
    user: Any, node: str, owns: list[Ownership], records: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], str]:
    """This node's rows of the table, and what went wrong asking it ("" if nothing)."""
    record = records.get(node)
    if record is not None and record.get("Status") != nodes.ONLINE:
        return _offline_rows(node, owns), placement.offline_reason(record)
    ids = None if user.is_superuser else [o.container_id for o in owns]  # admin: all of them
    try:
        listed = await engine_client.request(
            verbs.CONTAINER_LIST, verbs.ListContainers(ids=ids), user=user, node=node,
            timeout=LIST_TIMEOUT,
        )  # fmt: skip
    except EngineError as err:  # not (yet) offline on record, but not answering either
        return _offline_rows(node, owns), f"engine {node}: {error_text(err)}"
    for row in listed:
        row["Node"] = node
    return listed, ""


@require_GET
@never_cache
async def container_table(request: HttpRequest) -> HttpResponse:
    """The `podman ps -a` rows of the containers this user may see, from every node they
    live on. Refreshed by htmx whenever a container event arrives."""
    user = await request.auser()
    records = await placement.anodes()
    by_node = _by_node(await avisible_containers(user), records, user.is_superuser)
    by_name = {str(r.get("Name")): r for r in records}
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for node, owns in sorted(by_node.items()):
        listed, error = await _node_rows(user, node, owns, by_name)
        if error:
            errors.append(error)
        owners = {o.container_id: o.owner.get_username() for o in owns}
        for row in listed:
            row["owner"] = owners.get(row["Id"], "(cli)")
            row["command_text"] = " ".join(row.get("Command") or [])
            rows.append(row)
    rows.sort(key=lambda r: r.get("Created", 0), reverse=True)
    context = {
        "rows": rows, "errors": errors, "show_owner": user.is_superuser,
        "show_node": len(by_node) > 1 or len(records) > 1,
    }  # fmt: skip
    return render(request, "containers/table.html", context)


# -- create ----------------------------------------------------------------------------------
class CreateForm(forms.Form):
    image = forms.CharField(max_length=512)
    name = forms.CharField(max_length=128, required=False)
    command = forms.CharField(max_length=8192, required=False)
    entrypoint = forms.CharField(max_length=8192, required=False)
    env = forms.CharField(max_length=65536, required=False, widget=forms.Textarea)
    workdir = forms.CharField(max_length=4096, required=False)
    user = forms.CharField(max_length=130, required=False)
    tty = forms.BooleanField(required=False)
    interactive = forms.BooleanField(required=False)
    volumes = forms.CharField(max_length=65536, required=False, widget=forms.Textarea)
    node = forms.CharField(max_length=63, required=False)  # "any" or "": placement chooses
    network = forms.CharField(max_length=64, required=False)  # "": the engine's default
    publish = forms.CharField(max_length=4096, required=False, widget=forms.Textarea)

    def _split(self, field: str) -> list[str]:
        try:
            return shlex.split(self.cleaned_data[field])
        except ValueError as err:
            raise forms.ValidationError(f"{field}: {err}") from err

    def engine_args(self) -> verbs.Create:
        """The container.create arguments (the engine checks them all again)."""
        data = self.cleaned_data
        return verbs.Create(
            image=data["image"].strip(),
            name=data["name"].strip(),
            command=self._split("command"),
            entrypoint=self._split("entrypoint") if data["entrypoint"].strip() else None,
            env=[line.strip() for line in data["env"].splitlines() if line.strip()],
            workdir=data["workdir"].strip(),
            user=data["user"].strip(),
            tty=data["tty"],
            interactive=data["interactive"],
            volumes=[line.strip() for line in data["volumes"].splitlines() if line.strip()],
            network=data["network"].strip(),
            publish=data["publish"].replace(",", " ").split(),
        )


def podman_create_line(args: verbs.Create) -> str:
    """The `podman create` command that asks for the same container."""
    parts = ["podman", "create"]
    if args.name:
        parts += ["--name", args.name]
    for v in args.volumes:
        parts += ["-v", v]
    for e in args.env:
        parts += ["-e", e]
    if args.workdir:
        parts += ["-w", args.workdir]
    if args.user:
        parts += ["-u", args.user]
    if args.entrypoint is not None:
        parts += ["--entrypoint", " ".join(args.entrypoint)]
    if args.network:
        parts += ["--network", args.network]
    for p in args.publish:
        parts += ["-p", p]
    if args.tty:
        parts.append("-t")
    if args.interactive:
        parts.append("-i")
    parts.append(args.image)
    parts += args.command
    return shlex.join(parts)


async def _network_names(user: Any) -> list[str]:
    """The networks for the form's Network field (the default one first)."""
    try:
        listed = await engine_client.request(
            verbs.NETWORK_LIST, verbs.NoArgs(), user=user, timeout=3
        )
    except EngineError:
        return []
    return [str(n["name"]) for n in listed]


async def _images(user: Any) -> list[str]:
    """Image names for the form's suggestions (empty if the images part is not there)."""
    try:
        listed = await engine_client.request(verbs.IMAGE_LIST, verbs.NoArgs(), user=user, timeout=3)
    except EngineError:
        return []
    out: list[str] = []
    for image in listed if isinstance(listed, list) else []:
        if isinstance(image, dict):
            names = image.get("names") or image.get("Names") or []
            out += [str(n) for n in names] if isinstance(names, list) else []
    return sorted(set(out))


async def _create_there(user: Any, args: verbs.Create, node: str) -> Any:
    """container.create on ``node``; an image that node lacks is pulled there first (images
    are per node: the form's image may have been pulled on another)."""
    try:
        return await engine_client.request(verbs.CONTAINER_CREATE, args, user=user, node=node)
    except ImageNotFoundError:
        await _pull_there(user, args.image, node)
    return await engine_client.request(verbs.CONTAINER_CREATE, args, user=user, node=node)


async def _pull_there(user: Any, image: str, node: str) -> None:
    """Pull ``image`` on ``node`` and wait for the pull to end (within PULL_WAIT)."""
    job = await engine_client.request(verbs.IMAGE_PULL, verbs.Pull(ref=image), user=user, node=node)
    deadline = time.monotonic() + PULL_WAIT
    while job.get("state") not in ("done", "error"):
        if time.monotonic() > deadline:
            raise EngineOfflineError(f"pulling {image[:200]} on node {node} takes too long")
        await asyncio.sleep(PULL_POLL)
        found = await engine_client.request(
            verbs.IMAGE_PULLS, verbs.Pulls(job=job["job"]), user=user, node=node
        )
        job = found[0] if found else {"state": "error", "error": "the pull was forgotten"}
    if job["state"] == "error":
        raise ImageNotFoundError(
            f"image {image[:200]} is not on node {node}, and pulling it failed: {job.get('error')}"
        )


@require_http_methods(["GET", "POST"])
async def container_new(request: HtmxHttpRequest) -> HttpResponse:
    user = await request.auser()
    form = CreateForm(request.POST if request.method == "POST" else None)
    records = await placement.anodes()
    ctx: dict[str, Any] = {
        "nav": "containers", "form": form, "images": await _images(user), "nodes": records,
        "networks": await _network_names(user),
    }  # fmt: skip
    if request.method == "POST" and form.is_valid():
        started = time.monotonic()
        try:
            args = form.engine_args()
            owned = Ownership.objects.filter(owner=cast(Any, user)).only("node")
            mine = [o.node async for o in owned]
            role = await sync_to_async(users.role_of)(user)
            allowed = placement.pinned(role, user.get_username())
            node = placement.choose(records, form.cleaned_data["node"], mine, allowed)
            row = await _create_there(user, args, node)
        except forms.ValidationError as err:
            ctx["error"] = "; ".join(err.messages)
        except EngineError as err:
            ctx["error"] = error_text(err)
            ctx["error_field"] = str(err.details.get("field", ""))
            await audit(user, "container.create", args.image, started, err.message)
        else:
            await Ownership.objects.acreate(
                container_id=row["Id"],
                name=row["Names"][0],
                node=row.get("Node") or node,
                owner=cast(Any, user),
            )
            from webui.views.lab import follow_new_container  # (lab.py imports this module)

            await follow_new_container(user, row)
            await audit(
                user,
                "container.create",
                row["Id"],
                started,
                image=args.image,
                name=row["Names"][0],
                podman=podman_create_line(args),
            )
            return htmx_redirect(request, reverse("ui-container-detail", args=[row["Id"]]))
    # htmx swaps only 2xx answers: the form with its errors comes back as 200 to htmx
    status = 400 if request.method == "POST" and not request.htmx else 200
    template = "containers/new.html"
    return render(request, template, ctx, status=status)


# -- one container ---------------------------------------------------------------------------
@require_GET
async def container_detail(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    config = info.get("Config", {})
    args = verbs.Create(
        name=info.get("Name", ""),
        image=info.get("ImageName", ""),
        command=config.get("Cmd") or [],
        volumes=[
            f"{m.get('Requested') or m['Source']}:{m['Destination']}"
            f"{'' if m.get('RW', True) else ':ro'}"
            for m in info.get("Mounts") or []
        ],
        workdir=config.get("WorkingDir", ""),
        user=config.get("User", ""),
        tty=config.get("Tty", False),
        interactive=config.get("OpenStdin", False),
        network=(info.get("HostConfig") or {}).get("NetworkMode", ""),
        publish=[
            f"{b['HostIp']}:{b['HostPort']}:{port}"
            for port, bound in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items()
            for b in bound
        ],
    )
    return render(
        request,
        "containers/detail.html",
        {
            "nav": "containers",
            "tab": "overview",
            "c": info,
            "container_id": container_id,
            "own": own,
            "podman": podman_create_line(args),
        },
    )


async def _storage(
    request: HttpRequest, container_id: str
) -> tuple[Any, Ownership, dict[str, Any]]:
    user = await request.auser()
    own = await aget_container_for_user(user, container_id)
    data = await engine_client.request(
        verbs.CONTAINER_STORAGE, verbs.Id(id=container_id), user=user, node=own.node
    )
    return user, own, data


@require_GET
async def container_storage(request: HttpRequest, container_id: str) -> HttpResponse:
    user, own, info = await container_header(request, container_id)
    try:
        _, _, storage = await _storage(request, container_id)
        error = ""
    except EngineError as err:
        storage, error = {}, error_text(err)
    return render(
        request,
        "containers/tab_storage.html",
        {
            "nav": "containers",
            "tab": "storage",
            "c": info,
            "container_id": container_id,
            "s": storage,
            "error": error,
        },
    )


async def _panel(request: HttpRequest, container_id: str) -> HttpResponse:
    try:
        _, _, storage = await _storage(request, container_id)
    except EngineError as err:
        return error_response(err)
    response = render(
        request, "containers/storage_panel.html", {"s": storage, "container_id": container_id}
    )
    return response


@require_GET
@never_cache
async def storage_panel(request: HttpRequest, container_id: str) -> HttpResponse:
    """The Storage tab's panel alone (refreshed on container events)."""
    return await _panel(request, container_id)


async def _mount_action(request: HttpRequest, container_id: str, mount: bool) -> HttpResponse:
    user = await request.auser()
    own = await aget_container_for_user(user, container_id)
    try:
        if mount:
            args = verbs.Id(id=container_id)
            await engine_action(
                user, verbs.CONTAINER_MOUNT, args, target=container_id, node=own.node
            )
        else:
            force = request.POST.get("force") == "1"
            await engine_action(
                user,
                verbs.CONTAINER_UNMOUNT,
                verbs.Force(id=container_id, force=force),
                target=container_id,
                node=own.node,
            )
    except EngineError as err:
        return error_response(err)
    return await _panel(request, container_id)


@require_POST
async def container_mount(request: HttpRequest, container_id: str) -> HttpResponse:
    return await _mount_action(request, container_id, mount=True)


@require_POST
async def container_unmount(request: HttpRequest, container_id: str) -> HttpResponse:
    return await _mount_action(request, container_id, mount=False)


@require_POST
async def container_remove(request: HtmxHttpRequest, container_id: str) -> HttpResponse:
    """Remove a container (the engine stops a running one first only with force)."""
    user = await request.auser()
    own = await aget_container_for_user(user, container_id)
    started = time.monotonic()
    force = request.POST.get("force") == "1"
    try:
        await engine_client.request(
            verbs.CONTAINER_REMOVE,
            verbs.Force(id=container_id, force=force),
            user=user,
            node=own.node,
        )
    except NotFoundError:
        pass  # gone already: forget it here too
    except EngineError as err:
        await audit(user, "container.remove", container_id, started, err.message)
        return error_response(err)
    await Ownership.objects.filter(pk=own.pk).adelete()
    await audit(user, "container.remove", container_id, started, name=own.name)
    return htmx_redirect(request, reverse("ui-containers"))


urlpatterns: list[URLPattern | URLResolver] = [
    path("containers/", container_list, name="ui-containers"),
    path("containers/table", container_table, name="ui-containers-table"),
    path("containers/new", container_new, name="ui-container-new"),
    path("containers/<str:container_id>/", container_detail, name="ui-container-detail"),
    path("containers/<str:container_id>/storage/", container_storage, name="ui-container-storage"),
    path("containers/<str:container_id>/storage/panel", storage_panel, name="ui-storage-panel"),
    path("containers/<str:container_id>/mount", container_mount, name="ui-container-mount"),
    path("containers/<str:container_id>/unmount", container_unmount, name="ui-container-unmount"),
    path("containers/<str:container_id>/remove", container_remove, name="ui-container-remove"),
]
