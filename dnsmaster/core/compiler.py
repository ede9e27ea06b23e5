"""The tinydns-data compiler: data text to cdb records, byte-identical to djbdns 1.05.

Records come out in the order tinydns-data adds them (file order, and within a line
the order of spec §5), because that order decides the layout of the whole data.cdb.
:func:`compile_data` is the whole program; :func:`compile_lines` is the part make-data
reuses so it can compile each zones file once and cache the result.

Comments cite ``shared/tinydns-data-spec.md`` by section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dnsmaster.core import cdb
from dnsmaster.core.fields import (
    LEN,
    NameError_,
    ip4,
    location,
    name_to_wire,
    number,
    prefix,
    split_fields,
    text,
    ttd,
)
from dnsmaster.errors import TinydnsDataError

__all__ = [
    "Records",
    "compile_data",
    "compile_lines",
    "default_serial",
    "split_lines",
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
_LEADERS = frozenset(b".&=+@'^CZ:%S#-")
_U32 = 0xFFFFFFFF


def default_serial(mtime: int) -> int:
    """§3.8: the serial tinydns-data derives from the data file's mtime."""
    serial = mtime & _U32
    return serial or 1


def split_lines(data: bytes) -> list[bytes]:
    """§2.1: split on LF; a final piece without LF is a line if non-empty."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


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
        stamp = serial.to_bytes(4, "big")
        for i in self.soa_defaults:
            v = values[i]
            values[i] = v[:-20] + stamp + v[-16:]
        return values


class _LineError(Exception):
    """Internal: a line tinydns-data refuses; turned into TinydnsDataError with its number."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def _name(raw: bytes, what: str) -> bytes:
    try:
        return name_to_wire(raw)
    except NameError_ as exc:
        # §7.2: tinydns-data says only "protocol error" here, without the line.
        raise _LineError("protocol error", f"{what}: {exc}") from None


def _loc(raw: bytes) -> bytes:
    """§3.4/§4.1: the location bytes, or b"" for "no location" (two NULs)."""
    if not raw:
        return b""
    loc = location(raw)
    return b"" if loc == b"\0\0" else loc


def _server(x: bytes, suffix: bytes, fqdn: bytes) -> bytes:
    """§5.1: x, or x + suffix + fqdn when the raw x has no dot."""
    return x if b"." in x else x + suffix + fqdn


#: A hook called for every line with (index, line, fields) when linting; see lint.py.
LineHook = Callable[[int, bytes, list[bytes]], None]


def compile_lines(
    lines: Sequence[bytes],
    serial: int,
    *,
    first_lineno: int = 1,
    hook: LineHook | None = None,
) -> Records:
    """Compile data lines into records; ``serial`` is the default SOA serial.

    Raises :class:`TinydnsDataError` for the first line tinydns-data refuses, with
    ``lineno`` counted from ``first_lineno``.
    """
    recs = Records()
    keys = recs.keys
    values = recs.values
    kappend = keys.append
    vappend = values.append
    default_soa = (serial & _U32).to_bytes(4, "big") + SOA_TAIL

    def emit(rtype: bytes, owner: bytes, head: bytes, loc: bytes, rdata: bytes) -> None:
        # §4.1/§4.2: lowercased key; a leading "*" label moves into the marker.
        key = owner.lower()
        if key[:2] == b"\x01*":
            kappend(key[2:])
            vappend(rtype + (b"+" + loc if loc else b"*") + head + rdata)
        else:
            kappend(key)
            vappend(rtype + (b">" + loc if loc else b"=") + head + rdata)

    index = -1
    try:
        for index, raw in enumerate(lines):
            line = raw.rstrip(b" \t\n")  # §2.2: CR is kept
            if not line:
                continue
            lead = line[0]
            if lead in {35, 45}:  # '#' comment, '-' disabled line
                continue
            if lead not in _LEADERS:
                raise _LineError(
                    f"unable to parse data line {first_lineno + index}: "
                    "unrecognized leading character",
                    f"unrecognized leading character {chr(lead)!r}",
                )
            f = split_fields(line)
            if hook is not None:
                hook(index, line, f)

            if lead in {43, 61}:  # '+' and '=' (§5.5)
                owner = _name(f[0], "name")
                ttl = number(f[2])
                head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[3])
                loc = _loc(f[4])
                ip = ip4(f[1])
                if ip is not None:
                    emit(_A, owner, head, loc, ip)
                    if lead == 0x3D:
                        rev = b"%d.%d.%d.%d" % (ip[3], ip[2], ip[1], ip[0])
                        ptr_owner = b"".join(LEN[len(p)] + p for p in rev.split(b"."))
                        emit(_PTR, ptr_owner + _IN_ADDR_ARPA, head, loc, owner)
                continue

            if lead in {46, 38}:  # '.' and '&' (§5.2, §5.3)
                fqdn = _name(f[0], "name")
                ttl = number(f[3])
                if ttl is None:
                    ttl = TTL_NS
                tail = ttd(f[4])
                loc = _loc(f[5])
                server = _name(_server(f[2], b".ns.", f[0]), "name server")
                head = (ttl & _U32).to_bytes(4, "big") + tail
                if lead == 0x2E:
                    recs.stamped.append(index)
                    recs.soa_defaults.append(len(keys))
                    soa_ttl = (TTL_NEGATIVE if ttl & 0xFFFFFFFFFFFFFFFF else 0).to_bytes(4, "big")
                    emit(_SOA, fqdn, soa_ttl + tail, loc, server + _HOSTMASTER + fqdn + default_soa)
                emit(_NS, fqdn, head, loc, server)
                ip = ip4(f[1])
                if ip is not None:
                    emit(_A, server, head, loc, ip)
                continue

            if lead == 0x40:  # '@' (§5.6)
                fqdn = _name(f[0], "name")
                ttl = number(f[4])
                head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[5])
                loc = _loc(f[6])
                mx = _name(_server(f[2], b".mx.", f[0]), "mail exchanger")
                dist = number(f[3]) or 0
                emit(_MX, fqdn, head, loc, (dist & 0xFFFF).to_bytes(2, "big") + mx)
                ip = ip4(f[1])
                if ip is not None:
                    emit(_A, mx, head, loc, ip)
                continue

            if lead in {67, 94}:  # 'C' and '^' (§5.8)
                owner = _name(f[0], "name")
                ttl = number(f[2])
                head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[3])
                loc = _loc(f[4])
                target = _name(f[1], "target")
                emit(_CNAME if lead == 0x43 else _PTR, owner, head, loc, target)
                continue

            if lead == 0x27:  # "'" TXT (§5.7, §4.1: chunks of 127)
                owner = _name(f[0], "name")
                ttl = number(f[2])
                head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[3])
                loc = _loc(f[4])
                txt = text(f[1])
                if len(txt) <= 127:
                    rdata = LEN[len(txt)] + txt if txt else b""
                else:
                    rdata = b"".join(
                        LEN[len(txt[i : i + 127])] + txt[i : i + 127]
                        for i in range(0, len(txt), 127)
                    )
                emit(_TXT, owner, head, loc, rdata)
                continue

            if lead == 0x5A:  # 'Z' (§5.4)
                owner = _name(f[0], "name")
                ser = number(f[3])
                if ser is None:
                    recs.stamped.append(index)
                    recs.soa_defaults.append(len(keys))
                    numbers = default_soa[:4]
                else:
                    numbers = (ser & _U32).to_bytes(4, "big")
                for pos, default in zip((4, 5, 6, 7), _SOA_DEFAULTS, strict=True):
                    value = number(f[pos])
                    numbers += ((default if value is None else value) & _U32).to_bytes(4, "big")
                ttl = number(f[8])
                head = ((TTL_NEGATIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[9])
                loc = _loc(f[10])
                mname = _name(f[1], "primary name server")
                rname = _name(f[2], "contact address")
                emit(_SOA, owner, head, loc, mname + rname + numbers)
                continue

            if lead == 0x3A:  # ':' generic (§5.9)
                owner = _name(f[0], "name")
                ttl = number(f[3])
                head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
                head += ttd(f[4])
                loc = _loc(f[5])
                rtype = (number(f[1]) or 0) & 0xFFFF
                if rtype in _PROHIBITED:
                    what = _PROHIBITED[rtype]
                    raise _LineError(
                        f"unable to parse data line {first_lineno + index}: type {what} prohibited",
                        f"type {f[1].decode('utf-8', 'replace')} is {what}, which a generic "
                        "line may not define",
                    )
                emit(rtype.to_bytes(2, "big"), owner, head, loc, text(f[2]))
                continue

            if lead == 0x25:  # '%' location map (§5.10)
                kappend(b"\0%" + prefix(f[1]))
                vappend(location(f[0]))
                continue

            # 'S': Debian's SRV (§5.11)
            fqdn = _name(f[0], "name")
            ttl = number(f[6])
            head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
            head += ttd(f[7])
            loc = _loc(f[8])
            target = _name(_server(f[2], b".srv.", f[0]), "SRV target")
            port = number(f[3])
            if port is None:
                raise _LineError("protocol error", "SRV line without a port")
            srv = (
                ((number(f[4]) or 0) & 0xFFFF).to_bytes(2, "big")
                + ((number(f[5]) or 0) & 0xFFFF).to_bytes(2, "big")
                + (port & 0xFFFF).to_bytes(2, "big")
            )
            emit(_SRV, fqdn, head, loc, srv + target)
            ip = ip4(f[1])
            if ip is not None:
                emit(_A, target, head, loc, ip)
    except _LineError as exc:
        raise TinydnsDataError(
            exc.message, lineno=first_lineno + index, reason=exc.reason
        ) from None
    return recs


def compile_data(data: bytes, mtime: int) -> bytes:
    """The data.cdb tinydns-data writes for ``data`` whose file mtime is ``mtime``."""
    recs = compile_lines(split_lines(data), default_serial(mtime))
    return cdb.dumps(recs.keys, recs.values)
