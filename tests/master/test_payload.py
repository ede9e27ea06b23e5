"""What a slave is sent: the daemon's deltas made under the lock its builds hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dnsmaster.config import Slave
from dnsmaster.master import linediff, payload
from dnsmaster.master.payload import Offer
from dnsmaster.protocol import DELTA


def test_a_delta_is_made_under_the_given_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    base = b"".join(b"+host%d.example.com:10.0.0.%d\n" % (n, n) for n in range(50))
    new = base + b"+new.example.com:10.0.1.1\n"
    held: list[bool] = []
    real = linediff.make

    def make(*args: Any, **kwargs: Any) -> bytes | None:
        held.append(lock.locked())
        return real(*args, **kwargs)

    monkeypatch.setattr(linediff, "make", make)

    async def tries() -> list[payload.Send]:
        payload.compute_under(lock)
        return await payload.tries_for(
            Slave(name="s", host="h", compress="off"), new, Offer(DELTA, base)
        )

    lock = asyncio.Lock()
    sent = asyncio.run(tries())
    assert [s.mode for s in sent] == ["delta", "full"]
    assert held == [True]
