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

from engine.api.base import Context, op
from engine.protocol import verbs
from engine.protocol.verbs import Json
from engine.spec import defaults
from engine.spec.help import FIELDS, titles
from engine.spec.service import SpecService


@op(verbs.SPEC_GENERATE)
def generate(ctx: Context, args: verbs.Id) -> Json:
    result = ctx.engine.get(SpecService).generate(args.id, ctx.publisher)
    result.pop("spec", None)
    return result


@op(verbs.SPEC_GET)
def get(ctx: Context, args: verbs.Id) -> Json:
    return ctx.engine.get(SpecService).get(args.id)


@op(verbs.SPEC_PUT)
def put(ctx: Context, args: verbs.SpecText) -> Json:
    return ctx.engine.get(SpecService).put(args.id, args.text, ctx.publisher)


@op(verbs.SPEC_VALIDATE)
def validate(ctx: Context, args: verbs.SpecText) -> Json:
    return ctx.engine.get(SpecService).validate(args.id, args.text)


@op(verbs.SPEC_RESET)
def reset(ctx: Context, args: verbs.Id) -> Json:
    return ctx.engine.get(SpecService).reset(args.id, ctx.publisher)


@op(verbs.SPEC_DIFF)
def diff(ctx: Context, args: verbs.Id) -> Json:
    return ctx.engine.get(SpecService).diff(args.id)


@op(verbs.SPEC_POLICY)
def policy(ctx: Context, args: verbs.NoArgs) -> Json:
    return ctx.engine.get(SpecService).policy.describe()


@op(verbs.SPEC_META)
def meta(ctx: Context, args: verbs.NoArgs) -> Json:
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
