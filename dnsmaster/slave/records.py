"""A confined master's compiled records kept beside its data: ``masters/NAME/records``.

A push from one master must not recompile another master's data, so each section
keeps its records packed in cdb's record layout (:class:`dnsmaster.core.cdb.Packed`),
and the merged data.cdb is written from all of them at once
(:func:`dnsmaster.core.cdb.write_packed`). The file is::

    dnsmaster-records 1 size=S mtime_ns=M sha256=H count=N serials=K blob=B\\n
    K offsets, 8 bytes each, little-endian (the default serials' places in the blob)
    the blob, B bytes

``size``, ``mtime_ns`` and ``sha256`` are those of the section's ``data`` file the
records were compiled from (its size and mtime as the file has them, its trailer's
sha256): a rename keeps them, so records that do not match the ``data`` there now
(an install cut between its renames, data edited by hand) are stale, and the caller
compiles them again from ``data``.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import cdb, stream

__all__ = ["RECORDS", "Stamp", "opened", "stage", "stamp_of"]

#: The records file's name in a master's section.
RECORDS = "records"

_HEADER = re.compile(
    rb"dnsmaster-records 1 size=(\d{1,20}) mtime_ns=(\d{1,25}) sha256=([0-9a-f]{64}) "
    rb"count=(\d{1,20}) serials=(\d{1,20}) blob=(\d{1,20})\n"
)
_HEADER_MAX = 256
_OFFSET = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Stamp:
    """Which ``data`` file records were compiled from."""

    size: int
    mtime_ns: int
    sha256: str
    #: The size without the trailer line: what the merged data takes of it.
    body: int = field(default=0, compare=False)


def stamp_of(data: Path) -> Stamp:
    """The stamp of the ``data`` file there now: its trailer's sha256, read from its
    last line only; data without a trailer (not received from a master) is hashed whole."""
    fd = os.open(data, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        tail_at = max(0, st.st_size - stream.TRAILER_MAX - 1)
        tail = os.pread(fd, stream.TRAILER_MAX + 1, tail_at)
        # split() finds the last line itself: a partial line before it does not matter.
        _, trailer = stream.split(tail)
        if trailer is not None:
            body = st.st_size - len(trailer.line())
            return Stamp(st.st_size, st.st_mtime_ns, trailer.sha256, body)
        digest = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(0)
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return Stamp(st.st_size, st.st_mtime_ns, digest.hexdigest(), st.st_size)
    finally:
        os.close(fd)


def stage(section: Path, stamp: Stamp, packed: cdb.Packed) -> Path:
    """Write ``packed`` as the records of ``stamp``'s data to a temp file in
    ``section``; the temp path (the caller renames it to :data:`RECORDS`)."""
    header = (
        f"dnsmaster-records 1 size={stamp.size} mtime_ns={stamp.mtime_ns} "
        f"sha256={stamp.sha256} count={packed.count} serials={len(packed.serials)} "
        f"blob={len(packed.blob)}\n"
    ).encode()

    def write(fd: int) -> None:
        fsutil.write_all(fd, header + b"".join(_OFFSET.pack(s) for s in packed.serials))
        fsutil.write_all(fd, packed.blob)

    return fsutil.stage(section / RECORDS, write)


@contextlib.contextmanager
def opened(section: Path, stamp: Stamp) -> Iterator[cdb.Packed | None]:
    """The records of ``section`` when they are ``stamp``'s, else None (missing,
    stale, cut short, or not records at all).

    The blob is a view of the file mapped into memory, not a copy: a 1M-line
    master's records (110 MB) are written into the merged data.cdb from the page
    cache. The view is valid inside the ``with`` block only.
    """
    try:
        fd = os.open(section / RECORDS, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, fd)
        head = os.pread(fd, _HEADER_MAX, 0)
        m = _HEADER.match(head)
        found = None if m is None else _check(m, stamp, os.fstat(fd).st_size)
        if found is None:
            yield None
            return
        start, count, serials, size = found
        if size == 0:
            yield cdb.Packed(b"", (), 0)
            return
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        stack.callback(mapped.close)
        view = memoryview(mapped)
        # Released before the map closes (ExitStack runs this first): a live view
        # would make mmap.close() fail.
        stack.callback(view.release)
        offsets = view[start : start + 8 * serials]
        at = tuple(_OFFSET.unpack_from(offsets, 8 * i)[0] for i in range(serials))
        offsets.release()
        blob = view[start + 8 * serials :]
        stack.callback(blob.release)
        yield cdb.Packed(blob, at, count)


def _check(m: re.Match[bytes], stamp: Stamp, file_size: int) -> tuple[int, int, int, int] | None:
    """(where the offsets start, count, serials, blob size), or None when the header
    is not ``stamp``'s or the file is not as long as it says."""
    size, mtime_ns, sha, count, serials, blob = m.groups()
    if (int(size), int(mtime_ns), sha.decode()) != (stamp.size, stamp.mtime_ns, stamp.sha256):
        return None
    start = m.end()
    if file_size != start + 8 * int(serials) + int(blob):
        return None
    return start, int(count), int(serials), int(blob)
