"""Which hosts the registry client (engine.registry.client) may contact (docs/security.md 1.4).

- Link-local, unspecified, multicast and cloud metadata addresses: never, not even as the
  registry itself.
- Private, loopback and reserved addresses: only when every address of the registry is one
  (a registry on the LAN may redirect to the LAN; a public one may not send Gantry there).
- Plain http: only to the host of a registry the user marked insecure.

Names are resolved with getaddrinfo when checked; a name that does not resolve passes here, and
the request itself then fails with a clear error. The check happens before the request, so a
name whose DNS answer changes in between is outside what this can catch.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from engine.errors import RegistryError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_METADATA_IPS = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("192.0.0.192"),
}


def _ip_literal(host: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return ip


def _is_forbidden(ip: Address) -> bool:
    return ip in _METADATA_IPS or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def _is_private(ip: Address) -> bool:
    return ip.is_private or ip.is_loopback or ip.is_reserved


def _addresses(hostname: str) -> list[Address]:
    literal = _ip_literal(hostname)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # the request itself will fail with a clear error
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return out


def check_registry(domain: str, hostname: str) -> bool:
    """Refuse a registry on a link-local or metadata address (RegistryError). Returns whether
    it is local (all its addresses private), which lets its redirects go to private hosts."""
    addresses = _addresses(hostname)
    local = bool(addresses) and all(_is_private(ip) for ip in addresses)
    if any(_is_forbidden(ip) for ip in addresses):
        raise RegistryError(f"registry {domain}: link-local and metadata addresses refused")
    return local


def check_url(url: str, *, what: str, registry: str, insecure: bool, local: bool) -> None:
    """Refuse a URL Gantry must never contact (RegistryError): one that is not http(s) or has
    no host, plain http anywhere but the insecure registry's host, and (on another host than
    ``registry``) a forbidden address, or a private one unless the registry is ``local``."""
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https"):
        raise RegistryError(f"{what}: scheme {parts.scheme[:20]!r} refused")
    if not hostname:
        raise RegistryError(f"{what}: {url[:120]!r} has no host (refused)")
    same_host = hostname == registry
    if parts.scheme == "http" and not (insecure and same_host):
        raise RegistryError(f"{what}: refusing plain http to {hostname}")
    if same_host:
        return
    for ip in _addresses(hostname):
        if _is_forbidden(ip):
            raise RegistryError(f"{what}: refusing link-local/metadata address {ip}")
        if _is_private(ip) and not local:
            raise RegistryError(f"{what}: refusing private address {ip} for {hostname}")
