"""spec.* verbs: a container's config.json (see engine/spec/service.py).

spec.generate {id}          write config.json from image + options ("created" -> "configured")
spec.get      {id}          {text, exists, modified, errors, path, state, ...}
spec.put      {id, text}    validate and save; refused (nothing written) with every issue
                            in error.details.errors [{field, message, rule}]
spec.validate {id, text}    {ok, errors} without saving
spec.reset    {id}          back to the generated spec
spec.diff     {id}          {modified, diff: unified lines, fields: [{field, change, ...}]}
spec.policy   {}            the admin's policy for specs, as configured
spec.meta     {}            what the Spec tab explains: field help, capabilities, the mounts
                            the engine owns
"""

from __future__ import annotations

from typing import Any

from engine.api.args import Args
from engine.api.base import Context, op
from engine.spec import defaults
from engine.spec.help import FIELDS, titles
from engine.spec.schema import MAX_BYTES
from engine.spec.service import SpecService

_REF_MAX = 128


def _ref(args: Args) -> str:
    ref: str = args.get_str("id", required=True, max_len=_REF_MAX)
    return ref


def _text(args: Args) -> str:
    text: str = args.get_str("text", required=True, max_len=MAX_BYTES)
    return text


@op("spec.generate")
def generate(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    result = ctx.engine.get(SpecService).generate(ref, ctx.publisher)
    result.pop("spec", None)
    return result


@op("spec.get")
def get(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return ctx.engine.get(SpecService).get(ref)


@op("spec.put")
def put(ctx: Context, args: Args) -> dict[str, Any]:
    ref, text = _ref(args), _text(args)
    args.done()
    return ctx.engine.get(SpecService).put(ref, text, ctx.publisher)


@op("spec.validate")
def validate(ctx: Context, args: Args) -> dict[str, Any]:
    ref, text = _ref(args), _text(args)
    args.done()
    return ctx.engine.get(SpecService).validate(ref, text)


@op("spec.reset")
def reset(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return ctx.engine.get(SpecService).reset(ref, ctx.publisher)


@op("spec.diff")
def diff(ctx: Context, args: Args) -> dict[str, Any]:
    ref = _ref(args)
    args.done()
    return ctx.engine.get(SpecService).diff(ref)


@op("spec.policy")
def policy(ctx: Context, args: Args) -> dict[str, Any]:
    args.done()
    return ctx.engine.get(SpecService).policy.describe()


@op("spec.meta")
def meta(ctx: Context, args: Args) -> dict[str, Any]:
    args.done()
    return {
        "help": titles(),
        "fields": [
            {"field": h.field, "label": h.label, "text": h.text, "podman": h.podman} for h in FIELDS
        ],
        "capabilities": {
            "all": list(defaults.ALL_CAPABILITIES),
            "default": sorted(defaults.DEFAULT_CAPABILITIES),
            "dangerous": sorted(defaults.DANGEROUS_CAPABILITIES),
        },
        "engineMounts": [m["destination"] for m in defaults.system_mounts()]
        + ["/etc/hostname", "/etc/hosts"],
    }
