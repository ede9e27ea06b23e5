"""cdb as djbdns' cdb_make writes it (spec §8), and a reader for it.

:func:`dumps` is the reference writer: plain Python, bytes in and bytes out.
:func:`write_fd` gives the same bytes through C when the compiler's accelerator is
there (:func:`dnsmaster.core.accel.compiler`), because hashing a million keys in
Python costs seconds; else through :func:`dumps`. Tests hold both to byte identity,
and to tinydns-data's own files.

A build writes most of its records from :class:`Packed` blobs instead: each source's
records already in cdb's record layout, as the build cache keeps them, so a build
from the cache makes no Python object per record. :func:`write_packed` writes the
cdb of a run of them, through the packed records' accelerator
(:func:`dnsmaster.core.accel.records`) or, with the same bytes and the same
refusals, through :func:`unpack` and :func:`write_fd`.

:func:`write_pieces` writes a cdb from *pieces*: ranges of packed records in open
files (the record area of an installed data.cdb, a kept records file) or in memory,
with 4-byte patches (the SOA serials of a restamp). File ranges are copied by the
kernel; keys are read in bounded chunks to be hashed, or their hashes come from an
index the piece carries; so its memory is the cdb's (hash, position) pairs and
tables, never the records.

The two accelerators share one C cdb writer (``cdbmake.h``), so there are two
implementations of cdb_make in all: :func:`dumps` and that one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain

from dnsmaster.core import accel
from dnsmaster.errors import CdbTooLarge

__all__ = [
    "HEADER_SIZE",
    "CdbReader",
    "Packed",
    "Piece",
    "dumps",
    "hash_key",
    "pack",
    "packs_fast",
    "places",
    "scan",
    "size_from_header",
    "unpack",
    "write_fd",
    "write_packed",
    "write_pieces",
]

_PAIR = struct.Struct("<II")
_HEADER_SIZE = 2048
#: The fixed header: 256 (position, slots) pairs, one per hash table.
HEADER_SIZE = _HEADER_SIZE
_HEADER = struct.Struct("<512I")
_LIMIT = 1 << 32
_U32 = 0xFFFFFFFF
# An SOA's data ends in its five numbers, the serial first (spec 3.8).
_SOA_NUMBERS = 20
_CUT = "a record runs past the end of the records"
#: A tinydns record's value starts with its type: SOA is 6.
_SOA_TYPE = b"\x00\x06"
_NOT_SERIAL = "a serial offset is not the serial of an SOA record"


def hash_key(key: bytes) -> int:
    """§8.2: h = ((h * 33) mod 2**32) xor byte, from 5381."""
    h = 5381
    for c in key:
        h = ((h * 33) & 0xFFFFFFFF) ^ c
    return h


def dumps(keys: Sequence[bytes], values: Sequence[bytes]) -> bytes:
    """The cdb file holding ``keys[i] -> values[i]`` in insertion order (§8.3)."""
    out = bytearray(_HEADER_SIZE)
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    hashes: dict[bytes, int] = {}
    pos = _HEADER_SIZE
    pack = _PAIR.pack
    for key, value in zip(keys, values, strict=True):
        h = hashes.get(key)
        if h is None:
            h = hashes[key] = hash_key(key)
        buckets[h & 255].append((h, pos))
        out += pack(len(key), len(value))
        out += key
        out += value
        pos += 8 + len(key) + len(value)
        if pos >= _LIMIT:
            raise CdbTooLarge
    header, tables = _tables(buckets, pos)
    out += tables
    out[:_HEADER_SIZE] = header
    return bytes(out)


def _tables(buckets: Sequence[Sequence[tuple[int, int]]], pos: int) -> tuple[bytes, bytes]:
    """The header and the hash tables of the records whose (hash, position) pairs,
    by table and in insertion order, are ``buckets``, the records ending at ``pos``."""
    pack = _PAIR.pack
    header = bytearray()
    out = bytearray()
    for entries in buckets:
        n = 2 * len(entries)
        header += pack(pos, n)  # empty tables still record the running position
        if not n:
            continue
        slots: list[tuple[int, int]] = [(0, 0)] * n
        for h, p in entries:
            s = (h >> 8) % n
            while slots[s][1]:
                s = (s + 1) % n
            slots[s] = (h, p)
        for h, p in slots:
            out += pack(h, p)
        pos += 8 * n
        if pos >= _LIMIT:
            raise CdbTooLarge
    return bytes(header), bytes(out)


def write_fd(fd: int, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Write the cdb of :func:`dumps` to the open file ``fd`` (at offset 0).

    Through the accelerator's ``write_cdb`` when it is there (every write() and the
    hash tables without the GIL), else :func:`dumps`. Raises
    :class:`~dnsmaster.errors.CdbTooLarge` past 4 GiB and OSError when a write fails.
    """
    c = accel.compiler()
    if c is not None:
        c.write_cdb(fd, keys, values)
        return
    view = memoryview(dumps(keys, values))
    while view:
        view = view[_write(fd, view) :]


@dataclass(frozen=True, slots=True)
class Packed:
    """Records as one blob in cdb's record layout (§8.3: klen, dlen, key, data, repeated).

    ``serials`` are the offsets in ``blob`` of the serials (4 bytes, big-endian) of
    the SOA records that take the build's serial (``Records.soa_defaults``), which
    :func:`write_packed` stamps as it writes. ``count`` is how many records. A blob
    read back from a file may be a view into the bytes read, rather than a copy.
    """

    blob: bytes | memoryview
    serials: tuple[int, ...]
    count: int


def packs_fast() -> bool:
    """Whether :func:`write_packed` runs in C; without it, it costs more than
    :func:`write_fd` of the same records (it unpacks them first)."""
    return accel.records() is not None


def pack(keys: Sequence[bytes], values: Sequence[bytes], soa_defaults: Sequence[int]) -> Packed:
    """``keys[i] -> values[i]`` as one :class:`Packed`, the SOA records of the
    (ascending) indexes ``soa_defaults`` taking the build's serial.

    Raises ValueError for an index that is not ascending, past the records, or of
    a record too short for an SOA's numbers.
    """
    accelerator = accel.records()
    if accelerator is not None:
        blob, serials = accelerator.pack(keys, values, soa_defaults)
        return Packed(blob, serials, len(keys))
    if len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    ends = list(accumulate(8 + len(k) + len(v) for k, v in zip(keys, values, strict=True)))
    serials = []
    previous = -1
    for i in soa_defaults:
        if i >= len(keys):
            raise ValueError("an index of soa_defaults past the records")
        if i <= previous:
            raise ValueError("soa_defaults must be ascending")
        if len(values[i]) < _SOA_NUMBERS:
            raise ValueError(f"record {i}: too short for an SOA serial")
        serials.append(ends[i] - _SOA_NUMBERS)
        previous = i
    pack_pair = _PAIR.pack
    records = ((pack_pair(len(k), len(v)), k, v) for k, v in zip(keys, values, strict=True))
    return Packed(b"".join(chain.from_iterable(records)), tuple(serials), len(keys))


def scan(blob: bytes | memoryview, serials: Sequence[int]) -> int:
    """How many records ``blob`` holds, once it is checked to be :class:`Packed`'s.

    Raises ValueError when ``blob`` is not whole records, or an offset of
    ``serials`` is not (in ascending order) the serial of a record with an SOA's
    numbers: what :func:`write_packed` would refuse, found before it runs.
    """
    accelerator = accel.records()
    if accelerator is not None:
        count: int = accelerator.scan(blob, serials)
        return count
    return len(_walk(blob, serials))


def _walk(blob: bytes | memoryview, serials: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, key length, data length) of each record of ``blob``, checked (see scan)."""
    size = len(blob)
    found = []
    at = 0
    s = 0
    unpack_pair = _PAIR.unpack_from
    while at < size:
        if size - at < 8:
            raise ValueError(_CUT)
        klen, dlen = unpack_pair(blob, at)
        end = at + 8 + klen + dlen
        if end > size:
            raise ValueError(_CUT)
        if s < len(serials) and serials[s] < end:
            value = at + 8 + klen
            if (
                dlen < _SOA_NUMBERS
                or serials[s] != end - _SOA_NUMBERS
                or blob[value : value + 2] != _SOA_TYPE
            ):
                raise ValueError(_NOT_SERIAL)
            s += 1
        found.append((at, klen, dlen))
        at = end
    if s != len(serials):
        raise ValueError(_NOT_SERIAL)
    return found


def places(blob: bytes | memoryview, serial: int) -> list[int]:
    """The offsets in ``blob`` (packed records) of the serials of its SOA records whose
    serial is ``serial``, as :class:`Packed`'s ``serials`` count them: where a restamp
    to another serial patches them. Raises ValueError when ``blob`` is not whole
    records."""
    accelerator = accel.records()
    if accelerator is not None:
        found: list[int] = accelerator.places(blob, serial & _U32)
        return found
    want = (serial & _U32).to_bytes(4, "big")
    out = []
    for at, klen, dlen in _walk(blob, ()):
        end = at + 8 + klen + dlen
        value = at + 8 + klen
        if (
            dlen >= _SOA_NUMBERS
            and blob[value : value + 2] == _SOA_TYPE
            and blob[end - _SOA_NUMBERS : end - _SOA_NUMBERS + 4] == want
        ):
            out.append(end - _SOA_NUMBERS)
    return out


def unpack(packed: Packed, serial: int) -> tuple[list[bytes], list[bytes]]:
    """The keys and values of ``packed``, its SOA records stamped with ``serial``.

    The reference for :func:`write_packed`. Raises ValueError as :func:`scan` does.
    """
    records = _walk(packed.blob, packed.serials)
    blob = bytearray(packed.blob)
    stamp = (serial & _U32).to_bytes(4, "big")  # a serial lives on the 32-bit circle
    for at in packed.serials:
        blob[at : at + 4] = stamp
    keys = [bytes(blob[at + 8 : at + 8 + klen]) for at, klen, _ in records]
    values = [bytes(blob[at + 8 + klen : at + 8 + klen + dlen]) for at, klen, dlen in records]
    return keys, values


def write_packed(fd: int, packs: Sequence[Packed], serial: int) -> None:
    """Write to ``fd`` the cdb of every record of ``packs`` in order, the SOA records
    of their ``serials`` stamped with ``serial``: :func:`dumps`'s bytes.

    Through ``_cdbblob`` when built (every blob is checked, hashed and written
    without the GIL, so the thread writing ``data`` runs meanwhile), else
    :func:`unpack` and :func:`write_fd`. Raises ValueError for a blob :func:`scan`
    refuses (before writing anything), :class:`~dnsmaster.errors.CdbTooLarge` past
    4 GiB and OSError when a write fails.
    """
    accelerator = accel.records()
    if accelerator is not None:
        blobs = [p.blob for p in packs]
        accelerator.write(fd, blobs, [p.serials for p in packs], serial & _U32)
        return
    keys: list[bytes] = []
    values: list[bytes] = []
    for packed in packs:
        k, v = unpack(packed, serial)
        keys += k
        values += v
    write_fd(fd, keys, values)


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` bytes of packed records (:class:`Packed`'s layout), ``count`` of them,
    for :func:`write_pieces`: ``blob`` in memory, or when it is None, at ``offset``
    in the open file ``fd`` (read with pread, never through the file's own offset).

    ``index``, when given, is the records' (hash, position) pairs, 8 bytes a record,
    both little-endian u32: the cdb hash of the key and where the record starts in
    the file, as ``offset`` counts (so ``offset`` for the first; in a blob, from
    ``offset`` too). That is how a cdb's own pairs read (``pairs_to`` of
    :func:`write_pieces`), so a range of an installed data.cdb takes a slice of its
    pairs as it is. The records are then not read at all, only copied; the index is
    taken at its word, so it must be the one of these very records. Without it the
    keys are read, in bounded chunks.
    """

    length: int
    count: int
    fd: int = -1
    offset: int = 0
    blob: bytes | memoryview | None = None
    index: bytes | memoryview | None = None

    @classmethod
    def of(cls, packed: Packed) -> Piece:
        """The records of ``packed``, in memory (its ``serials`` are not patches:
        give them to :func:`write_pieces` as such, offset by where the piece lands)."""
        return cls(len(packed.blob), packed.count, blob=packed.blob)


#: How much of a piece's file the pure-Python path reads at once.
_CHUNK = 1 << 20


def write_pieces(
    fd: int,
    pieces: Sequence[Piece],
    patches: Sequence[tuple[int, bytes]] = (),
    *,
    pairs_to: int | None = None,
) -> None:
    """Write to ``fd`` the cdb of every record of ``pieces`` in order, then patched.

    ``patches`` are ``(offset, four bytes)``, ascending and apart, each offset
    counted from the first byte of the first record (where ``pieces`` are laid end to
    end) and inside one record's data, never its lengths or key: the bytes there are
    replaced as they are written, as a restamp changes an SOA's serial. The result
    is :func:`dumps`'s bytes for the records so patched.

    File ranges go by ``copy_file_range`` where the kernel allows it between the two
    files (else pread and write, in bounded chunks), except where patches are close
    together (less than 64 KiB apart, as a restamp's serials are): those stretches
    are read in chunks, patched in memory and written; keys are read in chunks of a
    MiB to be hashed, unless the piece has an ``index``. Peak memory is then 8 bytes
    a record for the cdb's pairs (and as much again for its tables), never the
    records themselves. ``fd`` is written from where it stands, sequentially.
    ``pairs_to``, an open fd, gets the written cdb's (hash, position) pairs in
    record order, in :class:`Piece`'s ``index`` layout (positions from the cdb's
    start), before the cdb itself is written.

    Through ``_cdbblob`` when built (all of it without the GIL), else pure Python,
    with the same bytes and refusals. Raises ValueError before anything is written
    for pieces that are not whole records, whose count or index is not theirs, or a
    patch out of place (a record's lengths and keys are checked only where they are
    read, not where an index stands for them); ValueError too for a file shorter
    than its piece (then the output is cut short); CdbTooLarge past 4 GiB; OSError
    when a read or a write fails.
    """
    accelerator = accel.records()
    if accelerator is not None:
        accelerator.write_pieces(
            fd,
            [(p.fd, p.offset, p.length, p.count, p.blob, p.index) for p in pieces],
            patches,
            -1 if pairs_to is None else pairs_to,
        )
        return
    _write_pieces(fd, pieces, patches, pairs_to)


def _second(pair: tuple[int, int]) -> int:
    return pair[1]


_PIECE_REFUSED = (
    "",
    _CUT,
    "a piece does not hold the count of records it states",
    "an index does not fit its piece (8 bytes a record, positions ascending from 0)",
    "a patch is not inside a record's data",
)


def _write_pieces(
    fd: int, pieces: Sequence[Piece], patches: Sequence[tuple[int, bytes]], pairs_to: int | None
) -> None:
    """The pure-Python :func:`write_pieces` (a list of pairs: slow, but the same bytes)."""
    end = _checked_pieces(pieces, patches)
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    area = 0
    todo = list(reversed(patches))  # popped from the end, in order
    for p in pieces:
        refused = _index_piece(p, area, buckets, todo)
        if refused:
            raise ValueError(_PIECE_REFUSED[refused])
        area += p.length
    if pairs_to is not None:
        pairs = sorted(chain.from_iterable(buckets), key=_second)
        _write_whole(pairs_to, b"".join(_PAIR.pack(h, p) for h, p in pairs))
    header, tables = _tables(buckets, end)
    _write_whole(fd, header)
    area = 0
    todo = list(reversed(patches))
    for p in pieces:
        _put_piece(fd, p, area, todo)
        area += p.length
    _write_whole(fd, tables)


def _checked_pieces(pieces: Sequence[Piece], patches: Sequence[tuple[int, bytes]]) -> int:
    """Where the records of ``pieces`` end in the cdb, once the checks that need no
    reading pass (the refusals of the C path, in its order)."""
    end = _HEADER_SIZE + sum(p.length for p in pieces)
    if any(len(b) != 4 for _, b in patches):
        raise ValueError("a patch is 4 bytes")
    for p in pieces:
        if p.blob is not None and len(p.blob) != p.length:
            raise ValueError("a piece's blob is not its length")
        if p.index is not None and len(p.index) != 8 * p.count:
            raise ValueError(_PIECE_REFUSED[3])
    if any(p.count > p.length // 8 for p in pieces):
        raise ValueError(_PIECE_REFUSED[2])
    if end + 16 * sum(p.count for p in pieces) >= _LIMIT:
        raise CdbTooLarge
    last = -4
    for at, _ in patches:
        if at < last + 4 or at + 4 > end - _HEADER_SIZE:
            raise ValueError(_PIECE_REFUSED[4])
        last = at
    return end


def _write_whole(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[_write(fd, view) :]


def _put_piece(fd: int, p: Piece, area: int, todo: list[tuple[int, bytes]]) -> None:
    """The records of ``p`` to ``fd`` in chunks, with the patches of ``todo`` (reversed)
    that fall in it; ``area`` is where ``p`` starts among the records.

    Each chunk is patched in memory and written whole: one write per chunk however
    many serials a restamp puts in it (a write per patch cost far more than the
    copying)."""
    import os  # noqa: PLC0415 - the rest of this module stays free of I/O imports

    at = 0
    while at < p.length:
        step = min(p.length - at, _CHUNK)
        if p.blob is not None:
            chunk = bytearray(p.blob[at : at + step])
        else:
            chunk = bytearray(os.pread(p.fd, step, p.offset + at))
            if len(chunk) < step:
                raise ValueError("a piece runs past the end of its file")
        lo, hi = area + at, area + at + step
        while todo and todo[-1][0] < hi:
            where, stamp = todo[-1]
            first, last = max(where, lo), min(where + 4, hi)  # a patch may straddle two
            chunk[first - lo : last - lo] = stamp[first - where : last - where]
            if where + 4 > hi:
                break  # its rest is in the next chunk
            todo.pop()
        _write_whole(fd, chunk)
        at += step


def _index_piece(
    p: Piece, area: int, buckets: list[list[tuple[int, int]]], todo: list[tuple[int, bytes]]
) -> int:
    """Add ``p``'s (hash, position) pairs to ``buckets``, checking the patches of
    ``todo`` (reversed) that fall in it; 0, or the index of a reason refused."""
    import os  # noqa: PLC0415 - the rest of this module stays free of I/O imports

    base = _HEADER_SIZE + area
    if p.index is not None:
        starts = [
            (h, at - p.offset)
            for h, at in (_PAIR.unpack_from(p.index, 8 * k) for k in range(p.count))
        ]
        for k, (h, at) in enumerate(starts):
            end = starts[k + 1][1] if k + 1 < p.count else p.length
            if (k == 0 and at != 0) or end <= at or end > p.length or end - at < 8:
                return 3
            while todo and todo[-1][0] < area + end:
                if todo[-1][0] < area + at + 8 or todo[-1][0] + 4 > area + end:
                    return 4
                todo.pop()
            buckets[h & 255].append((h, base + at))
        return 0
    window = b""
    start = 0

    def view(at: int, n: int) -> bytes:
        nonlocal window, start
        if p.blob is not None:
            return bytes(p.blob[at : at + n])
        if not (start <= at and at + n <= start + len(window)):
            start = at
            window = os.pread(p.fd, max(n, min(_CHUNK, p.length - at)), p.offset + at)
            if len(window) < n:
                raise ValueError("a piece runs past the end of its file")
        return window[at - start : at - start + n]

    at = count = 0
    while at < p.length:
        if p.length - at < 8:
            return 1
        klen, dlen = _PAIR.unpack(view(at, 8))
        end = at + 8 + klen + dlen
        if end > p.length:
            return 1
        if count == p.count:
            return 2
        key = view(at + 8, klen)
        while todo and todo[-1][0] < area + end:
            if todo[-1][0] < area + at + 8 + klen or todo[-1][0] + 4 > area + end:
                return 4
            todo.pop()
        h = hash_key(key)
        buckets[h & 255].append((h, base + at))
        count += 1
        at = end
    return 0 if count == p.count else 2


def size_from_header(header: bytes) -> int:
    """The size a cdb must have, from its 2048-byte header: where its last table ends.

    cdb_make (and so :func:`dumps`) writes the 256 tables one after another
    at the very end, so a whole file ends exactly there; a cut one does not.
    """
    words: tuple[int, ...] = _HEADER.unpack(header)
    return max(words[i] + 8 * words[i + 1] for i in range(0, 512, 2))


def _write(fd: int, view: memoryview) -> int:
    import os  # noqa: PLC0415 - the rest of this module stays free of I/O imports

    return os.write(fd, view)


class CdbReader:
    """Look-ups in a cdb held in memory (§8.5)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER_SIZE:
            raise ValueError(f"not a cdb: {len(data)} bytes, the header alone is 2048")
        self._data = data
        self._end = _PAIR.unpack_from(data, 0)[0]

    def get_all(self, key: bytes) -> list[bytes]:
        """Every value stored under ``key``, in insertion order."""
        data = self._data
        h = hash_key(key)
        tpos, n = _PAIR.unpack_from(data, (h & 255) * 8)
        found: list[bytes] = []
        if not n:
            return found
        s = (h >> 8) % n
        for _ in range(n):
            sh, rp = _PAIR.unpack_from(data, tpos + 8 * s)
            s = (s + 1) % n
            if not rp:
                break
            if sh != h:
                continue
            klen, dlen = _PAIR.unpack_from(data, rp)
            if klen == len(key) and data[rp + 8 : rp + 8 + klen] == key:
                found.append(data[rp + 8 + klen : rp + 8 + klen + dlen])
        return found

    def get(self, key: bytes) -> bytes | None:
        """The first value stored under ``key``, or None."""
        values = self.get_all(key)
        return values[0] if values else None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every record in insertion order (a sequential dump)."""
        data = self._data
        pos = _HEADER_SIZE
        while pos < self._end:
            klen, dlen = _PAIR.unpack_from(data, pos)
            start = pos + 8
            yield data[start : start + klen], data[start + klen : start + klen + dlen]
            pos = start + klen + dlen

    def __len__(self) -> int:
        return sum(1 for _ in self.items())
