"""Logging out closes that session's websockets (terminals included)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from webui.consumers.base import session_group


@receiver(user_logged_out)
def close_session_sockets(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    key = getattr(getattr(request, "session", None), "session_key", None)
    layer = get_channel_layer()
    if not key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(key), {"type": "session.logout"})
    except Exception:  # logging out must work even when Redis is down
        import logging

        logging.getLogger("gantry.web").warning("could not close sockets of a logged-out session")
