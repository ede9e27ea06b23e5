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
import dataclasses
import os
import stat
import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice, repeat
from operator import add, attrgetter, ne, sub
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import cdb, makedata
from dnsmaster.core.compiler import no_gc
from dnsmaster.core.makedata import CompiledSource
from dnsmaster.errors import DataError
from dnsmaster.master.cacheindex import (
    FORMAT,
    InvalidIndex,
    Kept,
    Sections,
    Stat,
    code_digest,
    decode,
    decode_sections,
    encode,
)

__all__ = [
    "DIRECTORY",
    "FORMAT",
    "INDEX",
    "BuildCache",
    "Index",
    "Kept",
    "Layout",
    "Ready",
    "Rejected",
    "code_digest",
    "decode",
    "encode",
    "kept_of",
]

#: The subdirectory of the output directory that holds the cache.
DIRECTORY = ".dnsmaster-cache"
#: The file in the cache directory that describes the last build's pair.
INDEX = "index"

# An index holds at most this many bytes per byte of data (see BuildCache._cap):
# a source's row and its stat are 120 bytes, its text in data 16 at least, and
# a warning's 30 bytes or so are for a line of data of 2 bytes at least.
_PER_DATA_BYTE = 64


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
    sections: Sections = field(repr=False, compare=False)
    data: int
    cdb: int
    pairs: bytes | memoryview
    held: _Descriptors = field(repr=False, compare=False)
    #: Where the serials are in the pair, when the build that wrote it said
    serials: tuple[list[int], list[int]] | None = field(default=None, repr=False, compare=False)
    where: list[Layout] = field(default_factory=list, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        """Where each source is in the pair (worked out when first asked: an index
        written by a process about to exit never is)."""
        if not self.where:
            layout = Layout(self.sections, self.sources, self.banner, self.width, self.serials)
            self.where.append(layout)
        return self.where[0]

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
                raise InvalidIndex("the pair is shorter than its index says")
            got += n
        return buf


class Layout:
    """Where the sources of an index are in its pair, found by row (a source's place
    in build order) without a step per source: a build after a one-file change
    copies the rest as two ranges of each file, and asks here for their bounds (sums
    of the index's columns) and the serials in them (by bisection)."""

    __slots__ = ("_found", "_patches", "_stamps", "banner", "kept", "row", "sections", "width")

    def __init__(
        self,
        sections: Sections,
        sources: dict[str, Kept],
        banner: int,
        width: int,
        serials: tuple[list[int], list[int]] | None = None,
    ) -> None:
        self.sections, self.banner, self.width = sections, banner, width
        #: name -> its row
        self.row = sections.rows_of()
        #: the sources in build order
        self.kept = list(sources.values())
        self._found: dict[int, tuple[int, int, int]] = {}
        if serials is None:
            self._stamps: list[int] | None = None
            self._patches: list[int] = []
        else:
            self._stamps, self._patches = serials

    def at(self, row: int) -> tuple[int, int, int]:
        """Where the text of ``row`` starts in ``data``, where its records start in
        ``data.cdb``, and the number of its first record (``row`` may be the count
        of rows: where the last ends)."""
        found = self._found.get(row)
        if found is None:
            s = self.sections
            text = sum(s.sizes[:row]) + self.width * (sum(s.npieces[:row]) - row)
            records = sum(s.records[:row])
            found = (self.banner + text, cdb.HEADER_SIZE + records, sum(s.nrecords[:row]))
            self._found[row] = found
        return found

    def serials(self) -> tuple[list[int], list[int]]:
        """Where each serial's digits are in ``data`` (the banner's aside), and where
        each SOA serial is in ``data.cdb``, both ascending: worked out from the
        sections unless the build that wrote the pair said."""
        if self._stamps is None:
            self._stamps, self._patches = _serials_of(self.sections, self.banner, self.width)
        return self._stamps, self._patches

    def runs(self, batch: list[Kept]) -> list[tuple[int, int]]:
        """The rows of ``batch`` (sources of this index, in order) as runs of rows that
        follow each other here, each (first row, row after the last). ValueError for
        a source not here."""
        if not batch:
            return []
        first = self.row.get(batch[0].name)
        if first is not None and self.kept[first : first + len(batch)] == batch:
            return [(first, first + len(batch))]  # the common case: one stretch
        names = list(map(_name, batch))
        try:
            rows = list(map(self.row.__getitem__, names))
        except KeyError:
            raise ValueError("a kept source is not in its index") from None
        if list(map(self.kept.__getitem__, rows)) != batch:
            raise ValueError("a kept source is not the one its index describes")
        steps = map(sub, islice(rows, 1, None), rows)
        cuts = [k + 1 for k in compress(range(len(rows) - 1), map((1).__ne__, steps))]
        return [
            (rows[a], rows[b - 1] + 1) for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)
        ]

    def cuts(self, start: int, end: int) -> list[int]:
        """Where the serials are in ``data`` from ``start`` to ``end``, from ``start``."""
        stamps = self.serials()[0]
        found = stamps[bisect_left(stamps, start) : bisect_left(stamps, end)]
        return list(map(sub, found, repeat(start)))

    def patches(self, start: int, end: int) -> list[int]:
        """Where the SOA serials are in ``data.cdb`` from ``start`` to ``end``, from
        ``start``."""
        patches = self.serials()[1]
        found = patches[bisect_left(patches, start) : bisect_left(patches, end)]
        return list(map(sub, found, repeat(start)))


def _serials_of(sections: Sections, banner: int, width: int) -> tuple[list[int], list[int]]:
    """:meth:`Layout.serials` from the sections: a step per source with serials alone
    (one a zone: a few in 100,000 one-line files)."""
    text = list(accumulate(sections.text_lengths(width), initial=banner))
    records = list(accumulate(sections.records, initial=cdb.HEADER_SIZE))
    piece_at = accumulate(sections.npieces, initial=0)
    serial_at = accumulate(sections.nserials, initial=0)
    pieces, serials = sections.pieces, sections.serials
    stamps: list[int] = []
    patches: list[int] = []
    cut = map(max, sections.npieces, map(add, sections.nserials, repeat(1)))
    for k, p0, s0, m in compress(
        zip(range(len(text) - 1), piece_at, serial_at, sections.nserials, strict=False),
        map((1).__lt__, cut),
    ):
        n = sections.npieces[k] - 1
        if n:
            ends = accumulate(pieces[p0 : p0 + n], initial=text[k])
            stamps.extend(map(add, islice(ends, 1, None), range(0, width * n, width)))
        if m:
            patches.extend(map(add, serials[s0 : s0 + m], repeat(records[k])))
    return stamps, patches


_name = attrgetter("name")


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

    def load(self) -> Index | Rejected | None:
        """The index and the pair it describes, checked; None if there is no index."""
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
            serial, banner, pair, sources, stats, pairs, sections = decode_sections(
                text, self.options
            )
        except ValueError as exc:
            return Rejected(str(exc))
        return self._open_pair(serial, banner, pair, (sources, stats, sections), pairs=pairs)

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
        found: tuple[dict[str, Kept], dict[str, Stat], Sections],
        *,
        pairs: bytes | memoryview,
    ) -> Index | Rejected:
        sources, stats, sections = found
        held = _Descriptors([])
        fds = held.fds
        try:
            for name, want in zip(("data", "data.cdb"), pair, strict=True):
                fds.append(os.open(self.output / name, _READ))
                st = os.fstat(fds[-1])
                if not stat.S_ISREG(st.st_mode) or _stat(st) != want:
                    raise InvalidIndex(f"{name} is not the one the index describes")
            text = banner + sections.text_length(len(str(serial)))
            end = cdb.HEADER_SIZE + sum(sections.records)
            if text != pair[0][2]:
                raise InvalidIndex(f"data has {pair[0][2]} bytes, the index says {text}")
            header = os.pread(fds[1], cdb.HEADER_SIZE, 0)
            if len(header) < cdb.HEADER_SIZE or _records_end(header) != end:
                raise InvalidIndex("data.cdb's records are not those the index says")
            if makedata.previous_serial(os.pread(fds[0], banner, 0)) != serial:
                raise InvalidIndex("data's banner is not the one the index says")
        except (OSError, InvalidIndex) as exc:
            held.close()
            if isinstance(exc, InvalidIndex):
                return Rejected(str(exc))
            return Rejected(f"cannot read the pair: {fsutil.describe(exc)}")
        return Index(serial, banner, sources, stats, sections, fds[0], fds[1], pairs, held)

    def save(
        self,
        sources: Sequence[Kept],
        stats: dict[str, Stat],
        *,
        serial: int,
        banner: int,
        pairs: bytes = b"",
        last: Index | None = None,
        serials: tuple[list[int], list[int]] | None = None,
        statted: Sequence[str] | None = None,
    ) -> Index | str:
        """Write the index of the pair installed in the output directory, holding
        ``sources`` in order; the index as read back, or the error. ``pairs``: as
        :func:`encode`'s.

        ``last``, the index this Builder read or wrote before, lends its packed
        sections: only the rows of sources not found there in the same place, and
        those whose stat is not the one it holds, are packed anew. ``serials``: where
        the pair's serials are (:meth:`Layout.serials`), when the build counted them;
        ``statted``, the names whose stat may have changed since ``last`` (None: any).

        The caller holds the output directory's lock. Never raises for the file
        system: a cache that cannot be written costs the next process time.
        """
        sections = kept = trusted = None
        if last is not None:
            patched = _patched(last, sources, stats, statted)
            if patched is not None:
                sections, kept, trusted = patched
        if sections is None:
            sections = Sections.of(sources, stats)
        try:
            pair = tuple(_stat(os.stat(self.output / name)) for name in ("data", "data.cdb"))
            parts = sections.encoded(
                serial=serial,
                banner=banner,
                pair=(pair[0], pair[1]),
                options=self.options,
                pairs=pairs,
            )

            self._make_directory()
            tmp = fsutil.stage(
                self.directory / INDEX, lambda fd: _write_parts(fd, parts), fsync=False
            )
            try:
                os.replace(tmp, self.directory / INDEX)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            return f"{exc.filename or self.directory}: {fsutil.describe(exc)}"
        if kept is None or trusted is None:
            with no_gc():
                kept = dict(zip(sections.names, sources, strict=True))
            trusted = dict(stats)  # a copy: the caller's change with its next build
            if not trusted.keys() <= kept.keys():
                trusted = {n: st for n, st in stats.items() if n in kept}
        found = self._open_pair(
            serial, banner, (pair[0], pair[1]), (kept, trusted, sections), pairs=pairs
        )
        if not isinstance(found, Index):
            return found.reason
        if serials is None:
            return found
        return dataclasses.replace(found, serials=serials)

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


def _patched(
    last: Index, sources: Sequence[Kept], stats: dict[str, Stat], statted: Sequence[str] | None
) -> tuple[Sections, dict[str, Kept], dict[str, Stat]] | None:
    """:meth:`BuildCache.save`'s sections, sources and trusted stats made from
    ``last``'s, with only the rows that changed (see :meth:`Sections.patched`)."""
    old = list(last.sources.values())
    if statted is None:
        statted = last.sections.names
    held = map(ne, map(stats.get, statted), map(last.stats.get, statted))
    restated = set(compress(statted, held))
    patched = last.sections.patched(old, sources, stats, restated)
    if patched is None:
        return None
    sections, rows = patched
    kept = dict(last.sources)
    names = list(map(sections.names.__getitem__, rows))
    kept.update(zip(names, map(sources.__getitem__, rows), strict=True))
    # a copy of last's, not of the caller's: a dict that lost and gained entries is
    # copied one by one
    trusted = dict(last.stats)
    for name in restated.union(names):
        seen = stats.get(name)
        if seen is None:
            trusted.pop(name, None)
        else:
            trusted[name] = seen
    return sections, kept, trusted


def _write_parts(fd: int, parts: Iterable[bytes | bytearray | memoryview]) -> None:
    for part in parts:
        fsutil.write_all(fd, memoryview(part))


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
            raise InvalidIndex("grew while read")
    return b"".join(chunks)
