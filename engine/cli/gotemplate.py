"""podman's ``--format`` Go templates, the part people type, over JSON-like data:

    {{.Field}}  {{.A.B}}  {{.}}             a field (ID matches Id: podman's Go names)
    {{json .}}  {{json .Field}}             as JSON
    {{index .Map "key"}}  {{index .List 0}}
    {{join .List ","}}  {{upper X}}  {{lower X}}  {{len X}}  {{X | upper}}
    {{range .List}}...{{end}}  {{if X}}...{{else}}...{{end}}
    "table " first: a header row; \\t and \\n as a tab and a newline; columns aligned as
    podman's tabwriter aligns them

Values print as Go prints them (lists as [a b], maps as map[k:v], nothing as <no value>).
Anything else is an InvalidInputError naming what is not supported; nothing is evaluated
but field lookups and these functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInputError

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\||[^\s|"]+')  # a string, a pipe, or a word
NO_VALUE = "<no value>"
MAX_DEPTH = 50  # range/if blocks inside each other


def go_text(value: Any) -> str:
    """A value as Go's text/template prints it."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_text(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _field(value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise InvalidInputError(f"template: can't evaluate field {name} in {go_text(value)[:40]}")
    if name in value:
        return value[name]
    folded = {k.lower(): k for k in value}
    if name.lower() in folded:
        return value[folded[name.lower()]]
    known = ", ".join(sorted(value)[:30])
    raise InvalidInputError(f"template: can't evaluate field {name} (fields: {known})")


def _path(dot: Any, text: str) -> Any:
    value = dot
    for name in text.split(".")[1:]:
        if name:
            value = _field(value, name)
    return value


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key) if isinstance(key, str) else None
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            raise InvalidInputError(f"template: index of {go_text(value)[:40]} with {key!r}")
    return value


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "upper": lambda v: go_text(v).upper(),
    "lower": lambda v: go_text(v).lower(),
    "len": lambda v: len(v) if isinstance(v, str | list | dict) else 0,
    "join": lambda v, sep: sep.join(go_text(x) for x in v or []),
    "index": _index,
}


def _argument(dot: Any, token: str) -> Any:
    if token.startswith("."):
        return _path(dot, token)
    if token.startswith('"'):
        return json.loads(token)
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise InvalidInputError(f"template: unsupported {token[:40]!r}")


def _command(dot: Any, words: list[str], piped: list[Any]) -> Any:
    if words[0] in FUNCTIONS:
        args = [_argument(dot, w) for w in words[1:]] + piped
        try:
            return FUNCTIONS[words[0]](*args)
        except TypeError:
            raise InvalidInputError(f"template: wrong arguments for {words[0]}") from None
    if len(words) > 1 or piped:
        raise InvalidInputError(
            f"template: unsupported {words[0][:40]!r} (functions: {', '.join(FUNCTIONS)})"
        )
    return _argument(dot, words[0])


def evaluate(dot: Any, pipeline: str) -> Any:
    """One pipeline: commands joined by |, each result passed as the next one's last argument."""
    commands: list[list[str]] = [[]]
    for word in TOKEN.findall(pipeline):  # a | inside a quoted string is not a pipe
        if word == "|":
            commands.append([])
        else:
            commands[-1].append(word)
    piped: list[Any] = []
    for words in commands:
        if not words:
            raise InvalidInputError("template: empty command")
        piped = [_command(dot, words, piped)]
    return piped[0]


@dataclass
class Node:
    kind: str  # "text", "value", "range", "if"
    text: str = ""
    body: list[Node] = field(default_factory=list)
    other: list[Node] = field(default_factory=list)  # an if's else


def parse(template: str) -> list[Node]:
    """The template as a tree of text, values and blocks."""
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node]]] = [(None, root)]
    at, trim = 0, False
    for found in ACTION.finditer(template):
        text = template[at : found.start()]
        text = text.lstrip() if trim else text
        text = text.rstrip() if found.group(1) else text
        if text:
            stack[-1][1].append(Node("text", text))
        at, trim = found.end(), bool(found.group(3))
        _action(found.group(2), stack)
    if len(stack) > 1:
        raise InvalidInputError("template: unexpected EOF (a range or if without {{end}})")
    rest = template[at:].lstrip() if trim else template[at:]
    if rest:
        root.append(Node("text", rest))
    return root


def _action(action: str, stack: list[tuple[Node | None, list[Node]]]) -> None:
    word = action.split(None, 1)[0] if action else ""
    if word in ("range", "if"):
        if len(stack) > MAX_DEPTH:
            raise InvalidInputError(f"template: blocks nested deeper than {MAX_DEPTH}")
        node = Node(word, action[len(word) :].strip())
        stack[-1][1].append(node)
        stack.append((node, node.body))
    elif word == "else":
        owner = stack[-1][0]
        if owner is None or owner.kind != "if":
            raise InvalidInputError("template: {{else}} outside an {{if}}")
        stack[-1] = (owner, owner.other)
    elif word == "end":
        if len(stack) == 1:
            raise InvalidInputError("template: unexpected {{end}}")
        stack.pop()
    elif word in ("with", "define", "template", "block") or action.startswith("$"):
        raise InvalidInputError(f"template: {{{{{word}}}}} is not supported")
    else:
        stack[-1][1].append(Node("value", action))


def _truthy(value: Any) -> bool:
    return bool(value) if value is not None else False


def execute(nodes: list[Node], dot: Any) -> str:
    out: list[str] = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "value":
            out.append(go_text(evaluate(dot, node.text)))
        elif node.kind == "range":
            items = evaluate(dot, node.text)
            seq = list(items.values()) if isinstance(items, dict) else items or []
            out.extend(execute(node.body, item) for item in seq)
        else:
            chosen = node.body if _truthy(evaluate(dot, node.text)) else node.other
            out.append(execute(chosen, dot))
    return "".join(out)


def header(template: str, names: dict[str, str]) -> str:
    """The header row of a table: each {{.Field}} as its column title (``names``, else the
    field's name in capitals, split where its case changes)."""

    def title(found: re.Match[str]) -> str:
        words = TOKEN.findall(found.group(2))
        paths = [w for w in words if w.startswith(".")]
        last = paths[-1].rsplit(".", 1)[-1] if paths else ""
        if last in names:
            return names[last]
        if not last:
            return words[0].upper() if words else ""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", last).upper()

    return ACTION.sub(title, template)


def align(text: str, minwidth: int = 12, padding: int = 2) -> str:
    """Tab-separated cells in columns, as Go's tabwriter(minwidth 12, padding 2) lays them
    out for podman: the text after a line's last tab is not padded."""
    rows = [line.split("\t") for line in text.split("\n")]
    widths: dict[int, int] = {}
    for cells in rows:
        for i, cell in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, minwidth), len(cell) + padding)
    return "\n".join(
        "".join(c.ljust(widths[i]) for i, c in enumerate(cells[:-1])) + cells[-1] for cells in rows
    )


def render(template: str, items: list[Any], names: dict[str, str] | None = None) -> str:
    """Each item through the template, a line each (podman adds the newline), a header row
    first when the template starts with "table"."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    table = template.startswith("table")
    if table:
        template = template.removeprefix("table").lstrip(" ")
    nodes = parse(template)
    lines = [header(template, names or {})] if table else []
    lines += [execute(nodes, item) for item in items]
    text = "\n".join(line.removesuffix("\n") for line in lines)
    return align(text) if table else text
