"""The build cache: each source's compile kept on disk for the next process.

A :class:`~dnsmaster.master.build.Builder` keeps its compiled sources in memory, so the
daemon's rebuilds are warm; but ``dnsmaster build``, ``push``, ``check``, ``diff``
and a restarted daemon each start from nothing. Reading back what an earlier
process compiled costs a small part of compiling it again, so every clean source,
as a :class:`Ready` (its text, warnings, and its records packed into one blob in
cdb's layout, :class:`~dnsmaster.core.cdb.Packed`), is kept in
``OUTPUT/.dnsmaster-cache/``, one file per source, named by the sha256 of the
source's bytes and a short hash of its file name (the name is written into the
``# zones.X:LINE`` comments and the warnings, so it is part of the result).

Why one blob of records: a source of 27k records read back as 54k ``bytes``
objects costs more to make (and, at exit, to free) than tinydns-data spends on
the whole file; read back as one blob it costs a read, a sha256 and a walk in C,
and :func:`~dnsmaster.core.cdb.write_packed` writes ``data.cdb`` straight from it.

Nothing in an entry is trusted until every check passed: the magic, the format
version, dnsmaster's version and the digest of the compiler's own source files (a
changed checker must not replay old warnings), the content sha256 the caller took
of the bytes it just read, the source's name, the payload length against the file
size, and the payload's sha256. Then the payload is taken apart with bounds checks
at every step, and the records blob is walked record by record
(:func:`~dnsmaster.core.cdb.scan`: whole records, each serial offset at the serial
of an SOA record, as many records as counted). Any failure makes the entry a
:class:`Rejected`: the build compiles that source and writes the entry again. The
cache is as trusted as the output directory it sits in (whoever can write there
can write ``data`` itself); what a foreign file there must never do is run code,
crash the build or hang it, which is why there is no pickle and no marshal
(documented as unsafe for data that was not written by us), only :mod:`struct`.

The format, all integers little-endian::

    header   16s magic, I format, 16s version, 32s code digest, 32s content sha256,
             Q payload length, 32s payload sha256
    payload  9 Q section lengths, then the sections: name, counts (5 Q: lines,
             pieces, records, serials, warnings), the pieces' lengths (Q each) and
             their bytes, records (the blob), serial offsets (Q each), warning lines
             (Q each), warning reasons (a struct format, then the bytes it splits)

The text's pieces and the records are not copied out of the entry: they are
views into the bytes read, which ``data`` and ``data.cdb`` are written from.
Why a struct format for the warnings' reasons: ``struct.Struct(b"<29s31s...")
.unpack(blob)`` makes every ``bytes`` object in one call into C. The format is
written once, by the process that compiled the source, and checked before use to
hold nothing but ``<``, digits and ``s``, so a foreign file can make it return
bytes objects, exactly as many as the counts say, or fail.

The index (``stats``): for each source, the stat the last build saw (device,
inode, size, mtime and ctime in nanoseconds) and the content sha256. A new
process whose file has exactly that stat takes the sha256 from it and reads the
entry, not the file: after a one-line change in one of 50 files it reads one
file. Only stats older than two seconds are recorded (git's racy-clean rule), the
index ends with the sha256 of all before it, and a damaged one is ignored whole.

Crash safety: an entry is written to a temp file and renamed, under the output
directory's lock, so a name never holds a partial entry while we run. It is not
fsynced: after a power cut a renamed entry may read as zeros or short, and the
payload sha256 catches that at the next read. Skipping the fsync spares every cold
build a flush of as many bytes as ``data.cdb``. A temp file left by a killed
writer has a name no reader looks at, and the next build sweeps it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import stat
import struct
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from dnsmaster import __version__, fsutil
from dnsmaster.core import cdb, makedata
from dnsmaster.core.makedata import CompiledSource
from dnsmaster.errors import DataError, DnsmasterError

__all__ = [
    "DIRECTORY",
    "FORMAT",
    "INDEX",
    "BuildCache",
    "Ready",
    "Rejected",
    "Synced",
    "code_digest",
    "decode",
    "encode",
    "entry_name",
]

#: The subdirectory of the output directory that holds the cache.
DIRECTORY = ".dnsmaster-cache"
#: The version of the entry format; an entry of another is ignored.
FORMAT = 3

#: The file in the cache directory that maps each source's stat to its sha256.
INDEX = "stats"

_MAGIC = b"dnsmaster-cache\n"
_INDEX_MAGIC = b"dnsmaster-stats 1\n"
_INDEX_MAX = 16 << 20
_INDEX_LINE = re.compile(rb"([0-9a-f]{64})((?: [0-9]{1,20}){5}) ([^\n]+)\n")
_INDEX_END = re.compile(rb"end ([0-9a-f]{64})\n")
_HEADER = struct.Struct("<16sI16s32s32sQ32s")
_SECTIONS = 9
_TABLE = struct.Struct(f"<{_SECTIONS}Q")
_COUNTS = struct.Struct("<5Q")
_FORMAT_BYTES = b"0123456789s"
# CONTENT_SHA256-NAME_HASH: the first says what the source held, the second whose it was.
_ENTRY = re.compile(r"[0-9a-f]{64}-[0-9a-f]{16}")
_TEMP = re.compile(r"\..*\.tmp", re.DOTALL)
_SURROGATES = "surrogateescape"
# How large the entry of a source of N bytes can be: at most _PER_SOURCE_BYTE * N +
# _FIXED. Measured (2026-12-07): a byte of source makes at most 93 bytes of entry (a
# file of two-byte "." lines: each makes a Z and an & line and their records, 186
# bytes in all); long names make under 10 a byte; the fixed part (header, tables,
# name) is a few hundred bytes. With room to spare, so that no real entry is ever
# refused, and a file of gigabytes beside a small source is never read.
_PER_SOURCE_BYTE = 256
_FIXED = 1 << 20


@dataclass(frozen=True, slots=True)
class Ready:
    """One clean source as a build uses it: a compile, its records packed.

    What the Builder keeps per source (in memory and in the cache): the text with
    the serial's places (``pieces``, as :class:`~dnsmaster.core.makedata.CompiledSource`'s),
    the records as one :class:`~dnsmaster.core.cdb.Packed` blob, the warnings and
    the number of lines.
    """

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


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry was there but is not used; ``reason`` says why (for the log)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Synced:
    """What :meth:`BuildCache.sync` did: entry names written and removed, and why it
    stopped early (None: it did not)."""

    written: tuple[str, ...]
    removed: tuple[str, ...]
    error: str | None = None


class _Invalid(DnsmasterError, ValueError):
    """An entry failed a check; the message says which."""


@functools.cache
def code_digest() -> bytes:
    """What decides a compile besides the source: dnsmaster's version and the core's code.

    The version alone would let a development tree, or a patched install, replay
    the warnings and records of the code it had before. The C accelerator is left
    out on purpose: it must give the pure-Python path's bytes, and the tests hold
    it to that. (An install without the ``.py`` files falls back on the version.)
    Taken once, when this module is imported: it stands for the code this process
    runs, not for what an upgrade puts on disk while a daemon runs.
    """
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(makedata.__file__).parent.glob("*.py")):
        h.update(b"\0" + path.name.encode())
        with contextlib.suppress(OSError):  # a missing file still changes the digest
            h.update(b"\0" + path.read_bytes())
    return h.digest()


code_digest()


def entry_name(name: str, digest: bytes, options: bytes = b"") -> str:
    """The file name of the entry for source ``name`` holding bytes of sha256 ``digest``,
    compiled with ``options`` (see :class:`BuildCache`)."""
    tag = hashlib.sha256(name.encode("utf-8", _SURROGATES) + options).hexdigest()[:16]
    return f"{digest.hex()}-{tag}"


def encode(src: Ready, code: bytes) -> list[bytes]:
    """The entry for ``src``, as pieces to write one after the other."""
    records = src.records
    reasons = [w.reason.encode("utf-8", _SURROGATES) for w in src.warnings]
    counts = (src.lines, len(src.pieces), records.count, len(records.serials), len(src.warnings))
    sections = [
        src.name.encode("utf-8", _SURROGATES),
        _COUNTS.pack(*counts),
        _ints([len(piece) for piece in src.pieces]),
        b"".join(src.pieces),
        bytes(records.blob),  # the blob itself when it is bytes (a fresh compile's)
        _ints(records.serials),
        _ints([w.line for w in src.warnings]),
        *_strings(reasons),
    ]
    table = _TABLE.pack(*map(len, sections))
    checksum = hashlib.sha256(table)
    for section in sections:
        checksum.update(section)
    length = len(table) + sum(map(len, sections))
    version = __version__.encode()[:16]
    header = _HEADER.pack(_MAGIC, FORMAT, version, code, src.digest, length, checksum.digest())
    return [header, table, *sections]


def decode(entry: bytes, name: str, digest: bytes, code: bytes) -> Ready:
    """The compiled source in ``entry``, if it is the one for ``name`` at ``digest``.

    Raises ValueError saying which check failed.
    """
    if len(entry) < _HEADER.size:
        raise _Invalid("shorter than its header")
    magic, version, written_by, their_code, content, length, checksum = _HEADER.unpack_from(entry)
    if magic != _MAGIC:
        raise _Invalid("not a dnsmaster cache entry")
    if version != FORMAT:
        raise _Invalid(f"cache format {version}, not {FORMAT}")
    if written_by.rstrip(b"\0") != __version__.encode()[:16] or their_code != code:
        raise _Invalid("written by another version of dnsmaster")
    if content != digest:
        raise _Invalid("holds another content than the source's (sha256 differs)")
    if length != len(entry) - _HEADER.size:
        raise _Invalid(f"payload of {len(entry) - _HEADER.size} bytes, header says {length}")
    payload = memoryview(entry)[_HEADER.size :]
    if hashlib.sha256(payload).digest() != checksum:
        raise _Invalid("payload sha256 does not match its header")
    try:
        return _parse(payload, name, digest)
    except (struct.error, OverflowError) as exc:
        raise _Invalid(f"malformed payload: {exc}") from None


class BuildCache:
    """The cache directory of one output directory.

    :meth:`load` needs no lock (entries appear whole, by rename); :meth:`sync`
    writes and removes, so its caller holds the output directory's lock.
    """

    def __init__(self, directory: Path, max_entry: int, options: bytes = b"") -> None:
        self.directory = directory
        #: The largest entry read; a larger file there is refused, not read.
        self.max_entry = max_entry
        #: What the build compiles with besides the source (``ipv6_int = false`` makes
        #: other text and records of the same bytes): part of each entry's name, so an
        #: entry is found only by a build with the same options. Empty: the defaults,
        #: whose names are those entries always had.
        self.options = options

    def load(self, name: str, digest: bytes, size: int | None = None) -> Ready | Rejected | None:
        """The cached compile of ``name`` at content sha256 ``digest``; None if absent.

        ``size``, the source's length in bytes, caps the entry by what that source
        could make (see ``_PER_SOURCE_BYTE``); without it, :attr:`max_entry` does.
        """
        cap = self.max_entry
        if size is not None:
            cap = min(cap, _PER_SOURCE_BYTE * size + _FIXED)
        path = self.directory / entry_name(name, digest, self.options)
        try:
            # O_NOFOLLOW: the cache reads only its own files; O_NONBLOCK: a FIFO
            # under an entry's name must not hang the build.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return Rejected("is a symbolic link")
            return Rejected(f"cannot read: {fsutil.describe(exc)}")
        try:
            entry = _read(fd, cap)
        except OSError as exc:
            return Rejected(f"cannot read: {fsutil.describe(exc)}")
        except _Invalid as exc:
            return Rejected(str(exc))
        finally:
            os.close(fd)
        try:
            return decode(entry, name, digest, code_digest())
        except ValueError as exc:
            return Rejected(str(exc))

    def sync(self, sources: Sequence[Ready], fresh: Collection[str] = ()) -> Synced:
        """Leave one entry per source of ``sources``, and nothing else of ours.

        Entries of sources no longer built and temp files of killed writers are
        removed first (that frees the space the new entries need); then every
        source without an entry, and every source named in ``fresh`` (compiled
        again because its entry was missing or rejected), is written. The caller
        holds the output directory's lock. Never raises for the file system: a
        cache that cannot be written costs the next process time, not its build.
        Entries are written by two threads; each one whole, or not at all.
        """
        wanted = {entry_name(src.name, src.digest, self.options): src for src in sources}
        written: list[str] = []
        removed: list[str] = []
        try:
            self._make_directory()
            present = set()
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.name in wanted and entry.is_file(follow_symlinks=False):
                        present.add(entry.name)
                    elif _ENTRY.fullmatch(entry.name) or _TEMP.fullmatch(entry.name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed.append(entry.name)
            code = code_digest()
            todo = [
                (name, src)
                for name, src in wanted.items()
                if name not in present or src.name in fresh
            ]

            def write(item: tuple[str, Ready]) -> str:
                self._write(item[0], encode(item[1], code))
                return item[0]

            if len(todo) < 2:
                written += map(write, todo)
            else:
                # A cold build writes every entry: their sha256 and writes release
                # the GIL, so two threads take half the time on two cores.
                with ThreadPoolExecutor(max_workers=2) as pool:
                    written += pool.map(write, todo)
        except OSError as exc:
            where = exc.filename or str(self.directory)
            return Synced(tuple(written), tuple(removed), f"{where}: {fsutil.describe(exc)}")
        return Synced(tuple(written), tuple(removed))

    def load_stats(self) -> dict[str, Seen]:
        """What the last build saw of each source: its stat and its content sha256.

        A new process takes a file's sha256 from here, without reading the file,
        when the file's stat is exactly the one recorded (device, inode, size, and
        mtime and ctime in nanoseconds), as git's index does; the build records
        only stats older than two seconds, so a write in the same clock tick as
        the stat cannot hide. An index that is damaged, foreign or not a regular
        file is ignored: every file is then read and hashed.
        """
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            fd = os.open(self.directory / INDEX, flags)
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > _INDEX_MAX:
                return {}
            text = os.read(fd, _INDEX_MAX + 1)
        except OSError:
            return {}
        finally:
            os.close(fd)
        return _parse_stats(text)

    def save_stats(self, seen: dict[str, Seen]) -> str | None:
        """Write the index of ``seen`` (caller holds the lock); the error, if any."""
        body = [_INDEX_MAGIC]
        for name, (st, digest) in sorted(seen.items()):
            numbers = b"".join(b" %d" % n for n in st)
            body.append(b"%s%s %s\n" % (digest.hex().encode(), numbers, _encode_name(name)))
        text = b"".join(body)
        try:
            self._make_directory()
            self._write(INDEX, [text, b"end %s\n" % hashlib.sha256(text).hexdigest().encode()])
        except OSError as exc:
            return f"{exc.filename or self.directory}: {fsutil.describe(exc)}"
        return None

    def _make_directory(self) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o755)
        if not stat.S_ISDIR(os.lstat(self.directory).st_mode):
            # A symlink or a file there is not ours to write through or over.
            raise NotADirectoryError(0, "not a directory", str(self.directory))

    def _write(self, name: str, pieces: Iterable[bytes]) -> None:
        def write(fd: int) -> None:
            for piece in pieces:
                fsutil.write_all(fd, piece)

        # Not fsynced: the payload sha256 catches an entry cut short by a power cut.
        tmp = fsutil.stage(self.directory / name, write, fsync=False)
        try:
            os.replace(tmp, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _read(fd: int, cap: int) -> bytes:
    """The entry open on ``fd``, checked before it is read: a regular file, no larger
    than ``cap``, with a header that says it is one and the length the file has.

    Checked on the descriptor first, so a huge or sparse file under an entry's name
    costs a fstat and one header read, never its length in memory and time.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _Invalid("not a regular file")
    if st.st_size > cap:
        raise _Invalid(f"larger than the cap of {cap} bytes for this entry ({st.st_size} bytes)")
    header = os.pread(fd, _HEADER.size, 0)
    if len(header) < _HEADER.size:
        raise _Invalid("shorter than its header")
    magic, *_, length, _ = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise _Invalid("not a dnsmaster cache entry")
    if length != st.st_size - _HEADER.size:
        raise _Invalid(f"payload of {st.st_size - _HEADER.size} bytes, header says {length}")
    chunks = []
    size = 0
    while chunk := os.read(fd, max(st.st_size - size, 1 << 16)):
        size += len(chunk)
        if size > cap:  # it grew while we read it
            raise _Invalid(f"larger than the cap of {cap} bytes for this entry")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Codes(dict[int, bytes]):
    """``n`` -> ``b"%ds" % n``, remembered for the lengths records have.

    A lookup per item instead of a formatting: the format of a file's 27k keys
    is written in half the time. Lengths from 64 KiB up (pieces of text) are
    not remembered, so the table stays small in a daemon that runs for months.
    """

    def __missing__(self, n: int) -> bytes:
        code = b"%ds" % n
        if n < 1 << 16:
            self[n] = code
        return code


_CODES = _Codes()


def _strings(items: Sequence[bytes]) -> tuple[bytes, bytes]:
    """A struct format that splits the joined ``items`` again, and the joined items."""
    return b"<" + b"".join(map(_CODES.__getitem__, map(len, items))), b"".join(items)


def _unstrings(fmt: memoryview, blob: memoryview, count: int) -> tuple[bytes, ...]:
    spec = fmt.tobytes()
    # Only counts and "s": any other code would make struct return something else
    # than bytes (or skip, or pad), which no check later would catch.
    if spec[:1] != b"<" or spec[1:].translate(None, _FORMAT_BYTES):
        raise _Invalid("a string table holds more than lengths")
    items: tuple[bytes, ...] = struct.Struct(spec).unpack(blob)
    if len(items) != count:
        raise _Invalid(f"{len(items)} strings where {count} were counted")
    return items


def _ints(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def _unints(view: memoryview, count: int, below: int) -> list[int]:
    values = list(struct.unpack(f"<{count}Q", view))
    if values and max(values) >= below:
        raise _Invalid(f"an index of {max(values)} where there are {below}")
    return values


def _cut(text: memoryview, lengths: list[int]) -> tuple[memoryview, ...]:
    """``text`` cut into pieces of ``lengths``, which must add up to all of it."""
    if sum(lengths) != len(text):
        raise _Invalid("the text's pieces do not add up to the text")
    ends = list(accumulate(lengths))
    return tuple(map(text.__getitem__, map(slice, [0, *ends[:-1]], ends)))


def _parse(payload: memoryview, name: str, digest: bytes) -> Ready:
    lengths = _TABLE.unpack_from(payload)
    if _TABLE.size + sum(lengths) != len(payload):
        raise _Invalid("section lengths do not add up to the payload")
    sections = []
    at = _TABLE.size
    for length in lengths:
        sections.append(payload[at : at + length])
        at += length
    (
        raw_name,
        counts,
        pieces_lengths,
        text,
        blob,
        serials,
        warning_lines,
        reasons_fmt,
        reasons_blob,
    ) = sections
    if raw_name != name.encode("utf-8", _SURROGATES):
        raise _Invalid("is the entry of another source file")
    lines, n_pieces, n_records, n_serials, n_warnings = _COUNTS.unpack(counts)
    if n_pieces < 1:
        raise _Invalid("no text")
    # A view, not a copy: the entry's bytes stay alive as long as its records do.
    records = cdb.Packed(blob, tuple(_unints(serials, n_serials, len(blob))), n_records)
    try:
        found = cdb.scan(records.blob, records.serials)
    except ValueError as exc:
        raise _Invalid(f"records: {exc}") from None
    if found != n_records:
        raise _Invalid(f"{found} records where {n_records} were counted")
    reasons = _unstrings(reasons_fmt, reasons_blob, n_warnings)
    at_lines = _unints(warning_lines, n_warnings, lines + 1)
    return Ready(
        name=name,
        digest=digest,
        pieces=_cut(text, _unints(pieces_lengths, n_pieces, len(text) + 1)),
        records=records,
        warnings=tuple(
            DataError(name, line, reason.decode("utf-8", _SURROGATES))
            for line, reason in zip(at_lines, reasons, strict=True)
        ),
        lines=lines,
    )


#: A source's stat (device, inode, size, mtime_ns, ctime_ns) and content sha256.
Seen = tuple[tuple[int, ...], bytes]


def _encode_name(name: str) -> bytes:
    return name.encode("utf-8", _SURROGATES)


def _parse_stats(text: bytes) -> dict[str, Seen]:
    """The index's entries, or nothing at all when any byte of it is wrong."""
    if not text.startswith(_INDEX_MAGIC):
        return {}
    cut = text.rfind(b"end ")
    end = _INDEX_END.fullmatch(text, cut) if cut > 0 else None
    if end is None or hashlib.sha256(text[:cut]).hexdigest().encode() != end.group(1):
        return {}
    seen: dict[str, Seen] = {}
    pos = len(_INDEX_MAGIC)
    while pos < cut:
        m = _INDEX_LINE.match(text, pos)
        if m is None or m.end() > cut:
            return {}
        numbers = tuple(int(n) for n in m.group(2).split())
        seen[m.group(3).decode("utf-8", _SURROGATES)] = (
            numbers,
            bytes.fromhex(m.group(1).decode()),
        )
        pos = m.end()
    return seen
