"""SIGHUP re-reads the configuration: slaves, hooks and timings take effect at once.

The pure part (:mod:`dnsmaster.daemon.reload`: what a new file changes) is tested on
configurations; the daemon in this process on local slaves (a real receiver per
push, as sshd would run it); and ``dnsmaster run`` as a process, edited and sent
SIGHUP, with ``status``, ``push``, ``wait``, ``diff`` and ``rollback`` run against it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster import config as configuration
from dnsmaster import exits
from dnsmaster.commands import status
from dnsmaster.daemon import metrics, reload
from dnsmaster.daemon import worker as daemon_worker
from dnsmaster.daemon.loop import Daemon
from dnsmaster.daemon.reload import RESTART_NEEDED
from dnsmaster.exits import EXIT_OK
from dnsmaster.master import handoff, health
from dnsmaster.master import state as statefile
from dnsmaster.master.state import FileStamp
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess, config_text
from tests.lab.metrics import parse
from tests.lab.recorder import Recorder
from tests.lab.site import make_zones

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab as SshLab
    from tests.lab.realworld import Slave as SshSlave


TIMEOUT = 30.0


def _local(root: Path, **extra: object) -> dict[str, object]:
    return {"name": root.name, "transport": "local", "root": root, **extra}


def _roots(base: Path, *names: str) -> list[Path]:
    roots = [base / "slaves" / name for name in names]
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    return roots


class Lab:
    """A zones directory, local slaves' roots, and the configuration file naming them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.zones, self.output = make_zones(base / "master")
        self.state = base / "state.json"
        self.path = base / "dnsmaster.toml"

    def write(
        self,
        slaves: list[dict[str, object]],
        *,
        daemon: dict[str, object] | None = None,
        top: dict[str, object] | None = None,
        extra: str = "",
    ) -> None:
        timings = {"debounce": 0.1, "retry_initial": 0.1, "retry_max": 0.5, "verify": False}
        text = config_text(
            zones=self.zones,
            output=self.output,
            state=self.state,
            daemon=timings | (daemon or {}),
            top=top,
            slaves=slaves,
        )
        self.path.write_text(text + extra)


def _load(lab: Lab) -> configuration.Config:
    return configuration.load(lab.path)


# -- what a new file changes (pure) ------------------------------------------------------


class TestCompare:
    def test_slaves(self, tmp_path: Path) -> None:
        """Added, removed and changed slaves are told apart; an unchanged one is none."""
        lab = Lab(tmp_path)
        ns2, ns3, ns4, ns5 = _roots(tmp_path, "ns2", "ns3", "ns4", "ns5")
        lab.write([_local(ns2), _local(ns3), _local(ns5)])
        old = _load(lab)
        lab.write([_local(ns2, compress="off"), _local(ns4), _local(ns5)])
        change = reload.compare(old, _load(lab))
        assert (change.added, change.removed, change.changed) == (("ns4",), ("ns3",), ("ns2",))
        assert change.sections == ()
        assert change.restart_needed == ()

    def test_connection_settings_change_ssh_slaves_only(self, tmp_path: Path) -> None:
        """[push] connect_timeout is part of an SSH slave's connection, not a local one's."""
        lab = Lab(tmp_path)
        (local,) = _roots(tmp_path, "ns2")
        known = tmp_path / "known_hosts"
        known.write_text("")
        ssh = {"name": "ns3", "host": "192.0.2.3"}
        lab.write([_local(local), ssh], top={"known_hosts": known})
        old = _load(lab)
        lab.path.write_text(lab.path.read_text() + "\n[push]\nconnect_timeout = 3\n")
        change = reload.compare(old, _load(lab))
        assert change.changed == ("ns3",)
        assert change.sections == ("push",)

    def test_restart_needed_kept(self, tmp_path: Path) -> None:
        """Settings a reload cannot apply are named and kept at the running value; the
        rest of the same section applies."""
        lab = Lab(tmp_path)
        lab.write([])
        old = _load(lab)
        lab.write(
            [],
            daemon={"poll": True, "debounce": 2.0, "max_delay": 9.0},
            extra='\n[log]\nformat = "json"\nlevel = "debug"\n',
        )
        new = _load(lab)
        change = reload.compare(old, new)
        assert change.restart_needed == ("log.format",)
        assert change.sections == ("daemon", "log")
        kept = reload.keep_restart_needed(old, new)
        assert (kept.log.format, kept.log.level) == ("logfmt", "debug")
        assert (kept.daemon.poll, kept.daemon.debounce, kept.daemon.max_delay) == (True, 2.0, 9.0)
        assert set(RESTART_NEEDED) >= {"zones", "output", "state", "log.format"}


# -- the daemon in this process ----------------------------------------------------------


async def _started(lab: Lab, log: Recorder, pushes: int) -> tuple[Daemon, asyncio.Task[int]]:
    daemon = Daemon(_load(lab), log)
    run = asyncio.create_task(daemon.run())
    await log.wait("push.done", pushes)
    return daemon, run


def _signal(signum: int) -> None:
    """A real signal to this process: the running daemon's loop handles it."""
    os.kill(os.getpid(), signum)


async def _stop(daemon: Daemon, run: asyncio.Task[int], log: Recorder) -> None:
    _signal(signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        assert await run == EXIT_OK
    assert not log.find("daemon.crash"), log.find("daemon.crash")


def _pushed_to(log: Recorder, name: str) -> list[dict[str, Any]]:
    return [e for e in log.find("push.done") if e["slave"] == name]


class TestDaemonReload:
    async def test_slaves_added_removed_changed(self, tmp_path: Path) -> None:
        """One SIGHUP: ns3 removed (its worker stopped), ns2 changed (a new worker asks
        it again), ns4 added (gets the current build); one config.reloaded says so."""
        lab = Lab(tmp_path)
        ns2, ns3, ns4 = _roots(tmp_path, "ns2", "ns3", "ns4")
        lab.write([_local(ns2), _local(ns3)])
        log = Recorder()
        daemon, run = await _started(lab, log, 2)
        lab.write([_local(ns2, compress="off"), _local(ns4)])
        before = daemon.workers[0]
        _signal(signal.SIGHUP)
        (event,) = await log.wait("config.reloaded")
        assert (event["added"], event["removed"], event["changed"]) == ("ns4", "ns3", "ns2")
        async with asyncio.timeout(TIMEOUT):
            while not _pushed_to(log, "ns4"):
                await log.wait("push.done", len(log.find("push.done")) + 1)
        assert daemon.current is not None
        # The receiver keeps the trailer that proved the stream whole.
        assert (ns4 / "data").read_bytes().startswith(daemon.current.text())
        stopped = {e["slave"] for e in log.find("slave.stopped")}
        assert stopped == {"ns2", "ns3"}
        assert {e["slave"] for e in log.find("slave.started")} == {"ns2", "ns4"}
        assert [w.slave.name for w in daemon.workers] == ["ns2", "ns4"]
        # The changed slave has a new worker (and channel) with the new settings.
        assert daemon.workers[0] is not before
        assert daemon.workers[0].slave.compress == "off"
        await _stop(daemon, run, log)
        saved = statefile.read(lab.state)
        assert [s.name for s in saved.slaves] == ["ns2", "ns4"]
        assert saved.config is not None
        assert saved.config.error is None

    async def test_bad_config_keeps_running(self, tmp_path: Path) -> None:
        """A file that does not load: config.reload_failed, the old config stays (and
        still builds on SIGHUP), the state file records it until a good reload."""
        lab = Lab(tmp_path)
        (ns2,) = _roots(tmp_path, "ns2")
        lab.write([_local(ns2)])
        log = Recorder()
        daemon, run = await _started(lab, log, 1)
        running = daemon.config
        good = lab.path.read_text()
        lab.path.write_text(good + "\n[daemon2]\n")  # an unknown key
        _signal(signal.SIGHUP)
        (failed,) = await log.wait("config.reload_failed")
        assert failed["file"] == str(lab.path)
        assert failed["key"] == "daemon2"
        assert "unknown key" in failed["reason"]
        await log.wait("build.start", 2)  # SIGHUP still builds
        assert daemon.config is running
        assert not log.find("config.reloaded")
        await log.idle_after(failed)  # at rest: the state file is written
        recorded = statefile.read(lab.state).config
        assert recorded is not None
        assert recorded.error is not None
        assert "daemon2" in recorded.error
        assert recorded.file_sha256 == hashlib.sha256(lab.path.read_bytes()).hexdigest()
        assert recorded.sha256 == hashlib.sha256(good.encode()).hexdigest()
        lab.path.write_text(good)
        _signal(signal.SIGHUP)
        (reloaded,) = await log.wait("config.reloaded")
        await log.idle_after(reloaded)
        recorded = statefile.read(lab.state).config
        assert recorded is not None
        assert recorded.error is None
        await _stop(daemon, run, log)

    async def test_timings_hooks_and_restart_needed(self, tmp_path: Path) -> None:
        """Debounce, parallel, guard, hooks and the watcher apply at once; the log
        format needs a restart: config.restart_needed, and the running value is kept."""
        lab = Lab(tmp_path)
        (ns2,) = _roots(tmp_path, "ns2")
        lab.write([_local(ns2)])
        log = Recorder()
        daemon, run = await _started(lab, log, 1)
        gate = daemon.gate
        marker = tmp_path / "built"
        lab.write(
            [_local(ns2)],
            daemon={"debounce": 0.3, "max_delay": 7.0, "poll": True},
            extra=f'\n[hooks]\nbuild = "touch {marker}"\n\n[guard]\nmax_removed = 0.5\n'
            '\n[push]\nparallel = 3\n\n[log]\nformat = "json"\n',
        )
        _signal(signal.SIGHUP)
        (event,) = await log.wait("config.reloaded")
        assert event["sections"] == "daemon,push,log,hooks,guard"
        assert event["changed"] == ""  # a local slave's connection has no [push] part
        (restart,) = log.find("config.restart_needed")
        assert restart["keys"] == "log.format"
        assert daemon.config.log.format == "logfmt"
        (watch,) = log.find("watch.restarted")
        assert watch["watch"] == "poll"
        assert daemon.config.daemon.poll is True
        # The new watcher sees a save.
        seen = len(log.find("watch.change"))
        (lab.zones / "zones.example.org").write_text(".example.org:127.0.0.1:a:259200\n")
        await log.wait("watch.change", seen + 1)
        assert daemon.debouncer.timing.quiet == 0.3
        assert daemon.debouncer.timing.max_delay == 7.0
        assert daemon.config.guard.max_removed == 0.5
        assert daemon.gate is not gate  # a new bound for pushes from now on
        # SIGHUP builds, and the new build hook runs after it.
        async with asyncio.timeout(TIMEOUT):
            while not marker.exists():
                await asyncio.sleep(0.05)
        await _stop(daemon, run, log)
        recorded = statefile.read(lab.state).config
        assert recorded is not None
        assert recorded.restart_needed == ("log.format",)


class TestRetire:
    """A removed slave's push under way: it may finish (up to stop_timeout), else it is
    cancelled; either way the worker ends without a crash and the gate is free."""

    async def _held_push(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_timeout: float
    ) -> tuple[Recorder, Daemon, asyncio.Task[int], asyncio.Event]:
        lab = Lab(tmp_path)
        ns2, ns3 = _roots(tmp_path, "ns2", "ns3")
        lab.write([_local(ns2), _local(ns3)], daemon={"stop_timeout": stop_timeout})
        log = Recorder()
        daemon, run = await _started(lab, log, 2)
        release = asyncio.Event()
        real = daemon_worker.push_one

        async def held(channel: Any, *args: Any, **kwargs: Any) -> Any:
            if channel.slave.name == "ns3":
                await release.wait()  # a slow slave: the push is under way meanwhile
            return await real(channel, *args, **kwargs)

        monkeypatch.setattr(daemon_worker, "push_one", held)
        _signal(signal.SIGALRM)  # push again to every slave
        ns3_worker = daemon.workers[1]
        async with asyncio.timeout(TIMEOUT):
            while not ns3_worker.busy:
                await asyncio.sleep(0.01)
        lab.write([_local(ns2)], daemon={"stop_timeout": stop_timeout})
        _signal(signal.SIGHUP)
        return log, daemon, run, release

    async def test_push_under_way_finishes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        log, daemon, run, release = await self._held_push(tmp_path, monkeypatch, 20.0)
        ns3_worker = daemon.workers[1]
        async with asyncio.timeout(TIMEOUT):
            while not ns3_worker.retired:  # the reload got to it, and waits for its push
                await asyncio.sleep(0.01)
        assert not log.find("config.reloaded")
        pushes = len(_pushed_to(log, "ns3"))
        release.set()
        await log.wait("config.reloaded")
        assert len(_pushed_to(log, "ns3")) == pushes + 1  # it finished, then stopped
        assert log.find("slave.stopped")[0]["slave"] == "ns3"
        assert [w.slave.name for w in daemon.workers] == ["ns2"]
        await _stop(daemon, run, log)

    async def test_push_over_stop_timeout_is_cancelled(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        log, daemon, run, _ = await self._held_push(tmp_path, monkeypatch, 0.2)
        (event,) = await log.wait("config.reloaded")
        assert event["removed"] == "ns3"
        assert log.find("slave.stopped")[0]["slave"] == "ns3"
        # The cancelled push left the gate free: ns2 is pushed to again.
        pushes = len(_pushed_to(log, "ns2"))
        _signal(signal.SIGALRM)
        await log.wait("push.done", len(log.find("push.done")) + 1)
        assert len(_pushed_to(log, "ns2")) == pushes + 1
        await _stop(daemon, run, log)


# -- status and the hand-off, pure -------------------------------------------------------


def _state(config: statefile.ConfigState | None, *slaves: str) -> statefile.State:
    return statefile.State(
        pid=os.getpid(),
        updated=time.time(),
        build=None,
        slaves=tuple(statefile.SlaveState(n) for n in slaves),
        config=config,
    )


LOADED = statefile.ConfigState("/etc/dnsmaster.toml", "a" * 64, 100.0, 100.0)


class TestJudgeConfig:
    def test_same_file_is_no_finding(self) -> None:
        assert health.judge_config(_state(LOADED), file=FileStamp("a" * 64, 100.0)) is None

    def test_older_daemon_says_nothing(self) -> None:
        assert health.judge_config(_state(None), file=FileStamp("b" * 64, 1.0)) is None

    def test_changed_without_sighup(self) -> None:
        found = health.judge_config(_state(LOADED), file=FileStamp("b" * 64, 200.0))
        assert found is not None
        assert (found.state, found.since, found.chosen) == ("changed", 200.0, False)
        assert found.action is not None
        assert "sv hup dnsmaster" in found.action

    def test_reload_failed(self) -> None:
        failed = statefile.ConfigState(
            "/etc/dnsmaster.toml",
            "a" * 64,
            100.0,
            100.0,
            error="/etc/dnsmaster.toml: daemon2: unknown key",
            failed_at=300.0,
            file_sha256="c" * 64,
            file_mtime=290.0,
        )
        found = health.judge_config(_state(failed), file=FileStamp("c" * 64, 290.0))
        assert found is not None
        assert (found.state, found.chosen) == ("reload-failed", True)
        assert "daemon2: unknown key" in found.reason
        # Fixed since, not yet reloaded: a change to apply, no failure any more.
        fixed = health.judge_config(_state(failed), file=FileStamp("d" * 64, 400.0))
        assert fixed is not None
        assert fixed.state == "changed"

    def test_restart_needed(self) -> None:
        needs = statefile.ConfigState(
            "/etc/dnsmaster.toml", "a" * 64, 100.0, 100.0, restart_needed=("zones",)
        )
        found = health.judge_config(_state(needs), file=FileStamp("a" * 64, 100.0))
        assert found is not None
        assert found.state == "restart-needed"
        assert "zones" in found.reason


class TestNagios:
    def _level(self, config: statefile.ConfigState, file: FileStamp, age: float) -> int:
        now = (file.mtime if config.error is None else config.failed_at or 0.0) + age
        build = statefile.BuildState(1, "d" * 64, 10, 0.0)
        state = dataclasses.replace(
            _state(config), updated=now, heartbeat_interval=10.0, build=build
        )
        rep = health.judge(
            state, now=now, alive=True, zones=health.ZonesCheck(False), config_file=file
        )
        assert rep.config is not None
        return status.nagios(rep, warning=120, critical=600)[0]

    def test_changed_warns_late_and_never_pages(self) -> None:
        """A file edited without SIGHUP: OK at first (an edit under way), WARNING after
        --warning, still WARNING long after --critical: the daemon works on."""
        edited = FileStamp("b" * 64, 1000.0)
        assert self._level(LOADED, edited, 10) == status.NAGIOS_OK
        assert self._level(LOADED, edited, 200) == status.NAGIOS_WARNING
        assert self._level(LOADED, edited, 7200) == status.NAGIOS_WARNING

    def test_reload_failed_warns_at_once(self) -> None:
        failed = dataclasses.replace(
            LOADED, error="bad", failed_at=2000.0, file_sha256="c" * 64, file_mtime=1990.0
        )
        assert self._level(failed, FileStamp("c" * 64, 1990.0), 1) == status.NAGIOS_WARNING


class TestUnknownSlaves:
    def test_named_with_the_fix(self, tmp_path: Path) -> None:
        path = tmp_path / "state.json"
        statefile.write(path, _state(LOADED, "ns2"))
        config = Path("/etc/dnsmaster/dnsmaster.toml")
        assert handoff.unknown_slaves(path, config, ["ns2"]) is None
        why = handoff.unknown_slaves(path, config, ["ns2", "ns3"])
        assert why == (
            f"the daemon (pid {os.getpid()}) loaded {config} before ns3 was added to it: "
            "send it SIGHUP (svc -h /service/dnsmaster or sv hup dnsmaster), then try again"
        )

    def test_no_daemon_no_refusal(self, tmp_path: Path) -> None:
        path = tmp_path / "state.json"
        stopped = _state(LOADED, "ns2")
        statefile.write(path, dataclasses.replace(stopped, stopped=time.time()))
        assert handoff.unknown_slaves(path, Path("c.toml"), ["ns3"]) is None
        assert handoff.unknown_slaves(tmp_path / "none.json", Path("c.toml"), ["ns3"]) is None

    def test_grace_waits_for_a_sighup_on_its_way(self, tmp_path: Path) -> None:
        """``svc -h`` returns before the daemon has re-read the file: with a grace, a
        file the daemon has not answered yet is waited for, and the slave found."""
        import threading  # noqa: PLC0415

        path, config = tmp_path / "state.json", tmp_path / "c.toml"
        config.write_text("edited\n")
        statefile.write(path, _state(LOADED, "ns2"))
        edited = statefile.stamp(config).sha256
        reloaded = dataclasses.replace(LOADED, sha256=edited)
        later = threading.Timer(0.5, statefile.write, (path, _state(reloaded, "ns2", "ns3")))
        later.start()
        try:
            start = time.monotonic()
            assert handoff.unknown_slaves(path, config, ["ns3"], grace=30) is None
            assert time.monotonic() - start < 10
        finally:
            later.cancel()

    def test_grace_ends_on_an_answer(self, tmp_path: Path) -> None:
        """No wait when the daemon has answered this version of the file: loaded
        before the slave was added (the file is the loaded one) or failed on it."""
        path, config = tmp_path / "state.json", tmp_path / "c.toml"
        config.write_text("same\n")
        sha = statefile.stamp(config).sha256
        statefile.write(path, _state(dataclasses.replace(LOADED, sha256=sha), "ns2"))
        start = time.monotonic()
        assert "send it SIGHUP" in (handoff.unknown_slaves(path, config, ["ns3"], grace=30) or "")
        failed = dataclasses.replace(LOADED, error="bad", failed_at=2.0, file_sha256=sha)
        statefile.write(path, _state(failed, "ns2"))
        assert "could not load" in (handoff.unknown_slaves(path, config, ["ns3"], grace=30) or "")
        assert time.monotonic() - start < 5


# -- dnsmaster run, edited and sent SIGHUP ----------------------------------------------


def _cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command in this process, beside the daemon process."""
    return dnsmaster_here(*argv, "--config", str(config))


@pytest.fixture(scope="class")
def running_daemon(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Lab, DaemonProcess, str]]:
    """One daemon for the class's tests (each edits the file, sends SIGHUP and judges
    what follows): the site, the daemon, and the file as it started."""
    base = tmp_path_factory.mktemp("running")
    lab = Lab(base)
    (ns2,) = _roots(base, "ns2")
    lab.write([_local(ns2)])
    daemon = DaemonProcess(lab.path)
    try:
        daemon.start()
        daemon.wait("push.done", timeout=TIMEOUT, slave="ns2")
        daemon.wait_named(lab.state, TIMEOUT)  # the commands in process hand off to it
        yield lab, daemon, lab.path.read_text()
        assert daemon.stop() == 0, daemon.dump()
    finally:
        daemon.kill()


@pytest.fixture
def running(running_daemon: tuple[Lab, DaemonProcess, str]) -> tuple[Lab, DaemonProcess]:
    """The class's daemon, put back on the file it started with (loaded by a SIGHUP if
    a test before changed it) and at rest."""
    lab, daemon, text = running_daemon
    assert daemon.running, daemon.dump()
    if lab.path.read_text() != text:
        lab.path.write_text(text)
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
    daemon.settled(TIMEOUT)
    return lab, daemon


@pytest.mark.usefixtures("daemon_process")
class TestRunningDaemon:
    def test_unknown_slave_fails_fast_then_sighup_adds_it(
        self, running: tuple[Lab, DaemonProcess], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ns3 added to the file: push, wait, diff and rollback for it fail at once
        with the fix, status says the file changed; after SIGHUP ns3 gets the build.

        The commands run in this process, one after the other, each waiting out a
        reload grace shortened to a second (the grace's own tests are above): four
        processes cost four starts of CPU to wait out one grace together."""
        lab, daemon = running
        monkeypatch.setattr(handoff, "RELOAD_GRACE", 1.0)
        ns2, ns3 = _roots(lab.base, "ns2", "ns3")
        lab.write([_local(ns2), _local(ns3)])
        build = statefile.read(lab.state).build
        assert build is not None
        serial = str(build.serial)
        commands = (
            ("push", "--slave", "ns3"),
            ("wait", serial, "--slave", "ns3", "--timeout", "60"),
            ("diff", "--slave", "ns3"),
            ("rollback", "--release"),
        )
        for argv in commands:
            start = time.monotonic()
            proc = _cli(lab.path, *argv)
            seconds = time.monotonic() - start
            assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
            # The grace (1 s) on a loaded machine; far from what waiting would take
            # (the wait's --timeout 60, or a push's outcome that never comes).
            assert seconds < 30, (argv, seconds)
            assert f"loaded {lab.path} before ns3 was added to it: send it SIGHUP" in (
                proc.stderr
            ), (argv, proc.stderr)
        proc = _cli(lab.path, "status")
        assert proc.returncode == exits.EXIT_STALE_CONFIG, proc.stdout + proc.stderr
        assert "config: changed" in proc.stderr
        # A slave it runs is pushed to, with a word that the file is not applied yet.
        proc = _cli(lab.path, "push", "--slave", "ns2")
        assert proc.returncode == 0, proc.stderr
        assert "event=handoff.config_behind" in proc.stderr
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        event = daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
        assert (event["added"], event["removed"], event["changed"]) == ("ns3", "", "")
        done = daemon.wait("push.done", mark, timeout=TIMEOUT, slave="ns3")
        master = (lab.output / "data").read_bytes()
        assert hashlib.sha256(master).hexdigest()[:16] == done["sha256"]
        assert (ns3 / "data").read_bytes().startswith(master)
        proc = _cli(lab.path, "push", "--slave", "ns3")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "handoff.config_behind" not in proc.stderr
        proc = _cli(lab.path, "status")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert daemon.running

    def test_bad_config_on_sighup_status_shows_it(self, running: tuple[Lab, DaemonProcess]) -> None:
        """A key file that does not exist: config.reload_failed, the daemon keeps
        pushing on the old config, status (plain, --json, --nagios) shows it until a
        SIGHUP loads a good file."""
        lab, daemon = running
        good = lab.path.read_text()
        missing = lab.base / "no-such-key"
        lab.path.write_text(
            good.replace('transport = "local"', f'transport = "local"\nkey = "{missing}"')
        )
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait("config.reload_failed", mark, timeout=TIMEOUT)
        assert failed["file"] == str(lab.path)
        assert failed["key"] == "slave[0].key"
        assert str(missing) in failed["reason"]
        # Still at work on the old configuration: SIGHUP's build is pushed.
        daemon.wait("build.start", mark, timeout=TIMEOUT, reason="sighup")
        daemon.wait("push.done", mark, timeout=TIMEOUT, slave="ns2")
        assert daemon.running
        daemon.settled(TIMEOUT)  # at rest: the state file says the push is done

        proc = _cli(lab.path, "status")
        assert proc.returncode == exits.EXIT_STALE_CONFIG, proc.stdout + proc.stderr
        assert "config   reload-failed" in proc.stdout
        assert "config: reload-failed" in proc.stderr
        assert str(missing) in proc.stderr
        proc = _cli(lab.path, "status", "--json")
        health = json.loads(proc.stdout)["health"]
        assert health["config"]["state"] == "reload-failed"
        assert health["exit"] == exits.EXIT_STALE_CONFIG
        proc = _cli(lab.path, "status", "--nagios")
        assert proc.returncode == status.NAGIOS_WARNING, proc.stdout
        assert proc.stdout.startswith("DNSMASTER WARNING - config reload-failed")

        lab.path.write_text(good)
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            proc = _cli(lab.path, "status")
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "config" not in proc.stdout


class TestMetrics:
    def test_reload_failed_gauge(self) -> None:
        """The textfile says whether the last SIGHUP loaded, and when the running
        configuration was loaded; a daemon that does not say gives no sample."""
        failed = dataclasses.replace(LOADED, error="bad", failed_at=300.0)
        got = parse(metrics.render(_state(failed)))
        assert got[("dnsmaster_config_reload_failed", ())] == 1
        assert got[("dnsmaster_config_load_timestamp_seconds", ())] == 100.0
        assert parse(metrics.render(_state(LOADED)))[("dnsmaster_config_reload_failed", ())] == 0
        assert ("dnsmaster_config_reload_failed", ()) not in parse(metrics.render(_state(None)))


# -- real slaves over SSH ----------------------------------------------------------------


def _connections(pid: int, slave: SshSlave) -> set[str]:
    """The local ends of ``pid``'s established TCP connections to the slave's sshd."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dst", f"{slave.address}:{slave.port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[2] for line in out.splitlines() if f"pid={pid}," in line}


def _ssh(slave: SshSlave) -> dict[str, object]:
    return {"name": slave.name, "host": slave.address, "port": slave.port, "dns": slave.address}


class TestSshSlaves:
    def test_changed_slave_reconnects_added_one_is_served(
        self, tmp_path: Path, lab: SshLab
    ) -> None:
        """Over real sshd and tinydns: a changed slave's kept connection is closed and a
        new one made with its new settings; an added slave is pushed to and serves the
        serial over DNS; a removed slave's connection is closed."""
        one, two = lab(2)
        lab_config = Lab(tmp_path)
        top = {"key": lab.key, "known_hosts": lab.known_hosts, "user": lab.user}
        guard = "\n[guard]\nmax_removed = 1.0\nzones = false\n"
        lab_config.write([_ssh(one)], daemon={"verify": True}, top=top, extra=guard)
        daemon = DaemonProcess(lab_config.path).start()
        try:
            daemon.wait("push.done", timeout=TIMEOUT, slave=one.name)
            before = _connections(daemon.pid, one)
            assert len(before) == 1, before  # the daemon keeps its connection open

            lab_config.write(
                [{**_ssh(one), "compress": "on"}, _ssh(two)],
                daemon={"verify": True},
                top=top,
                extra=guard,
            )
            mark = daemon.mark()
            daemon.signal(signal.SIGHUP)
            event = daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
            assert (event["added"], event["changed"]) == (two.name, one.name)
            done = daemon.wait("push.done", mark, timeout=TIMEOUT, slave=two.name)
            assert two.tinydns.wait_serial("example.com", done["serial"]) == done["serial"]
            # The changed slave is pushed with its new setting, on a new connection.
            daemon.wait("push.done", mark, timeout=TIMEOUT, slave=one.name, compressed=True)
            after = _connections(daemon.pid, one)
            assert len(after) == 1, after
            assert after.isdisjoint(before), (before, after)
            assert _connections(daemon.pid, two)

            lab_config.write(
                [{**_ssh(one), "compress": "on"}], daemon={"verify": True}, top=top, extra=guard
            )
            mark = daemon.mark()
            daemon.signal(signal.SIGHUP)
            event = daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
            assert (event["removed"], event["changed"]) == (two.name, "")
            daemon.wait("slave.stopped", mark, timeout=TIMEOUT, slave=two.name)
            deadline = time.monotonic() + 10
            while _connections(daemon.pid, two) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _connections(daemon.pid, two)
            assert daemon.stop() == 0
        finally:
            daemon.kill()
