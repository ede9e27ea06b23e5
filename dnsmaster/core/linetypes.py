"""The tinydns-data line types: each kind of data line and how it compiles to cdb
records, a plain transcription of spec §5 (``shared/tinydns-data-spec.md``).

Each kind of line is one entry of :data:`LINE_TYPES`: the function that compiles it
and its :class:`~dnsmaster.core.lint.Shape`, where the checker finds its fields. The
functions fill a :class:`LineCompiler` (the records of one run of lines, and what it
caches between lines); the driver that runs them over a whole text, and hands the
lines it is sure of to the C accelerator, is :mod:`dnsmaster.core.compiler`. The C
accelerator's table (``TYPES`` in ``_ccompile.c``) mirrors this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsmaster.core.fields import (
    LEN,
    digits_value,
    ip4,
    location,
    name_to_wire,
    number,
    prefix,
    text,
    ttd,
)
from dnsmaster.core.lint import TTL, U16, U32, Shape
from dnsmaster.core.text import printable
from dnsmaster.errors import DnsmasterError, NameTooLong

__all__ = [
    "LINE_TYPES",
    "SOA_TAIL",
    "TTL_NEGATIVE",
    "TTL_NS",
    "TTL_POSITIVE",
    "Handler",
    "LineCompiler",
    "LineError",
    "LineType",
    "Records",
]

# §3.8 and §6: the default SOA numbers after the serial, and the default TTLs.
SOA_TAIL = (16384).to_bytes(4, "big") + (2048).to_bytes(4, "big")
SOA_TAIL += (1048576).to_bytes(4, "big") + (2560).to_bytes(4, "big")
_SOA_DEFAULTS = (16384, 2048, 1048576, 2560)
TTL_NS = 259200
TTL_POSITIVE = 86400
TTL_NEGATIVE = 2560

_A = b"\x00\x01"
_NS = b"\x00\x02"
_CNAME = b"\x00\x05"
_SOA = b"\x00\x06"
_PTR = b"\x00\x0c"
_MX = b"\x00\x0f"
_TXT = b"\x00\x10"
_SRV = b"\x00\x21"
_HOSTMASTER = b"\x0ahostmaster"
_IN_ADDR_ARPA = b"\x07in-addr\x04arpa\x00"

# §5.9: generic types tinydns-data refuses, in the order it tests them.
_PROHIBITED = {252: "AXFR", 0: "0", 6: "SOA", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX"}
_U32 = 0xFFFFFFFF


@dataclass(slots=True)
class Records:
    """The cdb records of some data, in insertion order.

    ``soa_defaults`` lists the indexes of SOA records whose serial came from the
    default (a ``.`` line, or a ``Z`` line without a serial), so a cached compile can
    be re-stamped with a new serial without parsing again. ``stamped`` lists the
    0-based line indexes of those lines, for make-data to rewrite.
    """

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    soa_defaults: list[int] = field(default_factory=list)
    stamped: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def with_serial(self, serial: int) -> list[bytes]:
        """The values with every default serial replaced by ``serial``."""
        values = self.values
        if not self.soa_defaults:
            return values
        values = list(values)
        stamp = (serial & _U32).to_bytes(4, "big")  # a serial lives on the 32-bit circle
        for i in self.soa_defaults:
            v = values[i]
            values[i] = v[:-20] + stamp + v[-16:]
        return values


class LineError(DnsmasterError):
    """Internal: a line tinydns-data refuses; turned into TinydnsDataError with its number."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _name(raw: bytes, what: str) -> bytes:
    try:
        return name_to_wire(raw)
    except NameTooLong as exc:
        # §7.2: tinydns-data says only "protocol error" here, without the line.
        raise LineError("protocol error", f"{what}: {exc}") from None


def _loc(raw: bytes) -> bytes:
    """§3.4/§4.1: the location bytes, or b"" for "no location" (two NULs)."""
    if not raw:
        return b""
    loc = location(raw)
    return b"" if loc == b"\0\0" else loc


def _server(x: bytes, suffix: bytes, fqdn: bytes) -> bytes:
    """§5.1: x, or x + suffix + fqdn when the raw x has no dot."""
    return x if b"." in x else x + suffix + fqdn


def _head(ttl_raw: bytes, ttd_raw: bytes, default: int) -> bytes:
    """§4.1: the TTL (``default`` when the field has no number) and the ttd."""
    ttl = number(ttl_raw)
    return ((default if ttl is None else ttl) & _U32).to_bytes(4, "big") + ttd(ttd_raw)


# §3.2 for the common address: _OCTET maps every 1-3 digit string to its address
# byte, so only the first three numbers of an address need parsing (once per network).
_OCTET = {
    **{b"%d" % i: LEN[i & 255] for i in range(1000)},
    **{b"%02d" % i: LEN[i] for i in range(100)},
    **{b"%03d" % i: LEN[i & 255] for i in range(1000)},
}
_NET = re.compile(rb"([0-9]+)\.([0-9]+)\.([0-9]+)")


def _net(net: bytes) -> bytes | None:
    """The first three address bytes of ``net`` (three dotted numbers), else None."""
    m = _NET.fullmatch(net)
    return None if m is None else bytes(digits_value(g) & 255 for g in m.groups())


class LineCompiler:
    """What the compile of one run of lines builds up: its records and name cache."""

    __slots__ = (
        "default_soa",
        "first_lineno",
        "heads",
        "key",
        "nets",
        "parents",
        "pos",
        "recs",
        "stamped_at",
        "value",
    )

    def __init__(self, serial: int, first_lineno: int, stamped_at: list[int] | None = None) -> None:
        self.recs = Records()
        self.key = self.recs.keys.append
        self.value = self.recs.values.append
        self.default_soa = (serial & _U32).to_bytes(4, "big") + SOA_TAIL
        self.first_lineno = first_lineno
        self.stamped_at = stamped_at
        self.pos = 0  # where the line being compiled starts, for stamped_at
        # What the pure-Python compiler (the receiver's) would otherwise work out
        # again on every line: name -> wire of every parent domain seen (a name's
        # wire is then its first label plus its parent's), the first three bytes of
        # each network seen, each TTL and timestamp's head.
        self.parents: dict[bytes, bytes | None] = {b"": b"\0"}
        self.nets: dict[bytes, bytes | None] = {}
        self.heads: dict[tuple[bytes, bytes, int], bytes] = {}

    def head(self, ttl_raw: bytes, ttd_raw: bytes, default: int) -> bytes:
        """:func:`_head`, once for each distinct pair of fields."""
        key = (ttl_raw, ttd_raw, default)
        head = self.heads.get(key)
        if head is None:
            head = self.heads[key] = _head(ttl_raw, ttd_raw, default)
        return head

    def ip(self, raw: bytes) -> bytes | None:
        """§3.2: :func:`~dnsmaster.core.fields.ip4`, parsing each network once."""
        net, _, last = raw.rpartition(b".")
        nb = self.nets.get(net, b"")
        if nb == b"":
            nb = self.nets[net] = _net(net)
        ob = _OCTET.get(last)
        if nb is None or ob is None:
            return ip4(raw)  # anything else, such as junk after the address
        return nb + ob

    def wire(self, raw: bytes, what: str) -> bytes:
        """§3.5: the wire form of a name field; ``what`` names it in an error."""
        head, _, parent = raw.partition(b".")
        pw = self.parents.get(parent, b"")
        if pw == b"":
            pw = self.parents[parent] = _wire_or_none(parent)
        n = len(head)
        if pw is None or not 0 < n <= 63 or n + len(pw) >= 255 or b"\\" in head:
            return _name(raw, what)  # the general conversion, which also says what is wrong
        return LEN[n] + head + pw

    def emit(self, rtype: bytes, owner: bytes, head: bytes, loc: bytes, rdata: bytes) -> None:
        """§4.1/§4.2: one record; lowercased key, a leading "*" label moves into the marker."""
        key = owner.lower()
        if key[:2] == b"\x01*":
            self.key(key[2:])
            self.value(rtype + (b"+" + loc if loc else b"*") + head + rdata)
        else:
            self.key(key)
            self.value(rtype + (b">" + loc if loc else b"=") + head + rdata)

    def stamp(self, index: int) -> None:
        """Line ``index`` takes the default serial, in the SOA record emitted next."""
        self.recs.stamped.append(index)
        self.recs.soa_defaults.append(len(self.recs.keys))
        if self.stamped_at is not None:
            self.stamped_at.append(self.pos)


def _wire_or_none(name: bytes) -> bytes | None:
    try:
        return name_to_wire(name)
    except NameTooLong:
        return None  # a name under it fails too; the general conversion says how


# The in-addr.arpa label of each address byte (§5.5).
_DEC_LABEL = [LEN[len(b"%d" % i)] + b"%d" % i for i in range(256)]


# ---- one function per line type (spec §5); f are the fields after the leading byte


def _host(c: LineCompiler, index: int, f: list[bytes]) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``+fqdn:ip:ttl:timestamp:lo`` (§5.5): an A record. Returns its owner, head,
    location and address (None: no record), for ``=``."""
    owner = c.wire(f[0], "name")
    head = c.head(f[2], f[3], TTL_POSITIVE)
    loc = _loc(f[4]) if f[4] else b""
    ip = c.ip(f[1])
    if ip is None:
        return None
    c.emit(_A, owner, head, loc, ip)
    return owner, head, loc, ip


def _host_and_ptr(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``=fqdn:ip:ttl:timestamp:lo`` (§5.5): an A record and its PTR."""
    found = _host(c, index, f)
    if found is not None:
        owner, head, loc, ip = found
        rev = _DEC_LABEL[ip[3]] + _DEC_LABEL[ip[2]] + _DEC_LABEL[ip[1]] + _DEC_LABEL[ip[0]]
        c.emit(_PTR, rev + _IN_ADDR_ARPA, head, loc, owner)


def _zone(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``.fqdn:ip:x:ttl:timestamp:lo`` (§5.2): SOA, NS and the server's A."""
    _name_server(c, index, f, soa=True)


def _delegation(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``&fqdn:ip:x:ttl:timestamp:lo`` (§5.3): NS and the server's A."""
    _name_server(c, index, f, soa=False)


def _name_server(c: LineCompiler, index: int, f: list[bytes], *, soa: bool) -> None:
    fqdn = c.wire(f[0], "name")
    server = c.wire(_server(f[2], b".ns.", f[0]), "name server")
    ttl = number(f[3])
    if ttl is None:
        ttl = TTL_NS
    tail = ttd(f[4])
    loc = _loc(f[5])
    head = (ttl & _U32).to_bytes(4, "big") + tail
    if soa:
        c.stamp(index)
        soa_ttl = (TTL_NEGATIVE if ttl & 0xFFFFFFFFFFFFFFFF else 0).to_bytes(4, "big")
        c.emit(_SOA, fqdn, soa_ttl + tail, loc, server + _HOSTMASTER + fqdn + c.default_soa)
    c.emit(_NS, fqdn, head, loc, server)
    ip = c.ip(f[1])
    if ip is not None:
        c.emit(_A, server, head, loc, ip)


def _mail(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``@fqdn:ip:x:dist:ttl:timestamp:lo`` (§5.6): MX and the exchanger's A."""
    fqdn = c.wire(f[0], "name")
    mx = c.wire(_server(f[2], b".mx.", f[0]), "mail exchanger")
    head = c.head(f[4], f[5], TTL_POSITIVE)
    loc = _loc(f[6])
    dist = number(f[3]) or 0
    c.emit(_MX, fqdn, head, loc, (dist & 0xFFFF).to_bytes(2, "big") + mx)
    ip = c.ip(f[1])
    if ip is not None:
        c.emit(_A, mx, head, loc, ip)


def _alias(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``Cfqdn:p:ttl:timestamp:lo`` (§5.8): a CNAME."""
    _pointer(c, f, _CNAME)


def _reverse(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``^fqdn:p:ttl:timestamp:lo`` (§5.8): a PTR."""
    _pointer(c, f, _PTR)


def _pointer(c: LineCompiler, f: list[bytes], rtype: bytes) -> None:
    owner = c.wire(f[0], "name")
    target = c.wire(f[1], "target")
    c.emit(rtype, owner, c.head(f[2], f[3], TTL_POSITIVE), _loc(f[4]), target)


def _txt(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``'fqdn:s:ttl:timestamp:lo`` (§5.7): a TXT record, in strings of up to 127 bytes."""
    owner = c.wire(f[0], "name")
    txt = text(f[1])
    rdata = b"".join(LEN[len(txt[i : i + 127])] + txt[i : i + 127] for i in range(0, len(txt), 127))
    c.emit(_TXT, owner, c.head(f[2], f[3], TTL_POSITIVE), _loc(f[4]), rdata)


def _soa(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``Zfqdn:mname:rname:ser:ref:ret:exp:min:ttl:timestamp:lo`` (§5.4): an SOA."""
    owner = c.wire(f[0], "name")
    mname = c.wire(f[1], "primary name server")
    rname = c.wire(f[2], "contact address")
    ser = number(f[3])
    if ser is None:
        c.stamp(index)
        numbers = c.default_soa[:4]
    else:
        numbers = (ser & _U32).to_bytes(4, "big")
    for pos, default in zip((4, 5, 6, 7), _SOA_DEFAULTS, strict=True):
        value = number(f[pos])
        numbers += ((default if value is None else value) & _U32).to_bytes(4, "big")
    head = c.head(f[8], f[9], TTL_NEGATIVE)
    c.emit(_SOA, owner, head, _loc(f[10]), mname + rname + numbers)


def _generic(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``:fqdn:n:rdata:ttl:timestamp:lo`` (§5.9): a record of any allowed type."""
    owner = c.wire(f[0], "name")
    rtype = (number(f[1]) or 0) & 0xFFFF
    if rtype in _PROHIBITED:
        what = _PROHIBITED[rtype]
        raise LineError(
            f"unable to parse data line {c.first_lineno + index}: type {what} prohibited",
            f"type {printable(f[1])} is {what}, which a generic line may not define",
        )
    c.emit(
        rtype.to_bytes(2, "big"), owner, c.head(f[3], f[4], TTL_POSITIVE), _loc(f[5]), text(f[2])
    )


def _client_location(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``%lo:ipprefix`` (§5.10): clients in the prefix get location lo."""
    c.key(b"\0%" + prefix(f[1]))
    c.value(location(f[0]))


def _srv(c: LineCompiler, index: int, f: list[bytes]) -> None:
    """``Sfqdn:ip:x:port:priority:weight:ttl:timestamp:lo`` (Debian's §5.11): SRV, A."""
    fqdn = c.wire(f[0], "name")
    target = c.wire(_server(f[2], b".srv.", f[0]), "SRV target")
    port = number(f[3])
    if port is None:
        raise LineError("protocol error", "SRV line without a port")
    head = c.head(f[6], f[7], TTL_POSITIVE)
    loc = _loc(f[8])
    srv = b"".join(((n or 0) & 0xFFFF).to_bytes(2, "big") for n in (number(f[4]), number(f[5])))
    c.emit(_SRV, fqdn, head, loc, srv + (port & 0xFFFF).to_bytes(2, "big") + target)
    ip = c.ip(f[1])
    if ip is not None:
        c.emit(_A, target, head, loc, ip)


#: Compiles one line: the compiler, the line's 0-based index, its fields (§2.3).
#: What it returns is ignored.
Handler = Callable[[LineCompiler, int, list[bytes]], object]


@dataclass(frozen=True, slots=True)
class LineType:
    """One kind of data line: how it compiles, and where the checker finds its fields.

    ``compile`` None is a line that says nothing (a comment, a disabled line).
    """

    compile: Handler | None
    shape: Shape | None


def _common(
    fields: int,
    ttl: int,
    *,
    ip: int | None = None,
    ip_required: bool = False,
    numbers: tuple[tuple[int, str, int], ...] = (),
) -> Shape:
    """The shape of a line whose TTL, timestamp and location are its last three fields."""
    numbers = (*numbers, (ttl, TTL, U32))
    return Shape(fields, ip, ip_required, numbers, ttd=ttl + 1, lo=ttl + 2)


#: Every leading byte tinydns-data knows (spec §5), in one place: the C accelerator's
#: table (``TYPES`` in _ccompile.c) mirrors this one.
LINE_TYPES: dict[int, LineType] = {
    ord("."): LineType(_zone, _common(6, 3, ip=1)),
    ord("&"): LineType(_delegation, _common(6, 3, ip=1)),
    ord("Z"): LineType(
        _soa,
        _common(
            11,
            8,
            numbers=(
                (3, "serial", U32),
                (4, "refresh", U32),
                (5, "retry", U32),
                (6, "expire", U32),
                (7, "minimum", U32),
            ),
        ),
    ),
    ord("="): LineType(_host_and_ptr, _common(5, 2, ip=1, ip_required=True)),
    ord("+"): LineType(_host, _common(5, 2, ip=1, ip_required=True)),
    ord("@"): LineType(_mail, _common(7, 4, ip=1, numbers=((3, "distance", U16),))),
    ord("'"): LineType(_txt, _common(5, 2)),
    ord("^"): LineType(_reverse, _common(5, 2)),
    ord("C"): LineType(_alias, _common(5, 2)),
    ord(":"): LineType(_generic, _common(6, 3, numbers=((1, "type", U16),))),
    ord("%"): LineType(_client_location, Shape(2, lo=0, prefix=1)),
    ord("S"): LineType(
        _srv,
        _common(9, 6, ip=1, numbers=((3, "port", U16), (4, "priority", U16), (5, "weight", U16))),
    ),
    ord("#"): LineType(None, None),
    ord("-"): LineType(None, None),
}
