"""Pure. Typed access to one table of a TOML configuration file, for ``ipop.config``.

A :class:`Section` hands out values by key with their types checked, remembers which keys were read,
and at the end refuses every other key by name (with a "did you mean" for typos). Every message it
raises names the file, the section and the key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from typing import Any

MAX_LIST = 64
"""Longest list accepted for bootstrap peers, STUN servers and DNS upstreams: a few of each are useful,
hundreds are a mistake."""


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming file, section and key."""


def known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TOML_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}


class Section:
    """Typed access to one table of the file that remembers which keys were read, so that
    :meth:`finish` can refuse the rest by name."""

    def __init__(self, where: str, name: str, table: dict[str, Any]) -> None:
        self.where = where
        self.name = name
        self.table = table
        self.used: set[str] = set()

    def error(self, key: str, detail: str) -> ConfigError:
        place = f"[{self.name}] {key}" if key else f"[{self.name}]"
        return ConfigError(f"{self.where}: {place}: {detail}")

    def _get(self, key: str, kind: type, default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise self.error(key, f"{value!r} is not {_TOML_TYPES[kind]}")
        return value

    def string(self, key: str, default: str) -> str:
        value: str = self._get(key, str, default)
        return value

    def optional(self, key: str) -> str | None:
        value: str | None = self._get(key, str, None)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self._get(key, bool, default))

    def integer(self, key: str, default: int | None, low: int, high: int) -> Any:
        value = self._get(key, int, default)
        if value is not None and not low <= value <= high:
            raise self.error(key, f"{value} is not in {low}..{high}")
        return value

    def number(self, key: str, kind: type) -> Any:
        value = self._get(key, kind, None)
        if value is None or kind is bool:
            return value
        if kind is float and not (math.isfinite(value) and value > 0):
            raise self.error(key, f"{value!r} must be a positive number of finite size")
        if kind is int and value < 0:
            raise self.error(key, f"{value} must not be negative")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value: str = self._get(key, str, default)
        if value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def strings(self, key: str, default: list[str]) -> list[str]:
        value: list[Any] = self._get(key, list, default)
        if len(value) > MAX_LIST:
            raise self.error(key, f"{len(value)} entries; at most {MAX_LIST}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"{item!r} is not a string")
        return value

    def value(self, key: str, text: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def each(self, key: str, items: list[str], parse: Callable[[str], Any]) -> list[Any]:
        return [self.value(f"{key}[{i}]", item, parse) for i, item in enumerate(items)]

    def finish(self) -> None:
        for key in self.table:
            if key not in self.used:
                hint = did_you_mean(key, self.used)
                raise self.error(key, f"unknown key{hint}; known keys are {known(self.used)}")
