"""Logging out closes that session's websockets (terminals included)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver


@receiver(user_logged_out)
def close_session_sockets(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    from webui.users import close_session_sockets as close

    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        close(key)
