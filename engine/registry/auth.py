"""Registry authentication without the network: reading a WWW-Authenticate challenge, the Basic
header, the token request's URL and the token answer. engine.registry.client sends the requests
(credentials go only to the registry and its token realm, whose URL it checks first).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any
from urllib.parse import urlencode, urlsplit

from engine.errors import RegistryError

Credentials = tuple[str, str]  # (username, password)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer'|'basic'|..., params) from a WWW-Authenticate header (first challenge)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in re.finditer(
        r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))', rest
    ):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)[:2048]
    return scheme.lower(), params


def basic_authorization(credentials: Credentials) -> str:
    """The Authorization header value for HTTP Basic."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_url(realm: str, params: dict[str, str], scope: str) -> str:
    """The token request for a bearer challenge: the realm with service and scope (the
    request's own scope, else the one the challenge named) as query parameters."""
    query = {"service": params["service"]} if "service" in params else {}
    if scope or params.get("scope"):
        query["scope"] = scope or params["scope"]
    return realm + (("&" if "?" in realm else "?") + urlencode(query) if query else "")


def bearer(body: dict[str, Any], what: str) -> str:
    """The Authorization header value from a token answer ("token" or "access_token"), which
    must be printable ASCII; RegistryError otherwise."""
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token or not token.isascii() or not token.isprintable():
        raise RegistryError(f"{what}: the token service sent no usable token")
    return f"Bearer {token}"


def same_site(realm_host: str | None, registry: str) -> bool:
    """May a registry's credentials go to a token service on ``realm_host``? Only on the
    registry's own host, or a host of the same domain (auth.docker.io for registry-1.docker.io,
    the last two labels); an address only to itself (security.md B5)."""
    host = (urlsplit("//" + registry).hostname or "").lower()
    realm = (realm_host or "").lower().rstrip(".")
    if not realm or not host or realm == host:
        return bool(realm) and realm == host
    if _is_address(realm) or _is_address(host):
        return False
    realm_labels, host_labels = realm.split("."), host.split(".")
    return min(len(realm_labels), len(host_labels)) >= 2 and realm_labels[-2:] == host_labels[-2:]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
