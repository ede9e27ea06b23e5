"""Which files in a zones directory are DNS data.

The classic make-data concatenates ``header`` and every ``zones.*``. Editors leave
backups, swap files and temp files next to them (``zones.x~``, ``.zones.x.swp``,
``#zones.x#``, ``zones.x.tmp``...); publishing those would serve stale or half
written data, so they never count, and the watcher ignores them too.
"""

from __future__ import annotations

__all__ = ["HEADER", "JUNK_SUFFIXES", "is_source", "source_order", "why_skipped"]

HEADER = "header"

#: What editors and tools add to a name they back up or write to.
JUNK_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".bak", ".orig", ".rej")


def why_skipped(name: str) -> str | None:
    """Why ``name`` is not a data source, or None when it is one.

    Only names that look like data (``header`` or ``zones.*``) get a reason worth
    telling the operator; anything else in the directory is simply not ours.
    """
    if name.startswith("."):
        return "hidden file (editor swap or temp file)"
    if name.startswith("#") and name.endswith("#"):
        return "editor autosave file"
    if name.endswith(JUNK_SUFFIXES):
        return "editor backup or temp file"
    if name == HEADER or (name.startswith("zones.") and len(name) > len("zones.")):
        return None
    return "not header or zones.*"


def is_source(name: str) -> bool:
    """True for ``header`` and ``zones.*`` files that are not editor leftovers."""
    return why_skipped(name) is None


def source_order(names: list[str]) -> list[str]:
    """``header`` first, then the ``zones.*`` files in byte order of their names."""
    chosen = [n for n in names if is_source(n)]
    zones = sorted(
        (n for n in chosen if n != HEADER), key=lambda n: n.encode("utf-8", "surrogateescape")
    )
    return ([HEADER] if HEADER in chosen else []) + zones
