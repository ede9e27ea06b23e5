"""The catalog zone (RFC 9432): every zone of a build listed in one zone of its own (pure).

Secondaries that consume catalog zones (Knot 3.x, BIND 9.18, PowerDNS 4.7) add a
member zone when its PTR appears in the catalog and drop it when the PTR goes, so
an operator adds a zone on the master and never touches the secondaries' config.

The catalog is written as tinydns data, as the last section of ``data``
(``# catalog:1``), so that it is compiled, stamped, pushed and served like any
zone. What RFC 9432 asks of the zone, line by line:

- an SOA: a ``Z`` line without a serial, so make-data stamps the build's,
  as it does every zone's; a consumer transfers the catalog again when it changes;
- exactly one NS, ``invalid.`` as the RFC recommends: nothing is meant to
  resolve through a catalog;
- ``version`` TXT "2": the schema a consumer must understand;
- one PTR per member at ``<unique-N>.zones.<catalog>``, naming the member.
  The label is derived from the member's name alone, so it stays the same from one
  build to the next: a consumer that saw a member's label change would take it for
  a member removed and another added (the RFC's "member zone reset").

TTLs are 0, as in the RFC's examples: the records are read by transfer, never
looked up through a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator

from dnsmaster.core.fields import name_to_wire
from dnsmaster.errors import NameTooLong

__all__ = [
    "CATALOG_SOURCE",
    "catalog_lines",
    "catalog_wire",
    "catalog_zone",
    "inside",
    "member_label",
    "member_name",
    "name_text",
    "zones_in",
]

#: The catalog's section of ``data`` is named after no file: ``# catalog:1``.
#: Every source file is ``header`` or ``zones.*``, so the names never meet.
CATALOG_SOURCE = "catalog"

# A Z line at the start of a line, its first field (the zone's name).
_ZONE = re.compile(rb"^Z([^:\n]*)", re.MULTILINE)
# A Z line's first field, the zone's name.
_NAME = re.compile(rb"[^:\n]*")
# Where the catalog's section of data starts (it is the last section).
_SECTION = b"\n# %s:1\n" % CATALOG_SOURCE.encode()
# The characters a catalog name may have in the configuration: a host name's, and
# the underscore. Anything else would need escapes in data, and is a mistake there.
_CATALOG_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
# The bytes a name keeps as they are in data text; any other is written \ooo.
_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*"
# A name in data that needs no escape and has no empty label, in lower case.
_PLAIN_NAME = re.compile(rb"[a-z0-9_*-]+(?:\.[a-z0-9_*-]+)*\.?")
# RFC 9432's recommendation for the NS, also used as the SOA's MNAME and RNAME.
_INVALID = b"invalid."
# The SOA's numbers after the serial: refresh, retry, expire, minimum (RFC 9432's
# example). The long expire keeps a consumer that cannot reach the master from
# expiring the catalog, and with it every member zone.
_SOA_TIMES = b"3600:600:2147483646:0"


def catalog_wire(name: str) -> bytes:
    """The catalog zone's name in wire form (lower case), checked.

    Raises ValueError naming what is wrong: the configuration's ``catalog`` is
    written into ``data``, so only a plain host name (letters, digits, ``-``, ``_``)
    of at least two labels is taken.
    """
    if not _CATALOG_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a domain name (letters, digits, '-', '_' and dots)")
    if "." not in name.rstrip("."):
        # One label would make the catalog a top-level domain: surely a mistake.
        raise ValueError(f"{name!r} has a single label; a catalog is a zone like catalog.example")
    try:
        return name_to_wire(name.encode("ascii")).lower()
    except NameTooLong as exc:
        raise ValueError(str(exc)) from None


def zones_in(pieces: Iterable[bytes | memoryview]) -> list[bytes]:
    """The names (:func:`member_name`) of the zones whose ``Z`` lines are in a source's text.

    ``pieces`` is the text cut where the serial goes (``CompiledSource.pieces``). A
    cut falls inside a ``Z`` line's serial field, so a piece after it starts with
    ``:`` or a newline, never with a line of its own: each piece can be searched
    alone. A name tinydns-data would refuse is not there (the source would not
    have compiled); one listed twice is listed once.
    """
    found: dict[bytes, None] = {}
    first = True
    for piece in pieces:
        text = piece if isinstance(piece, bytes) else bytes(piece)
        for start in _z_lines(text, first):
            end = _NAME.match(text, start).end()  # type: ignore[union-attr]
            with contextlib.suppress(NameTooLong):  # not in a source that compiled
                found[member_name(text[start:end])] = None
        first = False
    return list(found)


def _z_lines(text: bytes, first: bool) -> Iterator[int]:
    """Where the name of each Z line of ``text`` starts (the text's own start counts
    when it is a source's first piece).

    bytes.find runs at memchr's speed; a MULTILINE regex tried at every line start
    took 2 s for 100,000 zones in 400,000 lines.
    """
    if first and text[:1] == b"Z":
        yield 1
    at = text.find(b"\nZ")
    while at >= 0:
        yield at + 2
        at = text.find(b"\nZ", at + 2)


def member_name(field: bytes) -> bytes:
    """A zone's name as written in data, as the catalog lists it: lower case, with
    a final dot, each byte that is no letter, digit, ``-``, ``_`` or ``*`` written
    as an octal escape (``Example.COM`` and ``example.com.`` are ``example.com.``).

    Raises NameTooLong as tinydns-data refuses the name.
    """
    field = field.lower()
    # Nearly every name: no need for its wire form. A longer one may hold a label
    # over 63 bytes, which name_to_wire refuses as tinydns-data does.
    if len(field) <= 63 and _PLAIN_NAME.fullmatch(field):
        return field if field.endswith(b".") else field + b"."
    return name_text(name_to_wire(field).lower())


def member_label(name: bytes) -> bytes:
    """The stable ``<unique-N>`` label of a member zone (RFC 9432).

    The first 32 hex digits (128 bits) of the sha256 of its :func:`member_name`:
    the same for the same zone in every build and on every master, whatever case
    or form the zones file writes its name in.
    """
    return hashlib.sha256(name).hexdigest()[:32].encode("ascii")


def name_text(wire: bytes) -> bytes:
    """A wire-form name as tinydns data text, with a final dot (``example.com.``).

    A byte that is no letter, digit, ``-``, ``_`` or ``*`` is written as three octal
    digits after a backslash (spec §3.5), so a dot or colon inside a label stays
    inside it; the root is ``.``.
    """
    labels = []
    at = 0
    while wire[at]:
        label = wire[at + 1 : at + 1 + wire[at]]
        if label.translate(None, _PLAIN):
            label = b"".join(bytes((c,)) if c in _PLAIN else b"\\%03o" % c for c in label)
        labels.append(label)
        at += 1 + wire[at]
    return b".".join(labels) + b"."


def catalog_lines(catalog: bytes, members: Iterable[bytes]) -> bytes:
    """The catalog zone as tinydns data: ``catalog`` in wire form (as
    :func:`catalog_wire` gives it), ``members`` as :func:`member_name` gives them.

    The members are listed in order of name, each once; the catalog itself is never
    a member. The ``Z`` line has no serial: the build stamps its own, as for every
    zone.
    """
    zone = name_text(catalog)
    lines = [
        b"Z%s:%s:%s::%s:0" % (zone, _INVALID, _INVALID, _SOA_TIMES),
        b"&%s::%s:0" % (zone, _INVALID),
        b"'version.%s:2:0" % zone,
    ]
    suffix = b".zones." + zone
    for name in sorted(set(members) - {zone}):
        lines.append(b"^%s%s:%s:0" % (member_label(name), suffix, name))
    return b"\n".join(lines) + b"\n"


def inside(name: bytes, catalog: bytes) -> bool:
    """Whether member name ``name`` is the catalog (wire form) or a name below it."""
    zone = name_text(catalog)
    return name == zone or name.endswith(b"." + zone)


def catalog_zone(data: bytes) -> bytes | None:
    """The catalog zone (wire form, lower case) of a build's ``data``; None when it
    has none.

    The catalog is the last section of ``data``, and its ``Z`` line the first data
    line there: found from the end, without reading the zones before it.
    """
    at = data.rfind(_SECTION)
    if at < 0:
        return None
    m = _ZONE.search(data, at + len(_SECTION))
    if m is None:
        return None
    try:
        return name_to_wire(m.group(1)).lower()
    except NameTooLong:
        return None
