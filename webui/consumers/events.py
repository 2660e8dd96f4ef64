"""/ws/events/: what every page listens to. Engine heartbeats (so the header can say
"engine offline" within seconds) and state changes of the user's containers and pulls.
The browser only receives; anything it sends closes the socket."""

from __future__ import annotations

from typing import Any

from engine.protocol import EVENTS_GROUP, NODES_GROUP
from webui import engine_client, pullcards
from webui.consumers.base import CLOSE_BAD_MESSAGE, AuthedJsonConsumer


class EventsConsumer(AuthedJsonConsumer):
    async def authed_connect(self) -> None:
        await self.join(NODES_GROUP)
        await self.join(EVENTS_GROUP)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.close(code=CLOSE_BAD_MESSAGE)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        await self.close(code=CLOSE_BAD_MESSAGE)

    async def engine_heartbeat(self, event: dict[str, Any]) -> None:
        """This web's own node's heartbeats (the header's badge and the footer are about the
        engine this web stands by; every node's state is on the Nodes page). With several
        nodes on one Redis, forwarding all of them kept the badge "online" while this web's
        own engine was gone, and the footer named whichever node beat last."""
        if event.get("node") != engine_client.node_name():
            return
        await self.send_json(
            {
                "type": "heartbeat",
                "node": event.get("node"),
                "time": event.get("time"),
                "info": event.get("info", {}),
            }
        )

    async def engine_event(self, event: dict[str, Any]) -> None:
        if not await self.may_see(event):
            return
        message = {k: v for k, v in event.items() if k != "type"} | {"type": "event"}
        if event.get("kind") == "pull" and isinstance(event.get("job"), str):
            message["html"] = pullcards.card_html(event)  # the page swaps it in as it is
        await self.send_json(message)

    async def may_see(self, event: dict[str, Any]) -> bool:
        """Container events only reach their owner (or an admin). A "yes" is kept for the life
        of the socket (ownership does not change); a "no" is asked again, because the web
        records a new container's owner just after the engine's create event."""
        container_id = event.get("container")
        if not container_id:
            return True
        cache: dict[str, bool] = self.__dict__.setdefault("_seen", {})
        if cache.get(str(container_id)):
            return True
        from webui.access import user_owns_container

        allowed = bool(await user_owns_container(self.user, str(container_id)))
        if allowed and len(cache) < 10_000:
            cache[str(container_id)] = True
        return allowed
