"""The output directory as a build writes it: ``data`` and ``data.cdb`` installed as
one pair, or nothing at all, and each build kept for rollback.

Both files are staged as complete, fsynced temp files and renamed into place under
a journal (:func:`dnsmaster.fsutil.install_pair`); any error raises before the first
rename, so the directory is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import cdb
from dnsmaster.core.banner import BANNER
from dnsmaster.core.makedata import banner_line, built_from, fingerprint
from dnsmaster.core.serial import MODULUS
from dnsmaster.errors import ArchiveError, BuildError, CdbTooLarge
from dnsmaster.log import get_logger
from dnsmaster.master.archive import Archive
from dnsmaster.master.buildcache import Index, Kept, Ready
from dnsmaster.master.compiling import Source

__all__ = [
    "StalePair",
    "assemble",
    "cannot_write",
    "check_output",
    "head",
    "keep",
    "pieces_of",
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
    output: Path, compiled: Sequence[Source], data_head: bytes, *, ipv6_int: bool, catalog: str = ""
) -> bool:
    """Whether the pair in ``output`` is complete and was built from these sources
    (with these options: see :func:`dnsmaster.core.makedata.fingerprint`)."""
    pairs = [(src.name, src.digest) for src in compiled]
    sources = fingerprint(pairs, ipv6_int=ipv6_int, catalog=catalog)
    return (
        built_from(data_head) == sources
        and not fsutil.interrupted_install(output)
        and (output / "data.cdb").is_file()
    )


def write_pair(
    output: Path,
    written: Sequence[Source],
    serial: int,
    index: Index | None,
    *,
    ipv6_int: bool,
    catalog: str = "",
) -> tuple[bytes, list[int], str, bytes]:
    """Stage both files, then install them as a pair.

    ``written`` are the build's sources in order: compiled now (their text and
    records in memory) or kept from the last build (copied from the pair ``index``
    describes, by :func:`assemble`). ``catalog`` is the catalog zone's name when
    the last of ``written`` is the catalog's section (it goes into the banner's
    fingerprint).

    Returns ``data``, the offsets of its serials, its sha256 in hex, and the
    (hash, position) pairs of ``data.cdb``'s records, for the next build to copy
    them without reading them. A thread hashes, writes and fsyncs ``data`` while
    this one writes the cdb (:func:`~dnsmaster.core.cdb.write_pieces`: the kept
    records copied from the old ``data.cdb`` by the kernel, their hashes taken
    from the index): both spend their time in hashlib, the C writer and system
    calls, which release the GIL, so on two cores they overlap.
    """
    data_final = output / "data"
    cdb_final = output / "data.cdb"
    try:
        data, stamps, pieces, patches = assemble(
            written, serial, index, ipv6_int=ipv6_int, catalog=catalog
        )
    except ValueError as exc:  # the pair on disk is not what its index says
        raise StalePair(str(output), str(exc)) from None
    except OSError as exc:
        raise StalePair(str(output), f"cannot read the pair: {fsutil.describe(exc)}") from None

    def stage_data() -> tuple[Path, str]:
        sha256 = hashlib.sha256(data).hexdigest()
        tmp = fsutil.stage(data_final, lambda fd: fsutil.write_all(fd, data))
        return tmp, sha256

    failure: BaseException | None = None
    data_tmp: Path | None = None
    cdb_tmp: Path | None = None
    sha256 = ""
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
            data_tmp, sha256 = data_job.result()
        except OSError as exc:
            # data is written first in spirit: its error is the one to report
            failure = cannot_write(output, exc)
        except BaseException as exc:  # out of memory
            failure = exc
        staged = [tmp for tmp in (data_tmp, cdb_tmp) if tmp is not None]
        if failure is not None or data_tmp is None or cdb_tmp is None:
            fsutil.discard(staged)
            raise failure or BuildError(str(output), "cannot write")
        try:
            # One pair, under a journal: a crash between the two renames is seen by
            # the next run (is_current is then false, and it builds both again).
            fsutil.install_pair(output, data_tmp, cdb_tmp, sha256)
            pairs.seek(0)
            hashes = pairs.read()
        except OSError as exc:
            fsutil.discard(staged)
            raise cannot_write(output, exc) from None
    return data, stamps, sha256, hashes


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
    """
    banner = banner_line(
        [(src.name, src.digest) for src in written], serial, ipv6_int=ipv6_int, catalog=catalog
    )
    text = _Text(banner, str(serial % MODULUS).encode())
    records = _Records((serial & 0xFFFFFFFF).to_bytes(4, "big"))
    old = _Old(index, written)
    batch: list[Kept] = []
    for src in written:
        if isinstance(src, Ready):
            old.take(batch, text, records)
            batch = []
            text.add(src.pieces)
            records.add(cdb.Piece.of(src.records), src.records.serials)
        else:
            batch.append(src)
    old.take(batch, text, records)
    return b"".join(text.parts), text.stamps, records.pieces, records.patches


class _Text:
    """``data`` as it is put together: its parts, and where the serials are."""

    def __init__(self, banner: bytes, stamp: bytes) -> None:
        self.parts: list[bytes | bytearray | memoryview] = [banner]
        self.stamps = [len(BANNER)]
        self.at = len(banner)
        self.stamp = stamp

    def add(self, pieces: Sequence[bytes | memoryview]) -> None:
        """A text cut where the serial goes."""
        parts, stamps, stamp = self.parts, self.stamps, self.stamp
        at = self.at + len(pieces[0])
        parts.append(pieces[0])
        for piece in pieces[1:]:
            stamps.append(at)
            parts.append(stamp)
            parts.append(piece)
            at += len(stamp) + len(piece)
        self.at = at

    def copy(self, run: bytearray, cuts: list[int], digits: bytes) -> None:
        """``run``, a range of the old ``data``, with the serial put in place of the old
        serial's ``digits`` at each of ``cuts`` (offsets in ``run``). Raises ValueError
        when they are not there.

        When both serials have as many digits (all but once in a long while), the
        digits are written over in ``run`` itself and it goes in as one part: a restamp
        cuts the text at every zone's SOA, and a part per cut cost more than the
        copying."""
        parts, stamps, stamp = self.parts, self.stamps, self.stamp
        at = self.at
        width = len(digits)
        starts_with = run.startswith
        if width == len(stamp):
            for cut in cuts:
                if not starts_with(digits, cut):
                    raise ValueError("the old serial is not where the index says")
                run[cut : cut + width] = stamp
            stamps.extend([at + cut for cut in cuts])
            parts.append(run)
            self.at = at + len(run)
            return
        view = memoryview(run)
        pos = 0
        for cut in cuts:
            if not starts_with(digits, cut):
                raise ValueError("the old serial is not where the index says")
            parts.append(view[pos:cut])
            at += cut - pos
            stamps.append(at)
            parts.append(stamp)
            at += len(stamp)
            pos = cut + width
        parts.append(view[pos:])
        self.at = at + len(run) - pos


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
        self.patches.extend([(at + s, stamp) for s in serials])
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

    def take(self, batch: list[Kept], text: _Text, records: _Records) -> None:
        """Kept sources, into ``text`` and ``records``: each stretch of them that
        follows each other in the old pair as one range of each file."""
        if not batch:
            return
        index = self.index
        assert index is not None  # a Kept source comes with the index of its pair
        at_of = index.at
        starts = [at_of[src.name] for src in batch]
        width = self.width
        i, n = 0, len(batch)
        while i < n:
            t0, r0, k0 = t1, r1, k1 = starts[i]
            cuts: list[int] = []
            serials: list[int] = []
            while i < n and starts[i] == (t1, r1, k1):
                src = batch[i]
                pieces = src.pieces
                for length in pieces[:-1]:
                    t1 += length
                    cuts.append(t1 - t0)
                    t1 += width
                t1 += pieces[-1]
                if src.serials:
                    base = r1 - r0
                    serials.extend([base + s for s in src.serials])
                r1 += src.records
                k1 += src.nrecords
                i += 1
            # only the runs kept are read, each into the buffer that goes into data
            text.copy(index.read(index.data, t0, t1 - t0), cuts, self.digits)
            pairs = index.pairs[8 * k0 : 8 * k1] if index.pairs else None
            piece = cdb.Piece(r1 - r0, k1 - k0, fd=index.cdb, offset=r0, index=pairs)
            records.add(piece, serials)


def pieces_of(src: Kept, index: Index) -> tuple[bytes, ...]:
    """The text of ``src``, kept in the pair of ``index``, cut where the serial goes."""
    start = index.at[src.name][0]
    text = bytes(index.read(index.data, start, src.text_length(index.width)))
    pieces = []
    pos = 0
    for length in src.pieces:
        pieces.append(text[pos : pos + length])
        pos += length + index.width
    return tuple(pieces)


def keep(
    output: Path,
    *,
    count: int,
    data: bytes,
    serial: int,
    sha256: str,
    stamps: list[int],
    now: float,
) -> None:
    """Keep the installed build for rollback; a failure is logged, never fatal.

    The build is on disk already: losing a rollback point must not cost the
    operator the build itself (nor the push that follows it).
    """
    try:
        archive = Archive(output, count)
        # data is installed, fsynced and never written in place: link, do not copy
        archive.add(data, serial, sha256, stamps, now, source=output / "data")
    except ArchiveError as exc:
        get_logger().warning("archive.failed", path=exc.path, error=exc.reason, serial=serial)
