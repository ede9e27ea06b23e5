"""Reading one TOML table: every key checked for its type and range, every
unknown key an error naming the file and the key (``slave[2].host``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from dnsmaster.errors import ConfigError
from dnsmaster.fsutil import account, home

__all__ = ["TableReader", "expand_home", "field_names"]


def expand_home(text: str) -> Path:
    """``text`` as a path, a leading ``~`` or ``~/`` being the running account's home.

    The home comes from the passwd entry (:func:`dnsmaster.fsutil.home`), never from
    ``$HOME``: daemontools and runit pass on the environment of whoever started the
    supervisor (often root's ``HOME=/root``), and the daemon runs as its own account.
    ``~NAME`` is NAME's home, as in the shell. ValueError if the account has no entry.
    """
    if text != "~" and not text.startswith("~/"):
        return Path(text).expanduser()  # ~NAME: looked up in passwd, $HOME unused
    own = home()
    if own is None:
        raise ValueError(f"~ has no meaning for {account()}: give an absolute path")
    return own / text[2:]


_T = TypeVar("_T")


class TableReader:
    """Takes keys out of one TOML table, checking each; leftovers are unknown keys."""

    def __init__(self, table: Mapping[str, Any], *, path: Path, prefix: str) -> None:
        self._table = dict(table)
        self._given = frozenset(self._table)
        self._path = path
        self._prefix = prefix
        self._known: tuple[str, ...] = ()

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(str(self._path), f"{self._prefix}{key}", reason)

    def take(self, key: str, kind: type[_T] | tuple[type, ...], default: _T) -> _T:
        if key not in self._table:
            return default
        value = self._table.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are ints to isinstance; a bool is never a number here.
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_name(kinds)}, not {_toml_type(value)}")
        return value  # type: ignore[return-value]

    def text(self, key: str, default: str = "") -> str:
        value = self.take(key, str, default)
        if key in self._given and not value:
            raise self.error(key, "must not be empty")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self.take(key, (int, float), default))
        if math.isnan(value) or value < minimum:
            raise self.error(key, f"must be at least {minimum:g}")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.take(key, int, default)
        if not low <= value <= high:
            raise self.error(key, f"must be from {low} to {high}, not {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return value

    def path(self, key: str) -> Path | None:
        value = self.take(key, str, "")
        if key in self._given and not value:
            raise self.error(key, "must not be empty")
        if not value:
            return None
        try:
            return (self._path.parent / expand_home(value)).absolute()
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def table(self, key: str) -> Mapping[str, Any]:
        return self.take(key, dict, {})

    def known(self, names: tuple[str, ...]) -> TableReader:
        """Name the keys this table may hold, for the unknown-key message."""
        self._known = names
        return self

    def __enter__(self) -> TableReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self._table:
            key = sorted(self._table)[0]
            raise self.error(key, f"unknown key (known: {', '.join(sorted(self._known))})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    if float in kinds:
        kinds = tuple(k for k in kinds if k is not int)  # int or float: "a number"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _toml_type(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        dict: "a table",
        list: "an array",
    }.get(type(value), type(value).__name__)


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))
