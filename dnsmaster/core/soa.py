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
_SOA = re.compile(rb"^Z([^:\n]*):[^:\n]*:[^:\n]*:([^:\n]*)", re.MULTILINE)


def zone_serials(data: bytes, sources: frozenset[str] | None = None) -> dict[bytes, int]:
    """Zone (wire-format name, lower case) -> SOA serial, for ``sources`` or all.

    A zone listed twice keeps its first serial, as tinydns answers with the first
    SOA record it finds for a name.
    """
    found: dict[bytes, int] = {}
    marks = list(_SECTION.finditer(data))
    if sources is None:
        spans = [(0, len(data))]
    else:
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
