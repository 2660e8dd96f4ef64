"""Digests are checked before any path, URL or mount option is built from them
(CVE-2024-3727, containerd#4176): only ``sha256:<64 lowercase hex>`` is accepted."""

from __future__ import annotations

import re

from engine.errors import InvalidInputError

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
HEX_RE = re.compile(r"^[a-f0-9]{64}$")


def check(unsafe_digest: object, what: str = "digest") -> str:
    """Return the digest if it is sha256:<64 hex>, else raise InvalidInputError."""
    if not isinstance(unsafe_digest, str) or not DIGEST_RE.match(unsafe_digest):
        shown = str(unsafe_digest)[:80]
        raise InvalidInputError(f"{what}: {shown!r} is not a sha256 digest")
    return unsafe_digest


def hex_of(digest: str) -> str:
    """The 64-hex part of a checked digest (safe as a file name)."""
    return check(digest)[len("sha256:") :]


def of_bytes(data: bytes) -> str:
    import hashlib  # OpenSSL takes 3 ms to load: only when a digest is made

    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI image-spec ChainID: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
    DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        check(diff_id, "diff_id")
        out.append(diff_id if not out else of_bytes(f"{out[-1]} {diff_id}".encode()))
    return out
