"""The OCI runtime spec (config.json): generation, validation, policy, and the service that
keeps a container's bundle.

    generator.py   pure: image config + options + user db + host facts -> spec dict
    inputs.py      this host's facts and a container record's options, as generator inputs
    users.py       /etc/passwd and /etc/group, ``-u`` resolution (runc's rules)
    defaults.py    podman's fixed parts (capabilities, mounts, masked paths, ...)
    seccomp.py     our default seccomp profile
    schema.py      strict JSON parsing and JSON-schema validation (engine/spec/schema.json)
    policy.py      the admin's policy knobs (engine config ``policy.spec``), what the engine owns
    rules.py       the policy checks, each refusal naming its rule and field path
    help.py        help texts of the fields (the web imports it: plain data)
    service.py     SpecService: generate/get/put/validate/reset/diff on a container's bundle

This module stays light on purpose (the web imports engine.spec.help through it); the two
functions below are what the runtime calls, by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.core import Engine
    from engine.storage.containers import ContainerRecord


def generate(engine: Engine, record: ContainerRecord) -> dict[str, Any]:
    """Write bundle/config.json for a container (``podman init``); "created" -> "configured".
    See SpecService.generate."""
    from engine.spec.service import SpecService

    return engine.get(SpecService).generate(record.id)


def validate_for_start(engine: Engine, record: ContainerRecord) -> dict[str, Any]:
    """Re-read bundle/config.json from disk and check it again (JSON, schema, policy,
    engine-owned fields) right before the runtime uses it. Returns the spec; raises
    InvalidInputError (malformed) or PolicyError (refused), naming the rule and field path.
    See SpecService.validate_for_start."""
    from engine.spec.service import SpecService

    return engine.get(SpecService).validate_for_start(record)
