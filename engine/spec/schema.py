"""Reading a config.json that a person (or anyone who can write the file) has edited: strict
JSON parsing, then JSON-schema validation against engine/spec/schema.json (our own schema,
written from the runtime-spec's config.md and config-linux.md).

The parser refuses what Python's json module would quietly accept: documents over MAX_BYTES,
nesting deeper than MAX_DEPTH, duplicate keys (the last one would silently win, and runc's Go
decoder picks the same one, but a reviewer reading the file sees the first), NaN/Infinity,
and a top level that is not an object. Every problem is a :class:`SpecIssue` naming its field
path in dotted form ("process.args", "mounts[2].destination").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a document is validated: 50 ms of every CLI start otherwise
    import jsonschema

from engine.protocol import SPEC_MAX_BYTES

MAX_BYTES = SPEC_MAX_BYTES  # the wire's limit (engine.protocol) is the parser's
MAX_DEPTH = 32
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"


@dataclass(frozen=True)
class SpecIssue:
    """One thing wrong with a spec: where, what, and which rule (schema, json, or a policy
    rule name such as "no-hooks")."""

    field: str
    message: str
    rule: str = "schema"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "rule": self.rule}


class SpecParseError(ValueError):
    def __init__(self, issue: SpecIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


def field_path(parts: Any) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecParseError(SpecIssue("", f"duplicate key {key[:80]!r}", "json"))
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise SpecParseError(SpecIssue("", f"{name} is not valid JSON", "json"))


def _depth(value: Any, path: list[str | int], depth: int = 1) -> None:
    if depth > MAX_DEPTH:
        raise SpecParseError(
            SpecIssue(field_path(path), f"nested deeper than {MAX_DEPTH} levels", "json")
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _depth(item, [*path, key], depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _depth(item, [*path, i], depth + 1)


def parse(text: str | bytes) -> dict[str, Any]:
    """Parse a config.json document. Raises SpecParseError naming the problem (and, for a
    duplicate key, the key)."""
    if len(text) > MAX_BYTES:  # before encoding: a str has at most as many chars as bytes
        raise SpecParseError(SpecIssue("", f"larger than {MAX_BYTES} bytes", "json"))
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise SpecParseError(SpecIssue("", f"larger than {MAX_BYTES} bytes", "json"))
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecParseError(SpecIssue("", f"not UTF-8 text: {err.reason}", "json")) from err
    try:
        value = json.loads(decoded, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except RecursionError as err:
        raise SpecParseError(
            SpecIssue("", f"nested deeper than {MAX_DEPTH} levels", "json")
        ) from err
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise SpecParseError(SpecIssue("", f"invalid JSON: {err.msg} ({where})", "json")) from err
    if not isinstance(value, dict):
        raise SpecParseError(SpecIssue("", "the document must be a JSON object", "json"))
    _depth(value, [])
    return value


@cache
def schema_digest() -> str:
    """The schema's own sha256: a verdict remembered on disk holds for this schema only."""
    return hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()


@cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    # The schema is our own file: it is checked against its metaschema once, by a test
    # (test_spec_help), not on every start of the CLI (about 60 ms).
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


_TYPES = {
    "array": "an array",
    "object": "an object",
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "number": "a number",
}


def _message(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(field path, human message) for one schema error."""
    path = list(error.absolute_path)
    validator, value = error.validator, error.validator_value
    if validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "field"
        return field_path([*path, missing]), "required"
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        name = extra[0] if extra else "?"
        return field_path([*path, name]), "unknown field"
    if validator == "type":
        kinds = value if isinstance(value, list) else [value]
        text = " or ".join(_TYPES.get(str(k), str(k)) for k in kinds)
        return field_path(path), f"must be {text}"
    if validator == "minItems" and value == 1:
        return field_path(path), "must be a non-empty array"
    if validator == "minItems":
        return field_path(path), f"must have at least {value} items"
    if validator == "maxItems":
        return field_path(path), f"must have at most {value} items"
    if validator == "maxProperties":
        return field_path(path), f"must have at most {value} entries"
    if validator == "minLength" and value == 1:
        return field_path(path), "must not be empty"
    if validator == "maxLength":
        return field_path(path), f"longer than {value} characters"
    if validator == "enum":
        choices = ", ".join(str(v) for v in value[:12])
        return field_path(path), f"must be one of {choices}"
    if validator in ("minimum", "maximum"):
        word = "at least" if validator == "minimum" else "at most"
        return field_path(path), f"must be {word} {value}"
    if validator == "pattern":
        if value == "^/":
            return field_path(path), "must be an absolute path"
        shown = repr(error.instance)[:60]
        return field_path(path), f"{shown} is not in the expected form"
    if validator == "uniqueItems":
        return field_path(path), "must not repeat an item"
    if validator == "propertyNames":
        return field_path(path), f"key {str(error.instance)[:60]!r} is not allowed"
    return field_path(path), str(error.message)[:200]


def validate_schema(spec: Any) -> list[SpecIssue]:
    """Every schema problem in spec, sorted by field path, at most 50."""
    issues = []
    for error in _validator().iter_errors(spec):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            base = list(error.absolute_path)
            issues += [
                SpecIssue(field_path([*base, key]), "unknown field")
                for key in sorted(set(error.instance) - known)
            ]
            continue
        where, message = _message(error)
        issues.append(SpecIssue(where, message))
    issues.sort(key=lambda i: i.field)
    return issues[:50]
