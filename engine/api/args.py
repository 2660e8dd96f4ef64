"""Checks for the arguments of an engine request. The engine never trusts the web: every
value is checked here again, whatever the web already checked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.errors import InvalidInputError


class Args:
    """Typed access to a request's ``args`` dict; every ``get_*`` raises InvalidInputError
    naming the argument. ``done()`` refuses keys nobody asked for."""

    def __init__(self, raw: Any, op: str = "") -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"{op or 'request'}: args must be an object")
        self._raw = dict(raw)
        self._seen: set[str] = set()
        self._op = op

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        if key not in self._raw or self._raw[key] is None:
            if required:
                raise InvalidInputError(f"{key}: required")
            return None
        return self._raw[key]

    def get_str(
        self,
        key: str,
        *,
        default: str | None = None,
        max_len: int = 4096,
        pattern: re.Pattern[str] | None = None,
        required: bool = False,
    ) -> Any:
        value = self._get(key, required and default is None)
        if value is None:
            return default
        if not isinstance(value, str):
            raise InvalidInputError(f"{key}: must be a string")
        if len(value) > max_len:
            raise InvalidInputError(f"{key}: longer than {max_len} characters")
        if "\x00" in value:
            raise InvalidInputError(f"{key}: contains a NUL byte")
        if pattern is not None and not pattern.match(value):
            raise InvalidInputError(f"{key}: {value[:80]!r} is not valid")
        return value

    def get_int(
        self,
        key: str,
        *,
        default: int | None = None,
        lo: int | None = None,
        hi: int | None = None,
        required: bool = False,
    ) -> Any:
        value = self._get(key, required and default is None)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{key}: must be an integer")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InvalidInputError(f"{key}: must be between {lo} and {hi}")
        return value

    def get_float(
        self,
        key: str,
        *,
        default: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> Any:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"{key}: must be a number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InvalidInputError(f"{key}: must be between {lo} and {hi}")
        return float(value)

    def get_bool(self, key: str, *, default: bool = False) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidInputError(f"{key}: must be true or false")
        return value

    def get_str_list(self, key: str, *, max_items: int = 1024, max_len: int = 4096) -> list[str]:
        value = self._get(key, False)
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > max_items:
            raise InvalidInputError(f"{key}: must be a list of at most {max_items} strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or len(item) > max_len or "\x00" in item:
                raise InvalidInputError(f"{key}[{i}]: must be a string of at most {max_len}")
        return list(value)

    def get_obj(self, key: str, *, required: bool = False) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"{key}: must be an object")
        return dict(value)

    def raw(self, key: str) -> Any:
        return self._get(key, False)

    def done(self) -> None:
        unknown = sorted(set(self._raw) - self._seen)
        if unknown:
            raise InvalidInputError(f"unknown argument {unknown[0]!r}")
