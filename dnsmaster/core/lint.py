"""The checker: what tinydns-data accepts silently but is wrong or suspicious.

tinydns-data is lenient (spec §7.4): an IP that does not parse makes a record
vanish, ``300s`` is read as 300, a CR from a CRLF file becomes part of a name, an
uppercase timestamp reads as zeros. The :class:`Linter` runs as a hook of the
compiler over each line and reports such lines as :class:`Diagnostic` values.

Errors are lines that would publish something other than what was written (a record
silently dropped, an address that wraps); warnings are lines that compile as written
but are probably not meant that way. ``dnsmaster check --strict`` treats warnings as
errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dnsmaster.core.fields import digits_value
from dnsmaster.core.text import printable

__all__ = ["Diagnostic", "Linter"]

_STRICT_IP = re.compile(
    rb"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(?1)){3}".replace(
        b"(?1)", rb"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    )
)
_IP4 = re.compile(rb"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)")
_TTD = re.compile(rb"[0-9a-f]{16}")
_DIGITS = re.compile(rb"[0-9]+")
_LETTERS = re.compile(rb"[A-Za-z]{1,2}")
_PREFIX = re.compile(rb"([0-9]{1,3}(\.[0-9]{1,3}){0,3})?")

_U32 = 1 << 32
_U16 = 1 << 16


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding: 1-based ``line``, ``error`` (else a warning) and what is wrong."""

    line: int
    error: bool
    message: str


@dataclass(frozen=True, slots=True)
class _Shape:
    """Where a line type keeps each kind of field (spec §5)."""

    fields: int
    ip: int | None = None
    ip_required: bool = False
    numbers: tuple[tuple[int, str, int], ...] = ()
    ttd: int | None = None
    lo: int | None = None


_TTL = "TTL"
_SHAPES = {
    ord("."): _Shape(6, ip=1, numbers=((3, _TTL, _U32),), ttd=4, lo=5),
    ord("&"): _Shape(6, ip=1, numbers=((3, _TTL, _U32),), ttd=4, lo=5),
    ord("Z"): _Shape(
        11,
        numbers=(
            (3, "serial", _U32),
            (4, "refresh", _U32),
            (5, "retry", _U32),
            (6, "expire", _U32),
            (7, "minimum", _U32),
            (8, _TTL, _U32),
        ),
        ttd=9,
        lo=10,
    ),
    ord("="): _Shape(5, ip=1, ip_required=True, numbers=((2, _TTL, _U32),), ttd=3, lo=4),
    ord("+"): _Shape(5, ip=1, ip_required=True, numbers=((2, _TTL, _U32),), ttd=3, lo=4),
    ord("@"): _Shape(7, ip=1, numbers=((3, "distance", _U16), (4, _TTL, _U32)), ttd=5, lo=6),
    ord("'"): _Shape(5, numbers=((2, _TTL, _U32),), ttd=3, lo=4),
    ord("^"): _Shape(5, numbers=((2, _TTL, _U32),), ttd=3, lo=4),
    ord("C"): _Shape(5, numbers=((2, _TTL, _U32),), ttd=3, lo=4),
    ord(":"): _Shape(6, numbers=((1, "type", _U16), (3, _TTL, _U32)), ttd=4, lo=5),
    ord("%"): _Shape(2, lo=0),
    ord("S"): _Shape(
        9,
        ip=1,
        numbers=((3, "port", _U16), (4, "priority", _U16), (5, "weight", _U16), (6, _TTL, _U32)),
        ttd=7,
        lo=8,
    ),
}


_SHOWN = 40  # bytes of a field quoted in a message; a field may be megabytes long


def _show(raw: bytes) -> str:
    """A field quoted for a message: control bytes escaped (zone content reaches
    terminals and logs), and cut short."""
    more = "..." if len(raw) > _SHOWN else ""
    return f"'{printable(raw[:_SHOWN])}{more}'"


def _digits(digits: bytes) -> str:
    """A run of digits for a message, shortened when it is absurdly long."""
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) <= 24:
        return digits.decode()
    return f"{digits[:12].decode()}... ({len(digits)} digits)"


def _at_least(digits: bytes, limit: int) -> bool:
    """Whether a run of digits is >= limit, without int() of thousands of digits."""
    digits = digits.lstrip(b"0")
    return len(digits) > len(str(limit)) or (bool(digits) and int(digits) >= limit)


@dataclass(slots=True)
class Linter:
    """A compiler hook collecting diagnostics; ``offset`` shifts line numbers."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    offset: int = 0

    def __call__(self, index: int, line: bytes, f: list[bytes]) -> None:
        lineno = self.offset + index + 1
        shape = _SHAPES.get(line[0])
        if shape is None:
            return
        report = self.diagnostics.append
        if line.endswith(b"\r"):
            report(
                Diagnostic(
                    lineno,
                    False,
                    "line ends with a carriage return (a CRLF file?); "
                    "tinydns-data keeps it as part of the last field",
                )
            )
        extra = line.count(b":") + 1 - shape.fields
        if extra > 0 and any(f[shape.fields : shape.fields + extra]):
            report(
                Diagnostic(
                    lineno,
                    False,
                    f"{extra} field(s) after the last one this line type uses are ignored",
                )
            )
        if shape.ip is not None:
            self._ip(lineno, f[shape.ip], shape.ip_required)
        for pos, what, limit in shape.numbers:
            self._number(lineno, f[pos], what, limit)
        if shape.ttd is not None and f[shape.ttd] and not _TTD.fullmatch(f[shape.ttd]):
            raw = f[shape.ttd]
            why = (
                "has uppercase hex digits, which tinydns-data reads as 0"
                if re.fullmatch(rb"[0-9a-fA-F]{16}", raw)
                else "is not 16 lowercase hex digits"
            )
            report(Diagnostic(lineno, False, f"timestamp {_show(raw)} {why}"))
        if shape.lo is not None and f[shape.lo] and not _LETTERS.fullmatch(f[shape.lo]):
            report(
                Diagnostic(
                    lineno,
                    False,
                    f"location {_show(f[shape.lo])} is not one or two "
                    "letters (tinydns-data uses its first two bytes)",
                )
            )
        if line[0] == ord("%") and not _PREFIX.fullmatch(f[1]):
            report(
                Diagnostic(
                    lineno, False, f"IP prefix {_show(f[1])} is not up to four dotted numbers"
                )
            )

    def _ip(self, lineno: int, raw: bytes, required: bool) -> None:
        report = self.diagnostics.append
        if not raw:
            if required:
                report(
                    Diagnostic(
                        lineno, True, "no IP address: tinydns-data publishes nothing for this line"
                    )
                )
            return
        if _STRICT_IP.fullmatch(raw):
            return
        m = _IP4.match(raw)
        if m is None:
            report(
                Diagnostic(
                    lineno,
                    True,
                    f"IP address {_show(raw)} does not parse: "
                    "tinydns-data silently drops its record",
                )
            )
            return
        big = [g for g in m.groups() if _at_least(g, 256)]
        if big:
            report(
                Diagnostic(
                    lineno,
                    True,
                    f"IP address {_show(raw)} has an octet over 255 (tinydns-data would wrap it)",
                )
            )
        elif m.end() != len(raw):
            report(Diagnostic(lineno, False, f"junk after IP address {_show(raw)} is ignored"))
        else:
            report(
                Diagnostic(
                    lineno, False, f"IP address {_show(raw)} has leading zeros (read as decimal)"
                )
            )

    def _number(self, lineno: int, raw: bytes, what: str, limit: int) -> None:
        if not raw:
            return
        report = self.diagnostics.append
        m = _DIGITS.match(raw)
        if m is None:
            report(
                Diagnostic(
                    lineno, False, f"{what} {_show(raw)} is not a number; the default is used"
                )
            )
            return
        if m.end() != len(raw):
            report(
                Diagnostic(
                    lineno,
                    False,
                    f"junk after {what} {_show(raw)} is ignored (read as {_digits(m.group())})",
                )
            )
        if _at_least(m.group(), limit):
            # tinydns-data keeps the value mod 2**64, then mod limit (which divides it)
            wrapped = digits_value(m.group()) % limit
            report(
                Diagnostic(
                    lineno,
                    False,
                    f"{what} {_digits(m.group())} is too large and wraps to {wrapped}",
                )
            )
