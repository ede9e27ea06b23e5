"""The push orchestrator's one choice of a delta's base, and the record it keeps.

The pushes themselves run against the real receiver in tests/transport and
tests/commands; these are the decisions in between, without a slave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dnsmaster.config import Slave
from dnsmaster.errors import SlaveError
from dnsmaster.master import state as statefile
from dnsmaster.master.payload import Offer
from dnsmaster.master.pushing import Bases, PushResult, record_results
from dnsmaster.protocol import DELTA

HELD = "a" * 64
DATA = b"+www.example.com:192.0.2.1\n"


class Log:
    """Records events as (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def record(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))

        return record


@pytest.fixture
def bases(tmp_path: Path) -> Bases:
    return Bases(tmp_path, 10, Log(), {HELD: DATA})


class TestBasesOffer:
    async def test_a_delta_goes_against_the_build_it_holds(self, bases: Bases) -> None:
        """A receiver that speaks deltas and holds a known build gets that build as base."""
        offer = await bases.offer(Slave(name="s", host="h"), DELTA, HELD)
        assert offer == Offer(DELTA, DATA)

    @pytest.mark.parametrize(
        ("slave", "protocol", "holds"),
        [
            (Slave(name="s", host="h"), DELTA - 1, HELD),
            (Slave(name="s", host="h"), None, HELD),
            (Slave(name="s", host="h"), DELTA, None),
            (Slave(name="s", host="h", protocol="legacy"), DELTA, HELD),
        ],
        ids=["old-receiver", "protocol-unknown", "holds-nothing", "legacy"],
    )
    async def test_no_base(
        self, bases: Bases, slave: Slave, protocol: int | None, holds: str | None
    ) -> None:
        """No delta for a receiver that cannot take one, or a slave that holds nothing known."""
        offer = await bases.offer(slave, protocol, holds)
        assert offer == Offer(protocol, None)

    async def test_a_build_not_kept_gives_no_base(self, tmp_path: Path) -> None:
        """A build neither known nor in the archive: a full push, nothing logged."""
        log = Log()
        offer = await Bases(tmp_path, 10, log).offer(Slave(name="s", host="h"), DELTA, "b" * 64)
        assert offer.base is None
        assert log.events == []

    async def test_recorded_is_kept(self, bases: Bases) -> None:
        """An offer from the push record says so, for push_one to check its delta."""
        offer = await bases.offer(Slave(name="s", host="h"), DELTA, HELD, recorded=True)
        assert offer.recorded
        assert offer.base == DATA


def test_record_results(tmp_path: Path) -> None:
    """What each slave holds after a push: the build and its receiver's protocol, or
    nothing known after a failure."""
    path = statefile.pushed_path(tmp_path)
    path.parent.mkdir()  # the archive: records go beside it
    statefile.write_pushed(path, {"down": statefile.Pushed("c" * 64, DELTA)})
    results = [
        PushResult("ok", True, HELD, 10, 0.1),
        PushResult.unasked("down", HELD, SlaveError("down", "no route", phase="connect")),
    ]
    record_results(tmp_path, results, {"ok": DELTA}, Log())
    pushed = statefile.read_pushed(path)
    assert pushed.get("ok") == statefile.Pushed(HELD, DELTA)
    assert pushed.get("down") is None


def test_unasked_carries_the_error() -> None:
    """A slave that failed before anything was sent: its error's facts, nothing sent."""
    error = SlaveError("s", "host key unknown", phase="hostkey", retryable=False)
    result = PushResult.unasked("s", HELD, error)
    assert (result.ok, result.bytes, result.phase, result.retryable, result.error) == (
        False,
        0,
        "hostkey",
        False,
        "host key unknown",
    )
