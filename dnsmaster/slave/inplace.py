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
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb, stream
from dnsmaster.core import delta as deltas
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import DnsmasterError, TinydnsDataError
from dnsmaster.slave import newdata, sections
from dnsmaster.slave.sections import Compiled, Kept, Section

__all__ = [
    "MAX_OPS",
    "Staged",
    "delta_compiled",
    "fast",
    "stage_delta",
    "stage_full",
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
    p = None if kept is None else newdata.plan(edits, kept)
    if kept is None or p is None or p.size != trailer.size:
        return None
    try:
        base_fd = os.open(root / "data", _READ_FLAGS)
    except OSError:
        return None
    try:
        if sections.identity(os.fstat(base_fd)) != kept.data:
            return None
        return _both(root, edits, trailer, kept, p=p, base_fd=base_fd)
    finally:
        os.close(base_fd)


class _DataThread(threading.Thread):
    """The new data written (hashed as it goes) and fsynced, beside the data.cdb write:
    the two use a core each, and the disk works meanwhile."""

    def __init__(self, root: Path, p: newdata.Plan, base_fd: int, trailer: bytes) -> None:
        super().__init__(name="dnsmaster-data", daemon=True)
        self.args = (root, p, base_fd, trailer)
        self.path: Path | None = None
        self.written: newdata.Written | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        root, p, base_fd, trailer = self.args

        def write(fd: int) -> None:
            self.written = newdata.write(p, base_fd, fd)
            fsutil.write_all(fd, trailer)

        try:
            self.path = fsutil.stage(root / "data", write)
        except ValueError:
            pass  # the base is shorter than the delta says: written is None
        except BaseException as exc:  # raised again by the caller
            self.error = exc


def _both(
    root: Path,
    edits: deltas.Delta,
    trailer: stream.Trailer,
    kept: Kept,
    *,
    p: newdata.Plan,
    base_fd: int,
) -> Staged | None:
    """The new data written by another thread while data.cdb is staged from ranges of
    the same result read here; then the data checked against the trailer, and the
    ranges against the data."""
    writer = _DataThread(root, p, base_fd, trailer.line())
    reader = newdata.Reader(p, base_fd)
    # No serial is defaulted from an mtime in dnsmaster's data; data from elsewhere
    # that has some is staged again below if the data's mtime is another second.
    guess = default_serial(time.time_ns() // 10**9)
    writer.start()
    made = None
    try:
        made = _delta_cdb(root, edits, trailer, kept, p=p, text=reader, default=guess)
    except (_NotHere, TinydnsDataError, ValueError):
        # ValueError: pieces write_pieces refuses, CdbTooLarge; the whole compile
        # says the same in its own words, or does what this could not
        pass
    finally:
        writer.join()  # also when interrupted: no thread is left writing
        staged = _checked(made, writer, reader, trailer=trailer, kept=kept, guess=guess)
    if staged is None and writer.error is None and made is not None and made[0].sort:
        # defaulted serials, and the mtime came in another second: once more, in turn
        staged = _sequential(root, edits, trailer, kept, p=p, base_fd=base_fd)
    return staged


def _checked(
    made: tuple[Compiled, Path, int, Path, int | None, list[int], bool] | None,
    writer: _DataThread,
    reader: newdata.Reader,
    *,
    trailer: stream.Trailer,
    kept: Kept,
    guess: int,
) -> Staged | None:
    """The staged pair once the data is known to be the trailer's and data.cdb made
    from its bytes; else None (or the writer's error), nothing left behind."""
    staged = None
    w = writer.written
    if made is not None and writer.path is not None and w is not None:
        compiled, path, kept_fd, kept_tmp, serial, marks, restamped = made
        default = default_serial(writer.path.stat().st_mtime_ns // 10**9)
        staged = Staged(
            writer.path,
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
        fd = os.open(writer.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            same = reader.agrees(fd)
        finally:
            os.close(fd)
        if (
            w.sha256 != trailer.sha256
            or not same
            or previous_serial(w.head) != serial
            or (compiled.sort and default != guess)
        ):
            staged.discard()
            return None
        if restamped:
            _count_restamps(compiled, marks, reader.plan.carried, w.found)
        # The two files were written side by side, so data.cdb may have been finished
        # first; status doubts a data.cdb older than data (cdb_doubt), so it is stamped
        # now, after both.
        os.utime(path)
        return staged
    if made is not None:
        os.close(made[2])
        fsutil.discard([made[1], made[3]])
    if writer.path is not None:
        fsutil.discard([writer.path])
    if writer.error is not None:
        raise writer.error
    return None


def _count_restamps(
    compiled: Compiled, marks: list[int], carried: list[tuple[Section, int]], found: list[int]
) -> None:
    """A carried section whose new text holds the new serial other than where the
    restamp put it no longer restamps by its records alone: -1, as the kept file says."""
    for index, (s, _), n in zip(marks, carried, found, strict=False):
        if index >= 0 and n != s.restamps:
            compiled.sections[index] = replace(compiled.sections[index], restamps=-1)


def _sequential(
    root: Path,
    edits: deltas.Delta,
    trailer: stream.Trailer,
    kept: Kept,
    *,
    p: newdata.Plan,
    base_fd: int,
) -> Staged | None:
    """The data written first, then data.cdb from it with its mtime's serial."""
    writer = _DataThread(root, p, base_fd, trailer.line())
    writer.run()
    if writer.error is not None:
        raise writer.error
    if writer.path is None:
        return None
    reader = newdata.Reader(p, base_fd)
    default = default_serial(writer.path.stat().st_mtime_ns // 10**9)
    made = None
    with contextlib.suppress(_NotHere, TinydnsDataError, ValueError):
        made = _delta_cdb(root, edits, trailer, kept, p=p, text=reader, default=default)
    return _checked(made, writer, reader, trailer=trailer, kept=kept, guess=default)


def _delta_cdb(
    root: Path,
    edits: deltas.Delta,
    trailer: stream.Trailer,
    kept: Kept,
    *,
    p: newdata.Plan,
    text: newdata.Reader,
    default: int,
) -> tuple[Compiled, Path, int, Path, int | None, list[int], bool]:
    """data.cdb and the kept file's temp file for the new ``data`` staged from a
    delta, the data read by ``text``; with the new data's serial, each carried
    section's index in the sections (-1: compiled), and whether it is a restamp."""
    serial = previous_serial(text(0, _HEAD))
    restamp = None
    if edits.serials is not None and edits.serials[0] != edits.serials[1]:
        restamp = edits.serials[1]
    if serial != (kept.serial if restamp is None else restamp):
        raise _NotHere
    marks: list[int] = []
    with delta_compiled(
        root,
        kept,
        p.carried,
        text=text,
        body=trailer.size,
        restamp=restamp,
        serial=serial,
        default=default,
        marks=marks,
    ) as compiled:
        if compiled is None:
            raise _NotHere
        path, kept_fd, kept_tmp = _stage_cdb(root, compiled)
    return compiled, path, kept_fd, kept_tmp, serial, marks, restamp is not None


@contextlib.contextmanager
def delta_compiled(
    root: Path,
    kept: Kept,
    carried: list[tuple[Section, int]],
    *,
    text: Callable[[int, int], bytes],
    body: int,
    restamp: int | None,
    serial: int | None,
    default: int,
    marks: list[int],
) -> Iterator[Compiled | None]:
    """The new data.cdb's pieces: the carried sections' records from the installed
    data.cdb (patched: ``restamp`` is the new serial, or None), the rest compiled from
    the new data, whose bytes ``start`` to ``end`` are ``text(start, end)`` (``body``
    bytes in all). ``marks`` gets, for each carried section, its index in the
    sections, or -1 where it is compiled. None when data.cdb is not the kept one.
    TinydnsDataError for a section that does not compile."""
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
        starts = {at for _, at in carried}
        for s, at in carried:
            marks.append(-1)
            if not _ends_a_section(text, at + s.end - s.start, body, starts):
                continue  # compiled with the lines that follow it, into one section
            if at > 0 and text(at - 1, at) != b"\n":
                continue  # its first line goes on a line an insert left open
            if at > pos:
                _fresh(out, spill, text, start=pos, end=at, serial=serial, stamp=default_bytes)
            marks[-1] = len(out.sections)
            records = sum(x.length for x in out.sections)
            index = pairs[8 * s.first : 8 * (s.first + s.count)]
            out.pieces.append(
                cdb.Piece(s.length, s.count, cdb_fd, cdb.HEADER_SIZE + s.records, index=index)
            )
            if restamp is not None:
                stamp = restamp.to_bytes(4, "big")
                out.patches.extend(zip(map(records.__add__, s.stamps), repeat(stamp)))
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
                    s.restamps,  # until the new data's count is in (_count_restamps)
                    s.stamps,
                    s.defaults,
                )
            )
            out.count += s.count
            pos = at + size
        if pos < body:
            _fresh(out, spill, text, start=pos, end=body, serial=serial, stamp=default_bytes)
        if out.sort:
            out.patches.sort()  # stamps and defaults interleave: rare (not dnsmaster's data)
        yield out
    finally:
        os.close(cdb_fd)
        spill.close()


def _ends_a_section(
    text: Callable[[int, int], bytes], end: int, body: int, starts: set[int]
) -> bool:
    """Whether a section of the result may end at ``end``: the result ends there, or
    another carried section starts there, or a source's first line does. Else a
    carried section would be followed by a section of the lines inserted after it,
    and every delta would leave the data cut finer."""
    if end >= body or end in starts:
        return True
    line = text(end, end + 4096)
    cut = line.find(b"\n")
    return line.startswith(b"# ") and cut > 0 and line[:cut].endswith(b":1")


def _fresh(
    out: Compiled,
    spill: sections.Spill,
    read: Callable[[int, int], bytes],
    *,
    start: int,
    end: int,
    serial: int | None,
    stamp: bytes,
) -> None:
    """Compile the result's bytes ``start`` to ``end`` (``read(start, end)``), section
    by section."""
    text = read(start, end)
    if len(text) != end - start:
        raise ValueError("the new data is shorter than its delta says")
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
