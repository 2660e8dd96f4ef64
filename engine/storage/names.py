"""Names: the ones Gantry makes up for containers (adjective_noun, as podman does), and the
image a short reference (``busybox``) stands for."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from engine.errors import ImageNotFoundError, InvalidInputError

if TYPE_CHECKING:
    from engine.images.store import ImageRecord, Store


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ADJECTIVES = _words(
    "admiring adoring affectionate agitated amazing angry awesome beautiful blissful bold "
    "boring brave busy charming clever compassionate competent condescending confident cool "
    "cranky crazy dazzling determined distracted dreamy eager ecstatic elastic elated elegant "
    "eloquent epic exciting fervent festive flamboyant focused friendly frosty funny gallant "
    "gifted goofy gracious great happy hardcore heuristic hopeful hungry infallible inspiring "
    "intelligent interesting jolly jovial keen kind laughing loving lucid magical modest musing "
    "mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic "
    "pensive practical priceless quirky quizzical recursing relaxed reverent romantic sad "
    "serene sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty "
    "trusting unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial "
    "youthful zealous zen"
)
_NOUNS = _words(
    "agnesi albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach "
    "bardeen bartik bassi bell bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta "
    "brattain brown cannon carson cartwright chandrasekhar chaplygin chatelet chatterjee "
    "cohen curie darwin davinci dewdney dhawan diffie dijkstra dirac driscoll dubinsky easley "
    "edison einstein elbakyan elgamal elion ellis engelbart euclid euler faraday fermat fermi "
    "feynman franklin galileo gauss germain goldberg goldstine goodall hamilton haslett "
    "hawking heisenberg hermann hodgkin hoover hopper hugle hypatia jackson jang jennings "
    "jepsen johnson joliot jones kalam kapitsa keller kepler khorana kilby kirch knuth "
    "kowalevski lalande lamarr lamport leakey leavitt lederberg lehmann lewin lichterman "
    "liskov lovelace lumiere mahavira margulis matsumoto maxwell mayer mccarthy mcclintock "
    "mclaren mclean mcnulty meitner mendel mendeleev meninsky merkle mestorf mirzakhani "
    "montalcini moore morse moser murdock napier nash neumann newton nightingale nobel noether "
    "northcutt noyce panini pare pascal pasteur payne perlman pike poincare poitras proskuriakova "
    "ptolemy raman ramanujan rhodes ride ritchie robinson roentgen rosalind rubin saha sammet "
    "sanderson satoshi shamir shannon shaw shirley shockley shtern sinoussi snyder solomon "
    "spence stonebraker sutherland swanson swartz swirles taussig tesla tharp thompson "
    "torvalds tu turing varahamihira vaughan villani visvesvaraya volhard wescoff wilbur wiles "
    "williams williamson wilson wing wozniak wright wu yalow yonath zhukovsky"
)


def generate_name(taken: set[str]) -> str:
    """adjective_noun, as podman (docker's namesgenerator) does; a number is added if needed."""
    for _ in range(64):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if name not in taken:
            return name
    while True:
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}{secrets.randbelow(100)}"
        if name not in taken:
            return name


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
