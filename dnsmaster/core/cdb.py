"""cdb as djbdns' cdb_make writes it (spec §8), and a reader for it.

:func:`dumps` is the reference writer: plain Python, bytes in and bytes out.
:func:`write_fd` gives the same bytes through C, because hashing a million keys in
Python costs seconds: ``write_cdb`` of the optional accelerator (``_ccompile.c``) when
it is built and ``DNSMASTER_PURE_PYTHON`` is not set, else cdbx when it is installed,
else :func:`dumps`. Tests hold all three to byte identity.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "HEADER_SIZE",
    "CdbReader",
    "CdbTooLarge",
    "dumps",
    "hash_key",
    "size_from_header",
    "write_fd",
]

_PAIR = struct.Struct("<II")
_HEADER_SIZE = 2048
#: The fixed header: 256 (position, slots) pairs, one per hash table.
HEADER_SIZE = _HEADER_SIZE
_HEADER = struct.Struct("<512I")
_LIMIT = 1 << 32


class CdbTooLarge(ValueError):
    """The database would pass 4 GiB, where cdb's 32-bit positions end (§8.4)."""


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
            raise CdbTooLarge(CdbTooLarge.__doc__)
    header = bytearray()
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
            raise CdbTooLarge(CdbTooLarge.__doc__)
    out[:_HEADER_SIZE] = header
    return bytes(out)


def _load_writer() -> Callable[[int, Sequence[bytes], Sequence[bytes]], None] | None:
    """The accelerator's ``write_cdb``, or None when it is absent or refused.

    Refused by the same variable as the compile's accelerator
    (``compiler.PURE_PYTHON_ENV``, which imports this module).
    """
    import os  # noqa: PLC0415 - the rest of this module stays free of I/O imports

    if os.environ.get("DNSMASTER_PURE_PYTHON", "") not in {"", "0"}:
        return None
    try:
        from dnsmaster.core._ccompile import write_cdb  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return write_cdb


#: The C writer of the accelerator; None means cdbx or :func:`dumps`. Tests set it
#: to None to run those.
_c_write: Callable[[int, Sequence[bytes], Sequence[bytes]], None] | None = _load_writer()


def write_fd(fd: int, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
    """Write the cdb of :func:`dumps` to the open file ``fd`` (at offset 0).

    Uses the accelerator's ``write_cdb`` (every write() and the hash tables without
    the GIL), else cdbx when importable; both lay out records and tables exactly as
    cdb_make does when fed in the same order. Falls back to :func:`dumps`. Raises
    :class:`CdbTooLarge` past 4 GiB and OSError when a write fails.
    """
    if _c_write is not None:
        _c_write(fd, keys, values)
        return
    try:
        import cdbx  # noqa: PLC0415 - optional accelerator, only the build needs it
    except ImportError:
        data = dumps(keys, values)
        view = memoryview(data)
        while view:
            view = view[_write(fd, view) :]
        return
    if len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    maker = cdbx.CDB.make(fd, close=False, mmap=False)
    deque(map(maker.add, keys, values), maxlen=0)  # the loop runs in C
    maker.commit().close()


def size_from_header(header: bytes) -> int:
    """The size a cdb must have, from its 2048-byte header: where its last table ends.

    cdb_make (and cdbx, and :func:`dumps`) write the 256 tables one after another
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
