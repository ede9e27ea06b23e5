"""The build cache: what the last build compiled, found again in what it wrote.

A build's ``data`` holds every source's text (stamped with the serial) one after
the other, and its ``data.cdb`` every source's records in the same order: those
two files are the cache. A source unchanged since the last build is neither
compiled nor kept in memory, but copied from them by range, its serials stamped
anew (:mod:`dnsmaster.master.output`). One file, ``OUTPUT/.dnsmaster-cache/index``,
written once per build after the pair is installed, says where each source is:

- a header: the format, dnsmaster's version and the digest of the compiler's own
  source files (a changed checker must not replay old warnings), the options, the
  serial stamped in the pair, the length of its banner, and the stat (device,
  inode, size, mtime and ctime in nanoseconds) of ``data`` and ``data.cdb`` as
  installed (a pair replaced since is not the one described);
- per source, in build order: its name, the sha256 of its bytes, its file's stat
  (zeros when too recent to trust: git's racy-clean rule, two seconds), the
  lengths of its text's pieces (cut where the serial goes), the length and count
  of its records, the offsets of its SOA serials, its lines and its warnings;
- the (hash, position) pair of every record of ``data.cdb``, so that the next
  build copies the records without reading them (:func:`~dnsmaster.core.cdb.write_pieces`);
- the sha256 of all before it.

Nothing in it is trusted until every check passed: the magic, the format, the
version and code digest, the options, the sha256, every count and length against
the bytes there and against ``data`` and ``data.cdb`` (opened once and checked by
``fstat`` on the open descriptors, so a pair renamed over them is not mixed in).
Any failure makes the index a :class:`Rejected`, logged as ``cache.ignored``: the
build compiles every source. The cache is as trusted as the output directory it
sits in; a foreign file there must never run code, crash the build or hang it:
no pickle, only :mod:`struct`, and every open is ``O_NOFOLLOW | O_NONBLOCK``.
The index is written to a temp file and renamed, under the output directory's
lock; not fsynced: after a power cut its sha256 catches what is lost.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from pathlib import Path
from typing import NamedTuple

from dnsmaster import __version__, fsutil
from dnsmaster.core import cdb, makedata
from dnsmaster.core.makedata import CompiledSource
from dnsmaster.errors import DataError, DnsmasterError

__all__ = [
    "DIRECTORY",
    "FORMAT",
    "INDEX",
    "BuildCache",
    "Index",
    "Kept",
    "Ready",
    "Rejected",
    "Row",
    "code_digest",
    "decode",
    "encode",
    "kept_of",
]

#: The subdirectory of the output directory that holds the cache.
DIRECTORY = ".dnsmaster-cache"
#: The version of the index format; an index of another is ignored.
FORMAT = 5
#: The file in the cache directory that describes the last build's pair.
INDEX = "index"

#: A file's stat as the cache compares it: device, inode, size, mtime_ns, ctime_ns.
Stat = tuple[int, ...]
#: A source's Kept, row, stat and packed stat as the last index held them.
Row = tuple["Kept", bytes, Stat, bytes]

_MAGIC = b"dnsmaster-index\n"
# magic, format, version, code digest, options digest, serial, banner length,
# stat of data, stat of data.cdb, sources, then the 9 section lengths
_HEADER = struct.Struct("<16sI16s32s32sQQ5Q5QQ9Q")
# per source: sha256, pieces, records length, count, serials, lines, warnings; its stat
_ROW, _STAT = struct.Struct("<32sIQIIQI"), struct.Struct("<5Q")
_SECTIONS = 9
_NO_STAT = (0, 0, 0, 0, 0)
_SURROGATES = "surrogateescape"
# An index holds at most this many bytes per byte of data (see BuildCache._cap):
# a source's row and its stat are 120 bytes, its text in data 16 at least, and
# a warning's 30 bytes or so are for a line of data of 2 bytes at least.
_PER_DATA_BYTE = 64
_U32 = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Ready:
    """One source compiled by this build: its text cut where the serial goes
    (``pieces``), its records as one :class:`~dnsmaster.core.cdb.Packed` blob, in
    memory. Once its build is installed, a Builder keeps its :class:`Kept` instead."""

    name: str
    digest: bytes
    pieces: tuple[bytes | memoryview, ...]
    records: cdb.Packed
    warnings: tuple[DataError, ...]
    lines: int

    @classmethod
    def of(cls, src: CompiledSource) -> Ready:
        """``src`` with its records packed (the lists of records are not kept)."""
        records = src.records
        packed = cdb.pack(records.keys, records.values, records.soa_defaults)
        return cls(src.name, src.digest, src.pieces, packed, src.warnings, src.lines)

    @property
    def nrecords(self) -> int:
        """How many records."""
        return self.records.count


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


def kept_of(src: Ready) -> Kept:
    """What is kept of ``src`` once the build that wrote it is installed."""
    packed, pieces = src.records, tuple(map(len, src.pieces))
    size, count = len(packed.blob), packed.count
    name, digest, warnings, lines = src.name, src.digest, src.warnings, src.lines
    return Kept(name, digest, pieces, sum(pieces), size, count, packed.serials, warnings, lines)


@dataclass(frozen=True, slots=True)
class Rejected:
    """The index was there but is not used; ``reason`` says why (for the log)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Index:
    """The last build's pair as its index describes it.

    ``sources`` are in build order, ``stats`` the trusted stats of their files,
    ``at`` where each source's text starts in ``data``, where its records start in
    ``data.cdb``, and the number of its first record; ``pairs`` the records' (hash,
    position) pairs in record order, as :class:`~dnsmaster.core.cdb.Piece` takes
    them (empty when the index has none). ``data`` and ``cdb`` are the pair's
    descriptors, opened and checked when the index was read: :meth:`close` them when
    done (they are closed when the index is dropped, too: a ``push`` that only asks
    whether the build is current never closes it).
    """

    serial: int
    banner: int
    sources: dict[str, Kept]
    stats: dict[str, Stat]
    at: dict[str, tuple[int, int, int]]
    data: int
    cdb: int
    pairs: bytes | memoryview
    held: _Descriptors = field(repr=False, compare=False)

    @property
    def width(self) -> int:
        """How many digits the serial has in ``data``."""
        return len(str(self.serial))

    def close(self) -> None:
        """Close the pair's descriptors (idempotent)."""
        self.held.close()

    def read(self, which: int, start: int, length: int) -> bytearray:
        """``length`` bytes from ``start`` of ``data`` or ``data.cdb`` (``which``), read
        into one buffer (no chunks joined: at 1M lines that is 150 MB copied once,
        not twice).

        Raises ValueError when the file is shorter (it changed under us).
        """
        buf = bytearray(length)
        view, got = memoryview(buf), 0
        while got < length:
            n = os.preadv(which, [view[got : got + (1 << 26)]], start + got)
            if n <= 0:
                raise _Invalid("the pair is shorter than its index says")
            got += n
        return buf


class _Descriptors:
    """Descriptors closed once: by :meth:`close`, or when dropped (never twice, so
    a number reused by another open is never closed by mistake)."""

    __slots__ = ("fds",)

    def __init__(self, fds: Sequence[int]) -> None:
        self.fds = list(fds)

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


class _Invalid(DnsmasterError, ValueError):
    """The index failed a check; the message says which."""


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


def encode(
    sources: Sequence[Kept],
    stats: dict[str, Stat],
    *,
    serial: int,
    banner: int,
    pair: tuple[Stat, Stat],
    options: bytes = b"",
    code: bytes | None = None,
    rows: dict[str, Row] | None = None,
    pairs: bytes | memoryview = b"",
) -> bytes:
    """The index of a pair stamped with ``serial`` (``banner`` bytes of banner) and
    holding ``sources`` in order; ``pair`` is the stat of ``data`` and ``data.cdb``,
    ``pairs`` the (hash, position) pair of each record of ``data.cdb``, in record
    order (8 bytes a record, or nothing: the keys are then read and hashed).

    ``rows`` keeps each source's row from one call to the next (a daemon's
    rebuild after a one-file change packs one row, not 100,000).
    """
    made = {} if rows is None else rows
    rows_now = []
    stats_now = []
    get = stats.get
    for src in sources:
        known = made.get(src.name)
        seen = get(src.name, _NO_STAT)
        if known is None or known[0] is not src:
            known = made[src.name] = (src, _row(src), seen, _STAT.pack(*seen))
        elif known[2] is not seen and known[2] != seen:
            known = made[src.name] = (src, known[1], seen, _STAT.pack(*seen))
        rows_now.append(known[1])
        stats_now.append(known[3])
    if len(made) > len(sources):
        for gone in set(made) - {src.name for src in sources}:
            del made[gone]
    names = "\0".join([src.name for src in sources]).encode("utf-8", _SURROGATES)
    warned = [w for src in sources if src.warnings for w in src.warnings]
    reasons = [w.reason.encode("utf-8", _SURROGATES) for w in warned]
    sections = [
        names,
        b"".join(rows_now),
        b"".join(stats_now),
        _ints("I", list(chain.from_iterable(src.pieces for src in sources))),
        _ints("Q", list(chain.from_iterable(src.serials for src in sources))),
        _ints("Q", [w.line for w in warned]),
        _ints("I", list(map(len, reasons))),
        b"".join(reasons),
        pairs,
    ]
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
    )
    body = b"".join([header, *sections])
    return body + hashlib.sha256(body).digest()


def _row(src: Kept) -> bytes:
    return _ROW.pack(
        src.digest,
        len(src.pieces),
        src.records,
        src.nrecords,
        len(src.serials),
        src.lines,
        len(src.warnings),
    )


def decode(
    text: bytes, options: bytes = b"", rows: dict[str, Row] | None = None
) -> tuple[int, int, tuple[Stat, Stat], dict[str, Kept], dict[str, Stat], memoryview]:
    """The serial, banner length, pair's stats, sources, trusted stats and records'
    (hash, position) pairs of an index; ``rows`` gets each source's row (as
    :func:`encode` takes them), so the next index packs only what changed.

    Raises ValueError saying which check failed.
    """
    if len(text) < _HEADER.size + 32:
        raise _Invalid("shorter than its header")
    body, checksum = memoryview(text)[:-32], text[-32:]
    fields = _HEADER.unpack_from(body)
    magic, version, written_by, their_code, their_options, serial, banner = fields[:7]
    if magic != _MAGIC:
        raise _Invalid("not a dnsmaster cache index")
    if version != FORMAT:
        raise _Invalid(f"cache format {version}, not {FORMAT}")
    if written_by.rstrip(b"\0") != __version__.encode()[:16] or their_code != code_digest():
        raise _Invalid("written by another version of dnsmaster")
    if their_options != hashlib.sha256(options).digest():
        raise _Invalid("written by a build with other options")
    lengths = fields[-_SECTIONS:]
    if _HEADER.size + sum(lengths) != len(body):
        raise _Invalid(f"holds {len(body)} bytes, its header says {_HEADER.size + sum(lengths)}")
    if hashlib.sha256(body).digest() != checksum:
        raise _Invalid("sha256 does not match its contents")
    try:
        sources, stats = _parse(body, fields[17], lengths[:-1], {} if rows is None else rows)
    except (struct.error, UnicodeError, OverflowError) as exc:
        raise _Invalid(f"malformed: {exc}") from None
    pairs = body[len(body) - lengths[-1] :]
    if pairs and len(pairs) != 8 * sum(src.nrecords for src in sources.values()):
        raise _Invalid("the records' pairs are not 8 bytes a record")
    return serial, banner, (tuple(fields[7:12]), tuple(fields[12:17])), sources, stats, pairs


def _parse(
    body: memoryview, count: int, lengths: Sequence[int], made: dict[str, Row]
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
        raise _Invalid(f"{len(rows_blob) // _ROW.size} sources where {count} were counted")
    names = names_blob.tobytes().decode("utf-8", _SURROGATES).split("\0") if count else []
    if len(names) != count or len(set(names)) != count:
        raise _Invalid("the names are not one per source")
    rows = list(_ROW.iter_unpack(rows_blob))
    seen = _unints("Q", stats_blob, 5 * count)
    pieces = _unints("I", pieces_blob, sum(row[1] for row in rows))
    serials = _unints("Q", serials_blob, sum(row[4] for row in rows))
    warnings = _warnings(names, rows, lines_blob, sizes, reasons)
    sources: dict[str, Kept] = {}
    stats: dict[str, Stat] = {}
    p = s = 0
    none: tuple[DataError, ...] = ()
    row_bytes = rows_blob.tobytes()
    stat_bytes = stats_blob.tobytes()
    size = _ROW.size
    for k, (name, row) in enumerate(zip(names, rows, strict=True)):
        digest, n_pieces, records, n_records, n_serials, lines, n_warnings = row
        mine = pieces[p : p + n_pieces]
        if n_pieces < 1:
            raise _Invalid(f"{name}: no text")
        offsets = serials[s : s + n_serials]
        if offsets and max(offsets) + 4 > records:
            raise _Invalid(f"{name}: a serial offset past its records")
        found = warnings.get(name, none) if n_warnings else none
        kept = sources[name] = Kept(
            name, digest, mine, sum(mine), records, n_records, offsets, found, lines
        )
        stat_of, r, t = seen[5 * k : 5 * k + 5], size * k, 40 * k
        made[name] = (kept, row_bytes[r : r + size], stat_of, stat_bytes[t : t + 40])
        if stat_of != _NO_STAT:
            stats[name] = stat_of
        p += n_pieces
        s += n_serials
    return sources, stats


def _warnings(
    names: list[str],
    rows: list[tuple[bytes, int, int, int, int, int, int]],
    lines_blob: memoryview,
    sizes_blob: memoryview,
    reasons: memoryview,
) -> dict[str, tuple[DataError, ...]]:
    """Each warned source's warnings, checked against its lines."""
    counts = [row[6] for row in rows]
    total = sum(counts)
    at_lines = _unints("Q", lines_blob, total)
    sizes = _unints("I", sizes_blob, total)
    if sum(sizes) != len(reasons):
        raise _Invalid("the warnings do not add up")
    texts = reasons.tobytes()
    found: dict[str, tuple[DataError, ...]] = {}
    w = at = 0
    for name, row, n in zip(names, rows, counts, strict=True):
        if not n:
            continue
        mine = []
        for line, size in zip(at_lines[w : w + n], sizes[w : w + n], strict=True):
            if line > row[5]:
                raise _Invalid(f"{name}: a warning past its last line")
            mine.append(DataError(name, line, texts[at : at + size].decode("utf-8", _SURROGATES)))
            at += size
        found[name] = tuple(mine)
        w += n
    return found


class BuildCache:
    """The cache directory of one output directory.

    :meth:`load` needs no lock (the index and the pair appear whole, by rename);
    :meth:`save` writes, so its caller holds the output directory's lock.
    """

    def __init__(self, directory: Path, options: bytes = b"") -> None:
        self.directory = directory
        #: What the build compiles with besides the source (``ipv6_int = false`` makes
        #: other text and records of the same bytes): an index written with other
        #: options is not used.
        self.options = options

    @property
    def output(self) -> Path:
        """The output directory whose pair the index describes."""
        return self.directory.parent

    def load(self, rows: dict[str, Row] | None = None) -> Index | Rejected | None:
        """The index and the pair it describes, checked; None if there is no index.
        ``rows``: as :func:`decode`'s."""
        try:
            fd = os.open(self.directory / INDEX, _READ)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            return Rejected(f"cannot read: {fsutil.describe(exc)}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return Rejected("not a regular file")
            cap = self._cap()
            if st.st_size > cap:
                return Rejected(f"larger than the cap of {cap} bytes ({st.st_size} bytes)")
            text = _read_all(fd, st.st_size)
        except OSError as exc:
            return Rejected(f"cannot read: {fsutil.describe(exc)}")
        finally:
            os.close(fd)
        try:
            serial, banner, pair, sources, stats, pairs = decode(text, self.options, rows)
        except ValueError as exc:
            return Rejected(str(exc))
        return self._open_pair(serial, banner, pair, sources, stats, pairs=pairs)

    def _cap(self) -> int:
        """The largest index read (see ``_PER_DATA_BYTE``): a file of gigabytes under
        the index's name is never read."""
        try:
            size = os.stat(self.output / "data").st_size
        except OSError:
            size = 0
        return _PER_DATA_BYTE * size + (1 << 20)

    def _open_pair(
        self,
        serial: int,
        banner: int,
        pair: tuple[Stat, Stat],
        sources: dict[str, Kept],
        stats: dict[str, Stat],
        *,
        pairs: bytes | memoryview,
    ) -> Index | Rejected:
        held = _Descriptors([])
        fds = held.fds
        try:
            for name, want in zip(("data", "data.cdb"), pair, strict=True):
                fds.append(os.open(self.output / name, _READ))
                st = os.fstat(fds[-1])
                if not stat.S_ISREG(st.st_mode) or _stat(st) != want:
                    raise _Invalid(f"{name} is not the one the index describes")
            width = len(str(serial))
            lengths = [src.size + width * (len(src.pieces) - 1) for src in sources.values()]
            text = banner + sum(lengths)
            records = cdb.HEADER_SIZE
            end = records + sum(src.records for src in sources.values())
            if text != pair[0][2]:
                raise _Invalid(f"data has {pair[0][2]} bytes, the index says {text}")
            header = os.pread(fds[1], cdb.HEADER_SIZE, 0)
            if len(header) < cdb.HEADER_SIZE or _records_end(header) != end:
                raise _Invalid("data.cdb's records are not those the index says")
            if makedata.previous_serial(os.pread(fds[0], banner, 0)) != serial:
                raise _Invalid("data's banner is not the one the index says")
        except (OSError, _Invalid) as exc:
            held.close()
            why = str(exc) if isinstance(exc, _Invalid) else fsutil.describe(exc)
            return Rejected(why if isinstance(exc, _Invalid) else f"cannot read the pair: {why}")
        # where each starts: the running sums, less the last (where the last ends)
        texts = list(accumulate(lengths, initial=banner))[:-1]
        starts = list(accumulate([src.records for src in sources.values()], initial=records))
        first = list(accumulate([src.nrecords for src in sources.values()], initial=0))
        at = dict(zip(sources, zip(texts, starts[:-1], first[:-1], strict=True), strict=True))
        return Index(serial, banner, sources, stats, at, fds[0], fds[1], pairs, held)

    def save(
        self,
        sources: Sequence[Kept],
        stats: dict[str, Stat],
        *,
        serial: int,
        banner: int,
        rows: dict[str, Row] | None = None,
        pairs: bytes = b"",
    ) -> Index | str:
        """Write the index of the pair installed in the output directory, holding
        ``sources`` in order; the index as read back, or the error. ``rows`` and
        ``pairs``: as :func:`encode`'s.

        The caller holds the output directory's lock. Never raises for the file
        system: a cache that cannot be written costs the next process time.
        """
        try:
            pair = tuple(_stat(os.stat(self.output / name)) for name in ("data", "data.cdb"))
            text = encode(
                sources,
                stats,
                serial=serial,
                banner=banner,
                pair=(pair[0], pair[1]),
                options=self.options,
                rows=rows,
                pairs=pairs,
            )
            self._make_directory()
            tmp = fsutil.stage(
                self.directory / INDEX, lambda fd: fsutil.write_all(fd, text), fsync=False
            )
            try:
                os.replace(tmp, self.directory / INDEX)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            return f"{exc.filename or self.directory}: {fsutil.describe(exc)}"
        kept = dict(zip([src.name for src in sources], sources, strict=True))
        trusted = dict(stats)  # a copy: the caller's change with its next build
        if not trusted.keys() <= kept.keys():
            trusted = {n: st for n, st in stats.items() if n in kept}
        found = self._open_pair(serial, banner, (pair[0], pair[1]), kept, trusted, pairs=pairs)
        return found if isinstance(found, Index) else found.reason

    def sweep(self) -> None:  # what older formats and killed writers left
        with contextlib.suppress(OSError), os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name != INDEX and _ours(entry.name):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _make_directory(self) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o755)
        if not stat.S_ISDIR(os.lstat(self.directory).st_mode):
            # A symlink or a file there is not ours to write through or over.
            raise NotADirectoryError(0, "not a directory", str(self.directory))


# O_NOFOLLOW: the cache reads only its own files; O_NONBLOCK: a FIFO under a name
# must not hang the build.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def _ours(name: str) -> bool:
    """The entries of format 3 (SHA256-TAG), its stat index, and temp files."""
    digest, _, tag = name.partition("-")
    old = len(digest) == 64 and len(tag) == 16 and not digest.strip("0123456789abcdef")
    return old or name == "stats" or (name.startswith(".") and name.endswith(".tmp"))


def _stat(st: os.stat_result) -> Stat:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _records_end(header: bytes) -> int:
    """Where a cdb's records end: where its first table starts."""
    return min(struct.unpack_from("<512I", header, 0)[::2])  # type: ignore[no-any-return]


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    got = 0
    while chunk := os.read(fd, max(size - got, 1 << 16)):
        chunks.append(chunk)
        got += len(chunk)
        if got > size + (1 << 20):  # growing while we read: not ours
            raise _Invalid("grew while read")
    return b"".join(chunks)


def _ints(code: str, values: Sequence[int]) -> bytes:
    if code == "I" and values and max(values) > _U32:
        raise OverflowError("a length of 4 GiB or more")
    return struct.pack(f"<{len(values)}{code}", *values)


def _unints(code: str, view: memoryview, count: int) -> tuple[int, ...]:
    size = struct.calcsize(code)
    if len(view) != count * size:
        raise _Invalid(f"{len(view) // size} numbers where {count} were counted")
    values: tuple[int, ...] = struct.unpack(f"<{count}{code}", view)
    return values
