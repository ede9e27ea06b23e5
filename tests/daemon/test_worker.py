"""The slave worker's decisions, each found by the soak.

A verification problem that lasts keeps the time it was first seen.

The daemon asks each slave's tinydns again at every rescan, and a stale slave again
after each push it gets. Each answer used to restamp ``verified_at``, which ``status``
takes as the start of the problem: with ``rescan`` (60 s) shorter than ``--warning``
(120 s), a slave whose tinydns had stopped, or whose data.cdb was deleted by hand,
stayed "OK" in Nagios for as long as it lasted (benchmarks/soak.py: a data.cdb
deleted by hand, then no save: ``status --nagios`` said OK for minutes).

A slave parked on a changed host key is tried again when known_hosts changes or
SIGHUP comes, even when either happens while the contact that fails is still under
way, and a push forced through the hold (SIGALRM) that works lifts it. The soak's
``hostkey_change`` puts the new key in known_hosts and sends SIGHUP seconds after
re-keying the slave; when both land inside a failing contact (the daemon looks at
the presented key before it parks), the slave used to be parked against the updated
file, SIGHUP's release undone, and a forced push that then worked left it parked:
it got no later build (``status --nagios``: "slave2 behind for 60 s").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dnsmaster.config import Slave
from dnsmaster.daemon import worker as daemon_worker
from dnsmaster.daemon.loop import Daemon
from dnsmaster.daemon.worker import Current
from dnsmaster.errors import HostKeyError, SlaveError
from dnsmaster.transport.channel import LineSink, RunResult
from dnsmaster.transport.dns import SoaCheck
from tests.lab.daemonrun import in_process_config
from tests.lab.recorder import Recorder
from tests.lab.site import make_zones

ZONE = b"\x07example\x03com\x00"


@pytest.fixture
def log() -> Recorder:
    return Recorder()


@pytest.fixture
def daemon(tmp_path: Path, log: Recorder) -> Daemon:
    zones, output = make_zones(tmp_path / "master")
    slave = {"name": "ns2", "host": "127.0.0.1", "dns": "127.0.0.1"}
    return Daemon(in_process_config(tmp_path, zones, output, slave), log)


def _current(serial: int) -> Current:
    data = f"Zexample.com:a::::{serial}\n".encode()
    return Current(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        serial=serial,
        records=1,
        time=0.0,
        verify={ZONE: serial},
    )


async def test_a_lasting_problem_keeps_its_start(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[int | None] = []
    clock = [1000.0]

    async def check(
        host: str, port: int, zones: dict[bytes, int], timeout: float
    ) -> list[SoaCheck]:
        served = answers.pop(0)
        return [SoaCheck("example.com", serial, served) for serial in zones.values()]

    monkeypatch.setattr(daemon_worker, "check_serials", check)
    monkeypatch.setattr(daemon_worker.time, "time", lambda: clock[0])
    worker = daemon.workers[0]
    current = _current(10)

    def ask(served: int | None, at: float) -> tuple[str | None, float | None]:
        answers.append(served)
        clock[0] = at
        return served, at

    ask(None, 1000.0)
    assert await worker._verify(current) == "failed"
    ask(None, 1060.0)  # asked again at the next rescan: still no answer
    assert await worker._verify(current) == "failed"
    assert (worker.state.verified, worker.state.verified_at) == ("failed", 1000.0)

    ask(9, 1070.0)  # another problem starts its own clock
    assert await worker._verify(current) == "stale"
    ask(9, 1080.0)
    assert await worker._verify(current) == "stale"
    assert (worker.state.verified, worker.state.verified_at) == ("stale", 1070.0)

    ask(10, 1090.0)  # served: the time of the answer, and the problem is over
    assert await worker._verify(current) == "ok"
    assert (worker.state.verified_at, worker.state.last_success) == (1090.0, 1090.0)
    ask(None, 1100.0)
    assert await worker._verify(current) == "failed"
    assert worker.state.verified_at == 1100.0


class RekeyedSlave:
    """A slave channel whose first contact fails on its host key while ``meanwhile``
    happens (it stands for the seconds a failing key exchange takes); any later
    contact sets :attr:`again` and fails as an unreachable slave does."""

    def __init__(self, slave: Slave, meanwhile: Callable[[], None]) -> None:
        self.slave = slave
        self.meanwhile = meanwhile
        self.contacts = 0
        self.again = asyncio.Event()

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
        self.contacts += 1
        if self.contacts > 1:
            self.again.set()
            raise SlaveError(self.slave.name, "connection refused", phase="connect")
        self.meanwhile()
        raise HostKeyError(
            self.slave.name,
            "host key is not trusted",
            host=self.slave.host,
            port=self.slave.port,
            known_hosts="known_hosts",
        )

    async def close(self) -> None:
        pass


def _accept_new_key(daemon: Daemon) -> Callable[[], None]:
    """The operator's (or the soak's) edit: a new known_hosts renamed into place."""

    def edit() -> None:
        path = daemon.config.known_hosts
        assert path is not None
        path.with_suffix(".new").write_text("[127.0.0.1]:22 ssh-ed25519 AAAAnew\n")
        os.replace(path.with_suffix(".new"), path)

    return edit


@pytest.mark.parametrize("contact", ["status", "push"])
@pytest.mark.parametrize("meanwhile", ["known_hosts", "sighup"])
async def test_a_change_during_the_failing_contact_lifts_the_hold(
    daemon: Daemon, log: Recorder, monkeypatch: pytest.MonkeyPatch, contact: str, meanwhile: str
) -> None:
    monkeypatch.setattr(daemon_worker, "HOLD_POLL", 0.01)  # parked: known_hosts looked at
    worker = daemon.workers[0]
    daemon.current = _current(10)
    if contact == "push":  # asked already: the contact that fails is a push
        worker._asked = True
    change = _accept_new_key(daemon) if meanwhile == "known_hosts" else worker.release
    channel = RekeyedSlave(worker.slave, change)
    worker.channel = channel
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(5):  # parked for good, it never comes
            await channel.again.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Parked until the next look at known_hosts; released, not parked at all.
    assert len(log.find("retry.held")) == (1 if meanwhile == "known_hosts" else 0)


async def test_sighup_with_the_same_config_lifts_a_hold(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that changes nothing releases every parked slave all the same."""
    worker = daemon.workers[0]
    worker._hold = daemon_worker.Hold("hostkey", "", ("known_hosts", "as it is"), 0.0)
    started: list[asyncio.Task[None]] = []
    start = daemon.start

    def keep(
        coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]:
        started.append(start(coro, name, forever=forever))
        return started[-1]

    monkeypatch.setattr(daemon, "start", keep)
    daemon.signals.handle(signal.SIGHUP)
    async with asyncio.timeout(5):
        await asyncio.gather(*started)
    assert worker._hold is None


class HealedSlave:
    """A slave channel that answers every verb: a status naming an older build, and
    each push installed; :attr:`pushes` counts them, :attr:`pushed` is set at each."""

    def __init__(self, slave: Slave) -> None:
        self.slave = slave
        self.pushes = 0
        self.pushed = asyncio.Event()

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
        if verb == "status":
            return RunResult(0, (f"status sha256={'a' * 64} serial=7 protocol=3 version=9",))
        self.pushes += 1
        self.pushed.set()
        return RunResult(0, ())

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("asked", [False, True])
async def test_a_push_forced_through_a_hold_that_works_lifts_it(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, asked: bool
) -> None:
    """SIGALRM pushes to a parked slave too; when its key passes after all, the hold
    goes, or every later build would wait for a known_hosts edit that never comes (the
    soak: a manual_push's SIGALRM reached slave2, parked against the updated file;
    it got that build, and no other: "behind" to the end)."""

    async def served(
        host: str, port: int, zones: dict[bytes, int], timeout: float
    ) -> list[SoaCheck]:
        return [SoaCheck("example.com", serial, serial) for serial in zones.values()]

    monkeypatch.setattr(daemon_worker, "check_serials", served)
    worker = daemon.workers[0]
    stamp = daemon_worker.file_signature(daemon.config.known_hosts)
    worker._hold = daemon_worker.Hold("hostkey", "", stamp, 0.0)
    worker._asked = asked  # not asked: released by SIGHUP before it was parked
    channel = HealedSlave(worker.slave)
    worker.channel = channel
    daemon.current = _current(10)
    worker.wake(force=True)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(5):
            await channel.pushed.wait()
            channel.pushed.clear()
            daemon.current = _current(11)
            worker.wake()  # a new build
            await channel.pushed.wait()  # held for good, it never comes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert channel.pushes == 2
