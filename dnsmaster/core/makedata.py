"""make-data: ``header`` + every ``zones.*`` into one tinydns ``data`` text.

The classic rule, kept: the sources are concatenated in order (header first, then
zones files in byte order of name), and every SOA gets an explicit serial so that
every server compiling this data serves the same numbers whatever the mtime of its
copy. A ``.`` line becomes the ``Z`` + ``&`` (+ ``+``) lines tinydns-data treats as
exactly equivalent (spec §5.2, vectors 17a/17b); a ``Z`` line without a serial gets
one; the IPv6 patch's ``3`` and ``6`` lines become a generic AAAA line (and ``^``
PTR lines: ip6.arpa, and ip6.int unless ``ipv6_int`` is false), see
:mod:`dnsmaster.core.ipv6`; everything else is copied byte for byte.

Each source is compiled once, independently of the serial (:class:`CompiledSource`),
so a rebuild after a one-line change re-reads only the file that changed and just
re-stamps the serial everywhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, compress, repeat
from typing import Protocol

from dnsmaster.core import accel, ipv6
from dnsmaster.core.banner import BANNER, built_from, previous_serial
from dnsmaster.core.catalog import CATALOG_SOURCE
from dnsmaster.core.compiler import (
    PackedRecords,
    compile_lines,
    compile_text,
    no_gc,
    split_lines,
)
from dnsmaster.core.fields import name_to_wire, number, split_fields
from dnsmaster.core.linetypes import Records
from dnsmaster.core.lint import Diagnostic, Linter
from dnsmaster.core.serial import MODULUS, newer, next_after
from dnsmaster.core.text import has_control, printable
from dnsmaster.errors import DataError, DataErrors, TinydnsDataError

__all__ = [
    "SERIAL_MARK",
    "Assembled",
    "CompiledSource",
    "SourceCheck",
    "assemble",
    "assemble_text",
    "banner_line",
    "banner_of",
    "built_from",
    "check_source",
    "compile_source",
    "fingerprint",
    "fingerprint_of",
    "next_serial",
    "previous_serial",
    "stamped_line",
]

# Stands where the build's serial goes until the serial is known. It cannot occur in
# a source: compile_source refuses a file that contains it.
SERIAL_MARK = b"\0dnsmaster-serial\0"
_BANNER = BANNER
_U64 = (1 << 64) - 1
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class CompiledSource:
    """One source file compiled, independent of the build's serial.

    ``text`` is the file as it goes into ``data``, with a placeholder where the
    serial goes; ``records`` are its cdb records; ``warnings`` what the checker
    found (a source with errors never compiles).
    """

    name: str
    digest: bytes
    pieces: tuple[bytes, ...]
    records: Records
    warnings: tuple[DataError, ...]
    lines: int

    @property
    def text(self) -> bytes:
        """The text with the placeholder where the serial goes (kept as the pieces around it)."""
        return SERIAL_MARK.join(self.pieces)


@dataclass(frozen=True, slots=True)
class Assembled:
    """The ``data`` text and the cdb records of one build.

    ``stamps`` are the byte offsets in ``data`` where the serial's digits were
    written (the banner's first, then every stamped ``Z`` line's), so a kept build
    can be given a new serial exactly there (:mod:`dnsmaster.master.archive`) rather than
    by searching for digits that a record's own data could contain too.
    """

    serial: int
    data: bytes
    keys: list[bytes]
    values: list[bytes]
    stamps: list[int]


def next_serial(now: int, previous: int | None) -> int:
    """The build's serial: the Unix time, but always past the previous build's.

    "Past" is RFC 1982's (SERIAL_BITS = 32): serials live on a circle, so after
    4294967295 comes 0 and nothing overflows the 32 bits of the SOA field. A
    secondary sees each build's serial as newer than the one before.
    """
    now %= MODULUS
    if previous is None or newer(now, previous):
        return now
    return next_after(previous)


def fingerprint(
    sources: Sequence[tuple[str, bytes]], *, ipv6_int: bool = True, catalog: str = ""
) -> str:
    """One digest for the (name, sha256 digest) of every source, in build order.

    It goes into the banner of ``data``, so a later run can tell whether the data
    on disk was built from exactly the sources there now, and skip a rebuild that
    would change nothing but the serial. ``ipv6_int`` (as :func:`check_source`)
    and ``catalog`` (the catalog zone's name, :mod:`dnsmaster.core.catalog`) change
    what the same sources build, so they count too; their defaults leave the digest
    what it always was. The catalog's own section is skipped: it is made from the
    other sources, so their digests and its name say all there is.
    """
    # one update of it all, made by map: a build may have 100,000 sources
    names, digests = zip(*sources, strict=True) if sources else ((), ())
    mine = list(map(CATALOG_SOURCE.__ne__, names))
    encoded = map(str.encode, compress(names, mine), repeat("utf-8"), repeat("surrogateescape"))
    return fingerprint_of(
        b"".join(map(b"\0".join, zip(encoded, compress(digests, mine), strict=True))),
        ipv6_int=ipv6_int,
        catalog=catalog,
    )


def fingerprint_of(joined: bytes | bytearray, *, ipv6_int: bool = True, catalog: str = "") -> str:
    """:func:`fingerprint` of the sources whose names and digests, each name NUL its
    digest, are ``joined`` (the catalog's own section left out)."""
    h = hashlib.sha256(joined)
    if not ipv6_int:
        h.update(b"\0options\0ipv6_int=false")
    if catalog:
        h.update(b"\0options\0catalog=" + catalog.lower().rstrip(".").encode("ascii"))
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class SourceCheck:
    """Everything found in one source: errors, warnings, and the compile if clean."""

    errors: tuple[DataError, ...]
    warnings: tuple[DataError, ...]
    compiled: CompiledSource | None


def check_source(
    name: str,
    content: bytes,
    *,
    packed: PackedRecords | None = None,
    digest: bytes | None = None,
    ipv6_int: bool = True,
) -> SourceCheck:
    """Compile one source, collecting every error and warning instead of stopping.

    With ``packed`` (empty), the records go there, in cdb's record layout, and the
    compiled source's ``records`` hold only ``stamped``: what a build that writes
    data.cdb from packed records wants, without a Python object per record.
    ``digest`` is the sha256 of ``content`` when the caller has it already.
    ``ipv6_int``: a ``6`` line publishes its PTR under ip6.int too, after the
    ip6.arpa one, as the IPv6 patch's tinydns-data does (:mod:`dnsmaster.core.ipv6`).
    """
    fast = accel.compiler()
    # One pass over the whole file, without the GIL where C does it: the other
    # compile thread runs meanwhile.
    mark_at, has_v6, lines = fast.scan(content, SERIAL_MARK) if fast is not None else _scan(content)
    if mark_at >= 0:
        line = content[:mark_at].count(b"\n") + 1
        bad = DataError(name, line, "contains dnsmaster's serial placeholder")
        return SourceCheck((bad,), (), None)
    with no_gc():
        return _check(name, content, packed, digest, _Options(ipv6_int, has_v6, lines))


def _scan(content: bytes) -> tuple[int, bool, int]:
    """Where the serial mark first is (-1: nowhere), whether some line starts with
    ``3`` or ``6``, and how many lines (as ``_ccompile.scan``)."""
    lines = content.count(b"\n") + (not content.endswith(b"\n") and bool(content))
    return content.find(SERIAL_MARK), ipv6.has_ipv6_lines(content), lines


@dataclass(frozen=True, slots=True)
class _Options:
    """What :func:`_check` is told of a source besides its content."""

    ipv6_int: bool
    has_v6: bool
    lines: int


def _check(
    name: str,
    content: bytes,
    packed: PackedRecords | None,
    digest: bytes | None,
    opts: _Options,
) -> SourceCheck:
    ipv6_int = opts.ipv6_int
    linter = Linter()
    # Every line tinydns-data refuses is collected in one pass (no restart per
    # error, which made a file of many bad lines quadratic).
    refused: list[TinydnsDataError] = []
    v6: _IPv6Lines | None = None
    starts: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    if opts.has_v6:
        # The IPv6 patch's 3 and 6 lines become lines Debian's tinydns-data accepts;
        # those are what is compiled and checked, then traced back to their source line.
        lines = split_lines(content)
        v6 = _ipv6_lines(lines, ipv6_int)
        records = compile_lines(v6.lines, 0, linter=linter, errors=refused)
        if packed is not None:
            packed.add(records)
        records.stamped[:] = [v6.origin[i] for i in records.stamped]
        spans = _spans(lines, [*records.stamped, *v6.expanded])
    else:
        # The common case: C cuts the lines itself, and says where the stamped ones start.
        records = compile_text(
            content, 0, linter=linter, errors=refused, stamped_at=starts, packed=packed
        )
    found = linter.diagnostics
    if v6 is not None:
        refused = [
            TinydnsDataError(exc.message, lineno=v6.origin[exc.lineno - 1] + 1, reason=exc.reason)
            for exc in refused
        ]
        traced = (Diagnostic(v6.origin[d.line - 1] + 1, d.error, d.message) for d in found)
        # dict: once each (a 6 line's two data lines repeat the TTL's findings)
        found = sorted(dict.fromkeys([*v6.diagnostics, *traced]), key=lambda d: d.line)
    fatal = [DataError(name, exc.lineno, exc.reason) for exc in refused]
    errors = fatal + [DataError(name, d.line, d.message) for d in found if d.error]
    fast = accel.compiler()
    pieces: tuple[bytes, ...] | None = None
    if fast is not None and v6 is None and not fatal:
        # The whole text in one C pass without the GIL; only the few lines long
        # enough to need it come back for the length check.
        long_lines: list[int] = []
        stamped = records.stamped
        pieces = fast.expand(content, _comment_name(name), stamped, starts, long_lines)
        spans = {stamped[k]: (starts[k], _line_end(content, starts[k])) for k in long_lines}
        errors += _dot_lines_too_long(name, content, spans, [stamped[k] for k in long_lines])
    elif not fatal:
        if v6 is None:
            spans = {
                i: (s, _line_end(content, s)) for i, s in zip(records.stamped, starts, strict=True)
            }
        errors += _dot_lines_too_long(name, content, spans, records.stamped)
    warnings = tuple(DataError(name, d.line, d.message) for d in found if not d.error)
    if errors:
        return SourceCheck(tuple(sorted(errors, key=lambda e: e.line)), warnings, None)
    expanded = {} if v6 is None else v6.expanded
    compiled = CompiledSource(
        name=name,
        digest=hashlib.sha256(content).digest() if digest is None else digest,
        pieces=_expand(name, content, spans, records.stamped, expanded)
        if pieces is None
        else pieces,
        records=records,
        warnings=warnings,
        lines=opts.lines,
    )
    return SourceCheck((), warnings, compiled)


def _line_end(content: bytes, start: int) -> int:
    """Where the line starting at ``start`` ends: its LF, or the end of the content."""
    end = content.find(b"\n", start)
    return len(content) if end < 0 else end


def _spans(lines: Sequence[bytes], wanted: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Where each wanted line of ``lines`` starts and ends in their content (§2.1)."""
    sizes = list(accumulate(map(len, lines)))  # sizes[i] + i: where line i ends
    return {i: (sizes[i] + i - len(lines[i]), sizes[i] + i) for i in wanted}


def compile_source(
    name: str,
    content: bytes,
    *,
    strict: bool = False,
    packed: PackedRecords | None = None,
    digest: bytes | None = None,
    ipv6_int: bool = True,
) -> CompiledSource:
    """Compile one source that must be clean (``packed``, ``digest``, ``ipv6_int``: as
    :func:`check_source`).

    Raises :class:`DataErrors` naming every line tinydns-data would refuse and every
    line the checker finds certainly wrong; with ``strict``, warnings count too.
    """
    found = check_source(name, content, packed=packed, digest=digest, ipv6_int=ipv6_int)
    problems = found.errors + (found.warnings if strict else ())
    if problems or found.compiled is None:
        raise DataErrors(tuple(sorted(problems, key=lambda e: e.line)))
    return found.compiled


class Text(Protocol):
    """What :func:`assemble_text` needs of a source (a :class:`CompiledSource`, or
    the build's own form of one, whose records are packed)."""

    @property
    def name(self) -> str: ...
    @property
    def digest(self) -> bytes: ...
    @property
    def pieces(self) -> tuple[bytes | memoryview, ...]: ...


def assemble(
    sources: Sequence[CompiledSource], serial: int, *, ipv6_int: bool = True, catalog: str = ""
) -> Assembled:
    """Join compiled sources into the build's ``data`` and records.

    ``ipv6_int``: what the sources were compiled with; ``catalog``: the catalog
    zone's name when the last source is the catalog (both go into the banner's
    fingerprint, see :func:`fingerprint`).
    """
    serial %= MODULUS  # RFC 1982: the serial is a 32-bit number; text and records agree
    data, stamps = assemble_text(sources, serial, ipv6_int=ipv6_int, catalog=catalog)
    keys = list(chain.from_iterable(src.records.keys for src in sources))
    values = list(chain.from_iterable(src.records.values for src in sources))
    base = 0
    for src in sources:
        if src.records.soa_defaults:
            values[base : base + len(src.records)] = src.records.with_serial(serial)
        base += len(src.records)
    return Assembled(serial=serial, data=data, keys=keys, values=values, stamps=stamps)


def banner_line(
    sources: Sequence[tuple[str, bytes]], serial: int, *, ipv6_int: bool = True, catalog: str = ""
) -> bytes:
    """The first line of ``data``: the serial and the :func:`fingerprint` of ``sources``
    (name, sha256); its serial starts at ``len(BANNER)``."""
    return banner_of(fingerprint(sources, ipv6_int=ipv6_int, catalog=catalog), serial)


def banner_of(sources_id: str, serial: int) -> bytes:
    """:func:`banner_line` of the sources whose :func:`fingerprint` is ``sources_id``."""
    return b"%s%d sources=%s - built from header and zones.* files; edit those, not this\n" % (
        _BANNER,
        serial % MODULUS,
        sources_id.encode(),
    )


def assemble_text(
    sources: Sequence[Text], serial: int, *, ipv6_int: bool = True, catalog: str = ""
) -> tuple[bytes, list[int]]:
    """The build's ``data``, and the offsets of its serials (:attr:`Assembled.stamps`).

    ``ipv6_int``, ``catalog``: as :func:`assemble`.
    """
    stamp = str(serial % MODULUS).encode()
    pairs = [(src.name, src.digest) for src in sources]
    banner = banner_line(pairs, serial, ipv6_int=ipv6_int, catalog=catalog)
    parts: list[bytes | memoryview] = [banner]
    stamps = [len(_BANNER)]
    at = len(banner)
    width = len(stamp)
    for src in sources:
        pieces = src.pieces
        parts.append(pieces[0])
        at += len(pieces[0])
        for piece in pieces[1:]:
            stamps.append(at)
            parts.append(stamp)
            parts.append(piece)
            at += width + len(piece)
    return b"".join(parts), stamps


def _dot_lines_too_long(
    name: str, content: bytes, spans: dict[int, tuple[int, int]], stamped: Sequence[int]
) -> list[DataError]:
    """§5.2: a ``.`` line whose SOA contact would pass 255 bytes once written out."""
    found = []
    for i in stamped:
        start, end = spans[i]
        # The wire form of a name is at most 2 bytes longer than its field, which is
        # shorter than the line: most lines are far too short to bother.
        if end - start + 1 + 11 <= 255:
            continue
        line = content[start:end].rstrip(b" \t")
        if line[:1] == b"." and len(name_to_wire(split_fields(line)[0])) + 11 > 255:
            reason = "zone name too long for its SOA contact hostmaster.<zone> (255 bytes)"
            found.append(DataError(name, i + 1, reason))
    return found


@dataclass(frozen=True, slots=True)
class _IPv6Lines:
    """A source with its ``3``/``6`` lines expanded (see :mod:`dnsmaster.core.ipv6`).

    ``lines`` are the data lines, ``origin[j]`` the source line index of ``lines[j]``,
    ``expanded`` the data lines of each expanded source line.
    """

    lines: list[bytes]
    origin: list[int]
    expanded: dict[int, tuple[bytes, ...]]
    diagnostics: list[Diagnostic]


def _ipv6_lines(lines: Sequence[bytes], ipv6_int: bool) -> _IPv6Lines:
    out: list[bytes] = []
    origin: list[int] = []
    expanded: dict[int, tuple[bytes, ...]] = {}
    diagnostics: list[Diagnostic] = []
    for i, raw in enumerate(lines):
        if raw[:1] not in (b"3", b"6"):
            out.append(raw)
            origin.append(i)
            continue
        found = ipv6.expand(raw.rstrip(b" \t\n"), i + 1, ipv6_int=ipv6_int)
        diagnostics.extend(found.diagnostics)
        expanded[i] = found.lines
        out.extend(found.lines)
        origin.extend([i] * len(found.lines))
    return _IPv6Lines(out, origin, expanded, diagnostics)


def _expand(
    name: str,
    content: bytes,
    spans: dict[int, tuple[int, int]],
    stamped: Sequence[int],
    ipv6_lines: dict[int, tuple[bytes, ...]],
) -> tuple[bytes, ...]:
    """The source as it goes into ``data``, with comments that trace every line back,
    cut where the serial goes.

    ``spans`` says where the lines that change are in ``content``; they are cut out
    and the rest is copied as it is, never rejoined line by line.
    """
    origin = _comment_name(name)
    size = len(content)
    fast = accel.compiler()
    parts = [b"# %s:1\n" % origin]
    pos = 0
    # stamped is in line order already; the IPv6 lines interleave with it
    for i in sorted([*stamped, *ipv6_lines]) if ipv6_lines else stamped:
        start, end = spans[i]
        line, more = content[start:end], end + 1 < size
        if i in ipv6_lines:
            parts += (content[pos:start], _ipv6_line(origin, line, i, more, ipv6_lines[i]))
        elif fast is not None and line[:1] == b".":  # thousands in a build: C writes them
            parts += (content[pos:start], fast.dot_line(line, origin, i, more, SERIAL_MARK))
        else:
            parts += (content[pos:start], stamped_line(origin, line, i, more))
        pos = end
    parts.append(content[pos:])
    if content and not content.endswith(b"\n"):
        parts.append(b"\n")
    return tuple(b"".join(parts).split(SERIAL_MARK))


def _ipv6_line(
    origin: bytes, line: bytes, i: int, more: bool, data_lines: tuple[bytes, ...]
) -> bytes:
    """Line ``i``, an IPv6 patch line, as the data lines it became, traced back."""
    expanded = [b"# %s:%d: %s" % (origin, i + 1, line.rstrip(b" \t")), *data_lines]
    if more:
        expanded.append(b"# %s:%d" % (origin, i + 2))
    return b"\n".join(expanded)


def stamped_line(origin: bytes, line: bytes, i: int, more: bool) -> bytes:
    """Line ``i`` (a ``.`` line, or a ``Z`` line without a serial) with the placeholder
    where the serial goes: a ``.`` line becomes its ``Z``, ``&`` and ``+`` lines.
    ``more``: other lines follow it."""
    line = line.rstrip(b" \t")
    if line[:1] == b"Z":
        f = split_fields(line)
        return _line(b"Z", [*f[0:3], SERIAL_MARK, *f[4:11]])
    f = line[1:].split(b":", 6)  # a build has thousands of these: no more splits than used
    if len(f) < 6:
        f += _NO_FIELDS[len(f) :]
    fqdn, ip, x, ttl, ttd, lo = f[0:6]
    # Leading dots are empty labels (spec §3.5): dropping them keeps the name and
    # reads better than ".ns.example.com" for an empty x.
    server = (x if b"." in x else x + b".ns." + fqdn).lstrip(b".")
    ttl_value = number(ttl)
    if ttl_value is None:
        ttl_value = 259200
    soa_ttl = b"2560" if ttl_value & _U64 else b"0"
    # The Z and + lines end in digits before the timestamp and location: only with
    # those can they end in empty fields or blanks that need tidying.
    tail = b":%s:%s" % (ttd, lo) if ttd or lo else b""
    z = _DOT_SOA % (fqdn, server, fqdn, SERIAL_MARK, soa_ttl) + tail
    out = b"# %s:%d: %s\n%s\n" % (origin, i + 1, line, _tidy(z) if tail else z)
    out += _tidy(b"&%s::%s:%s%s" % (fqdn, x, ttl, tail))
    if ip:
        a = b"+%s:%s:%d%s" % (server, ip, ttl_value & _U32, tail)
        out += b"\n" + (_tidy(a) if tail else a)
    if more:
        out += b"\n# %s:%d" % (origin, i + 2)
    return out


_NO_FIELDS = [b""] * 6
_DOT_SOA = b"Z%s:%s:hostmaster.%s:%s:16384:2048:1048576:2560:%s"


def _comment_name(name: str) -> bytes:
    """``name`` for the ``# name:LINE`` comments of ``data``, never breaking the line.

    A newline in a file name would start a data line of its own (a record nobody
    wrote), a CR or ESC would garble a terminal showing the data. The build refuses
    such names; this escapes them anyway, as defence in depth. Other names are kept
    as they are (backslashes included) so that the comments still name the file.
    """
    if has_control(name):
        return printable(name).encode("utf-8")
    return name.encode("utf-8", "surrogateescape")


def _line(lead: bytes, fields: list[bytes]) -> bytes:
    return _tidy(lead + b":".join(fields))


def _tidy(line: bytes) -> bytes:
    """A line written out: no empty fields at its end, but trailing blanks kept."""
    line = line.rstrip(b":")
    # tinydns-data strips trailing spaces and tabs; a colon keeps them in the field.
    if line.endswith((b" ", b"\t")):
        line += b":"
    return line
