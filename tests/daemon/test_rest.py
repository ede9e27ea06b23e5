"""``daemon.idle``: said once each time the daemon comes to rest, and only at rest.

The rule on stand-ins for the daemon's parts (what counts as busy, once per rest,
errands), then the daemon in this process on local slaves (a real receiver per
push): a save's pushes come before the rest that follows it, a signal is answered
even when there is nothing to do, and a slave with a retry due keeps the daemon
from resting until it is served.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dnsmaster import config as configuration
from dnsmaster.daemon.loop import Daemon
from dnsmaster.daemon.rest import Rest
from dnsmaster.daemon.worker import Current
from dnsmaster.exits import EXIT_OK
from tests.lab.daemonrun import config_text
from tests.lab.recorder import TIMEOUT, Recorder
from tests.lab.site import example_com, make_zones, write

# -- the rule, on stand-ins ----------------------------------------------------------


@dataclass
class Part:
    resting: bool = True


@dataclass
class StateFile:
    pending: bool = False


@dataclass
class Parts:
    """What :class:`Rest` reads of the daemon."""

    builds: Part = field(default_factory=Part)
    workers: list[Part] = field(default_factory=lambda: [Part(), Part()])
    state_file: StateFile = field(default_factory=StateFile)
    current: Current | None = None
    stopping: bool = False


def idles(log: Recorder) -> int:
    return len(log.find("daemon.idle"))


class TestRule:
    def test_once_after_each_event(self) -> None:
        """Every event at info or above is followed by one daemon.idle at the next
        rest; debug events and further looks at rest say nothing."""
        log = Recorder()
        rest = Rest(Parts(), log)
        rest.settle()
        assert idles(log) == 0  # nothing happened yet
        rest.log.info("build.done", serial=1)
        rest.settle()
        rest.settle()
        assert idles(log) == 1
        assert log.events[-1] == {"level": "info", "event": "daemon.idle", "serial": None}
        rest.log.debug("build.unchanged")
        rest.settle()
        assert idles(log) == 1
        for level in ("warning", "error", "critical"):
            getattr(rest.log, level)("something", x=1)
            rest.settle()
        assert idles(log) == 4
        assert [e["event"] for e in log.events].count("something") == 3

    @pytest.mark.parametrize("busy", ["builds", "worker", "state file", "stopping"])
    def test_no_rest_while_anything_is_due(self, busy: str) -> None:
        """A build waiting or under way, a worker with a push or retry due, a state
        file update not written yet, a daemon stopping: no rest, said when it ends."""
        parts = Parts()
        log = Recorder()
        rest = Rest(parts, log)
        undo = {
            "builds": lambda on: setattr(parts.builds, "resting", not on),
            "worker": lambda on: setattr(parts.workers[1], "resting", not on),
            "state file": lambda on: setattr(parts.state_file, "pending", on),
            "stopping": lambda on: setattr(parts, "stopping", on),
        }[busy]
        undo(True)
        rest.log.info("push.done")
        rest.settle()
        assert idles(log) == 0
        assert not rest.at_rest()
        undo(False)
        assert rest.at_rest()
        rest.settle()
        assert idles(log) == 1

    async def test_an_errand_holds_the_rest_until_it_ends(self) -> None:
        """A reload or rollback under way: no rest; its end settles by itself."""
        log = Recorder()
        rest = Rest(Parts(), log)
        go_on = asyncio.Event()
        errand = asyncio.create_task(go_on.wait())
        rest.errand(errand)
        rest.log.info("signal", signal="SIGHUP")
        rest.settle()
        assert idles(log) == 0
        go_on.set()
        await errand
        await asyncio.sleep(0)  # the task's done callbacks run on the next turn
        assert idles(log) == 1


# -- the daemon in this process ----------------------------------------------------------


def _config(base: Path, roots: list[Path], **daemon: object) -> configuration.Config:
    zones, output = make_zones(base / "master")
    path = base / "dnsmaster.toml"
    timings = {"debounce": 0.1, "retry_initial": 0.1, "retry_max": 0.2, "verify": False}
    path.write_text(
        config_text(
            zones=zones,
            output=output,
            state=base / "state.json",
            daemon=timings | daemon,
            slaves=[{"name": r.name, "transport": "local", "root": r} for r in roots],
        )
        + "\n[guard]\nmax_removed = 1.0\nzones = false\n"
    )
    return configuration.load(path)


def _signal(signum: int) -> None:
    """A real signal to this process: the running daemon's loop handles it."""
    os.kill(os.getpid(), signum)


async def _stop(daemon: Daemon, run: asyncio.Task[int], log: Recorder) -> None:
    _signal(signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        assert await run == EXIT_OK
    assert not log.find("daemon.crash"), log.find("daemon.crash")


def _names(log: Recorder) -> list[str]:
    return [e["event"] for e in log.events]


class TestDaemon:
    async def test_rest_follows_the_pushes(self, tmp_path: Path) -> None:
        """At start and after a save: both slaves pushed, then one daemon.idle; a
        signal with nothing to do is answered by one too."""
        roots = [tmp_path / "ns2", tmp_path / "ns3"]
        for root in roots:
            root.mkdir()
        config = _config(tmp_path, roots)
        log = Recorder()
        daemon = Daemon(config, log)
        run = asyncio.create_task(daemon.run())
        (first,) = await log.wait("daemon.idle")
        names = _names(log)
        assert names.count("push.done") == 2
        assert names.index("daemon.idle") > max(
            i for i, n in enumerate(names) if n in {"push.done", "build.done"}
        )
        assert first["serial"] == log.find("build.done")[0]["serial"]

        write(config.zones / "zones.example.com", example_com("192.0.2.7"))
        (_, done) = await log.wait("build.done", 2)
        await log.idle_after(done)
        pushed = [e["slave"] for e in log.find("push.done") if e["serial"] == done["serial"]]
        assert sorted(pushed) == ["ns2", "ns3"]
        assert idles(log) == 2  # not one per push, nor one per part gone to sleep

        _signal(signal.SIGUSR1)  # a rescan that finds the zones as built
        (sigusr1,) = await log.wait("signal")
        idle = await log.idle_after(sigusr1)
        assert idle["serial"] == done["serial"]
        assert not [e for e in log.events[log.events.index(sigusr1) :] if e["event"] == "push.done"]
        await _stop(daemon, run, log)
        assert _names(log)[-1] == "daemon.stop"

    async def test_no_rest_while_a_retry_is_due(self, tmp_path: Path) -> None:
        """A slave whose receiver cannot install is retried with backoff: no
        daemon.idle meanwhile; once it can, it is pushed, and then the daemon rests."""
        good, bad = tmp_path / "ns2", tmp_path / "ns3"
        good.mkdir()
        bad.write_text("a file where the slave's root should be\n")
        log = Recorder()
        daemon = Daemon(_config(tmp_path, [good, bad]), log)
        run = asyncio.create_task(daemon.run())
        await log.wait("retry.scheduled", 3)
        assert not log.find("daemon.idle")
        bad.unlink()
        bad.mkdir()
        (idle,) = await log.wait("daemon.idle")
        pushes = [e for e in log.find("push.done") if e["slave"] == "ns3"]
        assert pushes
        assert log.events.index(pushes[-1]) < log.events.index(idle)
        await _stop(daemon, run, log)
