"""A verification problem that lasts keeps the time it was first seen (found by the soak).

The daemon asks each slave's tinydns again at every rescan, and a stale slave again
after each push it gets. Each answer used to restamp ``verified_at``, which ``status``
takes as the start of the problem: with ``rescan`` (60 s) shorter than ``--warning``
(120 s), a slave whose tinydns had stopped, or whose data.cdb was deleted by hand,
stayed "OK" in Nagios for as long as it lasted (benchmarks/soak.py: a data.cdb
deleted by hand, then no save: ``status --nagios`` said OK for minutes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dnsmaster.daemon import worker as daemon_worker
from dnsmaster.daemon.loop import Daemon
from dnsmaster.daemon.worker import Current
from dnsmaster.transport.dns import SoaCheck
from tests.lab.daemonrun import in_process_config
from tests.lab.recorder import Recorder
from tests.lab.site import make_zones

ZONE = b"\x07example\x03com\x00"


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    zones, output = make_zones(tmp_path / "master")
    slave = {"name": "ns2", "host": "127.0.0.1", "dns": "127.0.0.1"}
    return Daemon(in_process_config(tmp_path, zones, output, slave), Recorder())


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
