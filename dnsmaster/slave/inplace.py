"""Staging a pushed pair section by section: a delta applied in place, or a full compile.

:mod:`dnsmaster.slave.root` installs what this stages (refusals, the journal, the
copy): here the new ``data`` and data.cdb are written to temp files, with the kept
file (:mod:`dnsmaster.slave.sections`) that the next delta starts from.

A delta (:func:`stage_delta`) is applied to the installed ``data`` as a file: read in
chunks, restamped and written. Its sha256 must be the trailer's before anything is
installed; it cannot be known sooner (a restamp changes every zone, so no digest of
the installed data's parts can stand in for the new one's), so another thread hashes
the new file, and makes it durable, while data.cdb is written. The sections one
copy operation moves whole keep their records, copied from the installed data.cdb
with their serials patched; only the rest is compiled. None is returned whenever
that cannot be done exactly (no kept file, or not this pair's; a restamp that
changes the serial's length; a result that is not the trailer's; a section that
does not compile, so that the message names the data's own line): the caller then
applies the delta in memory and compiles everything, as it always did.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import threading
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb, stream
from dnsmaster.core import delta as deltas
from dnsmaster.core.banner import BANNER, previous_serial
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import DnsmasterError, TinydnsDataError
from dnsmaster.slave import sections
from dnsmaster.slave.sections import Compiled, Kept, Section

__all__ = [
    "MAX_OPS",
    "Staged",
    "delta_compiled",
    "fast",
    "stage_delta",
    "stage_full",
    "write_result",
]

_CHUNK = 1 << 20
#: The most operations a delta applied in place may have.
MAX_OPS = 4096
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_HEAD = 256


def fast() -> bool:
    """Whether the C accelerators are there to compile into packed records and write
    data.cdb from pieces (the pure-Python receiver compiles whole, as before)."""
    return accel.compiler() is not None and cdb.packs_fast()


@dataclass(frozen=True, slots=True)
class Staged:
    """A pair written to temp files, with the kept file to finish once it is in."""

    data: Path
    cdb: Path
    #: The kept file's temp file, open (-1 and None: none, the pure-Python receiver's).
    kept_fd: int
    kept: Path | None
    compiled: Compiled
    sha256: str
    body: int
    serial: int | None
    default: int
    #: The serial and sha256 of the data this replaces, when the kept file knew them.
    replaces: int | None = None
    replaces_sha256: str | None = None

    def finish(self, root: Path) -> None:
        """Write the kept file for the pair just installed."""
        if self.kept is None:
            sections.forget(root)
            return
        sections.finish(
            root,
            self.kept_fd,
            self.kept,
            self.compiled,
            sha256=self.sha256,
            body=self.body,
            serial=self.serial,
            default=self.default,
        )

    def discard(self) -> None:
        if self.kept is not None:
            with contextlib.suppress(OSError):
                os.close(self.kept_fd)
        fsutil.discard([p for p in (self.data, self.cdb, self.kept) if p is not None])


def _stage_cdb(root: Path, compiled: Compiled) -> tuple[Path, int, Path]:
    kept_fd, kept = sections.stage(root)
    try:
        path = fsutil.stage(
            root / "data.cdb",
            lambda fd: cdb.write_pieces(fd, compiled.pieces, compiled.patches, pairs_to=kept_fd),
        )
    except BaseException:
        os.close(kept_fd)
        fsutil.discard([kept])
        raise
    return path, kept_fd, kept


def stage_full(root: Path, content: bytes, body: int, sha256: str) -> Staged:
    """``content`` (``body`` bytes of data, then the trailer line) staged with its
    data.cdb, compiled section by section. Raises TinydnsDataError, CdbTooLarge."""
    data = fsutil.stage(root / "data", lambda fd: fsutil.write_all(fd, content))
    try:
        # dnsmaster's data has every serial written in; data from elsewhere may leave
        # them to the file's mtime, as tinydns-data would on the installed data (this
        # inode), and as a repair will from it.
        default = default_serial(data.stat().st_mtime_ns // 10**9)
        serial = previous_serial(content[:_HEAD])
        if not fast():
            recs = compile_text(content, 0)
            values = recs.with_serial(default)
            path = fsutil.stage(root / "data.cdb", lambda fd: cdb.write_fd(fd, recs.keys, values))
            whole = Compiled([], [], [], len(recs))
            return Staged(data, path, -1, None, whole, sha256, body, serial, default)
        with sections.compile_sections(root, content, body, serial, default) as compiled:
            path, kept_fd, kept = _stage_cdb(root, compiled)
    except BaseException:
        fsutil.discard([data])
        raise
    return Staged(data, path, kept_fd, kept, compiled, sha256, body, serial, default)


class _NotHere(DnsmasterError):
    """The delta cannot be applied in place exactly: the caller does it in memory."""


def stage_delta(root: Path, edits: deltas.Delta, trailer: stream.Trailer) -> Staged | None:
    """The result of ``edits`` staged from the installed pair, or None (see the module)."""
    # A delta of many operations is a large change (or a hostile one): applied in
    # memory, as it always was, with its bounds, rather than an object per operation.
    if len(edits.ops) > MAX_OPS or not fast():
        return None
    kept = sections.load(root)
    if kept is None:
        return None
    made: list[tuple[bytes, list[tuple[Section, int, int]]]] = []

    def write(fd: int) -> None:
        try:
            base_fd = os.open(root / "data", _READ_FLAGS)
        except OSError:
            raise _NotHere from None
        try:
            if sections.identity(os.fstat(base_fd)) != kept.data:
                raise _NotHere
            result = write_result(edits, kept, base_fd, fd)
        except ValueError:
            raise _NotHere from None
        finally:
            os.close(base_fd)
        if result is None or result[0] != trailer.size:
            raise _NotHere
        fsutil.write_all(fd, trailer.line())
        made.append(result[1:])

    try:
        data = fsutil.stage(root / "data", write, fsync=False)
    except _NotHere:
        return None
    check = _Check(data, trailer.size)
    check.start()
    staged = None
    try:
        staged = _delta_pair(root, edits, trailer, kept, data=data, made=made[0])
    except (_NotHere, TinydnsDataError, ValueError):
        # ValueError: pieces write_pieces refuses, CdbTooLarge; the whole compile
        # says the same in its own words, or does what this could not
        pass
    finally:
        check.join()  # also when interrupted: no thread is left reading the file
        if staged is None or check.error is not None or check.sha256 != trailer.sha256:
            if staged is not None:
                staged.discard()
            fsutil.discard([data])
    if check.error is not None:
        raise check.error
    if staged is None or check.sha256 != trailer.sha256:
        return None  # the whole apply says what is wrong, or does what this could not
    return staged


class _Check(threading.Thread):
    """The new data's sha256 (its first ``size`` bytes, as written) and its fsync, run
    beside the data.cdb write: the two use a core each, and the disk works meanwhile."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(name="dnsmaster-check", daemon=True)
        self.path = path
        self.size = size
        self.sha256: str | None = None
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.sha256 = _sha256(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.error = exc


def _sha256(fd: int, size: int) -> str | None:
    """The sha256 of the first ``size`` bytes of ``fd`` (None: it is shorter)."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))
    at = 0
    while at < size:
        got = os.preadv(fd, [buffer[: min(_CHUNK, size - at)]], at)
        if not got:
            return None
        digest.update(buffer[:got])  # lets the GIL go: the cdb writer runs meanwhile
        at += got
    return digest.hexdigest()


def _delta_pair(
    root: Path,
    edits: deltas.Delta,
    trailer: stream.Trailer,
    kept: Kept,
    *,
    data: Path,
    made: tuple[bytes, list[tuple[Section, int, int]]],
) -> Staged:
    """data.cdb and the kept file for the new ``data`` staged from a delta."""
    head, carried = made
    serial = previous_serial(head)
    restamp = None
    if edits.serials is not None and edits.serials[0] != edits.serials[1]:
        restamp = edits.serials[1]
    if serial != (kept.serial if restamp is None else restamp):
        raise _NotHere
    default = default_serial(data.stat().st_mtime_ns // 10**9)
    fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with delta_compiled(
            root,
            kept,
            carried,
            data_fd=fd,
            body=trailer.size,
            restamp=restamp,
            serial=serial,
            default=default,
        ) as compiled:
            if compiled is None:
                raise _NotHere
            path, kept_fd, kept_tmp = _stage_cdb(root, compiled)
    finally:
        os.close(fd)
    return Staged(
        data,
        path,
        kept_fd,
        kept_tmp,
        compiled,
        trailer.sha256,
        trailer.size,
        serial,
        default,
        kept.serial,
        kept.sha256,
    )


@dataclass(frozen=True, slots=True)
class _Op:
    """A delta's operation placed in the result: bytes ``at`` to ``at + size``, copied
    from the restamped base at ``source`` (or, when it is -1, inserted: ``text``)."""

    at: int
    size: int
    source: int
    text: bytes = b""


def _placed(edits: deltas.Delta) -> list[_Op]:
    ops = []
    at = 0
    for op in edits.ops:
        if isinstance(op, deltas.Copy):
            ops.append(_Op(at, op.size, op.start))
            at += op.size
        else:
            ops.append(_Op(at, len(op.text), -1, op.text))
            at += len(op.text)
    return ops


def _carried(kept: Kept, ops: list[_Op], restamped: bool) -> list[tuple[Section, int]]:
    """The kept sections that one copy moves whole, and where each lands in the
    result, in result order. Not those whose text a restamp changes beyond Z serials."""
    copies = sorted((op for op in ops if op.source >= 0), key=lambda op: op.source)
    sources = [op.source for op in copies]
    out = []
    for s in kept.sections:
        if restamped and s.restamps < 0:
            continue
        i = bisect_right(sources, s.start) - 1
        if i >= 0 and s.end <= copies[i].source + copies[i].size:
            out.append((s, copies[i].at + s.start - copies[i].source))
    out.sort(key=lambda c: c[1])
    return out


class _Writer:
    """The result written to a file as it is made, with the restamp's new serial
    counted between the given cuts (the carried sections' ends). The copies go
    through one read buffer, restamped in it: no bytes made per chunk."""

    def __init__(self, fd: int, cuts: list[int], mark: bytes | None) -> None:
        self.fd = fd
        self.at = 0
        self.cuts = cuts
        self.counts = [0] * (len(cuts) + 1)
        self.mark = mark
        self.head = b""
        self.buffer = bytearray(_CHUNK)
        self.view = memoryview(self.buffer)

    def room(self) -> int:
        """Bytes until the next cut."""
        i = bisect_right(self.cuts, self.at)
        return self.cuts[i] - self.at if i < len(self.cuts) else 1 << 62

    def put(self, piece: bytes | memoryview) -> None:
        """``piece``: an inserted text, or the start of the buffer."""
        fsutil.write_all(self.fd, piece)
        if self.mark is not None:
            found = (
                self.buffer.count(self.mark, 0, len(piece))
                if isinstance(piece, memoryview)
                else piece.count(self.mark)
            )
            self.counts[bisect_right(self.cuts, self.at)] += found
        if self.at < _HEAD:
            self.head += bytes(piece[: _HEAD - self.at])
        self.at += len(piece)


def _swap(buffer: memoryview, old: bytes, new: bytes) -> None:
    """Every ``old`` in ``buffer`` replaced by ``new`` (as long) as bytes.replace would."""
    accelerator = accel.records()
    if accelerator is not None:
        accelerator.swap(buffer, old, new)
        return
    data = buffer.tobytes()
    at = data.find(old)
    while at >= 0:
        buffer[at : at + len(old)] = new
        at = data.find(old, at + len(old))


def _copy(
    w: _Writer, base_fd: int, op: _Op, swap: tuple[bytes, bytes, bytes, bytes] | None
) -> None:
    """A copy of the restamped base: read in chunks cut after a newline (no serial spans
    a line, so restamping each chunk is restamping the whole) and at the cuts, into
    the writer's buffer and restamped there (a restamp keeps the serial's length)."""
    at, end = op.source, op.source + op.size
    buffer = w.buffer
    while at < end:
        want = min(_CHUNK, end - at, w.room())
        got = os.preadv(base_fd, [w.view[:want]], at)
        if got < want:
            raise ValueError("the base ends before the copy does")
        if at + want < end and want < w.room():
            cut = buffer.rfind(b"\n", 0, want) + 1
            if cut:
                want = cut
        chunk = w.view[:want]
        if swap is not None:
            start = len(BANNER) + len(swap[2])
            if (
                at == 0
                and want > start
                and buffer.startswith(BANNER + swap[2])
                and buffer[start] in b" \n"
            ):
                chunk[len(BANNER) : start] = swap[3]
            _swap(chunk, swap[0], swap[1])
        w.put(chunk)
        at += want


def write_result(
    edits: deltas.Delta, kept: Kept, base_fd: int, fd: int
) -> tuple[int, bytes, list[tuple[Section, int, int]]] | None:
    """Write the result of ``edits`` to ``fd`` from the installed data (``base_fd``)
    that ``kept`` describes: its length, its first bytes, and the carried sections
    (section, where it lands, how many of the new serial it holds). None when this
    way does not apply: the base is not the one kept, or the restamp changes the
    serial's length (the caller applies the delta in memory)."""
    if (edits.base_sha256, edits.base_size) != (kept.sha256, kept.body):
        return None
    swap = None
    mark = None
    if edits.serials is not None:
        old, new = edits.serials
        o, n = b"%d" % old, b"%d" % new
        if old != kept.serial or len(o) != len(n):
            return None
        if old != new:
            swap = (b":%s:" % o, b":%s:" % n, o, n)
            mark = swap[1]
    ops = _placed(edits)
    carried = _carried(kept, ops, swap is not None)
    cuts = sorted({x for s, at in carried for x in (at, at + s.end - s.start)})
    w = _Writer(fd, cuts, mark)
    for op in ops:
        if op.source < 0:
            w.put(op.text)
        else:
            _copy(w, base_fd, op, swap)
    found = []
    for s, at in carried:
        n_new = w.counts[bisect_right(cuts, at)] if mark is not None else s.restamps
        found.append((s, at, n_new))
    return w.at, w.head, found


@contextlib.contextmanager
def delta_compiled(
    root: Path,
    kept: Kept,
    carried: list[tuple[Section, int, int]],
    *,
    data_fd: int,
    body: int,
    restamp: int | None,
    serial: int | None,
    default: int,
) -> Iterator[Compiled | None]:
    """The new data.cdb's pieces: the carried sections' records from the installed
    data.cdb (patched: ``restamp`` is the new serial, or None), the rest compiled from
    the new data in ``data_fd`` (``body`` bytes). None when data.cdb is not the kept
    one. TinydnsDataError for a section that does not compile."""
    try:
        cdb_fd = os.open(root / "data.cdb", _READ_FLAGS)
    except OSError:
        yield None
        return
    out = Compiled([], [], [], 0)
    spill = sections.Spill(root, body > sections.SPILL)
    try:
        if sections.identity(os.fstat(cdb_fd)) != kept.cdb:
            yield None
            return
        default_bytes = (default & 0xFFFFFFFF).to_bytes(4, "big")
        pairs = memoryview(kept.pairs)
        pos = 0
        starts = {at for _, at, _ in carried}
        for s, at, found in carried:
            if not _ends_a_section(data_fd, at + s.end - s.start, body, starts):
                continue  # compiled with the lines that follow it, into one section
            if at > 0 and os.pread(data_fd, 1, at - 1) != b"\n":
                continue  # its first line goes on a line an insert left open
            if at > pos:
                _fresh(out, spill, data_fd, start=pos, end=at, serial=serial, stamp=default_bytes)
            records = sum(x.length for x in out.sections)
            index = pairs[8 * s.first : 8 * (s.first + s.count)]
            out.pieces.append(
                cdb.Piece(s.length, s.count, cdb_fd, cdb.HEADER_SIZE + s.records, index=index)
            )
            restamps = s.restamps
            if restamp is not None:
                stamp = restamp.to_bytes(4, "big")
                out.patches.extend(zip(map(records.__add__, s.stamps), repeat(stamp)))
                restamps = s.restamps if found == s.restamps else -1
            if s.defaults:
                out.patches.extend(zip(map(records.__add__, s.defaults), repeat(default_bytes)))
                out.sort = True
            size = s.end - s.start
            out.sections.append(
                Section(
                    at,
                    at + size,
                    records,
                    s.length,
                    out.count,
                    s.count,
                    restamps,
                    s.stamps,
                    s.defaults,
                )
            )
            out.count += s.count
            pos = at + size
        if pos < body:
            _fresh(out, spill, data_fd, start=pos, end=body, serial=serial, stamp=default_bytes)
        if out.sort:
            out.patches.sort()  # stamps and defaults interleave: rare (not dnsmaster's data)
        yield out
    finally:
        os.close(cdb_fd)
        spill.close()


def _ends_a_section(fd: int, end: int, body: int, starts: set[int]) -> bool:
    """Whether a section of the result may end at ``end``: the result ends there, or
    another carried section starts there, or a source's first line does. Else a
    carried section would be followed by a section of the lines inserted after it,
    and every delta would leave the data cut finer."""
    if end >= body or end in starts:
        return True
    line = os.pread(fd, 4096, end)
    cut = line.find(b"\n")
    return line.startswith(b"# ") and cut > 0 and line[:cut].endswith(b":1")


def _fresh(
    out: Compiled,
    spill: sections.Spill,
    fd: int,
    *,
    start: int,
    end: int,
    serial: int | None,
    stamp: bytes,
) -> None:
    """Compile the result's bytes ``start`` to ``end`` (read back from ``fd``), section
    by section."""
    text = os.pread(fd, end - start, start)
    if len(text) != end - start:
        raise ValueError("the new data is shorter than written")
    cuts = [*sections.boundaries(text), len(text)]
    for a, b in itertools.pairwise(cuts):
        if a < b:
            packed, restamps, stamps = sections.compile_section(text[a:b], serial)
            sections.add_section(
                out,
                spill,
                start=start + a,
                end=start + b,
                packed=packed,
                restamps=restamps,
                stamps=stamps,
                default_bytes=stamp,
            )
