"""Registry credentials, kept by the engine in <root>/auth.json (mode 0600, root only), in the
containers-auth.json shape podman uses: {"auths": {"<registry>": {"auth": base64(user:pass)}}}.

Credentials are keyed by the registry as written in image references (docker.io,
quay.io, 127.0.0.1:5000) and handed to registry.Client for that registry only: the client
sends them to that host and to its token realm, never across a redirect, to a foreign-layer
URL or to another registry. Nothing here ever returns a password to a caller outside the
engine (``list`` gives user names only).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import InvalidInputError
from engine.hostfs import atomic
from engine.hostfs.locks import locked
from engine.registry.refs import Reference, normalize_domain

MAX_USER = 256
MAX_PASSWORD = 4096


@dataclass(frozen=True)
class Login:
    registry: str
    username: str


class Credentials:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.root = Path(engine.config.root)
        self.path = self.root / "auth.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {"auths": {}}
        except (OSError, ValueError):
            return {"auths": {}}
        if not isinstance(data, dict) or not isinstance(data.get("auths"), dict):
            return {"auths": {}}
        return data

    def get(self, registry: str) -> tuple[str, str] | None:
        entry = self._read()["auths"].get(normalize_domain(registry))
        if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            return None
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def set(self, registry: str, username: str, password: str) -> Login:
        registry = normalize_domain(registry)
        if not username or len(username) > MAX_USER or ":" in username:
            raise InvalidInputError("username: 1-256 characters, no ':'")
        if not password or len(password) > MAX_PASSWORD:
            raise InvalidInputError("password: required")
        if any(ord(c) < 0x20 for c in username + password):
            raise InvalidInputError("username/password: control characters are not allowed")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        with locked(self.root, "credentials", "auth"):
            data = self._read()
            data["auths"][registry] = {"auth": token}
            atomic.write_json(self.path, data, mode=0o600)
        return Login(registry, username)

    def login(self, registry: str, username: str, password: str, *, tls_verify: bool) -> Login:
        """Check the credentials against the registry, then keep them (as podman login)."""
        from engine.registry.client import Client

        registry = normalize_domain(registry)
        api_host = Reference(registry, "x").api_host
        insecure = not tls_verify or registry in self.engine.config.insecure_registries
        with Client(registry, api_host, insecure=insecure, credentials=(username, password)) as c:
            c.ping()
        return self.set(registry, username, password)

    def remove(self, registry: str) -> bool:
        registry = normalize_domain(registry)
        with locked(self.root, "credentials", "auth"):
            data = self._read()
            if data["auths"].pop(registry, None) is None:
                return False
            atomic.write_json(self.path, data, mode=0o600)
        return True

    def list(self) -> list[Login]:
        out = []
        for registry in sorted(self._read()["auths"]):
            found = self.get(registry)
            if found is not None:
                out.append(Login(registry, found[0]))
        return out
