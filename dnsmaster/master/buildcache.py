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
import os
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add, attrgetter, mul, sub
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
    Stat,
    code_digest,
    decode,
    encode,
)

__all__ = [
    "DIRECTORY",
    "FORMAT",
    "INDEX",
    "BuildCache",
    "Index",
    "Kept",
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
    where: _Where = field(repr=False, compare=False)
    data: int
    cdb: int
    pairs: bytes | memoryview
    held: _Descriptors = field(repr=False, compare=False)

    @property
    def at(self) -> dict[str, tuple[int, int, int]]:
        """Where each source's text starts in ``data``, where its records start in
        ``data.cdb``, and the number of its first record; worked out when first
        asked (an index written by a process about to exit never is)."""
        return self.where.get()

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


class _Where:
    """:attr:`Index.at`, worked out once, from the texts' lengths and the sources."""

    __slots__ = ("found", "lengths", "sources", "start")

    def __init__(self, sources: dict[str, Kept], lengths: list[int], start: int) -> None:
        self.sources, self.lengths, self.start = sources, lengths, start
        self.found: dict[str, tuple[int, int, int]] | None = None

    def get(self) -> dict[str, tuple[int, int, int]]:
        if self.found is None:
            kept = self.sources.values()
            # the running sums (the last, where the last ends, is dropped by zip)
            texts = accumulate(self.lengths, initial=self.start)
            starts = accumulate(map(_records, kept), initial=cdb.HEADER_SIZE)
            first = accumulate(map(_nrecords, kept), initial=0)
            with no_gc():  # 100,000 tuples, no cycle
                self.found = dict(zip(self.sources, zip(texts, starts, first)))  # noqa: B905
            self.lengths = []
        return self.found


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
            serial, banner, pair, sources, stats, pairs = decode(text, self.options)
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
                    raise InvalidIndex(f"{name} is not the one the index describes")
            lengths = _text_lengths(sources.values(), len(str(serial)))
            text = banner + sum(lengths)
            records = cdb.HEADER_SIZE
            end = records + sum(map(_records, sources.values()))
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
        where = _Where(sources, lengths, banner)
        return Index(serial, banner, sources, stats, where, fds[0], fds[1], pairs, held)

    def save(
        self,
        sources: Sequence[Kept],
        stats: dict[str, Stat],
        *,
        serial: int,
        banner: int,
        pairs: bytes = b"",
    ) -> Index | str:
        """Write the index of the pair installed in the output directory, holding
        ``sources`` in order; the index as read back, or the error. ``pairs``: as
        :func:`encode`'s.

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
        kept = dict(zip(map(_name, sources), sources, strict=True))
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


_name, _records, _nrecords = attrgetter("name"), attrgetter("records"), attrgetter("nrecords")
_size, _pieces = attrgetter("size"), attrgetter("pieces")


def _text_lengths(sources: Iterable[Kept], width: int) -> list[int]:
    """The length of each source's text in a ``data`` whose serial has ``width``
    digits (:meth:`Kept.text_length`, for all at once)."""
    sources = list(sources)
    counted = map(mul, map(len, map(_pieces, sources)), repeat(width))
    return list(map(sub, map(add, map(_size, sources), counted), repeat(width)))


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
