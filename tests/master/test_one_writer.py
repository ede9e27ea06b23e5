"""One writer on the master, and a save that changes nothing changes nothing.

The daemon holds the output directory's lock for its life; ``dnsmaster push`` and
``build`` by hand hand their request to it and report what it did, so one edit
gets one serial everywhere. These run the real daemon (local slaves) and the real
commands as subprocesses, and judge by the logs, the serials on disk and the
slaves' installed data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dnsmaster import fsutil
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, DaemonProcess
from tests.lab.site import TIMEOUT, Local, Shared, example_com, running, shared_local, write

ENV = dict(os.environ, PYTHONPATH=str(PROJECT))


def command(*argv: str, timeout: float = 120) -> tuple[int, list[dict[str, Any]]]:
    """Run ``dnsmaster ARGV --log-format json`` in this process (beside the daemon
    process); its exit status and log events."""
    proc = dnsmaster_here(*argv, "--log-format", "json", timeout=timeout)
    events = []
    for line in proc.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "raw", "line": line})
    return proc.returncode, events


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


def serial_of(data: bytes) -> int | None:
    return previous_serial(data[:200])


@pytest.fixture(scope="class")
def handoff_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared[Local]]:
    """One daemon for the hand-off tests: each hands it a request and judges what it
    did from the mark on; between them it is put back at rest on the same zones. Its
    debounce is long, so that the hand-off, not the save, builds."""
    with shared_local(tmp_path_factory.mktemp("handoff"), debounce=5, max_delay=10) as shared:
        yield shared


@pytest.fixture
def handoff(handoff_site: Shared[Local]) -> tuple[Local, DaemonProcess]:
    return handoff_site.site, handoff_site.reset()


@pytest.mark.usefixtures("daemon_process")
class TestHandOff:
    def test_push_by_hand_beside_the_daemon(self, handoff: tuple[Local, DaemonProcess]) -> None:
        """An edit pushed by hand while the daemon runs: the daemon builds it once, the
        command reports each slave, and every copy has the same serial."""
        local, daemon = handoff
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.31"))
        status, events = command("push", "--config", str(local.config))
        assert status == 0, events
        assert named(events, "handoff.start")[0]["daemon"] == daemon.pid
        built = named(events, "build.done")
        assert len(built) == 1
        assert built[0]["by"] == "daemon"
        assert {e["slave"] for e in named(events, "push.done")} == {"ns2", "ns3"}
        done = daemon.wait("build.done", mark, timeout=TIMEOUT)
        assert done["serial"] == built[0]["serial"]
        daemon.wait_count("push.done", 2, mark, timeout=TIMEOUT, serial=done["serial"])
        # The save's own debounce ends in a build that finds nothing new.
        daemon.wait("build.unchanged", mark, timeout=TIMEOUT)
        assert len(daemon.find("build.done", mark)) == 1, daemon.dump()
        data = (local.output / "data").read_bytes()
        assert serial_of(data) == done["serial"]
        assert all(serial_of(d) == done["serial"] for d in local.installed())

    def test_push_of_an_unchanged_build_pushes_it_again(
        self, handoff: tuple[Local, DaemonProcess]
    ) -> None:
        """Nothing to build: the daemon pushes the current build again (SIGALRM)."""
        local, daemon = handoff
        current = serial_of((local.output / "data").read_bytes())
        mark = daemon.mark()
        status, events = command("push", "--config", str(local.config))
        assert status == 0, events
        assert named(events, "handoff.start")[0]["request"] == "push again"
        assert {e["slave"] for e in named(events, "push.done")} == {"ns2", "ns3"}
        daemon.wait_count("push.done", 2, mark, timeout=TIMEOUT, serial=current)
        assert not daemon.find("build.done", mark)

    def test_build_by_hand_beside_the_daemon(self, handoff: tuple[Local, DaemonProcess]) -> None:
        """``dnsmaster build`` writes nothing itself while the daemon holds the lock."""
        local, daemon = handoff
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.32"))
        status, events = command("build", "--config", str(local.config))
        assert status == 0, events
        reported = named(events, "build.done")[0]
        assert reported["by"] == "daemon"
        # The watcher may build the save before the hand-off's build (the shared
        # daemon sees the write too): the serial reported is one the daemon built.
        daemon.wait("build.done", mark, timeout=TIMEOUT, serial=reported["serial"])
        assert b"192.0.2.32" in (local.output / "data").read_bytes()


class TestLock:
    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_build_waits_for_the_lock(self, tmp_path: Path) -> None:
        """A build by hand while another writer (here ``flock``) holds the lock waits,
        says so, and builds once the lock is free."""
        local = Local(tmp_path, slaves=1)
        # Held long enough for the build (in process: no start to wait for) to find
        # it held; the build begins once the holder has the lock, not after a guess.
        holder = subprocess.Popen(["flock", str(local.output), "sleep", "2"])
        try:
            deadline = time.monotonic() + TIMEOUT
            free = ["flock", "-n", str(local.output), "true"]
            while subprocess.run(free, check=False).returncode == 0:
                assert time.monotonic() < deadline, "flock never took the lock"
                time.sleep(0.05)
            assert holder.poll() is None
            status, events = command("build", "--config", str(local.config))
            assert status == 0, events
            assert named(events, "lock.wait")
            assert holder.poll() == 0  # the build finished only after the holder
            assert named(events, "build.done")
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait()

    @pytest.mark.usefixtures("daemon_process")
    def test_daemon_waits_for_the_lock(self, tmp_path: Path) -> None:
        local = Local(tmp_path, slaves=1)  # the lock is the master's: one slave to push to
        lock = fsutil.DirectoryLock(local.output)
        assert lock.try_acquire()
        daemon = local.daemon.start()
        try:
            daemon.wait("lock.wait", timeout=TIMEOUT)
            assert not daemon.find("build.start")
            lock.release()
            daemon.wait("lock.taken", timeout=TIMEOUT)
            first = daemon.wait("build.done", timeout=TIMEOUT)
            daemon.wait("push.done", timeout=TIMEOUT, serial=first["serial"])
            assert daemon.stop() == 0
        finally:
            lock.release()
            local.daemon.kill()

    @pytest.mark.usefixtures("daemon_process")
    def test_daemon_refuses_an_unwritable_output(self, tmp_path: Path) -> None:
        """Output it cannot write (a read-only mount: even root cannot): exit 111 with
        the path and the fix, at once, instead of a daemon failing every build."""
        local = Local(tmp_path)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(local.output)], check=True
        )
        try:
            daemon = local.daemon.start()
            assert daemon.proc is not None
            assert daemon.proc.wait(TIMEOUT) == 111, daemon.dump()
            refused = daemon.find("daemon.refused")
            assert refused, daemon.dump()
            assert refused[0]["path"] == str(local.output)
            assert "read-only file system" in refused[0]["error"]
            assert not daemon.find("build.start")
        finally:
            local.daemon.kill()
            subprocess.run(["umount", str(local.output)], check=True)


@pytest.mark.usefixtures("daemon_process")
class TestNothingChanged:
    def test_a_save_of_the_same_content(self, tmp_path: Path) -> None:
        """``:w`` without a change, or ``touch``: no serial, no push (to its one slave:
        what is judged is the master's build)."""
        local = Local(tmp_path, slaves=1)
        with running(local) as (daemon, first):
            mark = daemon.mark()
            zone = local.zones / "zones.example.com"
            write(zone, zone.read_text())
            daemon.wait("build.unchanged", mark, timeout=TIMEOUT)
            mark = daemon.mark()
            staged = zone.with_name(".zones.example.com.tmp")  # as sed -i saves
            staged.write_text(zone.read_text())
            staged.rename(zone)
            daemon.wait("build.unchanged", mark, timeout=TIMEOUT)
            assert not daemon.find("build.done", mark)
            assert not daemon.find("push.done", mark)
            assert serial_of((local.output / "data").read_bytes()) == first["serial"]
            mark = daemon.mark()
            daemon.signal(1)  # SIGHUP still builds
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            assert done["serial"] != first["serial"]
            assert daemon.stop() == 0

    def test_lost_data_builds_above_the_slaves(self, tmp_path: Path) -> None:
        """The master's data is gone and the slaves serve a serial ahead of the clock:
        the first build's serial comes after theirs, so they take it. (One slave: the
        serial is the master's choice; each slave's receiver judges it alike.)"""
        local = Local(tmp_path, slaves=1)
        ahead = int(time.time()) + 1_000_000
        data = assemble(
            [compile_source("zones.example.com", example_com("192.0.2.1").encode())], ahead
        ).data
        for root in local.roots:
            proc = subprocess.run(
                [sys.executable, "-m", "dnsmaster", "receive", "--root", str(root)],
                input=data + seal(data),
                capture_output=True,
                check=False,
                env=dict(ENV, SSH_ORIGINAL_COMMAND="push"),
                timeout=60,
            )
            assert proc.returncode == 0, proc.stderr
        daemon = local.daemon.start()
        try:
            floor = daemon.wait("build.floor", timeout=TIMEOUT)
            assert floor["serial"] == ahead
            done = daemon.wait("build.done", timeout=TIMEOUT)
            assert done["serial"] == ahead + 1
            daemon.wait("push.done", timeout=TIMEOUT, serial=ahead + 1)
            assert all(serial_of(d) == ahead + 1 for d in local.installed())
            assert daemon.stop() == 0
        finally:
            local.daemon.kill()
