"""Image references: parsing and normalisation, as docker/distribution's reference grammar does.

    busybox                        -> docker.io/library/busybox:latest
    quay.io/fatherlinux/on-off     -> quay.io/fatherlinux/on-off:latest
    127.0.0.1:5000/demo:1          -> 127.0.0.1:5000/demo:1
    alpine@sha256:<hex>            -> docker.io/library/alpine@sha256:<hex>

The first path component names a registry when it contains a '.' or a ':' or is 'localhost'.
Only sha256 digests are accepted, and they are checked (engine.hostfs.digests) before any URL is
built
from them. Platforms are "os/arch[/variant]".
"""

from __future__ import annotations

import platform as _platform
import re
from dataclasses import dataclass

from engine.errors import InvalidInputError
from engine.hostfs import digests
from engine.protocol.verbs import IMAGE_REF_MAX

DEFAULT_DOMAIN = "docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
_DOCKER_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
MAX_REF = IMAGE_REF_MAX
MAX_NAME = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$")
PLATFORM_PART_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. ``tag`` and ``digest`` may both be set (name:tag@digest):
    the digest is what gets fetched, the tag what the image is called."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """domain/path, e.g. docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host:port the distribution API is served from."""
        return DOCKER_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def target(self) -> str:
        """What goes into /v2/<name>/manifests/<target>: the digest if any, else the tag."""
        return self.digest or self.tag

    @property
    def tagged(self) -> str:
        """name:tag (the name an image is stored under), or name@digest without a tag."""
        return f"{self.name}:{self.tag}" if self.tag else f"{self.name}@{self.digest}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def normalize_domain(unsafe_domain: str) -> str:
    """Check a registry host[:port] and fold Docker Hub's aliases into docker.io."""
    if not isinstance(unsafe_domain, str) or not DOMAIN_RE.match(unsafe_domain):
        raise InvalidInputError(f"registry {str(unsafe_domain)[:80]!r} is not a host[:port]")
    domain = unsafe_domain.lower()
    return DEFAULT_DOMAIN if domain in _DOCKER_ALIASES else domain


def parse(unsafe_ref: str) -> Reference:
    """Parse and normalise an image reference; raises InvalidInputError with the reason."""
    if not isinstance(unsafe_ref, str) or not unsafe_ref.strip():
        raise InvalidInputError("image reference: empty")
    ref = unsafe_ref.strip()
    if len(ref) > MAX_REF:
        raise InvalidInputError(f"image reference: longer than {MAX_REF} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in ref):
        raise InvalidInputError(f"image reference {ref[:80]!r}: contains whitespace")
    rest, _, digest = ref.partition("@")
    if digest:
        if not digest.startswith("sha256:"):
            raise InvalidInputError(f"image reference {ref[:80]!r}: only sha256 digests are used")
        digests.check(digest, f"image reference {ref[:80]!r}: digest")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = ""
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.match(tag):
            raise InvalidInputError(f"image reference {ref[:80]!r}: tag {tag[:80]!r} is not valid")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        try:
            domain, path = normalize_domain(first), remainder
        except InvalidInputError as err:
            raise InvalidInputError(f"image reference {ref[:80]!r}: {err.message}") from err
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not PATH_RE.match(path):
        raise InvalidInputError(
            f"image reference {ref[:80]!r}: repository {path[:80]!r} must be lowercase letters, "
            "digits and separators"
        )
    if len(f"{domain}/{path}") > MAX_NAME:
        raise InvalidInputError(f"image reference {ref[:80]!r}: name longer than {MAX_NAME}")
    if not tag and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest)


# -- platforms ---------------------------------------------------------------------------------

_MACHINE_TO_OCI = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def host_platform() -> Platform:
    arch, variant = _MACHINE_TO_OCI.get(_platform.machine(), (_platform.machine(), ""))
    return Platform("linux", arch, variant)


def parse_platform(unsafe_platform: str | None) -> Platform:
    """ "os/arch[/variant]" (or "" / None for this host's platform)."""
    if not unsafe_platform:
        return host_platform()
    if not isinstance(unsafe_platform, str) or len(unsafe_platform) > 100:
        raise InvalidInputError("platform: must be os/arch[/variant]")
    parts = unsafe_platform.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(PLATFORM_PART_RE.match(p) for p in parts):
        raise InvalidInputError(f"platform {unsafe_platform[:40]!r}: must be os/arch[/variant]")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
