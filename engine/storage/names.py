"""The names Gantry makes up for containers (adjective_noun, as podman does). The image a
short reference (``busybox``) stands for: engine.images.shortnames."""

from __future__ import annotations


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
    import secrets  # with hmac and OpenSSL: only when a name is made

    for _ in range(64):
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
        if name not in taken:
            return name
    while True:
        name = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}{secrets.randbelow(100)}"
        if name not in taken:
            return name
