"""ASGI entry: Django for HTTP, Channels for websockets (authenticated, Origin-checked)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the apps loaded)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from webui.bodylimit import BodyLimit  # noqa: E402
from webui.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Bodies are capped before Django spools them to disk (webui/bodylimit.py).
        "http": BodyLimit(django_asgi_app, settings.GANTRY_MAX_REQUEST_BYTES),
        # The Origin check comes first: websockets carry cookies across sites and Django's CSRF
        # protection does not apply to them (cross-site websocket hijacking).
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
