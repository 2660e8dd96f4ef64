"""SpecService: a container's bundle/config.json — generate it, show it, take edits, check it
again at start.

    <container>/bundle/config.json             the spec runc runs (the user may edit it)
    <container>/bundle/config.generated.json   what the generator wrote (for diff and reset)
    <container>/userdata/hostname, hosts       bind-mounted at /etc/hostname and /etc/hosts

Every write happens under ``Containers.lock(id)`` and is atomic (engine.hostfs.atomic): a failed
save
leaves the previous file as it was. A save stores the user's text exactly as validated (their
formatting included), so what runs is exactly what was checked. Validation is JSON (size,
depth, duplicate keys) + schema + policy; ``validate_for_start`` does it again on the file as
it is on disk, so an edit made by hand after a save is checked too.

States: generating moves "created" to "configured"; it is allowed in any state (a running
container's new spec applies at its next start, as does an edit).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.core import Engine
from engine.errors import (
    EngineError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    PolicyError,
)
from engine.events import Publisher
from engine.hostfs import atomic
from engine.network.netns import path_of
from engine.network.networks import HOST, NONE
from engine.spec import defaults, generator
from engine.spec.inputs import host_facts, spec_options
from engine.spec.policy import Expected, SpecPolicy
from engine.spec.rules import check_policy
from engine.spec.schema import (
    MAX_BYTES,
    SpecIssue,
    SpecParseError,
    parse,
    schema_digest,
    validate_schema,
)
from engine.spec.users import MAX_DB_BYTES
from engine.storage import quotas
from engine.storage.containers import CONFIGURED, CREATED, ContainerRecord, Containers
from engine.storage.containers import publish_container_event as _publish
from engine.storage.podjson import mount_json
from engine.storage.sandbox import bind_roots

GENERATED = "config.generated.json"
MAX_FIELD_DIFFS = 300


SCHEMA_OK = "schema-ok"  # in the bundle: "<schema sha256> <config.json sha256>"


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def issues_error(issues: list[SpecIssue], prefix: str = "config.json") -> EngineError:
    """One error for a list of issues: the first one names rule and field in the message;
    all of them travel in details["errors"] for the page to show next to each field."""
    first = issues[0]
    message = f"{prefix}: {first}"
    if len(issues) > 1:
        message += f" (and {len(issues) - 1} more)"
    err: EngineError
    if first.rule in ("schema", "json"):
        err = InvalidInputError(message)
    else:
        err = PolicyError(message, rule=first.rule, field=first.field)
    err.details["errors"] = [i.to_dict() for i in issues]
    return err


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value


def field_diff(generated: Any, current: Any) -> list[dict[str, Any]]:
    """Leaf-level differences: [{"field", "change": added|removed|changed, "generated",
    "current"}], lists of strings compared whole (args, env, capabilities)."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(generated, "", a)
    _flatten(current, "", b)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in a and key in b and a[key] == b[key]:
            continue
        change = "changed" if key in a and key in b else ("removed" if key in a else "added")
        out.append({"field": key, "change": change, "generated": a.get(key), "current": b.get(key)})
    return out[:MAX_FIELD_DIFFS]


class SpecService:
    """``engine.get(SpecService)``."""

    SCHEMA_OK_KEEP = 256  # digests of documents the schema passed, remembered (one process)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.get(Containers)
        # The schema check is most of a start's own time (a spec is ~9,000 schema nodes with
        # its seccomp profile) and its verdict depends on the bytes alone: a document already
        # passed is not walked again. The policy, which depends on the record and the admin's
        # settings, is checked every time.
        self._schema_ok: OrderedDict[str, None] = OrderedDict()
        self._schema_lock = threading.Lock()

    @cached_property
    def policy(self) -> SpecPolicy:
        return SpecPolicy.from_config(self.engine.config)

    # -- paths and expectations ---------------------------------------------------------------
    def config_path(self, container_id: str) -> Path:
        return self.containers.paths(container_id).config

    def generated_path(self, container_id: str) -> Path:
        return self.containers.paths(container_id).bundle / GENERATED

    def engine_paths(self, record: ContainerRecord) -> generator.EnginePaths:
        paths = self.containers.paths(record.id)
        network = record.options.network
        return generator.EnginePaths(
            root_path=str(paths.merged),
            cgroups_path=generator.cgroups_path(record.id),
            hostname_file=str(paths.userdata / "hostname"),
            hosts_file=str(paths.userdata / "hosts"),
            resolv_file="" if network == NONE else str(paths.userdata / "resolv.conf"),
            netns=HOST if network == HOST else str(path_of(record.id)) if network != NONE else "",
        )

    def expected(self, record: ContainerRecord) -> Expected:
        """What the engine owns in this container's spec."""
        ep = self.engine_paths(record)
        return Expected(
            root_path=ep.root_path,
            cgroups_path=ep.cgroups_path,
            engine_mounts=tuple(generator.mounts(ep, ())),
            netns=ep.netns,
            host_rlimits=host_facts().rlimits_hard,
        )

    # -- checking -----------------------------------------------------------------------------
    def check(
        self, record: ContainerRecord, text: str | bytes, *, generated: bool = False
    ) -> tuple[dict[str, Any], list[SpecIssue]]:
        """Parse and check a document: (spec, issues). Parse errors give ({}, [issue]).
        ``generated``: Gantry's generator wrote it, which passes the schema by construction
        (tests hold it to that); the policy is checked all the same."""
        try:
            spec = parse(text)
        except SpecParseError as err:
            return {}, [err.issue]
        digest = _digest(text)
        if not (generated or self._schema_passed(record, digest)):
            issues = validate_schema(spec)
            if issues:
                return spec, issues
            with self._schema_lock:
                self._schema_ok[digest] = None
                while len(self._schema_ok) > self.SCHEMA_OK_KEEP:
                    self._schema_ok.popitem(last=False)
        policy = self.policy
        if record.options.sandbox:  # a learner's container binds only from their sandbox
            roots = bind_roots(self.engine.config, record.options)
            policy = replace(policy, volume_allowlist=roots)
        quota = quotas.of_container(self.engine.config, record.options)
        if quota is not None:  # and keeps its limits within its owner's quota
            policy = replace(
                policy,
                max_pids=min(policy.max_pids, quota.max_pids),
                max_memory=quota.max_memory,
                max_cpus=quota.max_cpus,
            )
        return spec, check_policy(spec, policy, self.expected(record))

    def _schema_passed(self, record: ContainerRecord, digest: str) -> bool:
        """The schema passed these bytes before: in this process, or (written down next to the
        bundle when config.json was saved or started) in another one, under this schema."""
        with self._schema_lock:
            if digest in self._schema_ok:
                return True
        try:
            stamp = (self.containers.paths(record.id).bundle / SCHEMA_OK).read_text()
        except OSError:
            return False
        return stamp == f"{schema_digest()} {digest}\n"

    def _stamp_schema(self, record: ContainerRecord, text: str | bytes) -> None:
        """Write down that config.json as it is now passed the schema (bundle/schema-ok)."""
        stamp = f"{schema_digest()} {_digest(text)}\n"
        atomic.write_bytes(self.containers.paths(record.id).bundle / SCHEMA_OK, stamp.encode())

    def _read(self, path: Path) -> bytes:
        """A config file, at most MAX_BYTES + 1 bytes (so an oversized one is reported)."""
        with open(path, "rb") as f:
            return f.read(MAX_BYTES + 1)

    # -- generate -----------------------------------------------------------------------------
    def _user_db(self, record: ContainerRecord) -> tuple[bytes | None, bytes | None]:
        """The container's /etc/passwd and /etc/group, read through securepath inside the
        merged root (None when absent, not a regular file or larger than MAX_DB_BYTES)."""
        from engine.files.explorer import read_container_file  # the file stack: generate only

        def read(unsafe_path: str) -> bytes | None:
            try:
                return read_container_file(self.engine, record, unsafe_path, MAX_DB_BYTES)
            except (NotFoundError, InvalidInputError):
                return None

        return read("/etc/passwd"), read("/etc/group")

    def build(self, record: ContainerRecord) -> dict[str, Any]:
        """The generated spec for a container (nothing written)."""
        image = self.containers.store.get_image(record.image_id)
        passwd, group = self._user_db(record)
        inputs = generator.SpecInputs(
            container_id=record.id,
            image_config=dict(image.config.get("config") or {}),
            options=spec_options(record),
            passwd=passwd,
            group=group,
            host=host_facts(),
            paths=self.engine_paths(record),
            name=record.name,
            image_id=record.image_id,
        )
        return generator.generate(inputs)

    def _write_userdata(self, record: ContainerRecord, hostname: str) -> None:
        userdata = self.containers.paths(record.id).userdata
        userdata.mkdir(mode=0o700, exist_ok=True)
        hostname_text = generator.hostname_file(hostname).encode()
        atomic.write_bytes(userdata / "hostname", hostname_text, 0o644)
        atomic.write_bytes(
            userdata / "hosts", generator.hosts_file(hostname, record.name).encode(), 0o644
        )

    def generate(self, unsafe_ref: str, publisher: Publisher | None = None) -> dict[str, Any]:
        """Generate and write config.json (and the copy kept for diff/reset), like
        ``podman init`` does; "created" becomes "configured". Overwrites earlier edits.
        Raises InvalidInputError for options the generator refuses (unknown user, no
        command) and PolicyError when the admin's policy refuses the result (a volume
        outside the allowlist now)."""
        found = self.containers.get(unsafe_ref)
        with self.containers.lock(found.id):
            record = self.containers.load(found.id)
            spec = self.build(record)
            text = generator.canonical(spec)
            _, issues = self.check(record, text, generated=True)
            if issues:
                raise issues_error(issues, "generated config.json")
            bundle = self.containers.paths(record.id).bundle
            bundle.mkdir(mode=0o700, exist_ok=True)
            self._write_userdata(record, str(spec.get("hostname") or record.short_id))
            atomic.write_bytes(self.generated_path(record.id), text.encode())
            atomic.write_bytes(self.config_path(record.id), text.encode())
            self._stamp_schema(record, text)
            if record.state == CREATED:
                record.state = CONFIGURED
            record.spec_generated = True
            self.containers.save(record)
        _publish(publisher, record, "init")
        return {"path": str(self.config_path(record.id)), "state": record.state, "spec": spec}

    # -- read ---------------------------------------------------------------------------------
    def get(self, unsafe_ref: str) -> dict[str, Any]:
        """The spec as it is on disk: its text, whether it differs from the generated one,
        and its problems (a hand edit may have broken it)."""
        record = self.containers.get(unsafe_ref)
        path = self.config_path(record.id)
        out: dict[str, Any] = {
            "id": record.id,
            "name": record.name,
            "state": record.state,
            "path": str(path),
            "exists": path.exists(),
            "text": "",
            "modified": False,
            "errors": [],
            "mounts": [mount_json(v) for v in record.options.volumes],  # as inspect's Mounts
        }
        if not out["exists"]:
            return out
        raw = self._read(path)
        out["text"] = raw[:MAX_BYTES].decode("utf-8", errors="replace")
        spec, issues = self.check(record, raw)
        out["errors"] = [i.to_dict() for i in issues]
        generated = self._generated_text(record.id)
        out["modified"] = not spec or generated != generator.canonical(spec)
        return out

    def _generated_text(self, container_id: str) -> str:
        """The generated spec, re-serialised canonically ("" if there is none)."""
        try:
            return generator.canonical(parse(self._read(self.generated_path(container_id))))
        except (OSError, SpecParseError):
            return ""

    def _need_config(self, record: ContainerRecord) -> None:
        if not self.config_path(record.id).exists():
            raise InvalidStateError(
                f"container {record.name} has no config.json yet (generate it first)",
                current=record.state,
                wanted=(CONFIGURED,),
            )

    # -- edit ---------------------------------------------------------------------------------
    def validate(self, unsafe_ref: str, text: str) -> dict[str, Any]:
        """Check a draft without saving it: {"ok", "errors": [{"field","message","rule"}]}."""
        record = self.containers.get(unsafe_ref)
        _, issues = self.check(record, text)
        return {"ok": not issues, "errors": [i.to_dict() for i in issues]}

    def put(self, unsafe_ref: str, text: str, publisher: Publisher | None = None) -> dict[str, Any]:
        """Save an edited config.json after checking it. On any problem nothing is written
        (the old file stays) and the error lists every issue (details["errors"])."""
        found = self.containers.get(unsafe_ref)
        with self.containers.lock(found.id):
            record = self.containers.load(found.id)
            self._need_config(record)
            spec, issues = self.check(record, text)
            if issues:
                raise issues_error(issues)
            data = text.encode() if text.endswith("\n") else (text + "\n").encode()
            atomic.write_bytes(self.config_path(record.id), data)
            self._stamp_schema(record, data)
            self._write_userdata(record, str(spec.get("hostname") or record.short_id))
        _publish(publisher, record, "spec")
        return self.get(record.id)

    def reset(self, unsafe_ref: str, publisher: Publisher | None = None) -> dict[str, Any]:
        """Put the generated spec back (undo every edit). Regenerates if the copy is gone."""
        found = self.containers.get(unsafe_ref)
        with self.containers.lock(found.id):
            record = self.containers.load(found.id)
            self._need_config(record)
            generated = self.generated_path(record.id)
            if not generated.exists():
                self.generate(record.id, publisher)
                return self.get(record.id)
            tmp = self.config_path(record.id).with_name(".config.reset.tmp")
            shutil.copyfile(generated, tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.config_path(record.id))
            atomic.fsync_dir(generated.parent)
            spec = json.loads(generated.read_text())
            self._write_userdata(record, str(spec.get("hostname") or record.short_id))
        _publish(publisher, record, "spec")
        return self.get(record.id)

    def diff(self, unsafe_ref: str) -> dict[str, Any]:
        """The user's edits against the generated spec: a unified line diff of the two
        documents (canonically formatted, so whitespace changes do not show) and a field
        list. A document that does not parse is diffed as text."""
        record = self.containers.get(unsafe_ref)
        self._need_config(record)
        raw = self._read(self.config_path(record.id))
        generated_text = self._generated_text(record.id)
        try:
            current = parse(raw)
            current_text = generator.canonical(current)
        except SpecParseError:
            current, current_text = None, raw[:MAX_BYTES].decode("utf-8", errors="replace")
        import difflib

        lines = list(
            difflib.unified_diff(
                generated_text.splitlines(),
                current_text.splitlines(),
                GENERATED,
                "config.json",
                n=3,
                lineterm="",
            )
        )
        fields = []
        if current is not None and generated_text:
            fields = field_diff(json.loads(generated_text), current)
        return {"modified": bool(lines), "diff": lines, "fields": fields}

    # -- start --------------------------------------------------------------------------------
    def validate_for_start(self, record: ContainerRecord) -> dict[str, Any]:
        """Check bundle/config.json as it is on disk right now: JSON limits, schema, policy
        and the engine-owned fields (root.path, cgroupsPath, masked/readonly paths). Returns
        the spec; raises InvalidInputError or PolicyError naming the rule and field path, with
        every issue in details["errors"]. Refreshes userdata/hostname and hosts from the
        spec's hostname. The caller holds the container's lock; a root user who rewrites the
        file between this check and runc reading it is outside what this can catch."""
        path = self.config_path(record.id)
        try:
            raw = self._read(path)
        except FileNotFoundError as err:
            raise InvalidStateError(
                f"container {record.name} has no config.json (run init first)",
                current=record.state,
                wanted=(CONFIGURED,),
            ) from err
        spec, issues = self.check(record, raw)
        if issues:
            raise issues_error(issues, "config.json refused at start")
        if not self._schema_passed(record, _digest(raw)):
            self._stamp_schema(record, raw)
        self._write_userdata(record, str(spec.get("hostname") or record.short_id))
        return spec


__all__ = ["SpecService", "defaults", "host_facts", "spec_options", "field_diff"]
