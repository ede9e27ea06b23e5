"""The guard against the big mistake: a build that removes too much is held (pure).

Control panels that regenerate zones files have wiped whole zone sets by accident:
a save of an empty or truncated file, a script gone wrong. A build that drops a
whole zone, or more than a set share of the records, is therefore not pushed until
an operator accepts it. This module only judges; the daemon holds, and so does
``dnsmaster push`` without a daemon (:mod:`dnsmaster.master.guarded`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

from dnsmaster.core.compiler import PackedRecords, compile_text
from dnsmaster.core.fields import name_to_wire, number
from dnsmaster.errors import TinydnsDataError

__all__ = ["MIN_RECORDS", "Text", "Verdict", "count_records", "judge", "judge_data", "zones_of"]

#: A data text as the guard reads it: bytes, or a function that gives its pieces
#: anew at each call, in order, each cut just after a newline (a large build read
#: from its file a piece at a time: neither the text nor its records are ever whole
#: in memory). Every record and every ``Z`` line comes from one line, so the pieces
#: say what the whole says.
Text = bytes | Callable[[], Iterable[bytes]]

#: The share rule judges only data of at least this many records. In a handful of
#: records every change is a large share: an ACME DNS-01 hook removing its one TXT
#: record from five would be held at every renewal. octoDNS's plan safety has the
#: same floor (MIN_EXISTING_RECORDS = 10). Dropping a whole zone is judged anyway.
MIN_RECORDS = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a build is held: the records it removes and the zones it drops."""

    old_records: int
    new_records: int
    removed_zones: tuple[str, ...]
    reason: str


def judge(
    old_records: int,
    new_records: int,
    old_zones: Collection[str],
    new_zones: Collection[str],
    *,
    max_removed: float,
    zones: bool,
    allow: Collection[str] = (),
) -> Verdict | None:
    """None when the new build may go out; else why it must wait for an operator.

    ``max_removed`` is the share of records a build may remove (1 allows any), judged
    from :data:`MIN_RECORDS` records on; with ``zones``, dropping any zone not in
    ``allow`` holds the build too.
    """
    allowed = {z.lower().rstrip(".") for z in allow}
    gone = tuple(sorted(z for z in set(old_zones) - set(new_zones) if z not in allowed))
    removed = max(0, old_records - new_records)
    share = removed / old_records if old_records else 0.0
    reasons = []
    if share > max_removed and old_records >= MIN_RECORDS:
        reasons.append(
            f"removes {removed} of {old_records} records ({share:.0%}, more than {max_removed:.0%})"
        )
    if zones and gone:
        reasons.append(f"removes the zones {', '.join(gone)}")
    if not reasons:
        return None
    return Verdict(old_records, new_records, gone if zones else (), "; ".join(reasons))


def judge_data(
    old: Text,
    new: Text,
    *,
    max_removed: float,
    zones: bool,
    allow: Collection[str] = (),
    old_records: int | None = None,
    new_records: int | None = None,
    old_zones: Collection[str] | None = None,
    new_zones: Collection[str] | None = None,
) -> Verdict | None:
    """:func:`judge` on two data texts: ``old`` what the slaves were given, ``new``
    the build to push. Record counts and zones not given are read from the text
    (:func:`count_records`, :func:`zones_of`)."""
    if old_records is None:
        old_records = count_records(old)
    if new_records is None:
        new_records = count_records(new)
    return judge(
        old_records,
        new_records,
        zones_of(old) if old_zones is None else old_zones,
        zones_of(new) if new_zones is None else new_zones,
        max_removed=max_removed,
        zones=zones,
        allow=allow,
    )


#: About how much of a text is compiled at once.
_PIECE = 1 << 20


def _pieces(text: Text) -> Iterable[bytes]:
    if not isinstance(text, bytes):
        return text()
    return _cut(text)


def _cut(data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + _PIECE - 1) + 1 or len(data)
        yield data[start:end]
        start = end


def count_records(text: Text) -> int:
    """How many records ``text`` compiles to, a piece at a time, packed (no object
    per record); a line it cannot compile raises as for the whole text."""
    count = lines = 0
    for piece in _pieces(text):
        packed = PackedRecords()
        try:
            compile_text(piece, 0, packed=packed)
        except TinydnsDataError as exc:
            if not lines:
                raise
            at = exc.lineno + lines
            message = str(exc).replace(f"data line {exc.lineno}:", f"data line {at}:")
            raise TinydnsDataError(message, lineno=at, reason=exc.reason) from None
        count += packed.count
        lines += piece.count(b"\n")
    return count


#: A ``Z`` line's name and serial, as :func:`dnsmaster.core.soa.zone_serials` reads
#: them; found after a newline (a literal the regex engine looks for fast) rather than
#: at ``^`` under MULTILINE, which it tries at every byte: 5 times slower.
_SOA = re.compile(rb"\nZ([^:\n]*):[^:\n]*:[^:\n]*:([^:\n]*)")


def zones_of(text: Text) -> set[str]:
    """The zones ``text`` has a ``Z`` line for, as text (:func:`zone_text`): the zones
    of :func:`dnsmaster.core.soa.zone_serials` (a ``Z`` line with a serial, whose
    name is a valid one), each name's text made once however many lines name it."""
    names: set[bytes] = set()
    for piece in _pieces(text):
        found = _SOA.findall(piece)
        if piece.startswith(b"Z"):  # each piece starts a line, with no newline before it
            end = piece.find(b"\n")
            found += _SOA.findall(b"\n" + (piece if end < 0 else piece[:end]))
        valid = {serial: number(serial) is not None for serial in {s for _, s in found}}
        names.update(name for name, serial in found if valid[serial])
    zones = set()
    for name in names:
        try:
            zones.add(zone_text(name_to_wire(name).lower()))
        except ValueError:
            continue
    return zones


def zone_text(wire: bytes) -> str:
    """A zone's wire-format name as text, without the final dot (``example.com``)."""
    labels = []
    at = 0
    while wire[at]:
        labels.append(wire[at + 1 : at + 1 + wire[at]].decode("ascii", "backslashreplace"))
        at += 1 + wire[at]
    return ".".join(labels)
