"""What a slave is sent: the full data or a delta, compressed or not.

What is sent depends on what the slave's receiver speaks (its ``status`` line,
:mod:`dnsmaster.protocol`): protocol 1 gets the data and its trailer, protocol 2 a
delta against the build it holds when the master has that build's bytes
(:mod:`dnsmaster.core.delta`), compressed with zlib when the slave's ``compress``
says so (:func:`compresses`). Legacy slaves (classic ``update-dns``) get the plain
data. An :class:`Offer` is what the master knows of a slave; :func:`tries_for` turns
it into what to try, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dnsmaster.config import Slave
from dnsmaster.core.stream import Trailer, seal
from dnsmaster.master import linediff
from dnsmaster.protocol import DELTA, ZLIB
from dnsmaster.transport.channel import FEED_READ, FileRange, Payload, payload_size

__all__ = [
    "NO_SMALLER_DELTA",
    "Data",
    "DataFile",
    "Offer",
    "Send",
    "compressed",
    "compresses",
    "compute_under",
    "payload_for",
    "pieces",
    "text_of",
    "tries_for",
    "whole",
]

#: zlib's level: 6 (its default) makes 28 MB of data 4.6 MB in 0.5 s, once per build
#: for every slave; level 1 makes 5.8 MB in 0.17 s. The bytes are the cost on a WAN.
_ZLIB_LEVEL = 6


class DataFile:
    """A build's data text in a file, read by ranges through a descriptor opened
    once: a build renamed over the file's name later changes nothing here, and a
    full push streams it from the file instead of holding it in memory. The
    descriptor is closed by :meth:`close`, or when the object goes.

    ``sha256`` is the text's when the caller knows it (a kept build's name), else
    it is computed from the file as it is opened.
    """

    def __init__(self, path: Path, *, sha256: str | None = None) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._closer = weakref.finalize(self, os.close, fd)
        self._fd = fd
        self.path = path
        try:
            self.size = os.fstat(fd).st_size
            self.sha256 = sha256 if sha256 is not None else self._digest()
        except OSError:
            self.close()
            raise

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for at in range(0, self.size, FEED_READ):
            digest.update(self.read(at, FEED_READ))
        return digest.hexdigest()

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer at the end of the file)."""
        return os.pread(self._fd, size, offset)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        self._closer()


#: A build's data text as a push takes it: bytes in memory, or a file.
Data = bytes | DataFile


def text_of(data: Data) -> linediff.Text:
    """``data`` as a text read by ranges."""
    return linediff.InMemory(data) if isinstance(data, bytes) else data


def pieces(data: Data) -> Iterator[bytes]:
    """``data`` a piece of about a quarter megabyte at a time, each cut after a newline."""
    return linediff.chunks(text_of(data))


def whole(data: Data) -> bytes:
    """``data`` as bytes (a file read whole: only for what needs it so)."""
    return data if isinstance(data, bytes) else b"".join(pieces(data))


def _key(data: Data) -> Hashable:
    """What tells builds apart in the caches below, without keeping their bytes: a
    file's sha256, or the length and hash of bytes (computed once per object)."""
    return data.sha256 if isinstance(data, DataFile) else (len(data), hash(data))


def _body(data: Data) -> tuple[bytes | FileRange, ...]:
    return (data if isinstance(data, bytes) else FileRange(data, 0, data.size),)


def payload_for(slave: Slave, data: bytes) -> bytes:
    """What a slave is sent: data and trailer, or plain data for legacy update-dns."""
    if slave.protocol == "legacy":
        return data
    return data + seal(data)


T = TypeVar("T")


class _BuildCache:
    """What was computed for the newest builds (a trailer, deltas, compressed
    payloads), by build: slaves on the same build share it, and the builds before
    the newest :data:`_BUILDS` leave nothing behind. Only keys (hashes) and the
    results are held, never a build's own bytes."""

    def __init__(self, builds: int) -> None:
        self._builds = builds
        self._entries: OrderedDict[Hashable, dict[Hashable, object]] = OrderedDict()

    def get(self, build: Hashable, key: Hashable, compute: Callable[[], T]) -> T:
        entries = self._entries.get(build)
        if entries is None:
            entries = self._entries[build] = {}
            while len(self._entries) > self._builds:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(build)
        if key not in entries:
            entries[key] = compute()
        return entries[key]  # type: ignore[return-value]

    def clear(self) -> None:
        self._entries.clear()


#: Two builds: the newest, and the one some slave may still be pushed meanwhile.
_BUILDS = 2
_CACHE = _BuildCache(_BUILDS)


def _trailer(data: Data) -> bytes:
    if isinstance(data, bytes):
        return seal(data)
    if data.size and data.read(data.size - 1, 1) != b"\n":
        raise ValueError("data must end with a newline before a trailer can follow it")
    return Trailer(data.size, data.sha256).line()


def _full(data: Data) -> tuple[bytes | FileRange, ...]:
    # Every slave gets the same trailer: the data is hashed once per build.
    trailer = _CACHE.get(_key(data), "trailer", lambda: _trailer(data))
    return (*_body(data), trailer)


def _delta(base: Data, data: Data, limit: int) -> bytes | None:
    # Slaves on the same base (the usual case) share one delta.
    sha256 = base.sha256 if isinstance(base, DataFile) else None
    known = data.sha256 if isinstance(data, DataFile) else None
    return _CACHE.get(
        _key(data),
        ("delta", _key(base)),
        lambda: linediff.make(
            text_of(base), text_of(data), base_sha256=sha256, new_sha256=known, limit=limit
        ),
    )


def _zipped(send: Send) -> bytes:
    def compress() -> bytes:
        packer = zlib.compressobj(_ZLIB_LEVEL)
        out = []
        for piece in (send.plain,) if isinstance(send.plain, bytes) else send.plain:
            if isinstance(piece, bytes):
                out.append(packer.compress(piece))
                continue
            for at in range(piece.offset, piece.offset + piece.size, FEED_READ):
                size = min(FEED_READ, piece.offset + piece.size - at)
                out.append(packer.compress(piece.source.read(at, size)))
        out.append(packer.flush())
        return b"".join(out)

    if send.build is None:
        return compress()
    return _CACHE.get(send.build, ("zlib", send.key), compress)


def compresses(slave: Slave) -> bool:
    """Whether what ``slave`` is sent is compressed, given its receiver takes it.

    ``compress = "auto"`` (the default) compresses unless the slave is on this
    machine (a local transport, or a loopback host: ``localhost``, 127.0.0.0/8,
    ::1), where the bytes cost nothing and zlib's time would be the whole cost.
    """
    if slave.compress != "auto":
        return slave.compress == "on"
    if slave.transport == "local" or slave.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(slave.host).is_loopback
    except ValueError:
        return True  # a name: assume it is elsewhere


#: Why a recorded offer was not used although the record holds: the whole data is
#: smaller than a delta (most of it changed), so the slave is asked as usual.
NO_SMALLER_DELTA = "no delta smaller than the data"


@dataclass(frozen=True, slots=True)
class Offer:
    """What a slave can take beyond the plain data, from its last ``status``.

    ``protocol`` is its receiver's (None: unknown, treated as 1); ``base`` the
    bytes of the build it holds, when the master has them: a delta is sent against
    it when the receiver speaks :data:`~dnsmaster.protocol.DELTA`.
    """

    protocol: int | None = None
    base: Data | None = None
    #: ``protocol`` and ``base`` come from the master's record of its last push to
    #: the slave, which was not asked this time (see :func:`dnsmaster.master.pushing.push_one`).
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    """One try: the verb, the bytes before compression, ``full`` or ``delta``."""

    verb: str
    #: What is sent, before compression.
    plain: Payload
    mode: str
    compressed: bool
    #: The build it carries and what tells it apart from the build's other sends
    #: (its compression is made once per build and key); None: not cached.
    build: Hashable = None
    key: Hashable = None


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def compute_under(lock: asyncio.Lock) -> None:
    """Compute deltas, trailers and compressions on the running loop under ``lock``.

    The daemon gives its writer lock, which each build holds: a delta (some 70 MB
    for a moment at a million lines, its line hashes) is then never made while a
    build runs, so the daemon's high-water mark is the larger of the two, not their
    sum. Both are mostly Python in threads under one GIL, so running them at once
    saved little time anyway; a push that needs one waits for the build under way.
    """
    _LOCKS[asyncio.get_running_loop()] = lock


async def _computed(fn: Callable[[], T]) -> T:
    """``fn()``, a cached delta, trailer or compression, in a thread (half a second
    of CPU for 500,000 lines must not stall the daemon's loop), one at a time: the
    first slave computes it, the others wait and find it in the cache."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(fn)


async def tries_for(slave: Slave, data: Data, offer: Offer) -> list[Send]:
    """What to try, in order: a delta (when it can be had and is smaller), the data."""
    if slave.protocol == "legacy":
        return [Send("update-dns", _body(data), "full", False)]
    full = await _computed(lambda: _full(data))
    build = _key(data)
    if offer.protocol is None or offer.protocol < DELTA:
        return [Send("push", full, "full", False, build, "full")]
    zipped = compresses(slave)
    flag = f" {ZLIB}" if zipped else ""
    tries = []
    base = offer.base
    if base is not None:
        limit = payload_size(full)
        stream = await _computed(lambda: _delta(base, data, limit))
        if stream is not None:
            delta_key = ("delta", _key(base))
            tries.append(Send("delta" + flag, stream, "delta", zipped, build, delta_key))
    tries.append(Send("push" + flag, full, "full", zipped, build, "full"))
    return tries


async def compressed(send: Send) -> bytes:
    """What ``send`` carries, compressed, once per build whatever the number of slaves."""
    return await _computed(lambda: _zipped(send))
