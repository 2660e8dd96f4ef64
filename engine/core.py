"""The engine object: configuration plus the services built on it, created once and shared.

A service is any class whose constructor takes the Engine (``Store(engine)``); ``engine.get(Store)``
builds it on first use. This keeps the facade small: each module owns its service and nobody has
to edit a central class to add one.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TypeVar, cast

from engine.config import EngineConfig, load_config

T = TypeVar("T")


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._services: dict[type[Any], Any] = {}
        self._lock = threading.RLock()
        # Set when the worker shuts down; background threads watch it.
        self.stopping = threading.Event()
        # Identifies this engine process: heartbeats carry it, so clients see a restart.
        self.started = time.time()

    @classmethod
    def from_env(cls, **overrides: Any) -> Engine:
        return cls(load_config(**overrides))

    @property
    def root(self) -> Any:
        return self.config.root

    def get(self, service: type[T]) -> T:
        """The shared instance of ``service``, built with ``service(self)`` on first use."""
        with self._lock:
            found: Any = self._services.get(service)
            if found is None:
                factory: Any = service
                found = factory(self)
                self._services[service] = found
            return cast(T, found)

    def ensure_root(self) -> None:
        """Create the state root, readable by root only (a rootfs holds setuid binaries)."""
        self.config.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config.root.chmod(0o700)
