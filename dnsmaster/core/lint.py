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

__all__ = ["TTL", "U16", "U32", "Diagnostic", "Linter", "Shape"]

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

#: The values a 32-bit and a 16-bit field wrap at.
U32 = 1 << 32
U16 = 1 << 16


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding: 1-based ``line``, ``error`` (else a warning) and what is wrong."""

    line: int
    error: bool
    message: str


@dataclass(frozen=True, slots=True)
class Shape:
    """Where a line type keeps each kind of field (spec §5), for the checker.

    Field positions count from 0 after the leading byte; ``numbers`` are (position,
    what it is, the limit it wraps at). The compiler's table of line types holds one
    per type, beside the function that compiles it.
    """

    fields: int
    ip: int | None = None
    ip_required: bool = False
    numbers: tuple[tuple[int, str, int], ...] = ()
    ttd: int | None = None
    lo: int | None = None
    prefix: int | None = None


TTL = "TTL"


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
    """Collects the diagnostics of the lines the compiler hands it; ``offset`` shifts
    line numbers."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    offset: int = 0

    def check(self, index: int, line: bytes, f: list[bytes], shape: Shape) -> None:
        """Check line ``index`` (0-based), its fields ``f`` (§2.3) laid out as ``shape``."""
        lineno = self.offset + index + 1
        if line.endswith(b"\r"):
            self._warn(
                lineno,
                "line ends with a carriage return (a CRLF file?); "
                "tinydns-data keeps it as part of the last field",
            )
        extra = line.count(b":") + 1 - shape.fields
        if extra > 0 and any(f[shape.fields : shape.fields + extra]):
            self._warn(
                lineno, f"{extra} field(s) after the last one this line type uses are ignored"
            )
        if shape.ip is not None:
            self._ip(lineno, f[shape.ip], shape.ip_required)
        for pos, what, limit in shape.numbers:
            self._number(lineno, f[pos], what, limit)
        if shape.ttd is not None:
            self._ttd(lineno, f[shape.ttd])
        if shape.lo is not None and f[shape.lo] and not _LETTERS.fullmatch(f[shape.lo]):
            self._warn(
                lineno,
                f"location {_show(f[shape.lo])} is not one or two "
                "letters (tinydns-data uses its first two bytes)",
            )
        if shape.prefix is not None and not _PREFIX.fullmatch(f[shape.prefix]):
            raw = f[shape.prefix]
            self._warn(lineno, f"IP prefix {_show(raw)} is not up to four dotted numbers")

    def _warn(self, lineno: int, message: str) -> None:
        self.diagnostics.append(Diagnostic(lineno, False, message))

    def _ttd(self, lineno: int, raw: bytes) -> None:
        if not raw or _TTD.fullmatch(raw):
            return
        why = (
            "has uppercase hex digits, which tinydns-data reads as 0"
            if re.fullmatch(rb"[0-9a-fA-F]{16}", raw)
            else "is not 16 lowercase hex digits"
        )
        self._warn(lineno, f"timestamp {_show(raw)} {why}")

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
            # §3.2: ip4_scan reads the field as written; an escape such as \056 for
            # the dot is not decoded (only names and texts are), so the record goes.
            escaped = (
                " (escapes are not decoded in addresses: write the address plainly)"
                if b"\\" in raw
                else ""
            )
            report(
                Diagnostic(
                    lineno,
                    True,
                    f"IP address {_show(raw)} does not parse{escaped}: "
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
