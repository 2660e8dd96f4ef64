"""Who may see and touch what. Every view and consumer asks here; nothing else decides."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from webui.models import Ownership


def sees_everyone(user: Any) -> bool:
    """Admins and instructors see (and may help with) other users' containers."""
    from webui.users import sees_everyone as everyone

    return bool(getattr(user, "is_authenticated", False)) and everyone(user)


def _may_see(user: Any, own: Ownership) -> bool:
    """Their own; every one for an admin; a non-admin's for an instructor (an admin's
    containers may bind real host paths: they stay the admins')."""
    if user.is_superuser or own.owner_id == user.pk:
        return True
    return sees_everyone(user) and not own.owner.is_superuser


def owns_container(user: Any, container_id: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    own = Ownership.objects.filter(container_id=container_id).select_related("owner").first()
    return own is not None and _may_see(user, own)


user_owns_container = database_sync_to_async(owns_container)


def get_container_for_user(user: Any, container_id: str) -> Ownership:
    """The ownership record of a container the user may touch (their own, a non-admin's for
    an instructor, any for an admin). Http404 otherwise: another user's container does not
    exist for them."""
    from django.http import Http404

    from engine.protocol import CONTAINER_ID_RE

    if not getattr(user, "is_authenticated", False) or not CONTAINER_ID_RE.match(container_id):
        raise Http404("no such container")
    found = Ownership.objects.filter(container_id=container_id).select_related("owner").first()
    if found is None and user.is_superuser:
        # made outside the web (the CLI): an admin may still look, on this web's node
        from webui.engine_client import node_name

        return Ownership(container_id=container_id, node=node_name())
    if found is None or not _may_see(user, found):
        raise Http404("no such container")
    return found


async def aget_container_for_user(user: Any, container_id: str) -> Ownership:
    """get_container_for_user, and for a container made outside the web (no ownership record:
    an admin's look at a CLI-made one) the node that holds it, asked of every online node."""
    own: Ownership = await database_sync_to_async(get_container_for_user)(user, container_id)
    if own._state.adding:  # not a saved record: made up for an admin above
        own.node = await node_holding(container_id)
    return own


async def node_holding(container_id: str) -> str:
    """The online node that has this container (this web's own if none says so)."""
    from engine.errors import EngineError
    from engine.protocol import verbs
    from webui import engine_client, placement

    candidates = await placement.nodes_to_ask()
    for node in candidates:
        try:
            await engine_client.request(
                verbs.CONTAINER_STATE, verbs.Id(id=container_id), node=node, timeout=2
            )
        except EngineError:
            continue
        return node
    return candidates[0]


def visible_containers(user: Any) -> list[Ownership]:
    """The ownership records a user may see: their own; every non-admin's for an
    instructor; every one for an admin."""
    if not getattr(user, "is_authenticated", False):
        return []
    rows = Ownership.objects.select_related("owner").order_by("-created_at")
    if user.is_superuser:
        return list(rows)
    if sees_everyone(user):
        return [own for own in rows if _may_see(user, own)]
    return list(rows.filter(owner=user))


avisible_containers = database_sync_to_async(visible_containers)
