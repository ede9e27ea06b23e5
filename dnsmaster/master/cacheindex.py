"""The build cache's index as bytes: what :func:`encode` writes and :func:`decode` reads.

The layout (see :mod:`dnsmaster.master.buildcache` for what it means): a header
(magic, format, version, code digest, options digest, serial, banner length, the
stat of ``data`` and of ``data.cdb``, the number of sources, the length of each
section), nine sections (the names, a fixed row per source, a stat per source,
the lengths of every text piece, the offsets of every SOA serial, the warnings'
lines, their reasons' lengths, the reasons, the records' (hash, position) pairs),
and the sha256 of all before it.

Every section is a column (one array of numbers for all sources), so both ends
work on whole columns: a zones file per customer makes 100,000 sources, and a
Python statement per source per step was most of a rebuild after a one-file
change. :func:`decode` checks every count and length before it trusts any.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain, compress, islice, repeat
from pathlib import Path
from typing import NamedTuple

from dnsmaster import __version__
from dnsmaster.core import makedata
from dnsmaster.core.compiler import no_gc
from dnsmaster.errors import DataError, DnsmasterError

__all__ = [
    "FORMAT",
    "InvalidIndex",
    "Kept",
    "Stat",
    "code_digest",
    "decode",
    "encode",
]

#: The version of the index format; an index of another is ignored.
FORMAT = 5

#: A file's stat as the cache compares it: device, inode, size, mtime_ns, ctime_ns.
Stat = tuple[int, ...]

_MAGIC = b"dnsmaster-index\n"
# magic, format, version, code digest, options digest, serial, banner length,
# stat of data, stat of data.cdb, sources, then the 9 section lengths
_HEADER = struct.Struct("<16sI16s32s32sQQ5Q5QQ9Q")
# per source: sha256, pieces, records length, count, serials, lines, warnings; its stat
_ROW_FORMAT = "<32sIQIIQI"
_ROW = struct.Struct(_ROW_FORMAT)
_SECTIONS = 9
_NO_STAT = (0, 0, 0, 0, 0)
_SURROGATES = "surrogateescape"
_NONE: tuple[DataError, ...] = ()
# array's items are in the machine's order; the index's are little-endian
_SWAP = sys.byteorder != "little"


class InvalidIndex(DnsmasterError, ValueError):
    """The index failed a check; the message says which."""


class Kept(NamedTuple):
    """One source as the last build wrote it: numbers, not bytes. ``pieces`` are
    the lengths of its text's pieces (the serial goes between two), ``size`` their
    sum, ``records`` the length of its records in ``data.cdb`` and ``nrecords`` how
    many, ``serials`` the offsets in them of the SOA serials. A tuple rather than a
    frozen dataclass: a new process makes one per source (100,000 for a zones file
    per customer), and a tuple is made in a third of the time.
    """

    name: str
    digest: bytes
    pieces: tuple[int, ...]
    size: int
    records: int
    nrecords: int
    serials: tuple[int, ...]
    warnings: tuple[DataError, ...]
    lines: int

    def text_length(self, width: int) -> int:
        """The length of its text in a ``data`` whose serial has ``width`` digits."""
        return self.size + width * (len(self.pieces) - 1)


@functools.cache
def code_digest() -> bytes:
    """What decides a compile besides the source: dnsmaster's version and the core's
    code (not the C accelerator's, which the tests hold to the same bytes). Taken
    once, at import: the code this process runs, not what an upgrade puts on disk."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(makedata.__file__).parent.glob("*.py")):
        h.update(b"\0" + path.name.encode())
        with contextlib.suppress(OSError):  # a missing file still changes the digest
            h.update(b"\0" + path.read_bytes())
    return h.digest()


code_digest()

_names, _digest = operator.attrgetter("name"), operator.attrgetter("digest")
_records, _nrecords = operator.attrgetter("records"), operator.attrgetter("nrecords")
_lines = operator.attrgetter("lines")
_pieces = operator.attrgetter("pieces")
_serials = operator.attrgetter("serials")
_warnings = operator.attrgetter("warnings")


def encode(
    sources: Sequence[Kept],
    stats: dict[str, Stat],
    *,
    serial: int,
    banner: int,
    pair: tuple[Stat, Stat],
    options: bytes = b"",
    code: bytes | None = None,
    pairs: bytes | memoryview = b"",
) -> bytes:
    """The index of a pair stamped with ``serial`` (``banner`` bytes of banner) and
    holding ``sources`` in order; ``pair`` is the stat of ``data`` and ``data.cdb``,
    ``pairs`` the (hash, position) pair of each record of ``data.cdb``, in record
    order (8 bytes a record, or nothing: the keys are then read and hashed).

    Each section is packed whole from its column: no statement runs per source.
    """
    with no_gc():
        sections = _sections(sources, stats)
    header = _HEADER.pack(
        _MAGIC,
        FORMAT,
        __version__.encode()[:16],
        code_digest() if code is None else code,
        hashlib.sha256(options).digest(),
        serial,
        banner,
        *pair[0],
        *pair[1],
        len(sources),
        *map(len, sections),
        len(pairs),
    )
    body = b"".join([header, *sections, pairs])
    return body + hashlib.sha256(body).digest()


def _sections(sources: Sequence[Kept], stats: dict[str, Stat]) -> list[bytes]:
    """The sections of the index but the records' pairs."""
    names = list(map(_names, sources))
    count = len(names)
    rows = zip(
        map(_digest, sources),
        map(len, map(_pieces, sources)),
        map(_records, sources),
        map(_nrecords, sources),
        map(len, map(_serials, sources)),
        map(_lines, sources),
        map(len, map(_warnings, sources)),
        strict=True,
    )
    seen = map(stats.get, names, repeat(_NO_STAT))
    warned = list(chain.from_iterable(map(_warnings, sources)))
    reasons = [w.reason.encode("utf-8", _SURROGATES) for w in warned]
    return [
        "\0".join(names).encode("utf-8", _SURROGATES),
        struct.pack(_ROW_FORMAT[0] + _ROW_FORMAT[1:] * count, *chain.from_iterable(rows)),
        struct.pack(f"<{5 * count}Q", *chain.from_iterable(seen)),
        _ints("I", chain.from_iterable(map(_pieces, sources))),
        _ints("Q", chain.from_iterable(map(_serials, sources))),
        _ints("Q", [w.line for w in warned]),
        _ints("I", map(len, reasons)),
        b"".join(reasons),
    ]


def decode(
    text: bytes, options: bytes = b""
) -> tuple[int, int, tuple[Stat, Stat], dict[str, Kept], dict[str, Stat], memoryview]:
    """The serial, banner length, pair's stats, sources, trusted stats and records'
    (hash, position) pairs of an index.

    Raises ValueError saying which check failed.
    """
    if len(text) < _HEADER.size + 32:
        raise InvalidIndex("shorter than its header")
    body, checksum = memoryview(text)[:-32], text[-32:]
    fields = _HEADER.unpack_from(body)
    magic, version, written_by, their_code, their_options, serial, banner = fields[:7]
    if magic != _MAGIC:
        raise InvalidIndex("not a dnsmaster cache index")
    if version != FORMAT:
        raise InvalidIndex(f"cache format {version}, not {FORMAT}")
    if written_by.rstrip(b"\0") != __version__.encode()[:16] or their_code != code_digest():
        raise InvalidIndex("written by another version of dnsmaster")
    if their_options != hashlib.sha256(options).digest():
        raise InvalidIndex("written by a build with other options")
    lengths = fields[-_SECTIONS:]
    if _HEADER.size + sum(lengths) != len(body):
        raise InvalidIndex(
            f"holds {len(body)} bytes, its header says {_HEADER.size + sum(lengths)}"
        )
    if hashlib.sha256(body).digest() != checksum:
        raise InvalidIndex("sha256 does not match its contents")
    try:
        with no_gc():
            sources, stats = _parse(body, fields[17], lengths[:-1])
    except (struct.error, UnicodeError, OverflowError) as exc:
        raise InvalidIndex(f"malformed: {exc}") from None
    pairs = body[len(body) - lengths[-1] :]
    if pairs and len(pairs) != 8 * sum(src.nrecords for src in sources.values()):
        raise InvalidIndex("the records' pairs are not 8 bytes a record")
    return serial, banner, (tuple(fields[7:12]), tuple(fields[12:17])), sources, stats, pairs


def _parse(
    body: memoryview, count: int, lengths: Sequence[int]
) -> tuple[dict[str, Kept], dict[str, Stat]]:
    at = _HEADER.size
    sections = []
    for length in lengths:
        sections.append(body[at : at + length])
        at += length
    names_blob, rows_blob, stats_blob, pieces_blob, serials_blob, lines_blob, sizes, reasons = (
        sections
    )
    if len(rows_blob) != count * _ROW.size:
        raise InvalidIndex(f"{len(rows_blob) // _ROW.size} sources where {count} were counted")
    names = names_blob.tobytes().decode("utf-8", _SURROGATES).split("\0") if count else []
    if len(names) != count or len(set(names)) != count:
        raise InvalidIndex("the names are not one per source")
    # one column per field of the rows
    rows = list(_ROW.iter_unpack(rows_blob))
    digests, n_pieces, records, n_records, n_serials, lines, n_warnings = (
        map(list, zip(*rows, strict=True)) if rows else ([] for _ in range(7))
    )
    if count and min(n_pieces) < 1:
        raise InvalidIndex(f"{names[n_pieces.index(min(n_pieces))]}: no text")
    seen = _unints("Q", stats_blob, 5 * count)
    pieces = _cut(_unints("I", pieces_blob, sum(n_pieces)), n_pieces)
    serials_all = _unints("Q", serials_blob, sum(n_serials))
    # An offset must leave the serial's 4 bytes inside its source's records.
    limits = chain.from_iterable(map(repeat, records, n_serials))
    if any(map(operator.gt, map(operator.add, serials_all, repeat(4)), limits)):
        for name, offsets, length in zip(names, _cut(serials_all, n_serials), records, strict=True):
            if offsets and max(offsets) + 4 > length:
                raise InvalidIndex(f"{name}: a serial offset past its records")
    serials = _cut(serials_all, n_serials)
    warned = _warnings_of(names, lines, n_warnings, (lines_blob, sizes, reasons))
    found = list(map(warned.get, names, repeat(_NONE))) if warned else repeat(_NONE)
    sums = map(sum, pieces)
    columns = zip(names, digests, pieces, sums, records, n_records, serials, found, lines)  # noqa: B905
    kept = list(map(tuple.__new__, repeat(Kept), columns))
    sources = dict(zip(names, kept, strict=True))
    stat_of = list(zip(*[iter(seen)] * 5, strict=True))
    trusted = map(_NO_STAT.__ne__, stat_of)
    stats = dict(compress(zip(names, stat_of, strict=True), trusted))
    return sources, stats


def _cut(values: tuple[int, ...], counts: list[int]) -> list[tuple[int, ...]]:
    """``values`` cut into one tuple per count, in order."""
    if counts and min(counts) == max(counts):  # the same shape for all: cut by zip
        n = counts[0]
        return list(zip(*[iter(values)] * n, strict=True)) if n else [()] * len(counts)
    it = iter(values)
    return [tuple(islice(it, n)) for n in counts]


def _warnings_of(
    names: list[str],
    lines: list[int],
    counts: list[int],
    blobs: tuple[memoryview, memoryview, memoryview],
) -> dict[str, tuple[DataError, ...]]:
    """Each warned source's warnings, checked against its lines; ``blobs`` are the
    sections of the warnings' lines, their reasons' lengths and the reasons."""
    lines_blob, sizes_blob, reasons = blobs
    total = sum(counts)
    at_lines = _unints("Q", lines_blob, total)
    sizes = _unints("I", sizes_blob, total)
    if sum(sizes) != len(reasons):
        raise InvalidIndex("the warnings do not add up")
    texts = reasons.tobytes()
    found: dict[str, tuple[DataError, ...]] = {}
    w = at = 0
    for k in compress(range(len(counts)), counts):
        name, n = names[k], counts[k]
        mine = []
        for line, size in zip(at_lines[w : w + n], sizes[w : w + n], strict=True):
            if line > lines[k]:
                raise InvalidIndex(f"{name}: a warning past its last line")
            mine.append(DataError(name, line, texts[at : at + size].decode("utf-8", _SURROGATES)))
            at += size
        found[name] = tuple(mine)
        w += n
    return found


def _ints(code: str, values: Iterable[int]) -> bytes:
    """``values`` as little-endian numbers; OverflowError when one does not fit."""
    packed = array(code, values)  # array refuses a value its type cannot hold
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _unints(code: str, view: memoryview, count: int) -> tuple[int, ...]:
    size = struct.calcsize(code)
    if len(view) != count * size:
        raise InvalidIndex(f"{len(view) // size} numbers where {count} were counted")
    values: tuple[int, ...] = struct.unpack(f"<{count}{code}", view)
    return values
