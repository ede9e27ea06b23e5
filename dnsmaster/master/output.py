"""The output directory as a build writes it: ``data`` and ``data.cdb`` installed as
one pair, or nothing at all, and each build kept for rollback.

Both files are staged as complete, fsynced temp files and renamed into place under
a journal (:func:`dnsmaster.fsutil.install_pair`); any error raises before the first
rename, so the directory is left exactly as it was.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import operator
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from typing import IO

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb
from dnsmaster.core.banner import BANNER
from dnsmaster.core.compiler import no_gc
from dnsmaster.core.makedata import banner_of, built_from, fingerprint
from dnsmaster.core.serial import MODULUS
from dnsmaster.errors import ArchiveError, BuildError, CdbTooLarge
from dnsmaster.log import get_logger
from dnsmaster.master.archive import Archive
from dnsmaster.master.buildcache import Index, Kept, Ready
from dnsmaster.master.compiling import Source

__all__ = [
    "StalePair",
    "Written",
    "assemble",
    "cannot_write",
    "check_output",
    "head",
    "keep",
    "pieces_of",
    "stream_pair",
    "unchanged",
    "write_pair",
]


class StalePair(BuildError):
    """The last build's pair is not what its index says; nothing was written.

    The build compiles every source again and writes anew.
    """


def check_output(output: Path) -> None:
    """Raise BuildError unless ``output`` is a directory this process can write."""
    if not output.is_dir():
        reason = "does not exist" if not output.exists() else "is not a directory"
        raise BuildError(str(output), f"output directory {reason}")
    if not os.access(output, os.W_OK | os.X_OK):
        raise BuildError(str(output), "output directory is not writable")


def cannot_write(output: Path, exc: OSError) -> BuildError:
    """The BuildError for a failed write in ``output``."""
    where = exc.filename or str(output)
    return BuildError(str(where), f"cannot write: {fsutil.describe(exc)}")


def head(path: Path) -> bytes:
    """The first line of ``path`` (the banner of a ``data``), or b"" when unreadable."""
    try:
        with path.open("rb") as f:
            return f.readline(200)
    except OSError:
        return b""


def unchanged(
    output: Path,
    pairs: Sequence[tuple[str, bytes]],
    data_head: bytes,
    *,
    ipv6_int: bool,
    catalog: str = "",
    sources_id: str | None = None,
) -> bool:
    """Whether the pair in ``output`` is complete and was built from the sources of
    these (name, sha256) ``pairs`` (with these options: see
    :func:`dnsmaster.core.makedata.fingerprint`), or ``sources_id``, their
    fingerprint when the caller has it."""
    sources = sources_id or fingerprint(pairs, ipv6_int=ipv6_int, catalog=catalog)
    return (
        built_from(data_head) == sources
        and not fsutil.interrupted_install(output)
        and (output / "data.cdb").is_file()
    )


@dataclass(frozen=True, slots=True)
class Written:
    """What :func:`write_pair` or :func:`stream_pair` installed: the offsets of
    ``data``'s serials, its sha256 in hex, its line count, the (hash, position)
    pairs of ``data.cdb``'s records (for the next build to copy them without reading
    them), and ``data`` itself mapped read-only (the installed inode: a later build
    renames another over it, never writes into it)."""

    stamps: list[int]
    sha256: str
    lines: int
    pairs: bytes
    text: mmap.mmap
    #: where each SOA serial is in ``data.cdb``, ascending (None: not counted)
    patches: list[int] | None = None

    @property
    def banner(self) -> int:
        """The length of ``data``'s first line."""
        return self.text.find(b"\n") + 1


def write_pair(
    output: Path,
    written: Sequence[Source],
    serial: int,
    index: Index | None,
    *,
    ipv6_int: bool,
    catalog: str = "",
    sources_id: str | None = None,
) -> Written:
    """Stage both files, then install them as a pair.

    ``written`` are the build's sources in order: compiled now (their text and
    records in memory) or kept from the last build (copied from the pair ``index``
    describes, by :func:`assemble`). ``catalog`` is the catalog zone's name when
    the last of ``written`` is the catalog's section (it goes into the banner's
    fingerprint).

    A thread writes, hashes and fsyncs ``data`` a chunk at a time (the kept runs
    read from the old ``data`` and restamped in bounded buffers: the text is never
    whole in memory) while this one writes the cdb
    (:func:`~dnsmaster.core.cdb.write_pieces`: the kept records copied from the old
    ``data.cdb`` by the kernel, their hashes taken from the index): both spend their
    time in hashlib, the C writer and system calls, which release the GIL, so on two
    cores they overlap.
    """
    cdb_final = output / "data.cdb"
    try:
        with no_gc():  # a number or two per zone, a tuple per serial: no cycle
            text, pieces, patches = _assemble(
                written, serial, index, ipv6_int=ipv6_int, catalog=catalog, sources_id=sources_id
            )
    except ValueError as exc:  # the sources kept are not those of the index
        raise StalePair(str(output), str(exc)) from None
    try:
        data_out = _DataOut(output)
    except OSError as exc:
        raise cannot_write(output, exc) from None

    def stage_data() -> None:
        try:
            text.emit(index, data_out.write, reuse=True)
        except ValueError as exc:  # the pair on disk is not what its index says
            raise StalePair(str(output), str(exc)) from None
        data_out.close()

    failure: BaseException | None = None
    cdb_tmp: Path | None = None
    with ThreadPoolExecutor(max_workers=1) as pool, tempfile.TemporaryFile(dir=output) as pairs:
        data_job = pool.submit(stage_data)
        try:
            cdb_tmp = fsutil.stage(
                cdb_final,
                lambda fd: cdb.write_pieces(fd, pieces, patches, pairs_to=pairs.fileno()),
            )
        except OSError as exc:
            failure = cannot_write(output, exc)
        except CdbTooLarge as exc:
            failure = BuildError(str(cdb_final), str(exc))
        except ValueError as exc:  # records copied from the pair are not what its index says
            failure = StalePair(str(cdb_final), f"records: {exc}")
        except BaseException as exc:  # out of memory: the data thread's file goes too
            failure = exc
        try:
            data_job.result()
        except StalePair as exc:
            failure = exc
        except OSError as exc:
            # data is written first in spirit: its error is the one to report
            failure = cannot_write(output, exc)
        except BaseException as exc:  # out of memory
            failure = exc
        if failure is not None or cdb_tmp is None:
            data_out.discard()
            fsutil.discard([cdb_tmp] if cdb_tmp is not None else [])
            raise failure or BuildError(str(output), "cannot write")
        pairs.seek(0)
        at = list(map(operator.add, map(_first, patches), repeat(cdb.HEADER_SIZE)))
        return data_out.install(cdb_tmp, text.stamps, pairs, at)


def stream_pair(output: Path, banner: bytes, serial: int, sources: Iterable[Ready]) -> Written:
    """Stage both files from ``sources`` as they come, then install them as a pair.

    For a build that compiles every source (:meth:`CompiledSources.stream
    <dnsmaster.master.compiling.CompiledSources.stream>`): each source's text goes
    to ``data`` and its records to ``data.cdb`` (through the compiler's ``Stream``,
    on the one cdb writer, ``cdbmake.h``) as soon as it is compiled, while the next
    ones compile; then only the cdb's tables are left to write. Memory holds a few
    sources and 8 bytes a record, never the whole text nor all the records. An
    exception from ``sources`` (DataErrors) leaves nothing behind.
    """
    fast = accel.compiler()
    assert fast is not None  # CompiledSources.streams() checked
    stamp = str(serial % MODULUS).encode()
    stamp4 = (serial & 0xFFFFFFFF).to_bytes(4, "big")
    try:
        data_out = _DataOut(output)
    except OSError as exc:
        raise cannot_write(output, exc) from None
    cdb_tmp: Path | None = None
    cdb_fd = -1
    stamps = [len(BANNER)]
    try:
        with tempfile.TemporaryFile(dir=output) as pairs:
            try:
                cdb_fd, cdb_name = tempfile.mkstemp(dir=output, prefix=".data.cdb.", suffix=".tmp")
                cdb_tmp = Path(cdb_name)
                writer = fast.Stream(cdb_fd)
                data_out.write(banner)
                at = len(banner)
                for src in sources:
                    pieces = src.pieces
                    for piece in pieces[:-1]:
                        at += len(piece)
                        stamps.append(at)
                        at += len(stamp)
                    at += len(pieces[-1])
                    data_out.write(stamp.join(pieces))
                    records = src.records
                    writer.put(records.blob, records.serials, stamp4, records.count)
                with ThreadPoolExecutor(max_workers=1) as pool:
                    synced = pool.submit(data_out.close)  # its fsync, while the tables go
                    writer.finish(pairs.fileno())
                    os.fchmod(cdb_fd, 0o644)
                    os.fsync(cdb_fd)
                    synced.result()
            except OSError as exc:
                raise cannot_write(output, exc) from None
            except CdbTooLarge as exc:
                raise BuildError(str(output / "data.cdb"), str(exc)) from None
            os.close(cdb_fd)
            cdb_fd = -1
            pairs.seek(0)
            return data_out.install(cdb_tmp, stamps, pairs)
    except BaseException:
        data_out.discard()
        fsutil.discard([cdb_tmp] if cdb_tmp is not None else [])
        raise
    finally:
        if cdb_fd >= 0:
            os.close(cdb_fd)


#: How much of ``data`` is written between two requests that the kernel start
#: writing it back (see :meth:`_DataOut.write`).
_WRITEBACK = 8 << 20


class _DataOut:
    """``data`` as it is staged: written, hashed and its lines counted as it comes."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.sha256 = hashlib.sha256()
        self.lines = 0
        fast = accel.compiler()
        self.kick: Callable[[int], None] | None = fast.writeback if fast is not None else None
        # the C count looks at 16 bytes a step, bytes.count at one
        self.count: Callable[[bytes | bytearray | memoryview], int] = (
            fast.newlines if fast is not None else _newlines
        )
        self.unkicked = 0
        fd, name = tempfile.mkstemp(dir=output, prefix=".data.", suffix=".tmp")
        self.fd = fd
        self.tmp = Path(name)

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next bytes of ``data``."""
        self.sha256.update(chunk)
        self.lines += self.count(chunk)
        fsutil.write_all(self.fd, memoryview(chunk))
        # The disk starts on it now, so the fsync at the end waits for the last bit.
        self.unkicked += len(chunk)
        if self.unkicked >= _WRITEBACK and self.kick is not None:
            self.kick(self.fd)
            self.unkicked = 0

    def close(self) -> None:
        """Every byte is in: made durable."""
        os.fchmod(self.fd, 0o644)
        os.fsync(self.fd)

    def install(
        self, cdb_tmp: Path, stamps: list[int], pairs: IO[bytes], patches: list[int] | None = None
    ) -> Written:
        """Both staged files renamed into place as one pair; what was written."""
        sha256 = self.sha256.hexdigest()
        try:
            text = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
            # One pair, under a journal: a crash between the two renames is seen by
            # the next run (is_current is then false, and it builds both again).
            fsutil.install_pair(self.output, self.tmp, cdb_tmp, sha256)
            hashes = pairs.read()
        except OSError as exc:
            self.discard()
            fsutil.discard([cdb_tmp])
            raise cannot_write(self.output, exc) from None
        os.close(self.fd)
        self.fd = -1
        return Written(stamps, sha256, self.lines, hashes, text, patches)

    def discard(self) -> None:
        """Nothing of it is kept."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        fsutil.discard([self.tmp])


def _newlines(chunk: bytes | bytearray | memoryview) -> int:
    whole = chunk.tobytes() if isinstance(chunk, memoryview) else chunk  # a rare restamp
    return whole.count(b"\n")


def assemble(
    written: Sequence[Source],
    serial: int,
    index: Index | None,
    *,
    ipv6_int: bool,
    catalog: str = "",
) -> tuple[bytes, list[int], list[cdb.Piece], list[tuple[int, bytes]]]:
    """``data``, the offsets of its serials, and ``data.cdb``'s records as pieces
    with the serial's patches (:func:`~dnsmaster.core.cdb.write_pieces`).

    A source kept from the last build is copied from that build's pair: sources
    that follow each other there make one run, whose text is one range of the old
    ``data`` with the new serial written over the old one's digits (they must be
    there), and whose records are one range
    of the old ``data.cdb``, with their hashes from the index when it has them. No
    Python object is made per record, and per source only its offsets are looked at.
    Raises ValueError when the old pair is not what ``index`` says.
    """
    text, pieces, patches = _assemble(written, serial, index, ipv6_int=ipv6_int, catalog=catalog)
    parts: list[bytes | bytearray | memoryview] = []
    text.emit(index, parts.append)
    return b"".join(parts), text.stamps, pieces, patches


def _assemble(
    written: Sequence[Source],
    serial: int,
    index: Index | None,
    *,
    ipv6_int: bool,
    catalog: str = "",
    sources_id: str | None = None,
) -> tuple[_Text, list[cdb.Piece], list[tuple[int, bytes]]]:
    """:func:`assemble`, with ``data``'s text left as what to write (see
    :meth:`_Text.emit`): numbers and the compiled sources' pieces, no old text read.
    ``sources_id``: the fingerprint of ``written`` when the caller has it."""
    if sources_id is None:
        pairs = list(zip(map(_name, written), map(_digest, written), strict=True))
        sources_id = fingerprint(pairs, ipv6_int=ipv6_int, catalog=catalog)
    banner = banner_of(sources_id, serial)
    text = _Text(banner, str(serial % MODULUS).encode())
    records = _Records((serial & 0xFFFFFFFF).to_bytes(4, "big"))
    old = _Old(index, written)
    # The sources compiled now (one, after a one-file change) are found by map, not a
    # step per source; between them, the kept ones go as ranges of the old pair.
    after = 0
    for k in compress(range(len(written)), map(isinstance, written, repeat(Ready))):
        old.take(written[after:k], text, records)  # type: ignore[arg-type]
        src = written[k]
        assert isinstance(src, Ready)
        text.add(src.pieces)
        records.add(cdb.Piece.of(src.records), src.records.serials)
        after = k + 1
    old.take(written[after:], text, records)  # type: ignore[arg-type]
    return text, records.pieces, records.patches


_name, _digest = operator.attrgetter("name"), operator.attrgetter("digest")
_first = operator.itemgetter(0)


#: How much of the old ``data`` a kept run is read and restamped in at a time.
_CHUNK = 1 << 22


@dataclass(frozen=True, slots=True)
class _Run:
    """A range of the old ``data``: ``length`` bytes from ``start``, with the old
    serial's ``digits`` at each of ``cuts`` (offsets in the range) to restamp."""

    start: int
    length: int
    cuts: list[int]
    digits: bytes


class _Text:
    """``data`` as it is put together: what to write, and where the serials are."""

    def __init__(self, banner: bytes, stamp: bytes) -> None:
        self.parts: list[bytes | _Run] = [banner]
        self.stamps = [len(BANNER)]
        self.at = len(banner)
        self.stamp = stamp

    def add(self, pieces: Sequence[bytes | memoryview]) -> None:
        """A text cut where the serial goes."""
        stamps, stamp = self.stamps, self.stamp
        at = self.at + len(pieces[0])
        for piece in pieces[1:]:
            stamps.append(at)
            at += len(stamp) + len(piece)
        self.parts.append(stamp.join(pieces))
        self.at = at

    def copy(self, start: int, length: int, cuts: list[int], digits: bytes) -> None:
        """``length`` bytes from ``start`` of the old ``data``, with the serial put in
        place of the old serial's ``digits`` at each of ``cuts`` (offsets in the run);
        read when :meth:`emit` writes them."""
        at, grow = self.at, len(self.stamp) - len(digits)
        if grow:  # once in a long while: the new serial has a digit more
            self.stamps.extend([at + cut + grow * i for i, cut in enumerate(cuts)])
        else:  # by map, not a statement per serial: a run has one per zone
            self.stamps.extend(map(operator.add, cuts, repeat(at)))
        self.parts.append(_Run(start, length, cuts, digits))
        self.at = at + length + grow * len(cuts)

    def emit(
        self,
        index: Index | None,
        sink: Callable[[bytes | bytearray | memoryview], None],
        *,
        reuse: bool = False,
    ) -> None:
        """Each piece of ``data`` in order to ``sink``: a kept run read from the old
        ``data`` a few MiB at a time, each chunk restamped in its own buffer, or,
        with ``reuse`` (a sink done with each piece when it returns), all in one.
        Raises ValueError when the old serial is not where the index says (or the
        old ``data`` cannot be read)."""
        stamp = self.stamp
        # One buffer, not a new one per chunk: each new one is zeroed, and at this
        # size it is a new mapping (glibc's threshold), its pages faulted in anew.
        buffer = memoryview(bytearray(_CHUNK)) if reuse else None
        for part in self.parts:
            if not isinstance(part, _Run):
                sink(part)
                continue
            assert index is not None  # a run is copied from the pair of an index
            cuts, digits, width = part.cuts, part.digits, len(part.digits)
            pos, k = 0, 0
            while pos < part.length:
                end = min(pos + _CHUNK, part.length)
                # a chunk never ends inside the digits of a serial
                j = bisect.bisect_left(cuts, end, k)
                if j > k and cuts[j - 1] + width > end:
                    if cuts[j - 1] > pos:
                        j -= 1
                        end = cuts[j]
                    else:  # a chunk smaller than a serial: it holds that one whole
                        end = min(cuts[j - 1] + width, part.length)
                try:
                    if buffer is None:
                        chunk: bytearray | memoryview = index.read(
                            index.data, part.start + pos, end - pos
                        )
                    else:
                        if end - pos > len(buffer):  # a serial longer than a chunk
                            buffer = memoryview(bytearray(end - pos))
                        chunk = buffer[: end - pos]
                        _read_into(index.data, chunk, part.start + pos)
                except OSError as exc:
                    raise ValueError(f"cannot read the pair: {fsutil.describe(exc)}") from None
                _restamp(chunk, [cut - pos for cut in cuts[k:j]], digits, stamp, sink)
                pos, k = end, j


def _read_into(fd: int, view: memoryview, start: int) -> None:
    """``view`` filled from ``start`` of the file ``fd``; ValueError when it ends first."""
    got, want = 0, len(view)
    while got < want:
        n = os.preadv(fd, [view[got:]], start + got)
        if n <= 0:
            raise ValueError("the pair is shorter than its index says")
        got += n


def _restamp(
    chunk: bytearray | memoryview,
    cuts: list[int],
    digits: bytes,
    stamp: bytes,
    sink: Callable[[bytes | bytearray | memoryview], None],
) -> None:
    """``chunk`` to ``sink`` with ``stamp`` in place of ``digits`` at each of ``cuts``.

    When both serials have as many digits (all but once in a long while), the digits
    are written over in the chunk itself and it goes out as one piece: a restamp
    cuts the text at every zone's SOA, and a piece per cut costs more than that."""
    width = len(digits)
    for cut in cuts:
        if bytes(chunk[cut : cut + width]) != digits:
            raise ValueError("the old serial is not where the index says")
    if width == len(stamp):
        for cut in cuts:
            chunk[cut : cut + width] = stamp
        sink(chunk)
        return
    view = memoryview(chunk)
    at = 0
    for cut in cuts:
        sink(view[at:cut])
        sink(stamp)
        at = cut + width
    sink(view[at:])


class _Records:
    """``data.cdb``'s records as they are put together: pieces, and the serial's
    patches (offsets from the first record)."""

    def __init__(self, stamp: bytes) -> None:
        self.pieces: list[cdb.Piece] = []
        self.patches: list[tuple[int, bytes]] = []
        self.at = 0
        self.stamp = stamp

    def add(self, piece: cdb.Piece, serials: Sequence[int]) -> None:
        """``piece``, whose SOA serials are at ``serials`` in it."""
        at, stamp = self.at, self.stamp
        self.patches.extend(zip(map(operator.add, serials, repeat(at)), repeat(stamp)))
        self.pieces.append(piece)
        self.at = at + piece.length


class _Old:
    """The last build's pair, as far as this build copies from it."""

    def __init__(self, index: Index | None, written: Sequence[Source]) -> None:
        self.index = index
        self.width = 0
        self.digits = b""
        if index is not None and any(isinstance(src, Kept) for src in written):
            self.digits = str(index.serial).encode()
            self.width = len(self.digits)

    def take(self, batch: Sequence[Kept], text: _Text, records: _Records) -> None:
        """Kept sources, into ``text`` and ``records``: each stretch of them that
        follows each other in the old pair as one range of each file (found by the
        index's :class:`~dnsmaster.master.buildcache.Layout`: no step per source)."""
        if not batch:
            return
        index = self.index
        assert index is not None  # a Kept source comes with the index of its pair
        layout = index.layout
        for first, end in layout.runs(list(batch)):
            t0, r0, k0 = layout.at(first)
            t1, r1, k1 = layout.at(end)
            # only the runs kept are read, each into the buffer that goes into data
            text.copy(t0, t1 - t0, layout.cuts(t0, t1), self.digits)
            pairs = index.pairs[8 * k0 : 8 * k1] if index.pairs else None
            piece = cdb.Piece(r1 - r0, k1 - k0, fd=index.cdb, offset=r0, index=pairs)
            records.add(piece, layout.patches(r0, r1))


def pieces_of(src: Kept, index: Index) -> tuple[bytes, ...]:
    """The text of ``src``, kept in the pair of ``index``, cut where the serial goes."""
    start = index.layout.at(index.layout.row[src.name])[0]
    text = bytes(index.read(index.data, start, src.text_length(index.width)))
    pieces = []
    pos = 0
    for length in src.pieces:
        pieces.append(text[pos : pos + length])
        pos += length + index.width
    return tuple(pieces)


def keep(output: Path, *, count: int, written: Written, serial: int, now: float) -> None:
    """Keep the installed build for rollback; a failure is logged, never fatal.

    The build is on disk already: losing a rollback point must not cost the
    operator the build itself (nor the push that follows it).
    """
    try:
        archive = Archive(output, count)
        # data is installed, fsynced and never written in place: link, do not copy
        archive.add(
            written.text,
            serial,
            written.sha256,
            written.stamps,
            now,
            source=output / "data",
            lines=written.lines,
            verified=True,
        )
    except ArchiveError as exc:
        get_logger().warning("archive.failed", path=exc.path, error=exc.reason, serial=serial)
