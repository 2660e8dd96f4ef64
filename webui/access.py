"""Who may see and touch what. Every view and consumer asks here; nothing else decides."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from webui.models import Ownership


def sees_everyone(user: Any) -> bool:
    """Admins and instructors see (and may help with) every user's containers."""
    from webui.users import sees_everyone as everyone

    return bool(getattr(user, "is_authenticated", False)) and everyone(user)


def owns_container(user: Any, container_id: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if sees_everyone(user):
        return True
    return Ownership.objects.filter(container_id=container_id, owner=user).exists()


user_owns_container = database_sync_to_async(owns_container)


def get_container_for_user(user: Any, container_id: str) -> Ownership:
    """The ownership record of a container the user may touch (their own, or any for an
    admin). Http404 otherwise: another user's container does not exist for them."""
    from django.http import Http404

    from engine.protocol import CONTAINER_ID_RE

    if not getattr(user, "is_authenticated", False) or not CONTAINER_ID_RE.match(container_id):
        raise Http404("no such container")
    found = Ownership.objects.filter(container_id=container_id).select_related("owner").first()
    if found is None and user.is_superuser:
        # made outside the web (the CLI): an admin may still look, on this web's node
        from webui.engine_client import node_name

        return Ownership(container_id=container_id, node=node_name())
    if found is None or not (found.owner_id == user.pk or sees_everyone(user)):
        raise Http404("no such container")
    return found


aget_container_for_user = database_sync_to_async(get_container_for_user)


def visible_containers(user: Any) -> list[Ownership]:
    """The ownership records a user may see: their own, or every one for an admin."""
    if not getattr(user, "is_authenticated", False):
        return []
    rows = Ownership.objects.select_related("owner").order_by("-created_at")
    if not sees_everyone(user):
        rows = rows.filter(owner=user)
    return list(rows)


avisible_containers = database_sync_to_async(visible_containers)
