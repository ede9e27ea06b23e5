"""What the receiver keeps of an install so that the next delta costs what it changes.

A root's ``data`` is cut into *sections* at the ``# NAME:1`` comments make-data writes
at the start of every source (data without them is one section), and tinydns-data
compiles line by line, so ``data.cdb``'s records are every section's records one
after another. ``data.sections`` beside the pair keeps, for the installed pair:

- each section's place in ``data`` and in data.cdb's records, and its record count;
- the places in data.cdb of the SOA serials a restamp changes (``Z`` lines whose serial
  field is the build's serial, ``:S:``: the count of those in the text is checked
  against the SOA records holding S, else the section is marked unrestampable and is
  compiled again whenever a restamp touches it), and of the default serials;
- data.cdb's own (hash, position) pairs, so untouched records are copied, never read.

A delta (:func:`apply`) then writes the new ``data`` from the installed one (read in
chunks, restamped, hashed as it is written: it must match the trailer's sha256
before anything is installed), carries every section a single copy operation moves
whole, with its records copied from the installed data.cdb and its serials patched
(:func:`dnsmaster.core.cdb.write_pieces`), and compiles only the rest. Nothing is
taken on trust: the kept file names the identity (inode, size, mtime, ctime) of the
``data`` and data.cdb it describes and the sha256 of that data; anything else (data
edited by hand, a crash between renames, a kept file of another version, a restamp
that changes a serial's length) makes :func:`apply` return None, and the caller
compiles everything as before.

The file is ``PAIRS PLACES TEXT FOOTER``: the pairs (8 bytes a record), the places
(4 bytes each, little-endian, relative to their section's first record), one line a
section, and a last line that says how long each part is and what it describes.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import re
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb
from dnsmaster.core.compiler import PackedRecords, compile_text

__all__ = [
    "KEPT",
    "SPILL",
    "Compiled",
    "Identity",
    "Kept",
    "Section",
    "Spill",
    "add_section",
    "boundaries",
    "compile_section",
    "compile_sections",
    "finish",
    "forget",
    "identity",
    "load",
    "stage",
    "vouched",
]

#: The kept file's name in the root (its temp files are swept like data's).
KEPT = "data.sections"

_FOOTER = re.compile(
    rb"dnsmaster-sections 1 pairs=(\d{1,12}) places=(\d{1,12}) text=(\d{1,12}) "
    rb"data=(\d+(?::\d+){3}) cdb=(\d+(?::\d+){3}) sha256=([0-9a-f]{64}) body=(\d{1,15}) "
    rb"serial=(none|\d{1,10}) default=(\d{1,10})\n"
)
_FOOTER_MAX = 400
# Section lines: start end records length first count restamps stamps defaults
_LINE = re.compile(rb"(\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (-1|\d+) (\d+) (\d+)\n")
#: A data larger than this has its compiled sections spilled to a file, not held.
SPILL = 64 << 20
_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

Identity = tuple[int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    """What tells a file from any other: inode, size, mtime, ctime (ctime cannot be
    set back, so an edit in place that restores the mtime still shows)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _u32(values: Sequence[int] = ()) -> array[int]:
    return array("I", values)


@dataclass(frozen=True, slots=True)
class Section:
    """One section of ``data`` and its records in data.cdb."""

    start: int
    end: int
    #: Where its records start in data.cdb's record area (after the header), and
    #: their bytes.
    records: int
    length: int
    #: The index of its first record, and how many.
    first: int
    count: int
    #: How many ``:S:`` its text holds (S the build's serial), every one a ``Z``
    #: line's serial whose SOA is in ``stamps``; -1 when that is not so.
    restamps: int
    #: Where the SOA serials equal to S and the default serials are, from ``records``.
    stamps: array[int]
    defaults: array[int]


@dataclass(frozen=True, slots=True)
class Kept:
    """The kept file of an installed pair."""

    sections: tuple[Section, ...]
    #: data.cdb's (hash, position) pairs: a read-only mapping of the kept file's.
    pairs: bytes | mmap.mmap
    data: Identity
    cdb: Identity
    sha256: str
    body: int
    serial: int | None
    default: int


@dataclass(slots=True)
class Compiled:
    """A data's sections compiled: what data.cdb is written from, and kept. Filled
    section by section (so not frozen)."""

    sections: list[Section]
    pieces: list[cdb.Piece]
    patches: list[tuple[int, bytes]]
    count: int
    #: Whether ``patches`` must be sorted before use (they are added by section).
    sort: bool = False


# --------------------------------------------------------------------------- reading


def load(root: Path) -> Kept | None:
    """The kept file of the pair installed in ``root``, or None when there is none or it
    is not that pair's (or not whole)."""
    try:
        fd = os.open(root / KEPT, _READ_FLAGS)
    except OSError:
        return None
    try:
        return _parse(fd, root)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def vouched(root: Path) -> tuple[str, int, int | None] | None:
    """The sha256, size and serial of the installed data's body as its kept file says
    them, when that file is the pair's: ``status`` need not read and hash the data
    (at 10M lines, 540 MB). None otherwise."""
    try:
        fd = os.open(root / KEPT, _READ_FLAGS)
    except OSError:
        return None
    try:
        m = _footer(fd, root)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if m is None:
        return None
    serial = None if m.group(8) == b"none" else int(m.group(8))
    return m.group(6).decode(), int(m.group(7)), serial


def _footer(fd: int, root: Path) -> re.Match[bytes] | None:
    """The kept file's last line, if the file is whole and of the pair in ``root``."""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, _FOOTER_MAX, max(0, size - _FOOTER_MAX))
    m = _FOOTER.search(tail, tail.rfind(b"\n", 0, len(tail) - 1) + 1)
    if m is None or m.end() != len(tail):
        return None
    n_pairs, n_places, n_text = (int(g) for g in m.group(1, 2, 3))
    if 8 * n_pairs + 4 * n_places + n_text + len(m.group(0)) != size:
        return None
    data, kept_cdb = _identity_of(m.group(4)), _identity_of(m.group(5))
    try:
        if (
            identity(os.lstat(root / "data")) != data
            or identity(os.lstat(root / "data.cdb")) != kept_cdb
        ):
            return None
    except OSError:
        return None
    return m


def _identity_of(field: bytes) -> Identity:
    ino, size, mtime, ctime = (int(x) for x in field.split(b":"))
    return (ino, size, mtime, ctime)


def _parse(fd: int, root: Path) -> Kept | None:
    m = _footer(fd, root)
    if m is None:
        return None
    n_pairs, n_places, n_text = (int(g) for g in m.group(1, 2, 3))
    data, kept_cdb = _identity_of(m.group(4)), _identity_of(m.group(5))
    # Mapped, not read: pread would copy the 11 MB of pairs at 1M lines page by page
    # through the kernel, and the index is read once, by write_pieces. The kept file
    # is only ever replaced by a rename, so the mapping stays what was checked.
    pairs: bytes | mmap.mmap = (
        mmap.mmap(fd, 8 * n_pairs, mmap.MAP_SHARED, mmap.PROT_READ) if n_pairs else b""
    )
    places = _u32()
    places.frombytes(os.pread(fd, 4 * n_places, 8 * n_pairs))
    if sys.byteorder != "little":
        places.byteswap()
    text = os.pread(fd, n_text, 8 * n_pairs + 4 * n_places)
    sections = []
    at = pos = 0
    for line in _LINE.finditer(text):
        if line.start() != pos:
            return None
        pos = line.end()
        start, end, records, length, first, count, restamps, stamps, defaults = (
            int(g) for g in line.groups()
        )
        sections.append(
            Section(
                start,
                end,
                records,
                length,
                first,
                count,
                restamps,
                places[at : at + stamps],
                places[at + stamps : at + stamps + defaults],
            )
        )
        at += stamps + defaults
    if pos != len(text) or at != n_places or len(pairs) != 8 * n_pairs:
        return None
    if not _whole(sections, int(m.group(7)), n_pairs):
        return None
    serial = None if m.group(8) == b"none" else int(m.group(8))
    return Kept(
        tuple(sections),
        pairs,
        data,
        kept_cdb,
        m.group(6).decode(),
        int(m.group(7)),
        serial,
        int(m.group(9)),
    )


def _whole(sections: list[Section], body: int, count: int) -> bool:
    """Whether ``sections`` cut ``body`` bytes and ``count`` records end to end, each
    serial's place inside its records: a kept file that says otherwise is not used."""
    start = records = first = 0
    for s in sections:
        if (s.start, s.records, s.first) != (start, records, first) or s.end <= s.start:
            return False
        for places in (s.stamps, s.defaults):
            if places and max(places) + 4 > s.length:
                return False
        start, records, first = s.end, s.records + s.length, s.first + s.count
    return start == body and first == count


# --------------------------------------------------------------------------- writing


def stage(root: Path) -> tuple[int, Path]:
    """A temp file for the kept file: data.cdb is written with it as ``pairs_to``,
    then :func:`finish` adds the rest once the pair is installed."""
    return fsutil.make_temp(root / KEPT)


def finish(
    root: Path,
    fd: int,
    tmp: Path,
    compiled: Compiled,
    *,
    sha256: str,
    body: int,
    serial: int | None,
    default: int,
) -> None:
    """Write the rest of the kept file (its pairs are in already) and rename it in:
    after the pair's install, so that the identities are the installed files'."""
    try:
        places = _u32()
        lines = []
        for s in compiled.sections:
            places.extend(s.stamps)
            places.extend(s.defaults)
            lines.append(
                b"%d %d %d %d %d %d %d %d %d\n"
                % (
                    s.start,
                    s.end,
                    s.records,
                    s.length,
                    s.first,
                    s.count,
                    s.restamps,
                    len(s.stamps),
                    len(s.defaults),
                )
            )
        if sys.byteorder != "little":
            places.byteswap()
        text = b"".join(lines)
        data = identity(os.lstat(root / "data"))
        kept_cdb = identity(os.lstat(root / "data.cdb"))
        footer = b"dnsmaster-sections 1 pairs=%d places=%d text=%d data=%s cdb=%s " % (
            compiled.count,
            len(places),
            len(text),
            _ident(data),
            _ident(kept_cdb),
        )
        footer += b"sha256=%s body=%d serial=%s default=%d\n" % (
            sha256.encode(),
            body,
            b"none" if serial is None else b"%d" % serial,
            default,
        )
        fsutil.write_all(fd, places.tobytes() + text + footer)
        os.close(fd)
        fd = -1
        os.replace(tmp, root / KEPT)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        fsutil.discard([tmp])
        raise


def _ident(ident: Identity) -> bytes:
    return b":".join(b"%d" % x for x in ident)


def forget(root: Path) -> None:
    """Remove the kept file (an install that does not write one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / KEPT)


# --------------------------------------------------------------------------- compiling


def boundaries(text: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Where sections start in ``text[start:end]`` (no copy is made): at ``start``, and
    at every line ``# NAME:1`` after it (make-data's first line of each source)."""
    end = len(text) if end is None else end
    found = [start]
    i = text.find(b":1\n", start, end)
    while i >= 0:
        line = text.rfind(b"\n", start, i)
        if line >= 0 and text.startswith(b"# ", line + 1):
            found.append(line + 1)
        i = text.find(b":1\n", i + 3, end)
    return found


def _restamps(text: bytes, serial: int | None) -> int:
    """How many ``:serial:`` ``text`` holds if every one is a ``Z`` line's serial field
    (the third colon of a line that starts with Z), else -1."""
    if serial is None:
        return 0
    mark = b":%d:" % serial
    n = 0
    i = text.find(mark)
    while i >= 0:
        line = text.rfind(b"\n", 0, i) + 1
        if text[line : line + 1] != b"Z" or text.count(b":", line, i) != 2:
            return -1
        n += 1
        i = text.find(mark, i + len(mark))
    return n


def compile_section(text: bytes, serial: int | None) -> tuple[cdb.Packed, int, array[int]]:
    """One section compiled: its records, its restamp count and its stamps (see
    :class:`Section`). Raises TinydnsDataError with the line counted in ``text``."""
    packed = PackedRecords()
    if accel.compiler() is not None and cdb.packs_fast():
        compile_text(text, 0, packed=packed)
        records = cdb.Packed(memoryview(packed.blob), tuple(packed.serials), packed.count)
    else:
        recs = compile_text(text, 0)
        records = cdb.pack(recs.keys, recs.values, recs.soa_defaults)
    restamps = _restamps(text, serial)
    stamps = _u32()
    if restamps > 0:
        assert serial is not None
        defaults = set(records.serials)
        found = [at for at in cdb.places(records.blob, serial) if at not in defaults]
        if len(found) == restamps:
            stamps = _u32(found)
        else:
            restamps = -1
    return records, restamps, stamps


class Spill:
    """Compiled sections as pieces: in memory, or appended to a temp file once the
    data is large (so a 10M-line data is never all in memory as records)."""

    def __init__(self, root: Path, spill: bool) -> None:
        self.fd = -1
        self.tmp: Path | None = None
        self.at = 0
        if spill:
            self.fd, self.tmp = fsutil.make_temp(root / "data.records")

    def piece(self, packed: cdb.Packed) -> cdb.Piece:
        if self.fd < 0:
            return cdb.Piece.of(packed)
        fsutil.write_all(self.fd, packed.blob)
        piece = cdb.Piece(len(packed.blob), packed.count, self.fd, self.at)
        self.at += len(packed.blob)
        return piece

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            fsutil.discard([self.tmp])


def add_section(
    out: Compiled,
    spill: Spill,
    *,
    start: int,
    end: int,
    packed: cdb.Packed,
    restamps: int,
    stamps: array[int],
    default_bytes: bytes,
) -> None:
    """Append a compiled section to ``out``, its default serials patched."""
    records = sum(s.length for s in out.sections)
    out.pieces.append(spill.piece(packed))
    defaults = _u32(packed.serials)
    if defaults:
        out.patches.extend((records + d, default_bytes) for d in defaults)
        out.sort = True
    out.sections.append(
        Section(
            start,
            end,
            records,
            len(packed.blob),
            out.count,
            packed.count,
            restamps,
            stamps,
            defaults,
        )
    )
    out.count += packed.count


@contextlib.contextmanager
def compile_sections(
    root: Path, content: bytes, end: int, serial: int | None, default: int
) -> Iterator[Compiled]:
    """``content[:end]`` compiled section by section, for data.cdb and the kept file;
    the pieces are valid inside the ``with`` block. Raises TinydnsDataError as
    compile_text over the whole would (the sections are compiled again whole to say
    which line)."""
    out = Compiled([], [], [], 0)
    spill = Spill(root, end > SPILL)
    stamp = (default & 0xFFFFFFFF).to_bytes(4, "big")
    cuts = [*boundaries(content, 0, end), end]
    try:
        for start, stop in itertools.pairwise(cuts):
            if start == stop:
                continue
            try:
                packed, restamps, stamps = compile_section(content[start:stop], serial)
            except Exception:
                compile_text(content, 0)  # raises with the data's own line number
                raise
            add_section(
                out,
                spill,
                start=start,
                end=stop,
                packed=packed,
                restamps=restamps,
                stamps=stamps,
                default_bytes=stamp,
            )
        if out.sort:
            out.patches.sort()
        yield out
    finally:
        spill.close()
