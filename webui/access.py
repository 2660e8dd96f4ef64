"""Who may see and touch what. Every view and consumer asks here; nothing else decides."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from webui.models import Ownership


def owns_container(user: Any, container_id: str) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    return Ownership.objects.filter(container_id=container_id, owner=user).exists()


user_owns_container = database_sync_to_async(owns_container)
