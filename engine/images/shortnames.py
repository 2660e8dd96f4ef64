"""The image a short reference stands for, as podman's short-name rules find it: ``busybox``
is busybox:latest, localhost/busybox:latest, docker.io/library/busybox:latest, or the one
local image whose name ends in /busybox:latest. For create, inspect and rmi alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import ImageNotFoundError, InvalidInputError

if TYPE_CHECKING:
    from engine.images.store import ImageRecord, Store


def image_candidates(unsafe_ref: str) -> list[str]:
    """Names to try for a short reference, as podman's short-name rules would find them:
    busybox -> busybox:latest, localhost/busybox:latest, docker.io/library/busybox:latest."""
    ref = unsafe_ref
    out = [ref]
    last = ref.rsplit("/", 1)[-1]
    if "@" not in ref and ":" not in last:
        ref = ref + ":latest"
        out.append(ref)
    first = ref.split("/", 1)[0]
    has_domain = "/" in ref and ("." in first or ":" in first or first == "localhost")
    if not has_domain:
        out.append("localhost/" + ref)
        out.append(("docker.io/library/" if "/" not in ref else "docker.io/") + ref)
    return list(dict.fromkeys(out))


def find_image(store: Store, unsafe_ref: str) -> tuple[ImageRecord, str]:
    """The image and the name it was found by (or its first name)."""
    if not isinstance(unsafe_ref, str) or not unsafe_ref or len(unsafe_ref) > 512:
        raise InvalidInputError("image: must be a name or id")
    last: ImageNotFoundError | None = None
    for candidate in image_candidates(unsafe_ref):
        try:
            image = store.get_image(candidate)
        except ImageNotFoundError as err:
            last = err
            continue
        name = candidate if candidate in image.names else (image.names or [image.id])[0]
        return image, name
    found = _by_short_name(store, unsafe_ref)
    if found is not None:
        return found
    raise ImageNotFoundError(f"image {unsafe_ref[:200]}: not known (pull it first)") from last


def _by_short_name(store: Store, unsafe_ref: str) -> tuple[ImageRecord, str] | None:
    """A short name (no registry) matched against local images' last path components, as
    podman does: ``busybox`` finds 127.0.0.1:5000/gantry/busybox:latest when that is the only
    local busybox; two different images of that name are an error, not a guess."""
    first = unsafe_ref.split("/", 1)[0]
    has_domain = "/" in unsafe_ref and ("." in first or ":" in first or first == "localhost")
    if "@" in unsafe_ref or has_domain:
        return None
    head, _, last = unsafe_ref.rpartition("/")
    name, _, tag = last.partition(":")
    repo = f"{head}/{name}" if head else name
    if not name:
        return None
    suffix = "/" + repo + ":" + (tag or "latest")
    matches: dict[str, tuple[ImageRecord, str]] = {}
    for image in store.list_images():
        for known in image.names:
            if known.endswith(suffix):
                matches.setdefault(image.id, (image, known))
    if len(matches) > 1:
        names = ", ".join(sorted(known for _, known in matches.values()))
        raise InvalidInputError(
            f"image {unsafe_ref[:200]}: the short name matches several images ({names[:400]}): "
            "give the full name"
        )
    return next(iter(matches.values()), None)
