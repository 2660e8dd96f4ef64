from __future__ import annotations

from django.apps import AppConfig


class WebuiConfig(AppConfig):
    name = "webui"
    verbose_name = "Gantry"

    def ready(self) -> None:
        from webui import signals  # noqa: F401
