"""Two tinydns data texts compared record by record, zone by zone (pure).

Each text is compiled (:func:`dnsmaster.core.compiler.compile_text`) and every cdb
record decoded back (spec §4.1: type(2) marker(1) loc(0|2) ttl(4) ttd(8) rdata)
into a :class:`Record` a person can read: owner name, type, TTL, rdata shown as
``dig`` would (A as a dotted quad, NS/CNAME/PTR as names, MX as preference and
name, TXT as quoted text, SRV as priority weight port target, AAAA as IPv6, any
other type as RFC 3597 ``\\# LEN HEX``), location and ttd.

Records are grouped by zone: the zones are the owners of SOA records, and a record
belongs to the longest zone its owner ends in (records in no zone, and ``%``
client-location entries, go to :data:`NO_ZONE`). A SOA record's serial is kept
out of its data: every build stamps a new serial into every zone, so a change of
serial alone is no change; the serials are reported per zone (old -> new).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnsmaster.core.compiler import compile_text

__all__ = ["NO_ZONE", "Plan", "Record", "ZoneChange", "compare", "parse"]

#: The pseudo-zone of records under no SOA, and of ``%`` location-map entries.
NO_ZONE = "(no zone)"

_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA"}
_TYPES[33] = "SRV"
_SOA = 6
# A byte shown as itself in a name or text; any other as \ooo (the data format's escape).
_PLAIN = frozenset(range(0x21, 0x7F)) - {ord("\\"), ord(":"), ord('"')}


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record. ``serial`` (SOA only) takes no part in comparisons."""

    name: str
    type: str
    ttl: int | None
    data: str
    location: str | None = None
    ttd: str | None = None
    serial: int | None = field(default=None, compare=False)

    def text(self) -> str:
        """``name TYPE ttl data`` (+ ``lo=`` and ``ttd=`` when set), one line."""
        return f"{self.name} {self.type} {self.tail()}"

    def tail(self) -> str:
        """What follows name and type: TTL, data, location, ttd."""
        words = [] if self.ttl is None else [str(self.ttl)]
        words.append(self.data)
        if self.location is not None:
            words.append(f"lo={self.location}")
        if self.ttd is not None:
            words.append(f"ttd={self.ttd}")
        return " ".join(words)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "ttl": self.ttl,
            "data": self.data,
            "location": self.location,
            "ttd": self.ttd,
        }


@dataclass(frozen=True, slots=True)
class ZoneChange:
    """The records of one zone (present on both sides) that differ."""

    zone: str
    added: tuple[Record, ...]
    removed: tuple[Record, ...]
    changed: tuple[tuple[Record, Record], ...]
    serial: tuple[int | None, int | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [r.to_json() for r in self.added],
            "removed": [r.to_json() for r in self.removed],
            "changed": [[old.to_json(), new.to_json()] for old, new in self.changed],
            "serial": list(self.serial),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What replacing the old data by the new changes.

    ``zones_added``/``zones_removed`` map a zone to its record count and serial;
    ``zones`` lists the zones on both sides whose records differ; ``serial_only``
    the zones on both sides whose only difference is the SOA serial.
    """

    zones_added: dict[str, tuple[int, int | None]]
    zones_removed: dict[str, tuple[int, int | None]]
    zones: tuple[ZoneChange, ...]
    serial_only: dict[str, tuple[int | None, int | None]]

    @property
    def changed(self) -> bool:
        return bool(self.zones_added or self.zones_removed or self.zones)

    def to_json(self) -> dict[str, Any]:
        return {
            "zones_added": list(self.zones_added),
            "zones_removed": list(self.zones_removed),
            "zones": {z.zone: z.to_json() for z in self.zones},
        }

    def lines(self) -> list[str]:
        """The plan for a person: one line a zone or record, then a summary line."""
        out = []
        for zone, (count, serial) in self.zones_removed.items():
            out.append(f"- zone {zone}: removed, {count} records, serial {serial}")
        for zone, (count, serial) in self.zones_added.items():
            out.append(f"+ zone {zone}: added, {count} records, serial {serial}")
        for z in self.zones:
            old, new = z.serial
            serials = f"serial {old}" if old == new else f"serial {old} -> {new}"
            out.append(f"~ zone {z.zone}: {serials}")
            out.extend(f"  - {r.text()}" for r in z.removed)
            out.extend(f"  + {r.text()}" for r in z.added)
            out.extend(f"  ~ {a.name} {a.type}: {a.tail()} -> {b.tail()}" for a, b in z.changed)
        out.append(self.summary())
        return out

    def summary(self) -> str:
        if not self.changed:
            words = "no change"
            if self.serial_only:
                words += f" (only the serial differs, in {len(self.serial_only)} zones)"
            return words
        added = sum(len(z.added) for z in self.zones)
        removed = sum(len(z.removed) for z in self.zones)
        changed = sum(len(z.changed) for z in self.zones)
        return (
            f"changes: zones {len(self.zones_added)} added, {len(self.zones_removed)} removed, "
            f"{len(self.zones)} changed; records {added} added, {removed} removed, "
            f"{changed} changed"
        )


def parse(data: bytes) -> dict[str, list[Record]]:
    """Zone -> its records, in data order, for one data text.

    Raises :class:`~dnsmaster.errors.TinydnsDataError` for a line tinydns-data
    refuses. A ``Z`` line without a serial gets 0 (the serial is no part of a record).
    """
    recs = compile_text(data, 0)
    decoded = [
        (key, _decode(key, value)) for key, value in zip(recs.keys, recs.values, strict=True)
    ]
    apexes = {key for key, rec in decoded if rec.type == "SOA"}
    zones: dict[str, list[Record]] = defaultdict(list)
    for key, rec in decoded:
        zone = _zone_of(key, apexes) if rec.type != "%" else None
        zones[NO_ZONE if zone is None else _name(zone)].append(rec)
    return dict(zones)


def compare(old: bytes, new: bytes) -> Plan:
    """The plan that takes ``old`` data to ``new`` data."""
    return compare_parsed(parse(old), parse(new))


def compare_parsed(old: dict[str, list[Record]], new: dict[str, list[Record]]) -> Plan:
    """:func:`compare` on two :func:`parse` results."""
    added = {z: (len(new[z]), _serial(z, new[z])) for z in sorted(new.keys() - old.keys())}
    removed = {z: (len(old[z]), _serial(z, old[z])) for z in sorted(old.keys() - new.keys())}
    changes = []
    serial_only = {}
    for zone in sorted(old.keys() & new.keys()):
        serial = (_serial(zone, old[zone]), _serial(zone, new[zone]))
        change = _compare_zone(zone, old[zone], new[zone], serial)
        if change.added or change.removed or change.changed:
            changes.append(change)
        elif serial[0] != serial[1]:
            serial_only[zone] = serial
    return Plan(added, removed, tuple(changes), serial_only)


def _compare_zone(
    zone: str,
    old: Sequence[Record],
    new: Sequence[Record],
    serial: tuple[int | None, int | None],
) -> ZoneChange:
    """Records only in ``old``, only in ``new``, and pairs of one name and type that
    differ in TTL, data, location or ttd. Repeated records count as many times."""
    before = _by_owner(old)
    after = _by_owner(new)
    added: list[Record] = []
    removed: list[Record] = []
    changed: list[tuple[Record, Record]] = []
    for owner in before.keys() | after.keys():
        gone = list(before.get(owner, ()))
        came = []
        for rec in after.get(owner, ()):
            if rec in gone:
                gone.remove(rec)
            else:
                came.append(rec)
        # Same data, another TTL (or location, or ttd): a change of that record.
        for rec in list(gone):
            twin = next((r for r in came if r.data == rec.data), None)
            if twin is not None:
                gone.remove(rec)
                came.remove(twin)
                changed.append((rec, twin))
        # One record of a name and type replaced by another: a change too.
        while gone and came:
            changed.append((gone.pop(0), came.pop(0)))
        removed.extend(gone)
        added.extend(came)
    return ZoneChange(
        zone,
        tuple(sorted(added, key=_order)),
        tuple(sorted(removed, key=_order)),
        tuple(sorted(changed, key=lambda pair: _order(pair[0]))),
        serial,
    )


def _by_owner(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    owners: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for rec in records:
        owners[rec.name, rec.type].append(rec)
    return owners


def _order(rec: Record) -> tuple[str, str, str, int]:
    return (rec.name, rec.type, rec.data, rec.ttl or 0)


def _serial(zone: str, records: Sequence[Record]) -> int | None:
    """The zone's serial: its first SOA at the apex, as tinydns answers with the first."""
    return next((r.serial for r in records if r.type == "SOA" and r.name == zone), None)


def _zone_of(key: bytes, apexes: set[bytes]) -> bytes | None:
    """The longest zone ``key`` (a wire name) is in or at."""
    pos = 0
    while pos < len(key):
        if key[pos:] in apexes:
            return key[pos:]
        if key[pos] == 0:
            break
        pos += key[pos] + 1
    return None


def _decode(key: bytes, value: bytes) -> Record:
    """One cdb record back into a :class:`Record` (spec §4)."""
    if key[:2] == b"\0%":  # §5.10: a location-map entry, the value is the location
        prefix = ".".join(str(b) for b in key[2:])
        return Record(f"%{prefix}", "%", None, _text(value))
    rtype = int.from_bytes(value[:2], "big")
    marker = value[2:3]
    pos = 3
    location = None
    if marker in (b">", b"+"):
        location = _text(value[3:5])
        pos = 5
    name = _name(key)
    if marker in (b"*", b"+"):  # §4.2: a wildcard's "*" label lives in the marker
        name = "*" if name == "." else f"*.{name}"
    ttl = int.from_bytes(value[pos : pos + 4], "big")
    ttd_bytes = value[pos + 4 : pos + 12]
    ttd = ttd_bytes.hex() if any(ttd_bytes) else None
    rdata = value[pos + 12 :]
    type_name = _TYPES.get(rtype, f"TYPE{rtype}")
    serial = None
    try:
        data = _rdata(rtype, rdata)
    except (IndexError, ValueError):
        data = _unknown(rdata)
    if rtype == _SOA and len(rdata) >= 20:
        serial = int.from_bytes(rdata[-20:-16], "big")
    return Record(name, type_name, ttl, data, location, ttd, serial)


def _rdata(rtype: int, rdata: bytes) -> str:
    """rdata as a person reads it; IndexError or ValueError when it does not parse."""
    if rtype == 1 and len(rdata) == 4:
        return ".".join(str(b) for b in rdata)
    if rtype == 28 and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (2, 5, 12):
        return _whole_name(rdata, 0)
    if rtype == 15:
        return f"{int.from_bytes(rdata[:2], 'big')} {_whole_name(rdata, 2)}"
    if rtype == 33:
        prio, weight, port = (int.from_bytes(rdata[i : i + 2], "big") for i in (0, 2, 4))
        return f"{prio} {weight} {port} {_whole_name(rdata, 6)}"
    if rtype == 16:
        chunks = []
        pos = 0
        while pos < len(rdata):
            n = rdata[pos]
            if pos + 1 + n > len(rdata):
                raise ValueError("TXT chunk past the end")
            chunks.append(rdata[pos + 1 : pos + 1 + n])
            pos += 1 + n
        return '"' + _text(b"".join(chunks), space=True) + '"'
    if rtype == _SOA:
        mname, pos = _wire_name(rdata, 0)
        rname, pos = _wire_name(rdata, pos)
        if len(rdata) - pos != 20:
            raise ValueError("SOA numbers")
        # The serial (rdata[pos:pos+4]) is left out: it is reported per zone.
        numbers = [int.from_bytes(rdata[i : i + 4], "big") for i in range(pos + 4, pos + 20, 4)]
        return " ".join([_name(mname), _name(rname), *map(str, numbers)])
    return _unknown(rdata)


def _unknown(rdata: bytes) -> str:
    """RFC 3597's generic form."""
    return f"\\# {len(rdata)} {rdata.hex()}".rstrip()


def _whole_name(rdata: bytes, pos: int) -> str:
    wire, end = _wire_name(rdata, pos)
    if end != len(rdata):
        raise ValueError("bytes after the name")
    return _name(wire)


def _wire_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """The uncompressed wire name at ``pos`` and the offset after it."""
    start = pos
    while data[pos] != 0:
        pos += data[pos] + 1
        if pos >= len(data):
            raise ValueError("name past the end")
    return data[start : pos + 1], pos + 1


def _name(wire: bytes) -> str:
    """A wire name as dotted text (no final dot; the root is ``.``)."""
    labels = []
    pos = 0
    while pos < len(wire) and wire[pos] != 0:
        n = wire[pos]
        labels.append(_text(wire[pos + 1 : pos + 1 + n], dot=True))
        pos += n + 1
    return ".".join(labels) or "."


def _text(raw: bytes, *, dot: bool = False, space: bool = False) -> str:
    """Bytes as the data format writes them: printable ASCII, others ``\\ooo``.

    ``dot``: a name's label, where a dot is escaped; ``space``: quoted text, where a
    space is kept.
    """
    return "".join(
        chr(b)
        if (b in _PLAIN and not (dot and b == 0x2E)) or (space and b == 0x20)
        else f"\\{b:03o}"
        for b in raw
    )
