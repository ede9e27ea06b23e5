"""Nothing in the daemon dies quietly: a crash anywhere stops it with status 70.

Before, an exception in the build task, a slave's worker or a watcher thread
ended that one task; the others kept logging and ``status`` looked healthy while
nothing was built or pushed any more. These tests run :class:`Daemon` in this
process on local slaves, break one part on purpose, and check that the daemon
logs ``daemon.crash`` with the traceback and returns :data:`EXIT_CRASH`, so that
daemontools or runit start it again.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dnsmaster import config as configuration
from dnsmaster.daemon import worker as daemon_worker
from dnsmaster.daemon.loop import Daemon
from dnsmaster.exits import EXIT_CRASH, EXIT_OK
from tests.lab.daemonrun import DaemonProcess, config_text
from tests.lab.recorder import TIMEOUT, Recorder
from tests.lab.site import make_zones


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Daemon, Recorder]:
    """The daemon on one local slave: what breaks is the daemon's, and each slave
    is a receiver's start at every round."""
    zones, output = make_zones(tmp_path / "master")
    roots = [tmp_path / "slaves" / "ns2"]
    for root in roots:
        root.mkdir(parents=True)
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=zones,
            output=output,
            state=tmp_path / "state.json",
            daemon={"debounce": 0.1, "retry_initial": 0.1, "retry_max": 0.5, "verify": False},
            slaves=[{"name": r.name, "transport": "local", "root": r} for r in roots],
        )
    )
    log = Recorder()
    return Daemon(configuration.load(path), log), log


def crash_of(log: Recorder) -> dict[str, Any]:
    crashes = log.find("daemon.crash")
    assert len(crashes) >= 1, log.events
    crash = crashes[0]
    exc_info = crash["exc_info"]
    assert exc_info[2] is not None  # the traceback reaches the log
    return crash


async def started(daemon: Daemon, log: Recorder) -> asyncio.Task[int]:
    """Run the daemon until its slave has the first build."""
    run = asyncio.create_task(daemon.run())
    await log.wait("push.done", 1)
    return run


class TestCrashStopsTheDaemon:
    async def test_build_task(self, setup: tuple[Daemon, Recorder]) -> None:
        """An unexpected exception in a build ends the run with EXIT_CRASH."""
        daemon, log = setup
        run = await started(daemon, log)

        def broken(**_: object) -> None:
            raise RuntimeError("compiler bug")

        daemon.builder.build = broken  # type: ignore[method-assign]
        daemon.signals.handle(1)  # SIGHUP: build now
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_CRASH
        crash = crash_of(log)
        assert crash["task"] == "build"
        assert crash["error"] == "RuntimeError: compiler bug"
        assert log.find("daemon.stop")

    async def test_slave_worker(
        self, setup: tuple[Daemon, Recorder], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker that dies takes the daemon with it, not just its slave."""
        daemon, log = setup
        run = await started(daemon, log)

        async def broken(*args: object, **kwargs: object) -> None:
            raise KeyError("worker bug")

        monkeypatch.setattr(daemon_worker, "push_one", broken)
        for worker in daemon.workers:
            worker.wake(force=True)
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_CRASH
        assert crash_of(log)["task"].startswith("slave ")

    async def test_thread(self, setup: tuple[Daemon, Recorder]) -> None:
        """An exception in a thread (the watcher's) is a crash too."""
        daemon, log = setup
        run = await started(daemon, log)

        def die() -> None:
            raise OSError("inotify read failed")

        thread = threading.Thread(target=die, name="watcher-emitter")
        thread.start()
        thread.join()
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_CRASH
        crash = crash_of(log)
        assert crash["task"] == "thread watcher-emitter"
        assert "inotify read failed" in crash["error"]

    async def test_callback(self, setup: tuple[Daemon, Recorder]) -> None:
        """A callback scheduled on the loop (how watcher events arrive) that raises."""
        daemon, log = setup
        run = await started(daemon, log)

        def broken() -> None:
            raise ValueError("callback bug")

        asyncio.get_running_loop().call_soon(broken)
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_CRASH
        assert crash_of(log)["task"] == "callback"

    async def test_clean_stop_is_not_a_crash(self, setup: tuple[Daemon, Recorder]) -> None:
        """The control: SIGTERM stops with 0 and no daemon.crash."""
        daemon, log = setup
        run = await started(daemon, log)
        daemon.signals.handle(15)
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_OK
        assert not log.find("daemon.crash")


def _blocked(pid: int) -> set[int]:
    """The signals thread ``pid`` of process ``pid`` has blocked (/proc's SigBlk)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    return set()


class TestSignalsWhileStarting:
    def test_sighup_while_loading_is_a_reload_not_a_death(
        self, tmp_path: Path, daemon_process: type[DaemonProcess]
    ) -> None:
        """A SIGHUP that reaches ``dnsmaster run`` while it still loads (before its
        handlers exist) waits, blocked, and is then acted on; Python's default action
        would end the process."""
        zones, output = make_zones(tmp_path / "master")
        root = tmp_path / "slaves" / "ns2"
        root.mkdir(parents=True)
        path = tmp_path / "dnsmaster.toml"
        path.write_text(
            config_text(
                zones=zones,
                output=output,
                state=tmp_path / "state.json",
                daemon={"debounce": 0.1, "verify": False},
                slaves=[{"name": "ns2", "transport": "local", "root": root}],
            )
        )
        daemon = daemon_process(path).start()
        try:
            deadline = time.monotonic() + TIMEOUT
            # SIGQUIT is not the daemon's: a mask with it is a fork's or a thread's
            # start blocking everything for a moment, which proves nothing.
            while not (held := _blocked(daemon.pid)) or signal.SIGQUIT in held:
                assert daemon.running, daemon.dump()
                assert time.monotonic() < deadline, "SIGHUP never blocked while loading"
                time.sleep(0.001)
            assert signal.SIGHUP in held
            daemon.signal(signal.SIGHUP)
            daemon.wait("signal", signal="SIGHUP", timeout=TIMEOUT)
            daemon.settled(timeout=TIMEOUT)
            assert daemon.running
            assert signal.SIGHUP not in _blocked(daemon.pid)
            assert daemon.stop() == EXIT_OK
        finally:
            daemon.kill()


class TestWatcherNamesTheFiles:
    async def test_a_save_stats_only_what_the_watcher_named(
        self, setup: tuple[Daemon, Recorder]
    ) -> None:
        """After a save the Builder is told the names the watcher saw, so it stats
        only those; a rescan, and the build after a failed one, stat every file."""
        daemon, log = setup
        run = await started(daemon, log)
        told: list[frozenset[str] | None] = []
        build = daemon.builder.build

        def spy(**kwargs: Any) -> Any:
            changed = kwargs.get("changed")
            told.append(None if changed is None else frozenset(changed))
            return build(**kwargs)

        daemon.builder.build = spy  # type: ignore[method-assign]
        source = daemon.config.zones / "zones.example.net"
        text = source.read_bytes()
        source.write_bytes(text + b"+new.example.net:192.0.2.9\n")
        await log.wait("build.done", 2)
        assert told == [frozenset({"zones.example.net"})]

        source.write_bytes(text + b"Qnot a line\n")
        await log.wait("build.error")
        source.write_bytes(text)
        await log.wait("build.done", 3)
        assert told[1] == frozenset({"zones.example.net"})
        assert told[-1] is None  # the build after a failure stats every file

        daemon.rescan("test")
        await log.wait("watch.rescan")
        await log.idle_after(log.find("watch.rescan")[-1])
        assert told[-1] is None
        daemon.signals.handle(15)
        async with asyncio.timeout(TIMEOUT):
            assert await run == EXIT_OK
