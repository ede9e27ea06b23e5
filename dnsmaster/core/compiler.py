"""The tinydns-data compiler: data text to cdb records, byte-identical to djbdns 1.05.

Records come out in the order tinydns-data adds them (file order, and within a line
the order of spec §5), because that order decides the layout of the whole data.cdb.
:func:`compile_data` is the whole program; :func:`compile_lines` is the part make-data
reuses so it can compile each zones file once and cache the result.

Comments cite ``shared/tinydns-data-spec.md`` by section.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from dnsmaster.core import cdb
from dnsmaster.core.fields import (
    LEN,
    NameError_,
    digits_value,
    ip4,
    location,
    name_to_wire,
    number,
    prefix,
    split_fields,
    text,
    ttd,
)
from dnsmaster.core.text import printable
from dnsmaster.errors import TinydnsDataError

__all__ = [
    "PURE_PYTHON_ENV",
    "Records",
    "accelerated",
    "compile_data",
    "compile_lines",
    "compile_text",
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

#: Set to 1 to compile in pure Python even when the C accelerator is built.
PURE_PYTHON_ENV = "DNSMASTER_PURE_PYTHON"


def _load_accelerator() -> ModuleType | None:
    """The optional C fast path (``_ccompile.c``), or None when absent or refused."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in {"", "0"}:
        return None
    try:
        from dnsmaster.core import _ccompile  # noqa: PLC0415 - optional, built by setup.py
    except ImportError:
        return None
    return _ccompile


#: The C module compiling the lines it is sure of; None means pure Python. Tests set
#: it to None to run the reference path.
_accel: ModuleType | None = _load_accelerator()


def accelerated() -> bool:
    """Whether compiles without a lint hook go through the C accelerator."""
    return _accel is not None


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
        stamp = (serial & _U32).to_bytes(4, "big")  # a serial lives on the 32-bit circle
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

# Fast-path tables. _OCTET maps every 1-3 digit string to the address byte ip4 makes
# of it; _PTR_LABEL to the wire label of that byte in decimal (the in-addr.arpa name).
_DIGITS = [b"%d" % i for i in range(1000)]
_OCTET = {
    **{b"%d" % i: LEN[i & 255] for i in range(1000)},
    **{b"%02d" % i: LEN[i] for i in range(100)},
    **{b"%03d" % i: LEN[i & 255] for i in range(1000)},
}
_DEC_LABEL = [LEN[len(_DIGITS[i])] + _DIGITS[i] for i in range(256)]
_PTR_LABEL = {text: _DEC_LABEL[octet[0]] for text, octet in _OCTET.items()}
_NET = re.compile(rb"([0-9]+)\.([0-9]+)\.([0-9]+)")
_ZERO_TTD = bytes(8)
_UNSEEN = (b"", b"")  # a dict.get default only ever compared by identity


def _net(net: bytes) -> tuple[bytes, bytes] | None:
    """The first three address bytes of ``net``, and the rest of their in-addr.arpa name."""
    m = _NET.fullmatch(net)
    if m is None:
        return None
    a, b, c = (digits_value(g) & 255 for g in m.groups())
    return bytes((a, b, c)), _DEC_LABEL[c] + _DEC_LABEL[b] + _DEC_LABEL[a] + _IN_ADDR_ARPA


def compile_lines(
    lines: Sequence[bytes],
    serial: int,
    *,
    first_lineno: int = 1,
    hook: LineHook | None = None,
    errors: list[TinydnsDataError] | None = None,
) -> Records:
    """Compile data lines into records; ``serial`` is the default SOA serial.

    Raises :class:`TinydnsDataError` for the first line tinydns-data refuses, with
    ``lineno`` counted from ``first_lineno``. With an ``errors`` list, each refused
    line is appended to it instead and compiling goes on with the next line (what
    a checker wants: every error of a file in one pass; the records are then of
    no use, as tinydns-data would have written none).
    """
    blob = b"\n".join(lines)
    # A line holding LF (never one of split_lines) must be stripped too.
    strip = _needs_strip(blob) or blob.count(b"\n") != max(len(lines) - 1, 0)
    return _compile(lines, blob, strip, serial, first_lineno=first_lineno, hook=hook, errors=errors)


def compile_text(data: bytes, serial: int) -> Records:
    """Compile a whole data text; the same as ``compile_lines(split_lines(data), serial)``."""
    if _accel is not None:
        # The C code cuts and strips the lines itself; no list of lines is made.
        return _compile((), b"", False, serial, first_lineno=1, hook=None, whole=data)
    lines = split_lines(data)
    return _compile(lines, data, _needs_strip(data), serial, first_lineno=1, hook=None)


def _needs_strip(blob: bytes) -> bool:
    """Whether some line of ``blob`` ends in a space or a tab (§2.2)."""
    return b" \n" in blob or b"\t\n" in blob or blob.endswith((b" ", b"\t"))


def _compile(
    lines: Sequence[bytes],
    blob: bytes,
    strip: bool,
    serial: int,
    *,
    first_lineno: int,
    hook: LineHook | None,
    whole: bytes | None = None,
    errors: list[TinydnsDataError] | None = None,
) -> Records:
    """The compiler. ``blob`` holds the lines, only looked at for backslashes.

    With the C accelerator, ``whole`` may be given instead of lines: the whole data,
    cut into lines (§2.1) and stripped (§2.2) as it is compiled.
    """
    if strip:
        lines = [line.rstrip(b" \t\n") for line in lines]  # §2.2: CR is kept
    escapes = whole is None and b"\\" in blob
    gc_was_enabled = gc.isenabled()
    gc.disable()  # nothing here makes cycles; the collector would walk every temp list
    try:
        return _compile_stripped(
            lines, escapes, serial, first_lineno, hook, whole=whole, errors=errors
        )
    finally:
        if gc_was_enabled:
            gc.enable()


def _compile_stripped(
    lines: Sequence[bytes],
    escapes: bool,
    serial: int,
    first_lineno: int,
    hook: LineHook | None,
    *,
    whole: bytes | None = None,
    errors: list[TinydnsDataError] | None = None,
) -> Records:
    """Compile lines already stripped (§2.2); ``escapes`` says whether any has a backslash.

    The loop handles the common well-formed shapes of ``+``, ``=``, ``C`` and ``'``
    lines inline and sends every other line to :func:`general`, which is the plain
    transcription of spec §5. The fast paths only ever take a line whose records are
    certain; anything unusual (escapes, wildcards, odd addresses, more fields) goes
    the general way, so both give the same bytes.
    """
    recs = Records()
    keys = recs.keys
    values = recs.values
    kappend = keys.append
    vappend = values.append
    default_soa = (serial & _U32).to_bytes(4, "big") + SOA_TAIL

    # name -> wire of every parent domain seen; a name's wire is then its first label
    # plus its parent's, which saves most of the conversion in realistic data.
    parents: dict[bytes, bytes] = {b"": b"\0"}

    def parent_wire(parent: bytes) -> bytes | None:
        try:
            wire = name_to_wire(parent)
        except NameError_:
            return None  # the whole name fails too; the general path says how
        parents[parent] = wire
        return wire

    def wire_of(raw: bytes, what: str) -> bytes:
        head, _, parent = raw.partition(b".")
        pw = parents.get(parent) or parent_wire(parent)
        n = len(head)
        if pw is None or not 0 < n <= 63 or n + len(pw) >= 255 or b"\\" in head:
            return _name(raw, what)
        return LEN[n] + head + pw

    # ttl field -> ttl and empty ttd, for the types whose default TTL is 86400.
    heads: dict[bytes, bytes] = {}

    def head_of(raw: bytes) -> bytes:
        ttl = number(raw)
        head = heads[raw] = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(
            4, "big"
        ) + _ZERO_TTD
        return head

    plain_head = head_of(b"")
    # ttl field of a '.' line -> the NS/A head and the SOA head (§5.2), ttd empty.
    ns_heads: dict[bytes, tuple[bytes, bytes]] = {}

    def ns_head_of(raw: bytes) -> tuple[bytes, bytes]:
        ttl = number(raw)
        if ttl is None:
            ttl = TTL_NS
        soa_ttl = TTL_NEGATIVE if ttl & 0xFFFFFFFFFFFFFFFF else 0
        pair = ns_heads[raw] = (
            (ttl & _U32).to_bytes(4, "big") + _ZERO_TTD,
            soa_ttl.to_bytes(4, "big") + _ZERO_TTD,
        )
        return pair

    a_plain = _A + b"="
    ptr_plain = _PTR + b"="
    cname_plain = _CNAME + b"="
    txt_plain = _TXT + b"="
    nets: dict[bytes, tuple[bytes, bytes] | None] = {}
    octet = _OCTET.get
    ptr_label = _PTR_LABEL

    def emit(rtype: bytes, owner: bytes, head: bytes, loc: bytes, rdata: bytes) -> None:
        # §4.1/§4.2: lowercased key; a leading "*" label moves into the marker.
        key = owner.lower()
        if key[:2] == b"\x01*":
            kappend(key[2:])
            vappend(rtype + (b"+" + loc if loc else b"*") + head + rdata)
        else:
            kappend(key)
            vappend(rtype + (b">" + loc if loc else b"=") + head + rdata)

    def general(index: int, line: bytes, f: list[bytes]) -> None:
        """One line, exactly as spec §5 says; ``f`` are its fields (§2.3)."""
        lead = line[0]
        if lead in {43, 61}:  # '+' and '=' (§5.5)
            owner = wire_of(f[0], "name")
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
            return

        if lead in {46, 38}:  # '.' and '&' (§5.2, §5.3)
            fqdn = wire_of(f[0], "name")
            ttl = number(f[3])
            if ttl is None:
                ttl = TTL_NS
            tail = ttd(f[4])
            loc = _loc(f[5])
            server = wire_of(_server(f[2], b".ns.", f[0]), "name server")
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
            return

        if lead == 0x40:  # '@' (§5.6)
            fqdn = wire_of(f[0], "name")
            ttl = number(f[4])
            head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
            head += ttd(f[5])
            loc = _loc(f[6])
            mx = wire_of(_server(f[2], b".mx.", f[0]), "mail exchanger")
            dist = number(f[3]) or 0
            emit(_MX, fqdn, head, loc, (dist & 0xFFFF).to_bytes(2, "big") + mx)
            ip = ip4(f[1])
            if ip is not None:
                emit(_A, mx, head, loc, ip)
            return

        if lead in {67, 94}:  # 'C' and '^' (§5.8)
            owner = wire_of(f[0], "name")
            ttl = number(f[2])
            head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
            head += ttd(f[3])
            loc = _loc(f[4])
            target = wire_of(f[1], "target")
            emit(_CNAME if lead == 0x43 else _PTR, owner, head, loc, target)
            return

        if lead == 0x27:  # "'" TXT (§5.7, §4.1: chunks of 127)
            owner = wire_of(f[0], "name")
            ttl = number(f[2])
            head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
            head += ttd(f[3])
            loc = _loc(f[4])
            txt = text(f[1])
            if len(txt) <= 127:
                rdata = LEN[len(txt)] + txt if txt else b""
            else:
                rdata = b"".join(
                    LEN[len(txt[i : i + 127])] + txt[i : i + 127] for i in range(0, len(txt), 127)
                )
            emit(_TXT, owner, head, loc, rdata)
            return

        if lead == 0x5A:  # 'Z' (§5.4)
            owner = wire_of(f[0], "name")
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
            mname = wire_of(f[1], "primary name server")
            rname = wire_of(f[2], "contact address")
            emit(_SOA, owner, head, loc, mname + rname + numbers)
            return

        if lead == 0x3A:  # ':' generic (§5.9)
            owner = wire_of(f[0], "name")
            ttl = number(f[3])
            head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
            head += ttd(f[4])
            loc = _loc(f[5])
            rtype = (number(f[1]) or 0) & 0xFFFF
            if rtype in _PROHIBITED:
                what = _PROHIBITED[rtype]
                raise _LineError(
                    f"unable to parse data line {first_lineno + index}: type {what} prohibited",
                    f"type {printable(f[1])} is {what}, which a generic line may not define",
                )
            emit(rtype.to_bytes(2, "big"), owner, head, loc, text(f[2]))
            return

        if lead == 0x25:  # '%' location map (§5.10)
            kappend(b"\0%" + prefix(f[1]))
            vappend(location(f[0]))
            return

        # 'S': Debian's SRV (§5.11)
        fqdn = wire_of(f[0], "name")
        ttl = number(f[6])
        head = ((TTL_POSITIVE if ttl is None else ttl) & _U32).to_bytes(4, "big")
        head += ttd(f[7])
        loc = _loc(f[8])
        target = wire_of(_server(f[2], b".srv.", f[0]), "SRV target")
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

    def unrecognized(index: int, lead: int) -> _LineError:
        return _LineError(
            f"unable to parse data line {first_lineno + index}: unrecognized leading character",
            f"unrecognized leading character '{printable(bytes((lead,)))}'",
        )

    index = -1
    try:
        if hook is None and errors is None and _accel is not None:
            # The C code compiles every line it is sure of and hands back the index
            # of the first one it is not (escapes, errors, ...); that line goes the
            # general way here, so errors and odd lines have one implementation.
            stamped = recs.stamped
            soa_defaults = recs.soa_defaults
            if whole is not None:
                run_text = _accel.run_text
                size = len(whole)
                pos, index = run_text(whole, 0, 0, default_soa, keys, values, stamped, soa_defaults)
                while pos < size:
                    end = whole.find(b"\n", pos)
                    if end < 0:
                        end = size
                    line = whole[pos:end].rstrip(b" \t")
                    if line and line[0] not in {35, 45}:
                        if line[0] not in _LEADERS:
                            raise unrecognized(index, line[0])
                        general(index, line, split_fields(line))
                    pos, index = run_text(
                        whole, end + 1, index + 1, default_soa, keys, values, stamped, soa_defaults
                    )
                return recs
            run = _accel.run
            seq = lines if isinstance(lines, list | tuple) else list(lines)
            total = len(seq)
            index = run(seq, 0, default_soa, keys, values, stamped, soa_defaults)
            while index < total:
                line = seq[index]
                if line and line[0] not in {35, 45}:
                    if line[0] not in _LEADERS:
                        raise unrecognized(index, line[0])
                    general(index, line, split_fields(line))
                index = run(seq, index + 1, default_soa, keys, values, stamped, soa_defaults)
            return recs

        if hook is not None or errors is not None:
            for index, line in enumerate(lines):
                if not line or line[0] in {35, 45}:  # '#' comment, '-' disabled line
                    continue
                try:
                    if line[0] not in _LEADERS:
                        raise unrecognized(index, line[0])
                    f = split_fields(line)
                    if hook is not None:
                        hook(index, line, f)
                    general(index, line, f)
                except _LineError as exc:
                    if errors is None:
                        raise
                    errors.append(_data_error(exc, first_lineno + index))
            return recs

        for index, line in enumerate(lines):
            if not line:
                continue
            lead = line[0]
            if lead == 43 or lead == 61:  # noqa: PLR1714 - '+' and '=', the most common
                f = line.split(b":")
                n = len(f)
                if n == 2:
                    head = plain_head
                elif n == 3:
                    head = heads.get(f[2]) or head_of(f[2])
                else:
                    general(index, line, split_fields(line))
                    continue
                net, _, last = f[1].rpartition(b".")
                nb = nets.get(net, _UNSEEN)
                if nb is _UNSEEN:
                    nb = nets[net] = _net(net)
                ob = octet(last)
                h, _, parent = f[0].partition(b".")
                pw = parents.get(parent) or parent_wire(parent)
                n = len(h) - 1
                if (
                    nb is None
                    or ob is None
                    or pw is None
                    or not 0 < n <= 63
                    or n + len(pw) >= 255
                    or (n == 1 and h[1] == 42)  # a wildcard
                    or (escapes and b"\\" in h)
                ):
                    general(index, line, split_fields(line))
                    continue
                owner = LEN[n] + h[1:] + pw
                kappend(owner.lower())
                vappend(a_plain + head + nb[0] + ob)
                if lead == 61:
                    kappend(ptr_label[last] + nb[1])
                    vappend(ptr_plain + head + owner)
                continue
            if lead == 67 or lead == 39:  # noqa: PLR1714 - 'C' and "'"
                f = line.split(b":")
                n = len(f)
                if n == 2:
                    head = plain_head
                elif n == 3:
                    head = heads.get(f[2]) or head_of(f[2])
                else:
                    general(index, line, split_fields(line))
                    continue
                h, _, parent = f[0].partition(b".")
                pw = parents.get(parent) or parent_wire(parent)
                n = len(h) - 1
                if (
                    pw is None
                    or not 0 < n <= 63
                    or n + len(pw) >= 255
                    or (n == 1 and h[1] == 42)
                    or (escapes and b"\\" in h)
                ):
                    general(index, line, split_fields(line))
                    continue
                second = f[1]
                if lead == 67:
                    th, _, tparent = second.partition(b".")
                    tpw = parents.get(tparent) or parent_wire(tparent)
                    tn = len(th)
                    if (
                        tpw is None
                        or not 0 < tn <= 63
                        or tn + len(tpw) >= 255
                        or (escapes and b"\\" in th)
                    ):
                        general(index, line, split_fields(line))
                        continue
                    kappend((LEN[n] + h[1:] + pw).lower())
                    vappend(cname_plain + head + LEN[tn] + th + tpw)
                    continue
                tn = len(second)
                if tn > 127 or (escapes and b"\\" in second):
                    general(index, line, split_fields(line))
                    continue
                kappend((LEN[n] + h[1:] + pw).lower())
                vappend(txt_plain + head + (LEN[tn] + second if tn else b""))
                continue
            if lead == 46:  # '.' without ttd and location
                f = (line + b":::").split(b":")
                if len(f) > 7:
                    general(index, line, split_fields(line))
                    continue
                raw = f[0][1:]
                fqdn = wire_of(raw, "name")
                ns_head, soa_head = ns_heads.get(f[3]) or ns_head_of(f[3])
                server = wire_of(_server(f[2], b".ns.", raw), "name server")
                recs.stamped.append(index)
                recs.soa_defaults.append(len(keys))
                emit(_SOA, fqdn, soa_head, b"", server + _HOSTMASTER + fqdn + default_soa)
                emit(_NS, fqdn, ns_head, b"", server)
                ip = ip4(f[1])
                if ip is not None:
                    emit(_A, server, ns_head, b"", ip)
                continue
            if lead == 64:  # '@' without ttd and location
                f = (line + b"::::").split(b":")
                if len(f) > 9:
                    general(index, line, split_fields(line))
                    continue
                raw = f[0][1:]
                fqdn = wire_of(raw, "name")
                head = heads.get(f[4]) or head_of(f[4])
                mx = wire_of(_server(f[2], b".mx.", raw), "mail exchanger")
                dist = number(f[3]) or 0
                emit(_MX, fqdn, head, b"", (dist & 0xFFFF).to_bytes(2, "big") + mx)
                ip = ip4(f[1])
                if ip is not None:
                    emit(_A, mx, head, b"", ip)
                continue
            if lead in {35, 45}:  # '#' comment, '-' disabled line
                continue
            if lead not in _LEADERS:
                raise unrecognized(index, lead)
            general(index, line, split_fields(line))
    except _LineError as exc:
        raise _data_error(exc, first_lineno + index) from None
    return recs


def _data_error(exc: _LineError, lineno: int) -> TinydnsDataError:
    return TinydnsDataError(exc.message, lineno=lineno, reason=exc.reason)


def compile_data(data: bytes, mtime: int) -> bytes:
    """The data.cdb tinydns-data writes for ``data`` whose file mtime is ``mtime``."""
    recs = compile_text(data, default_serial(mtime))
    return cdb.dumps(recs.keys, recs.values)
