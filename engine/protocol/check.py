"""What a verb is on the wire, and the one place its arguments are checked.

A verb is a name, a dataclass of arguments and (for type checkers) a reply type:

    CONTAINER_STOP: Verb[Stop, Summary] = Verb("container.stop", Stop, "runtime")

The argument dataclass says everything the engine accepts, with its limits in ``Annotated``:

    @wire
    class Stop:
        id: Ref                                   # required: no default
        timeout: Annotated[int, Range(0, 3600)] = 10

``@wire`` makes what ``@dataclass(frozen=True, kw_only=True)`` makes (keyword-only, frozen,
compared by value) without generating code: as dataclasses, the argument classes cost every
process 20 ms at start. ``decode`` turns a request's raw ``args`` (whatever the sender put
there) into that class or raises InvalidInputError naming the argument; ``encode`` is its
inverse for senders. The engine never trusts the web: every request is decoded here, whoever
sent it.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import (
    Annotated,
    Any,
    Generic,
    TypeVar,
    Union,
    cast,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

from engine.errors import InvalidInputError

A = TypeVar("A")
R = TypeVar("R")
T = TypeVar("T")
MISSING: Any = dataclasses.MISSING


class Param:
    """One argument of a @wire class: its name and its default (or default factory)."""

    __slots__ = ("name", "default", "factory")

    def __init__(self, name: str, default: Any, factory: Any) -> None:
        self.name, self.default, self.factory = name, default, factory

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.factory is MISSING


@dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(dataclasses.field,)
)
def wire(cls: type[T]) -> type[T]:
    """An argument class: keyword-only, frozen, compared and hashed by value, printed with
    its fields; ``field(default_factory=...)`` as dataclasses take it."""
    params = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, dataclasses.Field):
            params.append(Param(name, value.default, value.default_factory))
            delattr(cls, name)
        else:
            params.append(Param(name, value, MISSING))
    cls.__wire__ = tuple(params)  # type: ignore[attr-defined]
    for name, method in _WIRE_METHODS.items():
        setattr(cls, name, method)
    return cls


def params(cls: type) -> tuple[Param, ...]:
    """The arguments of a @wire class, in order."""
    found = cls.__dict__.get("__wire__")
    if found is None:
        raise TypeError(f"{cls!r} is not a @wire argument class")
    return cast(tuple[Param, ...], found)


def _wire_init(self: Any, *args: Any, **kwargs: Any) -> None:
    kind = type(self).__name__
    if args:
        raise TypeError(f"{kind}() takes keyword arguments only")
    for p in params(type(self)):
        if p.name in kwargs:
            value = kwargs.pop(p.name)
        elif p.default is not MISSING:
            value = p.default
        elif p.factory is not MISSING:
            value = p.factory()
        else:
            raise TypeError(f"{kind}() missing keyword argument {p.name!r}")
        object.__setattr__(self, p.name, value)
    if kwargs:
        raise TypeError(f"{kind}() got an unexpected keyword argument {next(iter(kwargs))!r}")


def _wire_values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, p.name) for p in params(type(self)))


def _wire_frozen(self: Any, name: str, *value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _wire_eq(self: Any, other: Any) -> bool:
    if type(other) is not type(self):
        return cast(bool, NotImplemented)
    return bool(_wire_values(self) == _wire_values(other))


def _wire_repr(self: Any) -> str:
    inner = ", ".join(f"{p.name}={getattr(self, p.name)!r}" for p in params(type(self)))
    return f"{type(self).__name__}({inner})"


_WIRE_METHODS: dict[str, Any] = {
    "__init__": _wire_init,
    "__setattr__": _wire_frozen,
    "__delattr__": _wire_frozen,
    "__eq__": _wire_eq,
    "__hash__": lambda self: hash(_wire_values(self)),
    "__repr__": _wire_repr,
}


@dataclass(frozen=True)
class Verb(Generic[A, R]):
    """A verb: its name, its argument type, and the engine.api module that serves it (so a
    caller in the engine's process imports only that one)."""

    name: str
    args: type[A]
    module: str


@dataclass(frozen=True)
class Text:
    """A string: at most ``max_len`` characters, no NUL, matching ``pattern`` if given."""

    max_len: int = 4096
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class Range:
    """A number between ``lo`` and ``hi`` (inclusive)."""

    lo: int | float | None = None
    hi: int | float | None = None


@dataclass(frozen=True)
class Items:
    """A list of at most ``max_items`` strings, each as Text(max_len) says."""

    max_items: int = 1024
    max_len: int = 4096


@dataclass(frozen=True)
class Convert:
    """A value of its own kind: ``fn(key, raw)`` checks it and returns what the handler gets."""

    fn: Callable[[str, Any], Any]


@dataclass(frozen=True)
class _Field:
    name: str
    check: Callable[[str, Any], Any]
    required: bool


def decode(cls: type[A], raw: Any, op: str = "") -> A:
    """``raw`` checked against ``cls``. A missing or null argument takes its default (or is
    refused when it has none); an argument ``cls`` does not have is refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{op or 'request'}: args must be an object")
    plan = _plan(cast(type, cls))
    unknown = sorted(str(k)[:64] for k in raw if k not in plan)
    if unknown:
        raise InvalidInputError(f"unknown argument {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, field in plan.items():
        value = raw.get(name)
        if value is None:
            if field.required:
                raise InvalidInputError(f"{name}: required")
            continue
        values[name] = field.check(name, value)
    return cls(**values)


def encode(args: Any) -> dict[str, Any]:
    """The wire form of an argument dataclass: its fields, the unset (None) ones left out."""
    out: dict[str, Any] = {}
    for p in params(type(args)):
        value = getattr(args, p.name)
        if value is not None:
            out[p.name] = value
    return out


@cache
def _plan(cls: type) -> dict[str, _Field]:
    hints = get_type_hints(cls, include_extras=True)
    return {p.name: _Field(p.name, _checker(hints[p.name]), p.required) for p in params(cls)}


def _checker(hint: Any) -> Callable[[str, Any], Any]:
    meta: tuple[Any, ...] = ()
    hint = _strip_none(hint)
    if get_origin(hint) is Annotated:
        hint, *rest = get_args(hint)
        meta = tuple(rest)
    hint = _strip_none(hint)
    for m in meta:
        if isinstance(m, Convert):
            return m.fn
    text = next((m for m in meta if isinstance(m, Text)), Text())
    bounds = next((m for m in meta if isinstance(m, Range)), Range())
    items = next((m for m in meta if isinstance(m, Items)), Items())
    if hint is str:
        return lambda key, value: check_str(key, value, text)
    if hint is bool:
        return check_bool
    if hint is int:
        return lambda key, value: check_int(key, value, bounds)
    if hint is float:
        return lambda key, value: check_float(key, value, bounds)
    if get_origin(hint) is list:
        return lambda key, value: check_str_list(key, value, items)
    if get_origin(hint) is dict:
        return check_obj
    if hint is Any:
        return lambda key, value: value
    raise TypeError(f"no check for argument type {hint!r}")


def _strip_none(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        rest = [h for h in get_args(hint) if h is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def check_str(key: str, value: Any, text: Text) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{key}: must be a string")
    if len(value) > text.max_len:
        raise InvalidInputError(f"{key}: longer than {text.max_len} characters")
    if "\x00" in value:
        raise InvalidInputError(f"{key}: contains a NUL byte")
    if text.pattern is not None and not text.pattern.match(value):
        raise InvalidInputError(f"{key}: {value[:80]!r} is not valid")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{key}: must be true or false")
    return value


def check_int(key: str, value: Any, bounds: Range) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{key}: must be an integer")
    _check_range(key, value, bounds)
    return value


def check_float(key: str, value: Any, bounds: Range) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{key}: must be a number")
    _check_range(key, value, bounds)
    return float(value)


def _check_range(key: str, value: float, bounds: Range) -> None:
    lo, hi = bounds.lo, bounds.hi
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidInputError(f"{key}: must be between {lo} and {hi}")


def check_str_list(key: str, value: Any, items: Items) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > items.max_items:
        raise InvalidInputError(f"{key}: must be a list of at most {items.max_items} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or len(item) > items.max_len or "\x00" in item:
            raise InvalidInputError(f"{key}[{i}]: must be a string of at most {items.max_len}")
    return list(value)


def check_obj(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{key}: must be an object")
    return dict(value)
