"""What every Gantry websocket does first: refuse anonymous users, join the per-session group
so that logging out closes the socket, and re-check the session now and then (expiry)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.sessions.backends.base import SessionBase

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_MESSAGE = 4400
CLOSE_LOGGED_OUT = 4401
SESSION_RECHECK_SECONDS = 60.0


def session_group(session_key: str) -> str:
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


class AuthedJsonConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Base consumer: ``self.user`` is an authenticated user once ``authed_connect`` runs."""

    groups_joined: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        session: SessionBase | None = self.scope.get("session")
        self.groups_joined = []
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        self.session_key = session.session_key
        await self.join(session_group(self.session_key))
        self._recheck = asyncio.create_task(self._recheck_session())
        await self.authed_connect()

    async def authed_connect(self) -> None:
        await self.accept()

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "_recheck", None)
        if task is not None:
            task.cancel()
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_logout(self, event: dict[str, Any]) -> None:
        """Sent to the session group when this session logs out."""
        await self.close(code=CLOSE_LOGGED_OUT)

    async def _recheck_session(self) -> None:
        while True:
            await asyncio.sleep(SESSION_RECHECK_SECONDS)
            if not await self._session_alive():
                await self.close(code=CLOSE_LOGGED_OUT)
                return

    async def _session_alive(self) -> bool:
        return bool(await database_sync_to_async(self._session_alive_sync)())

    def _session_alive_sync(self) -> bool:
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        return Session.objects.filter(
            session_key=self.session_key, expire_date__gt=timezone.now()
        ).exists()


class NotFoundConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Any other websocket path: closed with 4404 instead of an error in the router."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
