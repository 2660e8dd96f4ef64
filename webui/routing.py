from __future__ import annotations

from django.urls import path, re_path

from webui.consumers.base import NotFoundConsumer
from webui.consumers.events import EventsConsumer
from webui.consumers.terminal import TerminalConsumer

websocket_urlpatterns = [
    path("ws/events/", EventsConsumer.as_asgi()),
    path("ws/containers/<str:container_id>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/containers/<str:container_id>/exec/<str:exec_id>/", TerminalConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
