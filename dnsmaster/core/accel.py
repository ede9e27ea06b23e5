"""The optional C accelerators, found in one place: which are there, and why not.

setup.py builds two extensions when a C compiler is at hand, both optional:

``compiler`` (``_ccompile.c``)
    the compiler's fast path (``run``, ``run_text``), the drop-in's streaming
    compile (``Stream``, behind :func:`dnsmaster.core.compiler.compile_stream`),
    make-data's pass over a source (``scan``, ``expand``, ``dot_line``), and the cdb writer behind
    :func:`dnsmaster.core.cdb.write_fd` (``write_cdb``);
``records`` (``_cdbblob.c``)
    packed records: ``pack``, ``scan``, and the cdb writer behind
    :func:`dnsmaster.core.cdb.write_packed` (``write``).

Both make their cdb files with the one cdb_make of ``cdbmake.h``. Without an
extension, or with ``DNSMASTER_PURE_PYTHON=1`` for both, the pure-Python reference
runs instead and gives the same bytes, only slower.

Every module with a C path asks here rather than importing an extension itself, so
the environment is read in one place and each extension is imported once, on first
use: the receiver (one process per push) never loads the one it does not need.
Tests choose a path with :func:`using`.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

__all__ = [
    "PURE_PYTHON_ENV",
    "Extension",
    "Kind",
    "compiler",
    "disabled",
    "found",
    "records",
    "state",
    "using",
]

#: Set to 1 to run pure Python even where the C accelerators are built.
PURE_PYTHON_ENV = "DNSMASTER_PURE_PYTHON"

#: The two extensions, by what they speed up.
Kind = Literal["compiler", "records"]

_SOURCES: dict[Kind, str] = {
    "compiler": "dnsmaster/core/_ccompile.c",
    "records": "dnsmaster/core/_cdbblob.c",
}

# What a test chose with using(), ahead of what was found.
_chosen: dict[Kind, ModuleType | None] = {}


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension as the loader found it: ``module``, or ``why_not`` in words."""

    kind: Kind
    source: str
    module: ModuleType | None
    why_not: str | None


def disabled() -> bool:
    """Whether ``DNSMASTER_PURE_PYTHON`` turns the accelerators off on purpose."""
    return os.environ.get(PURE_PYTHON_ENV, "") not in {"", "0"}


def _import(kind: Kind) -> ModuleType:
    if kind == "compiler":
        from dnsmaster.core import _ccompile  # noqa: PLC0415 - optional, built by setup.py

        return _ccompile
    from dnsmaster.core import _cdbblob  # noqa: PLC0415 - optional, built by setup.py

    return _cdbblob


@functools.cache
def found(kind: Kind) -> Extension:
    """The extension ``kind``, imported on the first call only.

    ``why_not`` is ``disabled by DNSMASTER_PURE_PYTHON``, ``not built``, or for a
    built one that does not load, ``broken: `` and the import's own message.
    """
    source = _SOURCES[kind]
    if disabled():
        return Extension(kind, source, None, f"disabled by {PURE_PYTHON_ENV}")
    try:
        module = _import(kind)
    except ModuleNotFoundError:
        return Extension(kind, source, None, "not built")
    except ImportError as exc:  # built for another Python, or a missing symbol
        return Extension(kind, source, None, f"broken: {exc}")
    return Extension(kind, source, module, None)


def _in_use(kind: Kind) -> ModuleType | None:
    return _chosen[kind] if kind in _chosen else found(kind).module


def compiler() -> ModuleType | None:
    """The compiler's extension (``_ccompile``) in use, or None for pure Python."""
    return _in_use("compiler")


def records() -> ModuleType | None:
    """The packed records' extension (``_cdbblob``) in use, or None for pure Python."""
    return _in_use("records")


@contextlib.contextmanager
def using(kind: Kind, module: ModuleType | None) -> Iterator[None]:
    """Run the ``with`` block on ``module`` for ``kind`` (None: pure Python).

    For tests, which hold the two paths to the same results; not thread-safe.
    """
    chosen, before = kind in _chosen, _chosen.get(kind)
    _chosen[kind] = module
    try:
        yield
    finally:
        if chosen:
            _chosen[kind] = before
        else:
            del _chosen[kind]


def state() -> tuple[bool, str]:
    """Whether the compiler's extension is in use, and in words why (not): what
    ``dnsmaster --version`` and ``doctor`` say."""
    why_not = found("compiler").why_not
    if why_not is None:
        return True, "active"
    if why_not == "not built":
        return False, "not built: pure Python, several times slower"
    return False, why_not
