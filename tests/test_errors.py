"""One tree of exceptions: every exception dnsmaster defines is a DnsmasterError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import dnsmaster
from dnsmaster.errors import AllowlistError, DnsmasterError, reason


def _exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a dnsmaster module, by its dotted name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(dnsmaster.__path__, "dnsmaster."):
        if info.name.endswith("__main__"):  # running it is what importing it does
            continue
        module = importlib.import_module(info.name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, BaseException):
                found[f"{info.name}.{cls_name}"] = cls
    return found


def test_every_exception_is_a_dnsmaster_error() -> None:
    outside = sorted(
        name for name, cls in _exceptions().items() if not issubclass(cls, DnsmasterError)
    )
    assert not outside, f"exceptions outside DnsmasterError: {outside}"


def test_the_walk_finds_the_exceptions() -> None:
    """The test above looks where the exceptions are, private ones too (it can fail)."""
    found = set(_exceptions())
    assert {"dnsmaster.errors.ConfigError", "dnsmaster.slave.outcome.Refused"} <= found
    assert any(name.rpartition(".")[2].startswith("_") for name in found)


def test_reason_is_the_error_s_own_words() -> None:
    assert reason(OSError(28, "No space left on device")) == "No space left on device"
    assert reason(TimeoutError()) == "timed out"
    assert reason(ValueError()) == "ValueError"
    assert reason(ValueError("bad serial")) == "bad serial"


def test_allowlist_error_names_the_value_at_fault() -> None:
    exc = AllowlistError("bank.example", "not allowed")
    assert (exc.domain, exc.reason, str(exc)) == (
        "bank.example",
        "not allowed",
        "bank.example: not allowed",
    )
    assert reason(exc) == "not allowed"
    assert str(AllowlistError("", "needs --allow")) == "needs --allow"
