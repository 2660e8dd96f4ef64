"""python manage.py engine: the privileged engine worker.

The only place where the engine meets Channels: it takes the configured channel layer and
hands it to engine.rpc.worker.serve(). Runs as root; the web never does."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.core import Engine
from engine.errors import EngineError
from engine.rpc.presence import Presence
from engine.rpc.worker import serve


class Command(BaseCommand):
    help = "Run the engine worker (root): consume engine requests from the channel layer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--root", help="state root (default $GANTRY_ROOT or /var/lib/gantry)")
        parser.add_argument("--node", help="node name (default $GANTRY_NODE or the host name)")
        parser.add_argument("--config", help="engine config file")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            engine = Engine.from_env(
                root=options["root"], node=options["node"], config_file=options["config"]
            )
        except EngineError as err:
            raise CommandError(err.message) from err
        layer = get_channel_layer()
        if layer is None:
            raise CommandError("no channel layer configured (CHANNEL_LAYERS)")
        # In the node registry when the layer is Redis's (a memory layer is one process).
        presence = None
        if "Redis" in type(layer).__name__:
            presence = Presence.from_url(engine, settings.REDIS_URL)
        try:
            asyncio.run(self._run(layer, engine, presence))
        except EngineError as err:
            raise CommandError(err.message) from err

    async def _run(self, layer: Any, engine: Engine, presence: Presence | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(layer, engine, stop, on_ready=_say_ready, presence=presence)


def _say_ready() -> None:
    """$GANTRY_READY_FILE (set by launch/run.py): written once the worker takes requests, so
    the launcher says "ready" only then (its start-up sweep is done)."""
    ready = os.environ.get("GANTRY_READY_FILE")
    if ready:
        Path(ready).write_text(f"{os.getpid()}\n")
