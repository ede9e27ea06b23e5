"""``dnsmaster run`` end to end: a subprocess, its JSON log, real slaves.

The real-slave tests take three slaves from :mod:`tests.lab.realworld` (OpenSSH's
sshd with the ``dnsmaster receive`` forced command, and tinydns on 127.0.1.N:53; one
slave where a test is about the master's side of a save, not about reaching several:
each slave a save reaches is an SSH session and a receiver, most of the CPU), run the
daemon as ``python -m dnsmaster run --config FILE --log-format json`` and judge it
by what it logs, what the slaves' tinydns answer over DNS (dnspython), the state
file and ``dnsmaster status``. The tests of a class share one daemon
(:class:`tests.lab.site.Shared`: started once, put back at rest on the same zones
before each test), as they only save, signal or cut a slave and judge what follows.
The local tests use ``transport = "local"`` slaves (the receiver as a subprocess, no
sshd) for the branches that need no network.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.master import state as statefile
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, DaemonProcess
from tests.lab.site import (
    NET,
    TIMEOUT,
    Local,
    Rig,
    Shared,
    example_com,
    shared_rig,
    status,
    wait_state,
    write,
)
from tests.lab.site import all_ok as _all_ok
from tests.lab.site import all_verified as _all_verified

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave
    from tests.lab.shared import WorkerLab


def files(path: Path) -> bool:
    """A file of the output directory but the state file (the kept builds and the
    build cache are directories)."""
    return path.is_file() and path.name != "state.json"


# -- real slaves -----------------------------------------------------------------------


# One daemon for the tests of each class below, put back between them (site.Shared): a
# test saves, signals or cuts a slave and judges what follows its mark. Each class has
# the slaves its tests are about: three to see a save reach several, one for what a
# save does on the master's side, two for one slave set apart and one left alone.


@pytest.fixture(scope="class")
def three(tmp_path_factory: pytest.TempPathFactory, worker_lab: WorkerLab) -> Iterator[Shared[Rig]]:
    with shared_rig(tmp_path_factory.mktemp("rig"), worker_lab, 3) as shared:
        yield shared


@pytest.fixture(scope="class")
def one(tmp_path_factory: pytest.TempPathFactory, worker_lab: WorkerLab) -> Iterator[Shared[Rig]]:
    with shared_rig(tmp_path_factory.mktemp("rig"), worker_lab, 1) as shared:
        yield shared


@pytest.fixture(scope="class")
def two(tmp_path_factory: pytest.TempPathFactory, worker_lab: WorkerLab) -> Iterator[Shared[Rig]]:
    with shared_rig(tmp_path_factory.mktemp("rig"), worker_lab, 2) as shared:
        yield shared


@pytest.fixture
def rig(three: Shared[Rig]) -> tuple[Rig, DaemonProcess]:
    return three.site, three.reset()


@pytest.fixture
def rig1(one: Shared[Rig]) -> tuple[Rig, DaemonProcess]:
    return one.site, one.reset()


@pytest.fixture
def rig2(two: Shared[Rig]) -> Shared[Rig]:
    two.reset()
    return two


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (from /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(_descendants(child))
    return found


def cut(slave: Slave) -> None:
    """Take the slave's sshd down the way a reboot does: the listener and its sessions.

    Stopping only the listener would leave the daemon's kept connection (an sshd
    session process) alive, and the push would still get through.
    """
    assert slave.sshd.pid is not None
    sessions = _descendants(slave.sshd.pid)
    slave.sshd.stop()
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue


def built(rig: Rig) -> int:
    """The serial of the build the daemon serves (a shared daemon may have been started
    again, on a build it did not make: its log has none)."""
    build = statefile.read(rig.state).build
    assert build is not None
    assert build.serial is not None
    return build.serial


class TestThreeSlaves:
    def test_save_propagates(self, rig: tuple[Rig, DaemonProcess]) -> None:
        """(a) One save: built once, pushed to all three, served, verified; status 0."""
        rig, daemon = rig
        mark = daemon.mark()
        write(rig.zones / "zones.example.com", example_com("192.0.2.99"))
        start = daemon.wait("build.start", mark, reason="change")
        assert start["changes"] >= 1
        done = daemon.wait("build.done", mark)
        assert done["changed"] == "zones.example.com"
        serial = done["serial"]
        pushes = daemon.wait_count("push.done", 3, mark, serial=serial)
        assert {p["slave"] for p in pushes} == rig.names
        assert len({p["sha256"] for p in pushes}) == 1
        rig.assert_served(serial)
        for s in rig.slaves:
            assert s.tinydns.answer("www.example.com", "A") == ["192.0.2.99"]
            assert s.installed() is not None
            assert s.installed().startswith((rig.output / "data").read_bytes())  # type: ignore[union-attr]
        verified = daemon.wait_count("verify.ok", 3, mark, zone="example.com", serial=serial)
        assert {v["slave"] for v in verified} == rig.names
        state = wait_state(rig.state, "verified")
        assert _all_verified(state), state
        assert state.build is not None
        assert state.build.serial == serial
        assert state.pid == daemon.pid
        proc = status(rig.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert str(serial) in proc.stdout
        assert len(daemon.find("build.start", mark)) == 1

    def test_signals(self, rig: tuple[Rig, DaemonProcess]) -> None:
        """(e) SIGHUP builds, SIGALRM pushes again to all, SIGTERM stops cleanly."""
        rig, daemon = rig
        old = built(rig)
        mark = daemon.mark()
        daemon.signal(signal.SIGHUP)
        daemon.wait("build.start", mark, reason="sighup")
        done = daemon.wait("build.done", mark)
        assert done["serial"] > old
        daemon.wait_count("push.done", 3, mark, serial=done["serial"])
        rig.assert_served(done["serial"])

        mark = daemon.mark()
        daemon.signal(signal.SIGALRM)
        daemon.wait("signal", mark, signal="SIGALRM")
        pushes = daemon.wait_count("push.done", 3, mark)
        assert {p["slave"] for p in pushes} == rig.names
        assert {p["sha256"] for p in pushes} == {done["sha256"]}
        assert not daemon.find("build.start", mark)
        wait_state(rig.state, "ok")

        mark = daemon.mark()
        assert daemon.stop() == 0
        names = [e["event"] for e in daemon.events[mark:]]
        assert names[-1] == "daemon.stop", names
        state = statefile.read(rig.state)
        assert state.pid == daemon.pid
        assert state.build is not None
        assert state.build.serial == done["serial"]
        assert _all_ok(state), state
        assert status(rig.config).returncode == 5  # stopped: nothing builds or pushes now


class TestOneSlave:
    def test_burst_of_saves(self, rig1: tuple[Rig, DaemonProcess]) -> None:
        """(b) 50 rapid rewrites: a few builds at most, the last content served everywhere."""
        rig, daemon = rig1
        mark = daemon.mark()
        path = rig.zones / "zones.example.com"
        for i in range(1, 51):
            write(path, example_com(f"192.0.2.{i}"))
            time.sleep(0.01)  # paces the rewrites: a script's loop, not one write
        last = "192.0.2.50"
        deadline = time.monotonic() + TIMEOUT
        for s in rig.slaves:
            while s.tinydns.answer("www.example.com", "A") != [last]:
                assert time.monotonic() < deadline, f"{s.name} never served {last}"
                time.sleep(0.05)
        # The build served now, and whatever else the rewrites set going, is done
        # when the daemon next comes to rest: a later build would have been counted.
        daemon.idle_after(daemon.find("build.done", mark)[-1], TIMEOUT)
        builds = daemon.find("build.done", mark)
        assert 1 <= len(builds) <= 3, builds
        assert sum(s["changes"] for s in daemon.find("build.start", mark)) >= 50
        final = builds[-1]["serial"]
        pushes = daemon.find("push.done", mark, serial=final)
        assert {p["slave"] for p in pushes} == rig.names
        rig.assert_served(final)
        assert not daemon.find("push.failed", mark)

    def test_failed_build_changes_nothing(self, rig1: tuple[Rig, DaemonProcess]) -> None:
        """(c) A bad line: build.error names file and line, nothing written or pushed."""
        rig, daemon = rig1
        before = built(rig)
        master = {p.name: p.read_bytes() for p in rig.output.iterdir() if files(p)}
        served = {s.name: s.snapshot() for s in rig.slaves}
        mark = daemon.mark()
        bad = example_com("192.0.2.81", extra="+broken.example.com:192.0.2.300\n")
        write(rig.zones / "zones.example.com", bad)
        error = daemon.wait("build.error", mark)
        assert error["file"] == "zones.example.com"
        assert error["line"] == 5
        assert "192.0.2.300" in error["error"]
        daemon.idle_after(daemon.wait("build.failed", mark, kept_serial=before))
        events = {e["event"] for e in daemon.events[mark:]}
        assert not {e for e in events if e.startswith(("push.", "verify."))}, events
        assert "build.done" not in events
        after = {p.name: p.read_bytes() for p in rig.output.iterdir() if files(p)}
        assert after == master
        for s in rig.slaves:
            assert s.snapshot() == served[s.name]
            assert s.tinydns.soa_serial("example.com") == before
        state = statefile.read(rig.state)
        assert state.build is not None
        assert state.build.error
        assert status(rig.config).returncode == 4  # a failed build is worth a look

        mark = daemon.mark()
        write(rig.zones / "zones.example.com", example_com("192.0.2.82"))
        done = daemon.wait("build.done", mark)
        assert done["serial"] > before
        daemon.wait_count("push.done", len(rig.slaves), mark, serial=done["serial"])
        rig.assert_served(done["serial"])
        for s in rig.slaves:
            assert s.tinydns.answer("www.example.com", "A") == ["192.0.2.82"]
        wait_state(rig.state, "verified")
        proc = status(rig.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_editor_saves_build_once(self, rig1: tuple[Rig, DaemonProcess]) -> None:
        """(f) Every kind of save is one build.start reason=change, then served."""
        rig, daemon = rig1
        z = rig.zones
        vim = shutil.which("vim")

        def vim_save() -> None:
            if vim is None:  # replay what vim does with writebackup and backupcopy=no
                write(z / ".zones.example.com.swp", "b0VIM 9.0\0" * 10)
                os.rename(z / "zones.example.com", z / "zones.example.com~")
                write(z / "zones.example.com", example_com("192.0.2.11"))
                os.unlink(z / "zones.example.com~")
                os.unlink(z / ".zones.example.com.swp")
                return
            subprocess.run(
                [
                    vim,
                    "--clean",
                    "-es",
                    "-c",
                    "set backupcopy=no writebackup",
                    "-c",
                    "%s/192.0.2.80/192.0.2.11/",
                    "-c",
                    "wq",
                    "zones.example.com",
                ],
                cwd=z,
                stdin=subprocess.DEVNULL,
                check=True,
                timeout=30,
            )

        def sed_save() -> None:
            subprocess.run(
                ["sed", "-i", "s/192.0.2.11/192.0.2.12/", "zones.example.com"], cwd=z, check=True
            )

        patterns = [
            ("vim rename-swap", vim_save, "192.0.2.11"),
            ("sed -i", sed_save, "192.0.2.12"),
            ("overwrite", lambda: write(z / "zones.example.com", example_com("192.0.2.13")), None),
            ("new file", lambda: write(z / "zones.example.org", NET.replace("net", "org")), None),
            ("deleted file", lambda: os.unlink(z / "zones.example.org"), None),
            (
                "renamed file",
                lambda: os.rename(z / "zones.example.net", z / "zones.example.info"),
                None,
            ),
        ]
        problems = []
        for name, save, www in patterns:
            mark = daemon.mark()
            save()
            done = daemon.wait("build.done", mark)
            daemon.wait_count("push.done", len(rig.slaves), mark, serial=done["serial"])
            daemon.idle_after(done)  # a second build of the same save would come first
            starts = daemon.find("build.start", mark)
            if [s["reason"] for s in starts] != ["change"]:
                problems.append(f"{name}: {starts}")
            rig.assert_served(done["serial"])
            if www is not None:
                for s in rig.slaves:
                    assert s.tinydns.answer("www.example.com", "A") == [www], name
        assert not problems, problems
        assert not (z / "zones.example.com~").exists()
        for s in rig.slaves:
            # zones.example.info still holds example.net: the file name is no zone name
            assert s.tinydns.soa_serial("example.net") == done["serial"]


class TestTwoSlaves:
    def test_slave_down_catches_up(self, rig2: Shared[Rig]) -> None:
        """(d) A slave whose sshd is down misses the push, is retried, catches up."""
        rig, daemon = rig2.site, rig2.daemon
        down = rig.slaves[1]
        old = down.tinydns.soa_serial("example.com")
        cut(down)
        mark = daemon.mark()
        write(rig.zones / "zones.example.com", example_com("192.0.2.77"))
        serial = daemon.wait("build.done", mark)["serial"]
        up = rig.names - {down.name}
        pushes = daemon.wait_count("push.done", len(up), mark, serial=serial)
        assert {p["slave"] for p in pushes} == up
        failed = daemon.wait("push.failed", mark, slave=down.name)
        assert failed["error"]
        daemon.wait("retry.scheduled", mark, slave=down.name)
        for s in rig.slaves:
            if s is not down:
                assert s.tinydns.wait_serial("example.com", serial, 10) == serial
        assert down.tinydns.soa_serial("example.com") == old
        # The state file follows the events by STATE_DELAY; the daemon never rests
        # while a retry is due, so the file is waited for, not the daemon.
        deadline = time.monotonic() + TIMEOUT
        while not any(x.name == down.name and x.result == "failed" for x in _slaves(rig)):
            assert time.monotonic() < deadline, statefile.read(rig.state)
            time.sleep(0.05)
        proc = status(rig.config)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert down.name in proc.stderr
        # A few retries while it is down, the delays growing up to retry_max.
        retries = daemon.wait_count("retry.scheduled", 3, mark, slave=down.name)
        delays = [r["seconds"] for r in retries]
        assert delays == sorted(delays), delays
        assert max(delays) <= 1.0, delays
        down.sshd.start()
        catch = daemon.mark()
        done = daemon.wait("push.done", catch, slave=down.name)
        assert done["serial"] == serial
        assert down.tinydns.wait_serial("example.com", serial, 10) == serial
        assert down.tinydns.answer("www.example.com", "A") == ["192.0.2.77"]
        wait_state(rig.state, "verified")
        proc = status(rig.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # The others were not pushed to again.
        assert {p["slave"] for p in daemon.find("push.done", catch)} == {down.name}

    def test_restart_pushes_only_to_slaves_behind(self, rig2: Shared[Rig]) -> None:
        """(g) Restart, zones unchanged: no rebuild; only the slave that differs is pushed."""
        rig, daemon = rig2.site, rig2.daemon
        serial = built(rig)
        assert daemon.stop() == 0
        data = (rig.output / "data").read_bytes()
        behind = rig.slaves[-1]
        other = assemble(
            [compile_source("zones.x", b".example.com:127.0.0.1:a\n+www.example.com:10.9.9.9\n")],
            serial - 100,
        ).data
        # An older build: the receiver takes it only when forced (a rollback).
        proc = rig.lab.ssh(behind, "push", "--force", input=other + seal(other))
        assert proc.returncode == 0, proc.stderr.decode()
        assert behind.tinydns.soa_serial("example.com") == serial - 100

        again = rig2.start()  # the daemon the class's next test uses
        current = again.wait("build.current")
        assert current["serial"] == serial
        answers = again.wait_count("status.installed", len(rig.slaves))
        assert {a["slave"]: a["current"] for a in answers} == {
            s.name: s is not behind for s in rig.slaves
        }
        done = again.wait("push.done", slave=behind.name)
        assert done["serial"] == serial
        assert behind.tinydns.wait_serial("example.com", serial, 10) == serial
        assert behind.tinydns.answer("www.example.com", "A") == ["192.0.2.80"]
        wait_state(rig.state, "ok")
        again.idle_after(done)  # every slave asked, verified, pushed if behind
        assert not again.find("build.start")
        assert {p["slave"] for p in again.find("push.done")} == {behind.name}
        assert (rig.output / "data").read_bytes() == data
        assert again.stop() == 0


class TestRescan:
    def test_deleted_data_cdb_is_installed_again(self, tmp_path: Path, lab: Lab) -> None:
        """(d2) data.cdb deleted by hand on a slave, no save after it: the daemon's next
        check finds tinydns silent, asks the receiver, and installs the build again."""
        rig = Rig(tmp_path, lab, lab(1), rescan=1.0)
        try:
            daemon = rig.start()
            (slave,) = rig.slaves
            serial = daemon.find("build.done")[-1]["serial"]
            assert slave.tinydns.wait_serial("example.com", serial, 10) == serial
            mark = daemon.mark()
            (slave.root / "data.cdb").unlink()
            daemon.wait("status.none", mark, TIMEOUT, slave=slave.name)
            done = daemon.wait("push.done", mark, TIMEOUT, slave=slave.name)
            assert done["serial"] == serial
            assert slave.tinydns.wait_serial("example.com", serial, 10) == serial
            assert not daemon.find("build.start", mark)  # no save, no SIGHUP: no build
        finally:
            rig.close()


# -- local slaves (no sshd) ------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    setup = Local(tmp_path)
    try:
        yield setup
    finally:
        setup.daemon.kill()


@pytest.mark.usefixtures("daemon_process")
class TestLocalSlaves:
    def test_save_reaches_both(self, local: Local) -> None:
        daemon = local.daemon.start()
        first = daemon.wait("build.done", timeout=TIMEOUT)
        assert daemon.find("build.start")[0]["reason"] == "start"
        daemon.wait_count("push.done", 2, timeout=TIMEOUT, serial=first["serial"])
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.55"))
        done = daemon.wait("build.done", mark)
        daemon.wait_count("push.done", 2, mark, serial=done["serial"])
        data = (local.output / "data").read_bytes()
        assert b"192.0.2.55" in data
        assert all(d.startswith(data) for d in local.installed())
        assert not daemon.find("verify.ok")  # no dns configured: nothing to ask
        wait_state(local.state, "ok")
        assert status(local.config).returncode == 0
        assert daemon.stop() == 0

    def test_bad_build_at_start_serves_what_is_there(self, local: Local) -> None:
        """A broken zones dir at start: build.error, no data on disk, nothing pushed;
        fixing it builds and pushes."""
        write(local.zones / "zones.example.com", "Xbroken\n")
        daemon = local.daemon.start()
        error = daemon.wait("build.error", timeout=TIMEOUT)
        assert (error["file"], error["line"]) == ("zones.example.com", 1)
        daemon.idle_after(error, TIMEOUT)  # both slaves asked: nothing to push them
        assert not daemon.find("push.done")
        assert not (local.output / "data").exists()
        assert status(local.config).returncode == 4
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com())
        done = daemon.wait("build.done", mark)
        daemon.wait_count("push.done", 2, mark, serial=done["serial"])
        assert daemon.stop() == 0

    def test_restart_unchanged_does_not_rebuild(self, local: Local) -> None:
        """Restarted on the zones it built from: build.current, same data, no push."""
        daemon = local.daemon.start()
        first = daemon.wait("build.done", timeout=TIMEOUT)
        daemon.wait_count("push.done", 2, timeout=TIMEOUT, serial=first["serial"])
        assert daemon.stop() == 0
        data = (local.output / "data").read_bytes()
        again = DaemonProcess(local.config).start()
        try:
            current = again.wait("build.current", timeout=TIMEOUT)
            assert current["serial"] == first["serial"]
            answers = again.wait_count("status.installed", 2, timeout=TIMEOUT)
            assert all(a["current"] for a in answers), answers
            again.idle_after(answers[-1], TIMEOUT)
            assert not again.find("build.start")
            assert not again.find("push.done")
            assert (local.output / "data").read_bytes() == data
            assert status(local.config).returncode == 0
            assert again.stop() == 0
        finally:
            again.kill()

    def test_stop_waits_for_pushes_in_flight(self, tmp_path: Path) -> None:
        """SIGTERM during a push: the push finishes, then the daemon exits 0."""
        setup = Local(tmp_path)
        try:
            daemon = setup.daemon.start()
            daemon.wait_count("push.done", 2, timeout=TIMEOUT)
            mark = daemon.mark()
            big = "".join(
                f"+h{i}.example.com:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n"
                for i in range(60_000)
            )
            write(setup.zones / "zones.example.com", example_com(extra=big))
            serial = daemon.wait("build.done", mark, timeout=TIMEOUT)["serial"]
            # The first line a receiver prints comes after it read the whole stream.
            daemon.wait("push.line", mark, timeout=TIMEOUT)
            daemon.signal(signal.SIGTERM)
            assert daemon.proc is not None
            assert daemon.proc.wait(TIMEOUT) == 0
            daemon.stop()
            stopping = daemon.find("daemon.stopping", mark)
            assert stopping, daemon.dump()
            pushes = daemon.find("push.done", mark, serial=serial)
            assert {p["slave"] for p in pushes} >= set(stopping[0]["pushing"].split(","))
            assert daemon.events[-1]["event"] == "daemon.stop"
            state = statefile.read(setup.state)
            done = {s.name for s in state.slaves if s.installed_serial == serial}
            assert done == {p["slave"] for p in pushes}
        finally:
            setup.daemon.kill()

    def test_unreachable_slave_backs_off(self, tmp_path: Path) -> None:
        """An SSH slave nobody answers: retries doubling up to retry_max; the local
        slave is not held up; SIGALRM retries at once."""
        from tests.lab.realworld import free_port  # noqa: PLC0415

        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
        port = free_port()
        extra = f'\n[[slave]]\nname = "gone"\nhost = "127.0.0.1"\nport = {port}\n'
        setup = Local(
            tmp_path,
            slaves=1,
            extra=extra,
            retry_initial=0.1,
            retry_max=0.4,
        )
        # A key of its own: with none, the account's missing default keys would hold
        # the slave as a local fault before any connection is tried.
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        text = setup.config.read_text()
        setup.config.write_text(f'known_hosts = "{known_hosts}"\nkey = "{key}"\n' + text)
        try:
            daemon = setup.daemon.start()
            daemon.wait("status.failed", timeout=TIMEOUT, slave="gone")
            daemon.wait("push.done", timeout=TIMEOUT, slave="ns2")
            retries = daemon.wait_count("retry.scheduled", 5, timeout=TIMEOUT, slave="gone")
            assert [r["seconds"] for r in retries[:5]] == [0.1, 0.2, 0.4, 0.4, 0.4]
            # Never reached, so never asked what it runs: each retry asks first, and
            # nothing is pushed to a receiver that was not checked.
            failed = daemon.find("status.failed", slave="gone")
            assert len(failed) >= 5
            assert "cannot connect" in failed[0]["error"]
            assert not daemon.find("push.done", slave="gone")
            state = statefile.read(setup.state)
            gone = next(s for s in state.slaves if s.name == "gone")
            assert gone.result in ("failed", "pushing")
            proc = status(setup.config)
            assert proc.returncode == 3
            assert "gone" in proc.stderr
            mark = daemon.mark()
            daemon.signal(signal.SIGALRM)
            daemon.wait("status.failed", mark, timeout=5, slave="gone")
            assert daemon.stop() == 0
        finally:
            setup.daemon.kill()


@pytest.mark.usefixtures("daemon_process")
def test_demo_propagates(tmp_path: Path) -> None:
    """``dnsmaster demo DIR --setup-only`` (in this process: what it writes is judged,
    not its start) then ``dnsmaster run``: a save reaches both."""
    demo = tmp_path / "demo"
    proc = dnsmaster_here("demo", str(demo), "--setup-only")
    assert proc.returncode == 0, proc.stderr
    config = demo / "dnsmaster.toml"
    assert config.is_file()
    daemon = DaemonProcess(config).start()
    try:
        first = daemon.wait("build.done", timeout=TIMEOUT)
        daemon.wait_count("push.done", 2, timeout=TIMEOUT, serial=first["serial"])
        mark = daemon.mark()
        zone = demo / "zones" / "zones.example.com"
        write(zone, zone.read_text() + "+new.example.com:192.0.2.123\n")
        done = daemon.wait("build.done", mark, timeout=TIMEOUT)
        pushes = daemon.wait_count("push.done", 2, mark, timeout=TIMEOUT, serial=done["serial"])
        assert {p["slave"] for p in pushes} == {"ns2", "ns3"}
        for name in ("ns2", "ns3"):
            installed = (demo / "slaves" / name / "data").read_bytes()
            assert b"+new.example.com:192.0.2.123" in installed
            assert (demo / "slaves" / name / "data.cdb").is_file()
        wait_state(demo / "state.json", "ok")
        assert status(config).returncode == 0
        assert daemon.stop() == 0
    finally:
        daemon.kill()


# -- under daemontools -----------------------------------------------------------------

SERVICE = PROJECT / "service" / "dnsmaster"


def _svstat(service: Path) -> str:
    proc = subprocess.run(
        ["svstat", str(service)], capture_output=True, text=True, check=False, timeout=10
    )
    return proc.stdout + proc.stderr


def _wait_svstat(service: Path, word: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = _svstat(service)
        if f": {word}" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def _svc(option: str, service: Path) -> None:
    subprocess.run(["svc", option, str(service)], check=True, timeout=10)


@pytest.mark.usefixtures("daemontools")
def test_service_under_supervise(tmp_path: Path) -> None:
    """service/dnsmaster/run under daemontools' supervise: up, svc -h builds, svc -d stops."""
    assert (SERVICE / "run").is_file(), "service/dnsmaster/run is shipped: where did it go?"
    setup = Local(tmp_path / "site", extra='\n[log]\nformat = "json"\n')
    service = _service_dir(tmp_path, setup.config)
    supervise = DaemonProcess(setup.config, argv=["supervise", str(service)])
    supervise.start()
    try:
        first = supervise.wait("build.done", timeout=TIMEOUT)
        supervise.wait_count("push.done", 2, timeout=TIMEOUT, serial=first["serial"])
        text = _wait_svstat(service, "up")
        assert ": up (pid " in text, text
        pid = int(text.split("(pid ")[1].split(")")[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"dnsmaster" in cmdline
        assert b"run" in cmdline
        mark = supervise.mark()
        _svc("-h", service)
        supervise.wait("build.start", mark, reason="sighup")
        done = supervise.wait("build.done", mark)
        supervise.wait_count("push.done", 2, mark, serial=done["serial"])
        mark = supervise.mark()
        _svc("-d", service)
        supervise.wait("daemon.stop", mark)
        text = _wait_svstat(service, "down")
        assert ": down " in text, text
        assert "normally up" in text
        assert not Path(f"/proc/{pid}").exists()
        state = statefile.read(setup.state)
        assert state.build is not None
        assert state.build.serial == done["serial"]
        _svc("-x", service)
        assert supervise.proc is not None
        assert supervise.proc.wait(TIMEOUT) == 0
    finally:
        _stop_supervise(supervise, service)


def _service_dir(tmp_path: Path, config: Path) -> Path:
    """The shipped service directory for ``config``, with dnsmaster on its PATH."""
    service = tmp_path / "service" / "dnsmaster"
    shutil.copytree(SERVICE, service, ignore=shutil.ignore_patterns("supervise"))
    # dnsmaster on PATH: this interpreter on the package under test
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "dnsmaster"
    wrapper.write_text(
        f"#!/bin/sh\nPYTHONPATH='{PROJECT}' export PYTHONPATH\n"
        f"exec '{sys.executable}' -m dnsmaster \"$@\"\n"
    )
    wrapper.chmod(0o755)
    env = service / "env"
    (env / "DNSMASTER_CONFIG").write_text(f"{config}\n")
    (env / "DNSMASTER_USER").write_text("root\n")
    (env / "PATH").write_text(f"{bin_dir}:/usr/local/bin:/usr/bin:/bin\n")
    return service


def _stop_supervise(supervise: DaemonProcess, service: Path) -> None:
    """Take the service down, then supervise; by PID if svc cannot."""
    if supervise.running:
        subprocess.run(["svc", "-dx", str(service)], check=False, timeout=10)
        try:
            assert supervise.proc is not None
            supervise.proc.wait(10)
        except subprocess.TimeoutExpired:
            text = _svstat(service)
            if "(pid " in text:
                os.kill(int(text.split("(pid ")[1].split(")")[0]), signal.SIGKILL)
    supervise.kill()


def _slaves(rig: Rig) -> tuple[statefile.SlaveState, ...]:
    return statefile.read(rig.state).slaves
