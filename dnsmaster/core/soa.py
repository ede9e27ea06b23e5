"""Which zones a build serves, with which SOA serial, by source file (pure).

The daemon verifies a push by asking each slave's tinydns for the SOA of the
zones that changed. ``data`` as make-data writes it says both: every source
starts with a ``# zones.X:1`` marker, and every zone has a ``Z`` line with an
explicit serial.
"""

from __future__ import annotations

import re

from dnsmaster.core.fields import name_to_wire, number

__all__ = ["zone_serials"]

# The catalog's section (dnsmaster.core.catalog) is one too, so that the last zones
# file's section ends where it starts.
_SECTION = re.compile(rb"^# ((?:header|zones\.[^\n]*?|catalog)):1\n", re.MULTILINE)
# Up to this many sources are each found by their marker (a rebuild after a few
# files changed): not every marker of a data of 100,000 files turned into a name.
_FEW = 32
_SOA = re.compile(rb"^Z([^:\n]*):[^:\n]*:[^:\n]*:([^:\n]*)", re.MULTILINE)


def zone_serials(data: bytes, sources: frozenset[str] | None = None) -> dict[bytes, int]:
    """Zone (wire-format name, lower case) -> SOA serial, for ``sources`` or all.

    A zone listed twice keeps its first serial, as tinydns answers with the first
    SOA record it finds for a name.
    """
    found: dict[bytes, int] = {}
    if sources is None:
        spans = [(0, len(data))]
    elif len(sources) <= _FEW:
        spans = sorted(span for name in sources for span in _sections_of(data, name))
    else:
        marks = list(_SECTION.finditer(data))
        spans = [
            (m.end(), marks[i + 1].start() if i + 1 < len(marks) else len(data))
            for i, m in enumerate(marks)
            if m.group(1).decode("utf-8", "surrogateescape") in sources
        ]
    for start, end in spans:
        for m in _SOA.finditer(data, start, end):
            serial = number(m.group(2))
            if serial is None:
                continue
            try:
                wire = name_to_wire(m.group(1))
            except ValueError:
                continue
            found.setdefault(wire.lower(), serial & 0xFFFFFFFF)
    return found


def _sections_of(data: bytes, name: str) -> list[tuple[int, int]]:
    """Where each section marked ``# NAME:1`` runs in ``data``: from after its marker
    to the next marker (what a scan of every marker finds for that name)."""
    wanted = name.encode("utf-8", "surrogateescape")
    marker = b"# " + wanted + b":1\n"
    spans = []
    at = data.find(marker)
    while at >= 0:
        mark = _SECTION.match(data, at)  # at a line's start, and a marker for that name
        if mark is not None and mark.group(1) == wanted:
            start = mark.end()
            following = _SECTION.search(data, start)
            spans.append((start, following.start() if following else len(data)))
        at = data.find(marker, at + 1)
    return spans
