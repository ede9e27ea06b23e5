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
import functools
import ipaddress
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from dnsmaster.config import Slave
from dnsmaster.core import delta as deltas
from dnsmaster.core.stream import seal
from dnsmaster.protocol import DELTA, ZLIB

__all__ = [
    "NO_SMALLER_DELTA",
    "Offer",
    "Send",
    "compressed",
    "compresses",
    "payload_for",
    "tries_for",
]

#: zlib's level: 6 (its default) makes 28 MB of data 4.6 MB in 0.5 s, once per build
#: for every slave; level 1 makes 5.8 MB in 0.17 s. The bytes are the cost on a WAN.
_ZLIB_LEVEL = 6


def payload_for(slave: Slave, data: bytes) -> bytes:
    """What a slave is sent: data and trailer, or plain data for legacy update-dns."""
    if slave.protocol == "legacy":
        return data
    return _sealed(data)


# The caches below hold whole data texts, keys and values alike, for as long as the
# daemon lives: small sizes, so an idle daemon keeps about one build's worth beside
# the one it serves, not several (a build of 1M lines is some 57 MB).


@functools.lru_cache(maxsize=1)
def _sealed(data: bytes) -> bytes:
    # Every slave gets the same bytes: hash and copy the data once per build, not once
    # per slave (the cache compares the very same object first, so a hit is cheap).
    return data + seal(data)


@functools.lru_cache(maxsize=2)
def _zipped(payload: bytes) -> bytes:
    # Once per build (the delta and the full data), whatever the number of slaves.
    return zlib.compress(payload, _ZLIB_LEVEL)


@functools.lru_cache(maxsize=2)
def _delta(base: bytes, data: bytes) -> bytes:
    # Slaves on the same base (the usual case) share one delta.
    return deltas.make(base, data)


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
    base: bytes | None = None
    #: ``protocol`` and ``base`` come from the master's record of its last push to
    #: the slave, which was not asked this time (see :func:`dnsmaster.master.pushing.push_one`).
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    """One try: the verb, the bytes before compression, ``full`` or ``delta``."""

    verb: str
    #: What is sent, before compression.
    plain: bytes
    mode: str
    compressed: bool


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def _computed(fn: Callable[[bytes, bytes], bytes], *args: bytes) -> bytes:
    """``fn(*args)``, a cached delta or compression, in a thread (half a second of
    CPU for 500,000 lines must not stall the daemon's loop), one at a time: the
    first slave computes it, the others wait and find it in the cache."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(fn, *args)


async def tries_for(slave: Slave, data: bytes, offer: Offer) -> list[Send]:
    """What to try, in order: a delta (when it can be had and is smaller), the data."""
    if slave.protocol == "legacy":
        return [Send("update-dns", data, "full", False)]
    full = _sealed(data)
    if offer.protocol is None or offer.protocol < DELTA:
        return [Send("push", full, "full", False)]
    zipped = compresses(slave)
    flag = f" {ZLIB}" if zipped else ""
    tries = []
    if offer.base is not None:
        stream = await _computed(_delta, offer.base, data)
        if len(stream) < len(full):
            tries.append(Send("delta" + flag, stream, "delta", zipped))
    tries.append(Send("push" + flag, full, "full", zipped))
    return tries


async def compressed(plain: bytes) -> bytes:
    """``plain`` compressed, once per build whatever the number of slaves."""
    return await _computed(_zipped, plain)
