"""Field parsers of tinydns-data, byte for byte.

Each parser reproduces what djbdns 1.05 does with a raw field (section numbers refer
to ``shared/tinydns-data-spec.md``). They are lenient exactly where tinydns-data is
lenient; the checker in :mod:`dnsmaster.core.lint` says where that leniency hides a
mistake.
"""

from __future__ import annotations

import re

from dnsmaster.core.text import printable
from dnsmaster.errors import NameTooLong

__all__ = [
    "LEN",
    "digits_value",
    "ip4",
    "location",
    "name_to_wire",
    "number",
    "prefix",
    "split_fields",
    "text",
    "ttd",
]

#: ``LEN[n]`` is the single byte ``n``; building wire names from it avoids a call per label.
LEN = [bytes((i,)) for i in range(256)]

_FIELD_PAD = b":" * 14
_LEADING_DIGITS = re.compile(rb"[0-9]+")
# §3.2: four digit runs separated by dots; anything after the fourth run is ignored.
_IP4 = re.compile(rb"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")
_PREFIX_PART = re.compile(rb"\.*([0-9]+)")
_HEX_ONLY = bytes(b if b in b"0123456789abcdef" else 0x30 for b in range(256))
_ZERO_TTD = bytes(8)
_OCTAL = b"01234567"
# 10**64 is a multiple of 2**64, so the last 64 digits of a number decide its value
# mod 2**64 (and mod 2**32, 2**16, 256): all tinydns-data ever keeps. Cutting longer
# runs keeps int() clear of Python's limit on digits (ValueError past 4300).
_KEPT_DIGITS = 64


def split_fields(line: bytes) -> list[bytes]:
    """The at least 15 fields after the leading byte (§2.3).

    Padding with colons makes missing fields empty without a length check per
    access; fields past the 15th are never read by any line type.
    """
    return (line[1:] + _FIELD_PAD).split(b":")


def number(field: bytes) -> int | None:
    """§3.1: the leading decimal digits, or None when there are none.

    The value is returned unreduced for up to 64 digits; a longer run gives a value
    congruent to it mod 2**64. Callers truncate it to the width it is stored in
    (which is the same as reducing mod 2**64 first).
    """
    if field.isdigit():
        return int(field[-_KEPT_DIGITS:])
    m = _LEADING_DIGITS.match(field)
    return digits_value(m.group()) if m else None


def digits_value(digits: bytes) -> int:
    """A run of ASCII digits as an int congruent to its value mod 2**64 (see _KEPT_DIGITS)."""
    return int(digits[-_KEPT_DIGITS:])


def ip4(field: bytes) -> bytes | None:
    """§3.2: the four address bytes, or None when the field is no address."""
    m = _IP4.match(field)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return bytes(
        (digits_value(a) & 255, digits_value(b) & 255, digits_value(c) & 255, digits_value(d) & 255)
    )


def ttd(field: bytes) -> bytes:
    """§3.3: 16 nibbles of lowercase hex; any other byte counts as 0."""
    if not field:
        return _ZERO_TTD
    return bytes.fromhex(field[:16].translate(_HEX_ONLY).ljust(16, b"0").decode("ascii"))


def location(field: bytes) -> bytes:
    """§3.4: the first two raw bytes, NUL-padded."""
    return (field[:2] + b"\0\0")[:2]


def prefix(field: bytes) -> bytes:
    """§3.7: the IP prefix of a ``%`` line as bytes."""
    out = bytearray()
    pos = 0
    while (m := _PREFIX_PART.match(field, pos)) is not None:
        out.append(digits_value(m.group(1)) & 255)
        pos = m.end()
    return bytes(out)


def _unescape(field: bytes) -> bytes:
    """§3.6: backslash escapes (1-3 octal digits mod 256, or the next byte itself)."""
    out = bytearray()
    i = 0
    n = len(field)
    while i < n:
        c = field[i]
        i += 1
        if c == 0x5C:
            if i >= n:
                break  # a lone trailing backslash is dropped
            c = field[i]
            i += 1
            if c in _OCTAL:
                c -= 0x30
                for _ in range(2):
                    if i < n and field[i] in _OCTAL:
                        c = c * 8 + field[i] - 0x30
                        i += 1
                    else:
                        break
                c &= 255
        out.append(c)
    return bytes(out)


def text(field: bytes) -> bytes:
    """§3.6: TXT and generic rdata text with escapes decoded."""
    return _unescape(field) if b"\\" in field else field


def name_to_wire(field: bytes) -> bytes:
    """§3.5: dotted text to uncompressed wire form, case kept.

    Raises :class:`NameTooLong` where tinydns-data dies with ``protocol error``.
    """
    if b"\\" not in field:
        labels = field.split(b".")
        # Checked before LEN is indexed: a label of 256 bytes or more has no length byte.
        if len(field) > 63 and max(map(len, labels)) > 63:
            raise NameTooLong(_long_label(next(lab for lab in labels if len(lab) > 63)))
        wire = b"".join([LEN[len(lab)] + lab for lab in labels if lab]) + b"\0"
        if len(wire) > 255:
            raise NameTooLong(f"name longer than 255 bytes in wire form ({len(wire)})")
        return wire
    return _escaped_name_to_wire(field)


def _escaped_name_to_wire(field: bytes) -> bytes:
    """The slow path of :func:`name_to_wire`: walk the bytes as dns_domain_fromdot does."""
    wire = bytearray()
    label = bytearray()
    i = 0
    n = len(field)
    while i < n:
        c = field[i]
        i += 1
        if c == 0x2E:  # an unescaped dot ends a label; empty labels vanish
            if label:
                _append_label(wire, label)
                label = bytearray()
            continue
        if c == 0x5C:
            if i >= n:
                break
            c = field[i]
            i += 1
            if c in _OCTAL:
                c -= 0x30
                for _ in range(2):
                    if i < n and field[i] in _OCTAL:
                        c = c * 8 + field[i] - 0x30
                        i += 1
                    else:
                        break
                c &= 255
        if len(label) >= 63:
            raise NameTooLong(_long_label(bytes(label) + bytes((c,))))
        label.append(c)
    if label:
        _append_label(wire, label)
    if len(wire) + 1 > 255:
        raise NameTooLong(f"name longer than 255 bytes in wire form ({len(wire) + 1})")
    wire.append(0)
    return bytes(wire)


def _append_label(wire: bytearray, label: bytearray) -> None:
    if len(wire) + len(label) + 1 > 255:
        raise NameTooLong("name longer than 255 bytes in wire form")
    wire.append(len(label))
    wire += label


def _long_label(label: bytes) -> str:
    # Zone content: control bytes (ESC, CR, NUL) must not reach a terminal or log.
    return f"label longer than 63 bytes ({printable(label[:20])}...)"
