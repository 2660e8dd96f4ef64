"""The help table (engine/spec/help.py): every entry names a real field of our schema, says
what it does and which podman flag sets it; lookups generalise indexes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.spec.help import FIELDS, help_for, titles
from engine.spec.schema import SCHEMA_PATH

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema_node(path: str) -> dict[str, Any] | None:
    node = _resolve(SCHEMA)
    for part in path.replace("[]", ".[]").split("."):
        if part == "[]":
            node = _resolve(node.get("items", {}))
            continue
        props = node.get("properties", {})
        if part not in props:
            return None
        node = _resolve(props[part])
    return node


@pytest.mark.parametrize("entry", FIELDS, ids=[f.field for f in FIELDS])
def test_every_help_entry_names_a_schema_field(entry: Any) -> None:
    assert schema_node(entry.field) is not None, entry.field
    assert len(entry.text) > 20 and entry.label
    assert entry.title().startswith(entry.text) and "podman:" in entry.title()


def test_lookup_generalises_indexes_and_falls_back_to_parents() -> None:
    found = help_for("mounts[3].source")
    assert found is not None and found.field == "mounts[].source"
    parent = help_for("process.capabilities.ambient[0]")
    assert parent is not None and parent.field == "process.capabilities"
    assert help_for("nothing.here") is None
    assert titles()["process.cwd"].endswith("podman: -w / --workdir.")


def test_our_schema_is_a_valid_json_schema() -> None:
    """Checked here once, so that the CLI and the worker do not check it on every start."""
    import jsonschema

    jsonschema.validators.validator_for(SCHEMA).check_schema(SCHEMA)
