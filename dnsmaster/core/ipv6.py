"""The IPv6 patch's ``3`` and ``6`` lines, expanded for the stock tinydns-data.

Many tinydns installations run fefe's IPv6 patch, whose tinydns-data knows two more
line types::

    3fqdn:ip6:ttl:timestamp:lo     AAAA
    6fqdn:ip6:ttl:timestamp:lo     AAAA, PTR <32 nibbles>.ip6.arpa -> fqdn,
                                   and PTR <32 nibbles>.ip6.int -> fqdn

Debian's tinydns-data 1.05 refuses both ("unrecognized leading character"), so
make-data rewrites each into lines it accepts, with the same records:

* the AAAA as a generic line, ``:fqdn:28:<16 \\ooo bytes>:ttl:timestamp:lo`` (§5.9);
* each PTR as a ``^`` line, ``^<nibbles>.ip6.arpa:fqdn:ttl:timestamp:lo`` (§5.8): a
  generic line may not define a PTR (type 12 is prohibited), and ``^`` builds the
  record the patch builds (owner lowercased, target as written, same TTL, timestamp
  and location).

The records come in the patch's order, so data.cdb is the patched tinydns-data's
byte for byte: AAAA, the ip6.arpa PTR, then the ip6.int PTR. Since test21 the
patch's ``6`` case writes both PTRs ("emit both .ip6.arpa and .ip6.int": its
tinydns-data.c calls dns_name6_domain with DNS_IP6_ARPA, then DNS_IP6_INT; the
nibbles are lowercase hex, as here). ip6.int was withdrawn (RFC 4159) and nothing
delegates it any more, so ``ipv6_int=False`` (the configuration key of that name)
leaves that PTR out; the default keeps a site moving from the patched tinydns
with the very same answers.

The fqdn, TTL, timestamp and location fields are copied as written, so escapes,
defaults (TTL 86400) and leniencies are those of tinydns-data itself.

The address. Colons separate the fields of a data line, so ``2001:db8::1`` cannot
be written as it stands. Accepted are:

* the patch's own form, exactly 32 hex digits (either case):
  ``20010db8000000000000000000000001``;
* the usual text form (full, ``::``-compressed, or with a dotted IPv4 tail) with
  every colon written as tinydns's escape ``\\072``: ``2001\\072db8\\072\\0721``.
  This is dnsmaster's: the patched tinydns-data itself reads only 32 hex digits.

Anything else is an error naming both forms. The patched tinydns-data silently
publishes nothing for an address it cannot read, and ignores what follows 32 hex
digits; the checker refuses both instead.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from dnsmaster.core.fields import split_fields, text
from dnsmaster.core.lint import Diagnostic
from dnsmaster.core.text import printable

__all__ = [
    "ARPA",
    "FORMS",
    "INT",
    "LEADERS",
    "Expansion",
    "expand",
    "has_ipv6_lines",
    "parse_address",
    "ptr_name",
]

#: The leading bytes of the patch's lines.
LEADERS = frozenset(b"36")
#: What the error messages say is accepted.
FORMS = (
    "write it as 32 hex digits (2001:db8::1 is 20010db8000000000000000000000001) "
    "or with \\072 for each colon (2001\\072db8\\072\\0721)"
)

_FIELDS = 5  # fqdn:ip6:ttl:timestamp:lo
_HEX32 = re.compile(rb"[0-9a-fA-F]{32}")
_HEX = re.compile(rb"[0-9a-fA-F]+")
_SHOWN = 45
_UNSPECIFIED = bytes(16)
# What the text form may hold at all (hex digits, colons, the dots of an IPv4 tail)
_TEXT_FORM = re.compile(rb"[0-9a-fA-F:.]+")
_NOT_TEXT_FORM = re.compile(rb"[^0-9a-fA-F:.]")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = re.compile(_OCTET + rb"(?:\." + _OCTET + rb"){3}")


@dataclass(frozen=True, slots=True)
class Expansion:
    """One ``3``/``6`` line: the data lines it becomes, and what is wrong with it.

    With an error the lines are still made (with the address ``::``), so that the
    compiler and the checker look at its name, TTL, timestamp and location too.
    """

    lines: tuple[bytes, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.error for d in self.diagnostics)


# One pass over the content, where two ``in`` tests take two (it may be 50 MB).
_LINE_3_OR_6 = re.compile(rb"\n[36]")


def has_ipv6_lines(content: bytes) -> bool:
    """Whether some line of ``content`` starts with ``3`` or ``6`` (cheap, no split)."""
    return content[:1] in (b"3", b"6") or _LINE_3_OR_6.search(content) is not None


def _show(raw: bytes) -> str:
    more = "..." if len(raw) > _SHOWN else ""
    return f"'{printable(raw[:_SHOWN])}{more}'"


def parse_address(raw: bytes) -> tuple[bytes | None, str]:
    """The 16 address bytes of an ``ip6`` field, or None and why not."""
    if not raw:
        return None, "no IPv6 address: nothing would be published; " + FORMS
    if _HEX32.fullmatch(raw):
        return bytes.fromhex(raw.decode("ascii")), ""
    if _HEX.fullmatch(raw):
        return None, (
            f"IPv6 address {_show(raw)} is {len(raw)} hex digits, not 32; "
            "the patch's form has every digit, leading zeros included; " + FORMS
        )
    if b"\\" in raw:
        written = text(raw)
        if b"%" in written:
            return None, f"IPv6 address {_show(raw)} has a zone index (%...); " + FORMS
        ip = _text_form(written)
        if ip is not None:
            return ip, ""
        return None, f"IPv6 address {_show(raw)} does not parse: {_why_not(written)}; " + FORMS
    if _HEX32.match(raw):
        return None, (
            f"IPv6 address {_show(raw)} has junk after its 32 hex digits "
            "(the patch would ignore it); " + FORMS
        )
    return None, f"IPv6 address {_show(raw)} is not 32 hex digits; " + FORMS


def _text_form(written: bytes) -> bytes | None:
    """The 16 bytes of an address in the usual text form (escapes decoded), or None.

    Only ASCII reaches :mod:`ipaddress`: a byte like ``\\270`` would otherwise come
    back as a codec error, whose text is no message for an operator.
    """
    if not _TEXT_FORM.fullmatch(written):
        return None
    try:
        return ipaddress.IPv6Address(written.decode("ascii")).packed
    except ValueError:
        return None


def _why_not(written: bytes) -> str:
    """What is wrong with ``written`` (escapes decoded) as an IPv6 address in text form.

    In dnsmaster's own words: Python's exception texts quote the address without
    escaping it and name no line, so they never reach a message.
    """
    bad = _NOT_TEXT_FORM.search(written)
    if bad is not None:
        byte = bad.group()[0]
        # Shown as the data file would write it: printable ASCII as itself, the rest \ooo
        shown = f"'{chr(byte)}'" if 0x20 < byte < 0x7F else f"\\{byte:03o}"
        return (
            f"it holds the byte {shown}; only hex digits, colons "
            "and the dots of an IPv4 tail belong in an address"
        )
    if b":::" in written:
        return "it has three colons in a row"
    if written.count(b"::") > 1:
        return "it has '::' more than once (it may stand for one run of zero groups)"
    groups = written.split(b":")
    if len(groups) < 3:
        return "it has fewer than three groups and no '::'"
    tail = groups[-1]
    if any(b"." in g for g in groups[:-1]):
        return "a dotted IPv4 part may only end the address"
    if b"." in tail:
        if _DOTTED.fullmatch(tail) is None:
            return f"its IPv4 tail '{printable(tail)}' is not four dotted numbers up to 255"
        groups = [*groups[:-1], b"0", b"0"]  # an IPv4 tail stands for two groups
    long = [g for g in groups if len(g) > 4]
    if long:
        return f"its group '{printable(long[0][:_SHOWN])}' has more than 4 hex digits"
    if written.startswith(b":") and not written.startswith(b"::"):
        return "it starts with a single colon"
    if written.endswith(b":") and not written.endswith(b"::"):
        return "it ends with a single colon"
    counted = len([g for g in groups if g])
    if b"::" in written:
        return f"it has {counted} groups besides '::', which must stand for at least one"
    return f"it has {counted} groups, not 8"


#: The reverse zones of the patch's PTRs, in the order it writes them.
ARPA = b"ip6.arpa"
INT = b"ip6.int"


def ptr_name(ip: bytes, zone: bytes = ARPA) -> bytes:
    """The reverse name of ``ip`` under ``zone``: its 32 nibbles, last first, dotted,
    in lowercase hex (the patch's dns_name6_domain)."""
    return b".".join(bytes((c,)) for c in ip.hex().encode("ascii")[::-1]) + b"." + zone


def _odd(ip: bytes) -> str | None:
    """Why an address that parses is probably not one to publish, if it is not."""
    addr = ipaddress.IPv6Address(ip)
    if addr.is_unspecified:
        return "the unspecified address ::"
    if addr.is_loopback:
        return "the loopback address ::1"
    if addr.is_multicast:
        return "a multicast address"
    if addr.is_link_local:
        return "a link-local address (fe80::/10), which means nothing off its link"
    if addr.ipv4_mapped is not None:
        return "an IPv4-mapped address (::ffff:0:0/96); publish the IPv4 address with +"
    return None


# The most fields bare colons can cut an address into: 8 groups, or 9 pieces when
# "::" begins or ends it (1:2:3:4:5:6:7:: has 8 colons).
_MOST_PIECES = 9


def _colon_split(f: list[bytes], count: int) -> int:
    """How many fields, from the address field on, bare colons split the address over.

    0 when they do not: ``2001:db8:0:0:0:0:0:2`` over 8 fields of the ``count``
    the line has gives 8. The longest run that reads as an address wins, so the
    fields after it are the TTL, timestamp and location the writer meant.
    """
    if not f[1]:
        return 0
    for pieces in range(min(count - 1, _MOST_PIECES), 1, -1):
        if _text_form(b":".join(f[1 : 1 + pieces])) is not None:
            return pieces
    return 0


def expand(line: bytes, lineno: int, *, ipv6_int: bool = True) -> Expansion:
    """The data lines for one ``3``/``6`` line (already stripped of trailing blanks).

    ``ipv6_int``: a ``6`` line's PTR under ip6.int too, as the patch writes it.
    """
    f = split_fields(line)
    found: list[Diagnostic] = []
    ip, why = parse_address(f[1])
    count = line.count(b":") + 1
    pieces = _colon_split(f, count) if ip is None else 0
    if pieces:
        split = b":".join(f[1 : 1 + pieces])
        found.append(
            Diagnostic(
                lineno,
                True,
                f"IPv6 address {_show(split)} is split into fields by its colons "
                "(colons separate the fields of a data line); " + FORMS,
            )
        )
        # The fields after the address are the ones the writer meant: checked as such
        # (the address's groups are no TTL, timestamp or location), and counted so.
        f = [f[0], split, *f[1 + pieces :]]
        count -= pieces - 1
    elif ip is None:
        found.append(Diagnostic(lineno, True, why))
    fqdn, raw, ttl, ttd, lo = f[0:_FIELDS]
    extra = count - _FIELDS
    if extra > 0 and any(f[_FIELDS : _FIELDS + extra]):
        found.append(
            Diagnostic(
                lineno,
                True,
                f"too many fields: a {chr(line[0])} line has {_FIELDS} "
                f"(fqdn:ip6:ttl:timestamp:lo), this one {_FIELDS + extra}",
            )
        )
    if ip is not None and (odd := _odd(ip)) is not None:
        found.append(Diagnostic(lineno, False, f"IPv6 address {_show(raw)} is {odd}"))
    address = _UNSPECIFIED if ip is None else ip
    rdata = b"".join(b"\\%03o" % b for b in address)
    lines = [_line(b":", [fqdn, b"28", rdata, ttl, ttd, lo])]
    if line[:1] == b"6":
        for zone in (ARPA, INT) if ipv6_int else (ARPA,):
            lines.append(_line(b"^", [ptr_name(address, zone), fqdn, ttl, ttd, lo]))
    return Expansion(tuple(lines), tuple(found))


def _line(lead: bytes, fields: list[bytes]) -> bytes:
    line = (lead + b":".join(fields)).rstrip(b":")
    # tinydns-data strips trailing spaces and tabs; a colon keeps them in the field.
    if line.endswith((b" ", b"\t")):
        line += b":"
    return line
