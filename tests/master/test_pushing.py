"""The push orchestrator's one choice of a delta's base, the record it keeps, and
what it makes of a slave that serves several masters.

The pushes themselves run against the real receiver in tests/transport and
tests/commands (and a shared slave's in tests/slave/test_secondary_service.py);
these are the decisions in between, without a slave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dnsmaster.config import Slave
from dnsmaster.errors import SlaveError
from dnsmaster.master import state as statefile
from dnsmaster.master.payload import Offer
from dnsmaster.master.pushing import (
    Bases,
    PushLog,
    PushResult,
    ask_receiver,
    push_one,
    record_results,
    refused_line,
)
from dnsmaster.protocol import DELTA, EXIT_REFUSED, REFUSED_PREFIX, SlaveVersion
from dnsmaster.transport.channel import Receiver, RunResult, fetch_receiver

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


# --------------------------------------------------------------------------- a shared slave

#: What a slave serving several masters prints when it refuses a push line by line
#: (the design of issue 19): one line per offence, then its reason as the last line.
OFFENCES = (
    "refused zones.bank:3: +www.bank.example:192.0.2.9: not in this master's allowlist (a.example)",
    "refused zones.bank:7: Zexample:ns.a.example.:hostmaster.a.example.: not in this "
    "master's allowlist (a.example)",
)
REASON = "2 lines outside this master's allowlist: zones.bank:3, zones.bank:7"


class SharedSlave:
    """A channel to a slave serving several masters, as this master's key line sees it:
    a protocol-3 status naming the master, and a push refused line by line."""

    def __init__(self, slave: Slave) -> None:
        self.slave = slave
        self.verbs: list[str] = []

    async def run(self, verb: str, payload: bytes | None, on_line: Any) -> RunResult:
        self.verbs.append(verb)
        name = self.slave.name
        if verb == "status":
            line = f"status sha256={HELD} serial=7 bytes=10 time=x master=a protocol=3 version=9"
            on_line(name, "stdout", line, 0)
            return RunResult(0, (line,))
        on_line(name, "stdout", "received bytes=27 sha256=" + "b" * 64, 0)
        for offence in OFFENCES:
            on_line(name, "stderr", offence, 0)
        last = REFUSED_PREFIX + REASON
        on_line(name, "stderr", last, 0)
        return RunResult(EXIT_REFUSED, ("received bytes=27 sha256=" + "b" * 64,), last)

    async def close(self) -> None:
        return None


class TestRefusedLine:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            (OFFENCES[0], ("zones.bank:3", OFFENCES[0][len("refused zones.bank:3: ") :])),
            ("refused line 4: %lo:127: a location line", ("line 4", "%lo:127: a location line")),
            (REFUSED_PREFIX + REASON, None),
            ("refused", None),
            ("refused zones.x:1:", None),
            ("received bytes=1 sha256=x", None),
            ("and 4 more", None),
        ],
        ids=["offence", "no-source", "reason", "bare", "no-detail", "other", "more"],
    )
    def test_parse(self, line: str, expected: tuple[str, str] | None) -> None:
        """An offence gives its source and the rest; the receiver's reason and other lines
        give None."""
        assert refused_line(line) == expected

    async def test_each_offence_is_an_event_and_the_reason_names_the_first(self) -> None:
        """A push refused for names outside the allowlist: one push.refused_line error per
        offending line, with its zones.X:LINE; the result's error (what status shows) is
        the receiver's reason, which names the first; not retried (exit 1)."""
        log = Log()
        report = PushLog(log, serial=7)
        channel = SharedSlave(Slave(name="ns2", host="h"))
        result = await push_one(channel, DATA, "b" * 64, 10, report.line)
        report.result(result)
        refused = [f for level, event, f in log.events if event == "push.refused_line"]
        assert refused == [
            {"slave": "ns2", "source": "zones.bank:3", "detail": OFFENCES[0].split(": ", 1)[1]},
            {"slave": "ns2", "source": "zones.bank:7", "detail": OFFENCES[1].split(": ", 1)[1]},
        ]
        assert {level for level, event, _ in log.events if event == "push.refused_line"} == {
            "error"
        }
        lines = [f["line"] for _, event, f in log.events if event == "push.line"]
        assert lines == ["received bytes=27 sha256=" + "b" * 64, REFUSED_PREFIX + REASON]
        assert not result.ok
        assert result.error == f"{REASON} (exit 1)"
        assert "zones.bank:3" in (result.error or "")
        assert result.retryable is False
        (failed,) = [f for _, event, f in log.events if event == "push.failed"]
        assert failed["error"] == result.error


class TestReceiverOfASharedSlave:
    async def test_status_names_the_master(self) -> None:
        """Protocol 3 with master=NAME: a receiver this master serves as any other, its
        installed build this master's own section, and the name kept."""
        channel = SharedSlave(Slave(name="ns2", host="h"))
        log = Log()
        receiver = await ask_receiver(channel, 10, PushLog(log))
        assert receiver == Receiver(3, "9", SlaveVersion(HELD, 7), "a")
        assert receiver.installed is not None
        assert receiver.installed.sha256 == HELD
        # debug lines only; a protocol-3 receiver takes deltas: no hint to upgrade
        assert {level for level, _, _ in log.events} == {"debug"}

    async def test_a_single_master_slave_names_none(self) -> None:
        """A status line without master=: a slave of this master alone."""

        class Plain(SharedSlave):
            async def run(self, verb: str, payload: bytes | None, on_line: Any) -> RunResult:
                line = f"status sha256={HELD} serial=7 protocol=2 version=9"
                return RunResult(0, (line,))

        receiver = await fetch_receiver(Plain(Slave(name="ns2", host="h")), 10, lambda *_: None)
        assert receiver.master is None
        assert receiver.installed == SlaveVersion(HELD, 7)
