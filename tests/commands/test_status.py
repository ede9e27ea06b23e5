"""``dnsmaster status``: judging hand-made state files (pure, fast), the command's
exit statuses, ``--json`` and ``--nagios``, and end to end against a real daemon
and real slaves (``--live`` too).

The end-to-end tests that rely on the daemon filling the newer state fields
(heartbeat, served serial, last success) say so in their docstring.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster import exits
from dnsmaster.commands import status
from dnsmaster.commands.main import main, parser
from dnsmaster.master import health, measure, state
from dnsmaster.master.build import Builder
from dnsmaster.master.health import Finding, ZonesCheck
from dnsmaster.master.state import BuildState, SlaveState, State
from tests.lab.daemonrun import PROJECT, DaemonProcess, config_text
from tests.lab.recorder import build_here
from tests.lab.site import Shared, lab_slaves, verified

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave
    from tests.lab.shared import WorkerLab


SHA = "a" * 64
OLD = "b" * 64
NOW = 1_800_000_000.0
SERIAL = 1_700_000_010


def build(**changes: object) -> BuildState:
    fields: dict[str, object] = {
        "serial": SERIAL,
        "sha256": SHA,
        "records": 22,
        "time": NOW - 600,
        "fingerprint": "f" * 64,
    }
    return BuildState(**(fields | changes))  # type: ignore[arg-type]


def make(*slaves: SlaveState, **changes: object) -> State:
    fields: dict[str, object] = {
        "pid": 42,
        "updated": NOW - 2,
        "build": build(),
        "slaves": slaves,
        "heartbeat_interval": 10.0,
        "started": NOW - 3600,
        "host": None,
    }
    return State(**(fields | changes))  # type: ignore[arg-type]


def good(name: str = "ns2", **changes: object) -> SlaveState:
    """A slave on the build, seen serving it."""
    fields: dict[str, object] = {
        "name": name,
        "installed_sha256": SHA,
        "installed_serial": SERIAL,
        "result": "ok",
        "last_push": NOW - 590,
        "verified": "ok",
        "verify_zone": "example.com",
        "expected_serial": SERIAL,
        "served_serial": SERIAL,
        "last_success": NOW - 589,
        "verified_at": NOW - 589,
    }
    return SlaveState(**(fields | changes))  # type: ignore[arg-type]


SAME = ZonesCheck(False)


def slave_state(slave: SlaveState, *, verifies: bool | None = None, **changes: object) -> Finding:
    return health.judge_slave(slave, make(slave, **changes), now=NOW, verifies=verifies)


# -- judging, pure -----------------------------------------------------------------------


class TestDaemon:
    def test_running(self) -> None:
        """A live pid with a fresh heartbeat is running."""
        found = health.judge_daemon(make(), now=NOW, alive=True)
        assert found.state == "running"
        assert found.ok

    def test_killed(self) -> None:
        """kill -9: the pid is gone though the heartbeat is fresh: dead, and what to do."""
        found = health.judge_daemon(make(), now=NOW, alive=False)
        assert found.state == "dead"
        assert "pid 42 is not running" in found.reason
        assert found.action is not None
        assert "start it again" in found.action

    def test_hung(self) -> None:
        """The pid runs but no heartbeat for 3 intervals: hung."""
        found = health.judge_daemon(make(updated=NOW - 31), now=NOW, alive=True)
        assert found.state == "hung"
        assert "every 10 s" in found.reason

    def test_heartbeat_within_three_intervals(self) -> None:
        """A late write or two is no alarm: 3 intervals are allowed."""
        assert health.judge_daemon(make(updated=NOW - 29), now=NOW, alive=True).ok

    def test_other_host_judged_by_heartbeat(self) -> None:
        """On another host the pid says nothing; an old heartbeat means dead."""
        old = make(updated=NOW - 100, host="elsewhere")
        assert health.judge_daemon(old, now=NOW, alive=None).state == "dead"
        assert health.judge_daemon(make(host="elsewhere"), now=NOW, alive=None).ok

    def test_no_heartbeat_promise(self) -> None:
        """A daemon that states no interval is judged by its pid alone."""
        old = make(updated=NOW - 86400, heartbeat_interval=None)
        assert health.judge_daemon(old, now=NOW, alive=True).ok
        assert health.judge_daemon(old, now=NOW, alive=False).state == "dead"

    def test_stopped(self) -> None:
        """A clean stop is named as such, not as a crash."""
        found = health.judge_daemon(make(stopped=NOW - 60), now=NOW, alive=False)
        assert found.state == "stopped"
        assert "cleanly" in found.reason


class TestPidAlive:
    def test_self(self) -> None:
        assert measure.pid_alive(os.getpid())

    def test_gone_and_nonsense(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        assert not measure.pid_alive(proc.pid)
        assert not measure.pid_alive(0)
        assert not measure.pid_alive(-1)

    def test_zombie_is_dead(self) -> None:
        """Killed but not yet reaped by its parent: a zombie runs nothing."""
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            os.kill(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while measure.pid_alive(proc.pid):
                assert time.monotonic() < deadline, "a killed child still counts as alive"
                time.sleep(0.01)
            assert Path(f"/proc/{proc.pid}").exists()  # not reaped: a zombie
        finally:
            proc.kill()
            proc.wait()


class TestBuild:
    def test_ok(self) -> None:
        found = health.judge_build(make(), SAME, now=NOW)
        assert found.ok
        assert str(SERIAL) in found.reason

    def test_none(self) -> None:
        """Never built: says so with the error, and what to do."""
        found = health.judge_build(
            make(build=None, build_error="2 errors in the zones"), ZonesCheck(True), now=NOW
        )
        assert found.state == "none"
        assert "2 errors in the zones" in found.reason
        assert found.action is not None
        assert "dnsmaster check" in found.action

    def test_failed(self) -> None:
        """A failed build names the error and the serial the slaves keep."""
        found = health.judge_build(
            make(build=build(error="zones.x:3: bad IP")), ZonesCheck(True, NOW - 50), now=NOW
        )
        assert found.state == "failed"
        assert "zones.x:3: bad IP" in found.reason
        assert str(SERIAL) in found.reason
        assert found.since == NOW - 50

    def test_unbuilt(self) -> None:
        """Zones changed since the build: not ok, dated from the change."""
        found = health.judge_build(make(), ZonesCheck(True, NOW - 7), now=NOW)
        assert found.state == "unbuilt"
        assert "changed 7 s ago" in found.reason
        assert found.since == NOW - 7

    def test_unreadable(self) -> None:
        found = health.judge_build(make(), ZonesCheck(None, error="zones: access denied"), now=NOW)
        assert found.state == "unreadable"
        assert "access denied" in found.reason


class TestSlave:
    def test_ok_seen_serving(self) -> None:
        found = slave_state(good())
        assert (found.state, found.ok) == ("ok", True)

    def test_ok_when_not_verified_by_design(self) -> None:
        """verified=skipped (or, for older files, the config says no DNS): ok, and says so."""
        found = slave_state(good(verified="skipped", served_serial=None))
        assert found.ok
        assert "not asked over DNS" in found.reason
        assert slave_state(good(verified=None), verifies=False).ok

    def test_verifying(self) -> None:
        """Installed, not yet seen serving: not ok."""
        assert slave_state(good(verified=None, served_serial=None)).state == "verifying"

    def test_dns_failed(self) -> None:
        """A failed DNS verification (tinydns stopped) is not ok; reason and fix."""
        found = slave_state(
            good(verified="failed", served_serial=None, verify_error="no answer (timeout)")
        )
        assert found.state == "dns-failed"
        assert "no answer (timeout)" in found.reason
        assert found.action is not None
        assert "start tinydns" in found.action

    def test_stale(self) -> None:
        found = slave_state(good(verified="stale", served_serial=SERIAL - 5))
        assert found.state == "stale"
        assert f"an older serial, {SERIAL - 5}" in found.reason

    def test_older_serial_is_stale_whatever_the_verdict(self) -> None:
        """An older served serial is never ok, by RFC 1982 across the wrap too."""
        found = health.judge_slave(
            good(verified="ok", expected_serial=3, served_serial=4294967290),
            make(good()),
            now=NOW,
        )
        assert found.state == "stale"
        assert "an older serial" in found.reason

    def test_newer_serial_is_named_otherwise(self) -> None:
        found = slave_state(good(verified="ok", served_serial=SERIAL + 1))
        assert found.state == "stale"
        assert "another serial" in found.reason

    def test_behind(self) -> None:
        found = slave_state(good(installed_sha256=OLD, installed_serial=SERIAL - 1))
        assert found.state == "behind"
        assert f"has serial {SERIAL - 1}" in found.reason

    def test_pushing(self) -> None:
        found = slave_state(good(installed_sha256=OLD, result="pushing", push_started=NOW - 5))
        assert found.state == "pushing"
        assert "for 5 s" in found.reason

    def test_pushing_again_while_serving_stays_ok(self) -> None:
        """SIGALRM re-pushes a slave that serves the build: it is still ok."""
        assert slave_state(good(result="pushing")).ok

    def test_failing(self) -> None:
        """A failing slave carries the receiver's reason and the count."""
        found = slave_state(
            good(
                installed_sha256=OLD,
                result="failed",
                error="receiver exited with status 111",
                failures=4,
                next_retry=NOW + 30,
            )
        )
        assert found.state == "failing"
        assert "receiver exited with status 111" in found.reason
        assert "4 pushes failed in a row" in found.reason
        assert "next retry" in found.reason

    def test_unknown(self) -> None:
        assert slave_state(SlaveState("ns2")).state == "unknown"

    def test_since_after_restart(self) -> None:
        """Behind since the build, or since the daemon started if that is later."""
        behind = good(installed_sha256=OLD)
        assert slave_state(behind, started=NOW - 10).since == NOW - 10
        assert slave_state(behind, started=NOW - 9999).since == NOW - 600


def report(
    *slaves: SlaveState, alive: bool = True, zones: ZonesCheck = SAME, **changes: object
) -> health.Report:
    return health.judge(make(*slaves, **changes), now=NOW, alive=alive, zones=zones)


class TestReport:
    def test_exit_statuses(self) -> None:
        """0 all ok; 3 a slave; 4 the build; 5 the daemon; the highest wins."""
        assert report(good()).exit_status == exits.EXIT_OK
        assert report(good(verified="failed")).exit_status == exits.EXIT_SLAVES
        assert report(good(), zones=ZonesCheck(True)).exit_status == exits.EXIT_BUILD
        assert report(good(), alive=False).exit_status == exits.EXIT_DAEMON
        worst = report(good(verified="failed"), alive=False, zones=ZonesCheck(True))
        assert worst.exit_status == exits.EXIT_DAEMON

    def test_render(self) -> None:
        """One line for the daemon, one for the build, a row per slave with its state."""
        text = status.render(report(good(), good("ns3", verified="failed", served_serial=None)))
        lines = text.splitlines()
        assert lines[0].split()[:2] == ["daemon", "running"]
        assert lines[1].split()[:2] == ["build", "ok"]
        rows = {line.split()[0]: line.split()[1] for line in lines[3:]}
        assert rows == {"SLAVE": "STATE", "ns2": "ok", "ns3": "dns-failed"}

    def test_problems_say_what_to_do(self) -> None:
        text = status.render_problems(report(good(verified="failed"), alive=False))
        assert "dnsmaster: daemon: dead: " in text
        assert "dnsmaster: ns2: dns-failed for " in text
        assert text.count("what to do:") == 2


PERF = re.compile(r"^'?[^=']+'?=(U|[0-9.]+s?)(;[0-9.]*){0,4}$")


def nagios(rep: health.Report, warning: float = 120, critical: float = 600) -> tuple[int, str]:
    code, line = status.nagios(rep, warning=warning, critical=critical)
    assert "\n" not in line
    text, _, perf = line.partition(" | ")
    assert "|" not in text
    for item in perf.split():
        assert PERF.match(item), item
    return code, line


class TestNagios:
    def test_ok_with_perfdata(self) -> None:
        code, line = nagios(report(good(), good("ns3")))
        assert code == status.NAGIOS_OK
        assert line.startswith(f"DNSMASTER OK - serial {SERIAL} served by 2/2 slaves | ")
        perf = dict(item.split("=", 1) for item in line.split(" | ")[1].split())
        assert perf["slaves_ok"] == "2;;;0;2"
        assert perf["slaves_behind"] == "0;;;0;2"
        assert perf["slaves_failing"] == "0;;;0;2"
        assert perf["build_age"] == "600s;;;0"
        assert perf["heartbeat_age"] == "2s;;;0"
        assert perf["last_success_ns2"] == "589s;;;0"

    def test_counts_and_never_succeeded(self) -> None:
        """Behind and failing counted apart; a slave never seen ok has U."""
        rep = report(
            good(),
            good("ns3", installed_sha256=OLD, result="pushing", last_success=None),
            good("ns4", verified="failed"),
        )
        _, line = nagios(rep)
        perf = dict(item.split("=", 1) for item in line.split(" | ")[1].split())
        assert (perf["slaves_ok"], perf["slaves_behind"], perf["slaves_failing"]) == (
            "1;;;0;3",
            "1;;;0;3",
            "1;;;0;3",
        )
        assert perf["last_success_ns3"] == "U;;;0"

    @pytest.mark.parametrize(
        ("age", "expected"),
        [(10, status.NAGIOS_OK), (200, status.NAGIOS_WARNING), (700, status.NAGIOS_CRITICAL)],
    )
    def test_thresholds_on_how_long(self, age: float, expected: int) -> None:
        """A problem younger than --warning is named but OK; then WARNING, CRITICAL."""
        rep = report(good(verified="failed", verified_at=NOW - age))
        code, line = nagios(rep)
        assert code == expected
        assert "ns2 dns-failed" in line

    def test_daemon_dead_is_critical_at_once(self) -> None:
        code, line = nagios(report(good(), alive=False))
        assert code == status.NAGIOS_CRITICAL
        assert line.startswith("DNSMASTER CRITICAL - daemon dead: pid 42 is not running")

    def test_unbuilt_edit(self) -> None:
        code, line = nagios(report(good(), zones=ZonesCheck(True, NOW - 300)))
        assert code == status.NAGIOS_WARNING
        assert "build unbuilt for 5 min" in line

    def test_many_problems_stay_one_short_line(self) -> None:
        """Several problems: names, states and ages, not every reason; bounded."""
        slaves = [good(f"ns{i}", verified="failed", verify_error="x" * 200) for i in range(50)]
        code, line = nagios(report(*slaves), warning=0)
        assert code == status.NAGIOS_WARNING
        text = line.split(" | ")[0]
        assert text.startswith("DNSMASTER WARNING - ns0 dns-failed for 10 min; ns1 dns-failed")
        assert "xxx" not in text
        assert len(text) < 1100

    def test_pipe_in_a_reason_cannot_break_perfdata(self) -> None:
        _, line = nagios(report(good(verified="failed", verify_error="a|b")))
        assert line.count(" | ") == 1


# -- the zones comparison, on real files --------------------------------------------------


def _setup(base: Path, *slaves: dict[str, object], **top: object) -> tuple[Path, Path, Path]:
    """zones/, out/ (built) and a config; the state file is base/state.json."""
    zones, out = base / "zones", base / "out"
    zones.mkdir(parents=True)
    out.mkdir()
    (zones / "zones.example.com").write_text(".example.com:127.0.0.1:a:259200\n")
    Builder(zones, out).build()
    config = base / "c.toml"
    config.write_text(
        config_text(zones=zones, output=out, state=base / "state.json", slaves=slaves, top=top)
    )
    return zones, out, config


def _built_state(out: Path, *slaves: SlaveState, **changes: object) -> State:
    from dnsmaster.core.banner import built_from, previous_serial  # noqa: PLC0415

    data = (out / "data").read_bytes()
    fields: dict[str, object] = {
        "pid": os.getpid(),
        "updated": time.time(),
        "build": BuildState(
            previous_serial(data),
            hashlib.sha256(data).hexdigest(),
            3,
            time.time() - 5,
            fingerprint=built_from(data),
        ),
        "slaves": slaves,
        "heartbeat_interval": 10.0,
    }
    return State(**(fields | changes))  # type: ignore[arg-type]


class TestZones:
    def test_same_then_changed(self, tmp_path: Path) -> None:
        """The fingerprint now against the build's; an edit dates itself."""
        zones, out, config = _setup(tmp_path)
        from dnsmaster import config as configuration  # noqa: PLC0415

        cfg = configuration.load(config)
        current = _built_state(out)
        assert measure.check_zones(cfg, current) == ZonesCheck(False)
        before = time.time()
        (zones / "zones.example.com").write_text(".example.com:127.0.0.1:a:300\n")
        found = measure.check_zones(cfg, current)
        assert found.changed is True
        assert found.since is not None
        assert found.since >= before - 1
        # An editor's swap file is no change.
        (zones / "zones.example.com").write_text(".example.com:127.0.0.1:a:259200\n")
        (zones / ".zones.example.com.swp").write_text("junk")
        assert measure.check_zones(cfg, current).changed is False

    def test_without_recorded_fingerprint_uses_the_banner(self, tmp_path: Path) -> None:
        """A state file without the fingerprint: the banner of data on disk says."""
        zones, out, config = _setup(tmp_path)
        from dnsmaster import config as configuration  # noqa: PLC0415

        cfg = configuration.load(config)
        current = _built_state(out)
        assert current.build is not None
        old = State(
            current.pid, current.updated, build(sha256=current.build.sha256, fingerprint=None)
        )
        assert measure.check_zones(cfg, old).changed is False
        (zones / "zones.new").write_text("+a.example.com:192.0.2.1\n")
        assert measure.check_zones(cfg, old).changed is True


# -- the command -----------------------------------------------------------------------


def run(config: Path, *options: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["status", "--config", str(config), *options])
    out, err = capsys.readouterr()
    return code, out, err


class TestCommand:
    def test_all_ok_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _, out, config = _setup(tmp_path, {"name": "ns2", "transport": "local", "root": "r"})
        sha = hashlib.sha256((out / "data").read_bytes()).hexdigest()
        slave = SlaveState("ns2", sha, 1, "ok", verified="skipped")
        state.write(tmp_path / "state.json", _built_state(out, slave))
        code, text, err = run(config, capsys=capsys)
        assert (code, err) == (0, "")
        assert "ns2" in text

    def test_old_daemon_local_slave_without_dns(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A state file of a daemon that says nothing of verification: the config does."""
        _, out, config = _setup(tmp_path, {"name": "ns2", "transport": "local", "root": "r"})
        sha = hashlib.sha256((out / "data").read_bytes()).hexdigest()
        current = _built_state(out, SlaveState("ns2", sha, 1, "ok"), heartbeat_interval=None)
        state.write(tmp_path / "state.json", current)
        assert run(config, capsys=capsys)[0] == 0

    def test_failed_verification_exits_nonzero(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Not only --json says it: the exit status and stderr do."""
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("")
        _, out, config = _setup(
            tmp_path, {"name": "ns2", "host": "192.0.2.1"}, known_hosts=known_hosts
        )
        sha = hashlib.sha256((out / "data").read_bytes()).hexdigest()
        slave = SlaveState("ns2", sha, 1, "ok", verified="failed", verify_error="timeout")
        state.write(tmp_path / "state.json", _built_state(out, slave))
        code, _, err = run(config, capsys=capsys)
        assert code == exits.EXIT_SLAVES
        assert "ns2: dns-failed" in err
        code, text, _ = run(config, "--json", capsys=capsys)
        assert code == exits.EXIT_SLAVES
        health = json.loads(text)["health"]
        assert health["slaves"][0]["state"] == "dns-failed"
        assert json.loads(text)["slaves"][0]["verified"] == "failed"

    def test_no_known_hosts_needed_but_by_live(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The report opens no SSH connection, so a missing known_hosts (a master
        being set up) is no error; --live connects, and names the file to create."""
        known_hosts = tmp_path / "known_hosts"
        _, out, config = _setup(
            tmp_path, {"name": "ns2", "host": "192.0.2.1"}, known_hosts=known_hosts
        )
        sha = hashlib.sha256((out / "data").read_bytes()).hexdigest()
        slave = SlaveState("ns2", sha, 1, "ok", verified="ok")
        state.write(tmp_path / "state.json", _built_state(out, slave))
        code, text, err = run(config, capsys=capsys)
        assert (code, err) == (0, "")
        assert "ns2" in text
        code, _, err = run(config, "--live", capsys=capsys)
        assert code == exits.EXIT_USAGE
        assert err.startswith(f"dnsmaster: {config}: known_hosts: cannot read {known_hosts} as ")
        assert "ssh-keyscan" in err

    def test_dead_daemon(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _, out, config = _setup(tmp_path)
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        state.write(tmp_path / "state.json", _built_state(out, pid=proc.pid))
        code, _, err = run(config, capsys=capsys)
        assert code == exits.EXIT_DAEMON
        assert "daemon: dead" in err
        code, line, _ = run(config, "--nagios", capsys=capsys)
        assert code == status.NAGIOS_CRITICAL
        assert line.startswith("DNSMASTER CRITICAL - daemon dead")

    def test_unbuilt_edit(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        zones, out, config = _setup(tmp_path)
        state.write(tmp_path / "state.json", _built_state(out))
        assert run(config, capsys=capsys)[0] == 0
        (zones / "zones.example.com").write_text(".example.com:127.0.0.1:a:300\n")
        code, _, err = run(config, capsys=capsys)
        assert code == exits.EXIT_BUILD
        assert "build: unbuilt for " in err

    def test_missing_state_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No state file: 111 and its name; for Nagios, UNKNOWN."""
        _, _, config = _setup(tmp_path)
        code, _, err = run(config, capsys=capsys)
        assert code == exits.EXIT_SYSTEM
        assert "state.json" in err
        assert "has the daemon ever run?" in err
        code, line, _ = run(config, "--nagios", capsys=capsys)
        assert code == status.NAGIOS_UNKNOWN
        assert line.startswith("DNSMASTER UNKNOWN - ")

    def test_bad_config_nagios_unknown(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, line, _ = run(tmp_path / "missing.toml", "--nagios", capsys=capsys)
        assert code == status.NAGIOS_UNKNOWN
        assert "missing.toml" in line

    def test_option_combinations(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        _, _, config = _setup(tmp_path)
        assert run(config, "--nagios", "--live", capsys=capsys)[0] == status.NAGIOS_UNKNOWN
        bad = run(config, "--warning", "60", "--critical", "30", capsys=capsys)
        assert bad[0] == exits.EXIT_USAGE


# -- end to end: a real daemon -----------------------------------------------------------

TIMEOUT = 30.0
ZONE = ".example.com:127.0.0.1:a:259200\n+www.example.com:192.0.2.80\n"


def status_cli(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``dnsmaster status``, run in this process as the command runs it (parsed by
    its parser, its output on its streams): a start would cost 0.4 s of CPU per
    call. :func:`status_process` runs it as the process a monitor starts."""
    argv = ["status", "--config", str(config), *options]
    out, err = io.StringIO(), io.StringIO()
    code = status.main(parser("status").parse_args(argv), out=out, err=err)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def status_process(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dnsmaster", "status", "--config", str(config), *options],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        timeout=120,
    )


def until_zombie(pid: int, timeout: float = TIMEOUT) -> None:
    """Wait until ``pid`` has ended, its parent not having reaped it yet."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        if time.monotonic() > deadline:
            pytest.fail(f"pid {pid} did not end in {timeout} s after SIGKILL")
        time.sleep(0.01)


def wait_state(path: Path, check: object, timeout: float = TIMEOUT) -> State:
    """Poll the state file until ``check(state)``; fail with the last one read."""
    deadline = time.monotonic() + timeout
    last: State | None = None
    while time.monotonic() < deadline:
        try:
            last = state.read(path)
        except (OSError, ValueError):
            last = None
        if last is not None and check(last):  # type: ignore[operator]
            return last
        time.sleep(0.05)
    pytest.fail(f"state never as expected in {timeout} s; last read: {last}")


class LocalMaster:
    """A zones directory, one local slave, and a daemon (no sshd or tinydns needed)."""

    def __init__(self, base: Path, **daemon: object) -> None:
        self.zones, self.output = base / "zones", base / "out"
        self.zones.mkdir(parents=True)
        self.output.mkdir()
        (self.zones / "zones.example.com").write_text(ZONE)
        self.state = base / "state.json"
        self.config = base / "dnsmaster.toml"
        root = base / "ns2"
        root.mkdir()
        options: dict[str, object] = {"debounce": 0.2, "retry_initial": 0.2, "retry_max": 1.0}
        options.update(daemon)
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                daemon=options,
                slaves=[{"name": "ns2", "transport": "local", "root": root}],
            )
        )
        self.daemon = DaemonProcess(self.config)

    def start_and_settle(self) -> DaemonProcess:
        daemon = self.daemon.start()
        daemon.wait("push.done", timeout=TIMEOUT, slave="ns2")
        wait_state(self.state, lambda s: all(x.result == "ok" for x in s.slaves) and s.slaves)
        return daemon


@pytest.fixture
def local_master(tmp_path: Path) -> Iterator[LocalMaster]:
    setup = LocalMaster(tmp_path)
    try:
        yield setup
    finally:
        setup.daemon.kill()


@pytest.mark.usefixtures("daemon_process")
class TestEndToEndLocal:
    def test_kill_9(self, local_master: LocalMaster) -> None:
        """All ok, then SIGKILL: status says the daemon is dead (exit 5, CRITICAL), even
        before its supervisor reaps it."""
        daemon = local_master.start_and_settle()
        proc = status_cli(local_master.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        os.kill(daemon.pid, signal.SIGKILL)  # not reaped yet: a zombie for a while
        # The kernel ends the process after kill() returns; asked at once (in
        # process), status could still find it running.
        until_zombie(daemon.pid)
        proc = status_cli(local_master.config)
        assert proc.returncode == exits.EXIT_DAEMON, proc.stdout + proc.stderr
        assert f"daemon: dead: pid {daemon.pid} is not running" in proc.stderr
        daemon.kill()  # reaped
        # As a process, as Nagios runs it: its exit status is the verdict.
        nagios_run = status_process(local_master.config, "--nagios")
        assert nagios_run.returncode == status.NAGIOS_CRITICAL
        assert nagios_run.stdout.startswith("DNSMASTER CRITICAL - daemon dead")

    def test_clean_stop(self, local_master: LocalMaster) -> None:
        """SIGTERM: status says stopped, not ok. (Needs the daemon to set ``stopped``;
        without it this reads as dead, which exits 5 too.)"""
        daemon = local_master.start_and_settle()
        assert daemon.stop() == 0
        proc = status_cli(local_master.config)
        assert proc.returncode == exits.EXIT_DAEMON, proc.stdout + proc.stderr
        assert re.search(r"daemon: (stopped|dead)", proc.stderr)

    def test_unbuilt_edit(self, tmp_path: Path) -> None:
        """An edit in the daemon's quiet period: status says unbuilt (exit 4) until built."""
        setup = LocalMaster(tmp_path, debounce=30.0, max_delay=60.0, rescan=0)
        try:
            setup.start_and_settle()
            assert status_cli(setup.config).returncode == 0
            (setup.zones / "zones.example.com").write_text(ZONE + "+new.example.com:192.0.2.9\n")
            proc = status_cli(setup.config)
            assert proc.returncode == exits.EXIT_BUILD, proc.stdout + proc.stderr
            assert "build: unbuilt for " in proc.stderr
            mark = setup.daemon.mark()
            setup.daemon.signal(signal.SIGHUP)  # build now
            setup.daemon.wait("push.done", mark, timeout=TIMEOUT, slave="ns2")
            wait_state(setup.state, lambda s: all(x.result == "ok" for x in s.slaves))
            proc = status_cli(setup.config)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        finally:
            setup.daemon.kill()

    def test_heartbeat(self, local_master: LocalMaster) -> None:
        """NEEDS THE DAEMON WIRING: the daemon states an interval and rewrites the state
        file that often while idle; stopped (SIGSTOP) it is judged hung once 3
        intervals pass, and alive again after SIGCONT."""
        daemon = local_master.start_and_settle()
        first = state.read(local_master.state)
        interval = first.heartbeat_interval
        assert interval is not None, "the daemon does not state heartbeat_interval"
        assert first.started is not None
        assert first.host is not None
        wait_state(
            local_master.state, lambda s: s.updated > first.updated, timeout=2 * interval + 2
        )
        daemon.signal(signal.SIGSTOP)
        try:
            frozen = state.read(local_master.state)
            from dnsmaster import config as configuration  # noqa: PLC0415

            cfg = configuration.load(local_master.config)
            later = frozen.updated + 3 * interval + 1
            assert measure.report(cfg, frozen, now=later).daemon.state == "hung"
            assert measure.report(cfg, frozen, now=frozen.updated + 1).daemon.ok
        finally:
            daemon.signal(signal.SIGCONT)
        proc = status_cli(local_master.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- end to end: real slaves (sshd + tinydns on 127.0.1.N) ---------------------------------


class RealMaster:
    """A zones directory, real slaves, a config with metrics, and the daemon."""

    def __init__(self, base: Path, lab: Lab, slaves: list[Slave]) -> None:
        self.lab = lab
        self.slaves = slaves
        self.zones, self.output = base / "zones", base / "out"
        self.zones.mkdir(parents=True)
        self.output.mkdir()
        (self.zones / "zones.example.com").write_text(ZONE)
        self.state = base / "state.json"
        self.metrics = base / "textfile" / "dnsmaster.prom"
        self.metrics.parent.mkdir()
        self.config = base / "dnsmaster.toml"
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                top={
                    "key": lab.key,
                    "known_hosts": lab.known_hosts,
                    "user": lab.user,
                    "metrics": self.metrics,
                },
                daemon={
                    "debounce": 0.2,
                    "retry_initial": 0.2,
                    "retry_max": 1.0,
                    "verify_timeout": 1.0,
                },
                push={"connect_timeout": 3.0, "timeout": 60.0},
                slaves=[
                    {"name": s.name, "host": s.address, "port": s.port, "dns": s.address}
                    for s in slaves
                ],
            )
        )
        self.daemon = DaemonProcess(self.config)

    def edit(self, www: str) -> int:
        """Save a change; wait until it is built; its serial."""
        mark = self.daemon.mark()
        (self.zones / "zones.example.com").write_text(ZONE.replace("192.0.2.80", www))
        return int(self.daemon.wait("build.done", mark, timeout=TIMEOUT)["serial"])

    def verified(self, serial: int, verdicts: dict[str, str]) -> State:
        """Wait until each slave has ``serial`` installed with the given DNS verdict."""

        def check(s: State) -> bool:
            by_name = {x.name: x for x in s.slaves}
            return all(
                by_name[n].installed_serial == serial and by_name[n].verified == v
                for n, v in verdicts.items()
            )

        return wait_state(self.state, check)


@pytest.fixture(scope="class")
def real_site(
    tmp_path_factory: pytest.TempPathFactory, worker_lab: WorkerLab
) -> Iterator[Shared[RealMaster]]:
    """One daemon on two real slaves for the class's tests, put back at rest between
    them (tests.lab.site.Shared): each edits, stops a tinydns, and judges what
    follows; a start and a first round of pushes each would add nothing judged."""
    with lab_slaves(worker_lab, 2) as (lab, slaves):
        setup = RealMaster(tmp_path_factory.mktemp("master"), lab, slaves)
        started: list[DaemonProcess] = []  # killed at the end, whatever failed on the way

        def start(first: bool) -> DaemonProcess:
            setup.daemon = DaemonProcess(setup.config)
            started.append(setup.daemon)
            setup.daemon.start()
            if first:
                done = setup.daemon.wait("build.done", timeout=TIMEOUT)
                setup.daemon.wait_count("push.done", 2, timeout=TIMEOUT, serial=done["serial"])
            return setup.daemon

        try:
            shared = Shared(
                setup,
                setup.zones,
                start,
                slaves=slaves,
                settle=lambda daemon: verified(setup.state, daemon),
            )
            try:
                yield shared
            finally:
                shared.close()
        finally:
            for daemon in started:
                daemon.kill()


@pytest.fixture
def real(real_site: Shared[RealMaster]) -> RealMaster:
    real_site.reset()
    return real_site.site


class TestEndToEndRealSlaves:
    def test_stopped_tinydns(self, real: RealMaster) -> None:
        """A slave whose tinydns is stopped takes the push but fails verification:
        status is not ok (exit 3, dns-failed), --nagios names it, and once its tinydns
        is back --live says all is well."""
        serial = real.edit("192.0.2.81")
        a, b = real.slaves
        real.verified(serial, {a.name: "ok", b.name: "ok"})
        assert status_cli(real.config).returncode == 0
        b.tinydns.stop()
        serial = real.edit("192.0.2.82")
        real.verified(serial, {a.name: "ok", b.name: "failed"})
        proc = status_cli(real.config)
        assert proc.returncode == exits.EXIT_SLAVES, proc.stdout + proc.stderr
        assert f"{b.name}: dns-failed" in proc.stderr
        assert "start tinydns" in proc.stderr
        assert f"{a.name}: " not in proc.stderr
        nag = status_cli(real.config, "--nagios", "--warning", "0")
        assert nag.returncode == status.NAGIOS_WARNING, nag.stdout
        assert f"{b.name} dns-failed" in nag.stdout
        assert "slaves_failing=1;;;0;2" in nag.stdout
        live = status_cli(real.config, "--live", "--timeout", "2")
        assert live.returncode == exits.EXIT_SLAVES, live.stdout + live.stderr
        assert f"{b.name}: dns-failed" in live.stdout
        b.tinydns.start()
        live = status_cli(real.config, "--live")
        assert live.returncode == 0, live.stdout + live.stderr

    def test_stale_tinydns(self, real: RealMaster, tmp_path: Path) -> None:
        """A tinydns that serves an old copy of the root: installed, but DNS answers an
        older serial: stale (exit 3), in the state file, status and --live."""
        from tests.lab.realworld import Tinydns  # noqa: PLC0415

        mark = real.daemon.mark()
        first = real.edit("192.0.2.81")
        a, b = real.slaves
        real.verified(first, {a.name: "ok", b.name: "ok"})
        b.tinydns.stop()
        frozen = tmp_path / "frozen-root"
        shutil.copytree(b.root, frozen)
        old = Tinydns(frozen, address=b.address, log=tmp_path / "frozen.log")
        old.start()
        try:
            serial = real.edit("192.0.2.83")
            current = real.verified(serial, {a.name: "ok", b.name: "stale"})
            # Verified stale: pushed again, with backoff, while a is left alone.
            again = real.daemon.wait_count("push.done", 2, mark, slave=b.name, serial=serial)
            assert len(again) >= 2
            assert real.daemon.find("verify.stale", mark, slave=b.name)
            assert real.daemon.find("retry.scheduled", mark, slave=b.name)
            assert len(real.daemon.find("push.done", mark, slave=a.name, serial=serial)) == 1
            proc = status_cli(real.config)
            assert proc.returncode == exits.EXIT_SLAVES, proc.stdout + proc.stderr
            assert f"{b.name}: stale" in proc.stderr
            assert f"answers an older serial, {first}" in proc.stderr or (
                # a daemon that does not record the served serial yet
                next(s for s in current.slaves if s.name == b.name).served_serial is None
            )
            live = status_cli(real.config, "--live")
            assert live.returncode == exits.EXIT_SLAVES
            assert f"{b.name}: stale: example.com: serves serial {first}" in live.stdout
        finally:
            old.stop()

    def test_served_serial_and_metrics(self, real: RealMaster) -> None:
        """NEEDS THE DAEMON WIRING: after a verified push the state file has each
        slave's served serial and last success, status shows them, and the metrics
        file says the same."""
        serial = real.edit("192.0.2.84")
        names = {s.name: "ok" for s in real.slaves}
        current = real.verified(serial, names)
        current = wait_state(
            real.state,
            lambda s: all(x.served_serial == serial and x.last_success for x in s.slaves),
        )
        assert current.build is not None
        assert current.build.fingerprint is not None
        for slave in current.slaves:
            assert slave.expected_serial == serial
            assert slave.failures == 0
            assert slave.push_seconds is not None
        proc = status_cli(real.config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("slave")]
        assert {row[0]: row[1:4] for row in rows} == {
            name: ["ok", str(serial), str(serial)] for name in names
        }
        # The metrics are written when the state is: the build's serial may show a
        # write before the slaves' verification reaches the file.
        wanted = [f"dnsmaster_build_serial {serial}\n"]
        for name in names:
            wanted.append(f'dnsmaster_slave_served_serial{{slave="{name}"}} {serial}\n')
            wanted.append(f'dnsmaster_slave_state{{slave="{name}",state="ok"}} 1\n')
        deadline = time.monotonic() + TIMEOUT
        while True:
            text = real.metrics.read_text() if real.metrics.exists() else ""
            if all(line in text for line in wanted):
                break
            missing = [line for line in wanted if line not in text]
            assert time.monotonic() < deadline, f"metrics never showed {missing}:\n{text}"
            time.sleep(0.1)
        assert not [p for p in real.metrics.parent.iterdir() if p != real.metrics]


class TestLive:
    def test_live_against_real_slaves(self, tmp_path: Path, lab: Lab) -> None:
        """--live without a daemon: every slave asked over SSH and DNS in parallel; what
        each has and serves, with times; non-zero when one differs or cannot be asked."""
        a, b, c = lab(3)
        setup = RealMaster(tmp_path / "master", lab, [a, b, c])
        build_here(setup.config)
        data = (setup.output / "data").read_bytes()
        from dnsmaster.core.banner import previous_serial  # noqa: PLC0415

        serial = previous_serial(data)
        assert serial is not None
        for s in (a, b, c):
            assert lab.push(s, data).returncode == 0
        proc = status_cli(setup.config, "--live")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        sha = hashlib.sha256(data).hexdigest()
        assert f"master: serial {serial} sha256 {sha[:16]}" in proc.stdout
        for s in (a, b, c):
            assert f"{s.name}: ok: " in proc.stdout
        assert re.search(rf"installed  serial {serial} sha256 {sha[:16]} \(\d+ ms\)", proc.stdout)
        assert re.search(rf"serves     example.com {serial} \(\d+ ms\)", proc.stdout)

        # One with other data (a newer serial: the receiver refuses an older one
        # without --force), one unreachable over SSH.
        from dnsmaster.core.makedata import assemble, compile_source  # noqa: PLC0415

        other = assemble([compile_source("zones.x", ZONE.encode())], serial + 100).data
        assert lab.push(b, other).returncode == 0
        c.sshd.stop()
        started = time.monotonic()
        proc = status_cli(setup.config, "--live", "--timeout", "3", "--json")
        assert time.monotonic() - started < 30
        assert proc.returncode == exits.EXIT_SLAVES, proc.stdout + proc.stderr
        document = json.loads(proc.stdout)
        verdicts = {s["name"]: s["verdict"] for s in document["slaves"]}
        assert verdicts == {a.name: "ok", b.name: "differs", c.name: "unreachable"}
        by_name = {s["name"]: s for s in document["slaves"]}
        # c's tinydns still answers: DNS is asked even when SSH is not reachable.
        assert by_name[c.name]["served"][0][2] == serial
        assert by_name[a.name]["ssh_ms"] > 0
        assert document["master"]["zones"] == {"example.com": serial}


# -- a state file that is not one: UNKNOWN, never a traceback -----------------------------

#: The JSON types each field may hold (None: null), for the mutation test's oracle.
NUMBER: tuple[type | None, ...] = (int, float)
FIELD_TYPES: dict[tuple[str, ...], tuple[type | None, ...]] = {
    ("pid",): (int,),
    ("updated",): NUMBER,
    ("stopped",): (*NUMBER, None),
    ("started",): (*NUMBER, None),
    ("heartbeat_interval",): (*NUMBER, None),
    ("host",): (str, None),
    ("zones",): (str, None),
    ("build",): (dict, None),
    ("slaves",): (list,),
    ("held",): (dict, None),
    ("build", "serial"): (int, None),
    ("build", "time"): NUMBER,
    ("build", "sha256"): (str,),
    ("slaves", 0): (dict,),
    ("slaves", 0, "name"): (str,),
    ("slaves", 0, "last_success"): (*NUMBER, None),
    ("slaves", 0, "last_push"): (*NUMBER, None),
    ("slaves", 0, "installed_serial"): (int, None),
    ("slaves", 0, "failures"): (int,),
    ("slaves", 0, "retryable"): (bool,),
    ("slaves", 0, "verified"): (str, None),
    ("slaves", 0, "result"): (str,),
}


def _json_type_ok(value: object, allowed: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in allowed
    if isinstance(value, bool):
        return bool in allowed
    return any(t is not None and t is not bool and isinstance(value, t) for t in allowed)


def _nagios(config: Path, *options: str) -> tuple[int, str, str]:
    """``status`` run as the command is (exceptions not caught), its output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["status", "--config", str(config), *options])
    return code, out.getvalue(), err.getvalue()


def _good_document(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A config, and a state document it judges OK (a live pid, a slave serving)."""
    _, out, config = _setup(tmp_path, {"name": "ns2", "transport": "local", "root": tmp_path})
    sha = hashlib.sha256((out / "data").read_bytes()).hexdigest()
    now = time.time()
    slave = SlaveState("ns2", sha, 1, "ok", last_push=now, verified="skipped", last_success=now - 1)
    state.write(tmp_path / "state.json", _built_state(out, slave))
    document = json.loads((tmp_path / "state.json").read_text())
    assert _nagios(config, "--nagios")[0] == status.NAGIOS_OK
    return config, document


class TestMalformedState:
    @pytest.mark.parametrize(
        ("where", "value"),
        [
            (("slaves", 0, "last_success"), "yesterday"),
            (("stopped",), "yes"),
            (("updated",), float("nan")),
            (("updated",), 10**400),
            (("pid",), -1),
            (("pid",), True),
            (("slaves", 0, "verified"), "maybe"),
            (("zones",), "/etc\x00"),
            (("slaves", 0, "name"), "\ud800"),
        ],
        ids=[
            "last_success-text",
            "stopped-text",
            "updated-nan",
            "updated-huge",
            "pid-negative",
            "pid-bool",
            "verified-unknown-word",
            "zones-nul",
            "name-surrogate",
        ],
    )
    def test_wrong_type_is_unknown(
        self, tmp_path: Path, where: tuple[str | int, ...], value: object
    ) -> None:
        """A field of the wrong type: UNKNOWN naming it for Nagios, 111 for people."""
        config, document = _good_document(tmp_path)
        _put(document, where, value)
        (tmp_path / "state.json").write_text(json.dumps(document))
        code, line, _ = _nagios(config, "--nagios")
        assert code == status.NAGIOS_UNKNOWN, line
        assert line.startswith("DNSMASTER UNKNOWN - ")
        assert "not a dnsmaster state file" in line
        assert str(where[-1]) in line
        code, out, err = _nagios(config)
        assert (code, out) == (exits.EXIT_SYSTEM, "")
        assert "cannot read the daemon's state: not a dnsmaster state file" in err

    def test_deep_nesting_is_unknown(self, tmp_path: Path) -> None:
        config, _ = _good_document(tmp_path)
        (tmp_path / "state.json").write_text('{"format": 1, "pid": ' + "[" * 100_000)
        code, line, _ = _nagios(config, "--nagios")
        assert code == status.NAGIOS_UNKNOWN
        assert "nested too deeply" in line
        assert _nagios(config)[0] == exits.EXIT_SYSTEM

    def test_random_states_never_raise_nor_say_ok_when_malformed(self, tmp_path: Path) -> None:
        """Hypothesis: any JSON in the state file, or a good one with any field
        replaced, is judged without an exception; a wrong type is UNKNOWN."""
        from hypothesis import given, settings  # noqa: PLC0415
        from hypothesis import strategies as st  # noqa: PLC0415

        from tests.conftest import examples  # noqa: PLC0415 - beside hypothesis's, above

        config, good_document = _good_document(tmp_path)
        path = tmp_path / "state.json"
        scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
        values = st.recursive(
            scalars,
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=8,
        )

        @settings(max_examples=examples(150))
        @given(
            where=st.sampled_from(sorted(FIELD_TYPES, key=str)) | st.none(),
            value=values,
            nagios_mode=st.booleans(),
        )
        def check(where: tuple[str | int, ...] | None, value: object, nagios_mode: bool) -> None:
            document: object = value
            if where is not None:
                document = json.loads(json.dumps(good_document))
                _put(document, where, value)
            path.write_text(json.dumps(document))
            code, out, _ = _nagios(config, *(["--nagios"] if nagios_mode else []))
            malformed = where is None or not _json_type_ok(value, FIELD_TYPES[where])
            if nagios_mode:
                assert code in (0, 1, 2, 3)
                assert out.startswith(f"DNSMASTER {('OK', 'WARNING', 'CRITICAL', 'UNKNOWN')[code]}")
                if malformed:
                    assert code == status.NAGIOS_UNKNOWN, out
            elif malformed:
                assert code == exits.EXIT_SYSTEM

        check()


def _put(document: object, where: tuple[str | int, ...], value: object) -> None:
    """Set the field at ``where`` in a parsed JSON document."""
    for key in where[:-1]:
        document = document[key]  # type: ignore[index]
    document[where[-1]] = value  # type: ignore[index]


class TestClockSteppedBack:
    def test_future_heartbeat_is_unknown(self) -> None:
        """The wall clock stepped back an hour and nothing else measures the age: the
        heartbeat's age cannot be told; UNKNOWN with the reason, not OK."""
        rep = health.judge(make(good(), updated=NOW + 3600), now=NOW, alive=True, zones=SAME)
        assert rep.daemon.state == "unsure"
        assert "the heartbeat is 3600 s in the future: the clock stepped back?" in (
            rep.daemon.reason
        )
        assert rep.exit_status == exits.EXIT_DAEMON
        code, line = nagios(rep)
        assert code == status.NAGIOS_UNKNOWN
        assert "in the future" in line
        # Within the tolerance (two clocks' jitter): running.
        assert health.judge_daemon(make(updated=NOW + 3), now=NOW, alive=True).ok
        # A known problem says more than one that cannot be told.
        worse = health.judge(
            make(good(result="failed", error="x", last_push=NOW - 900), updated=NOW + 3600),
            now=NOW,
            alive=True,
            zones=SAME,
        )
        assert nagios(worse)[0] == status.NAGIOS_CRITICAL

    def test_monotonic_clock_tells_a_hung_daemon(self) -> None:
        """Written on this boot with the monotonic clock: the age is measured on it,
        and a daemon silent for 100 s is hung whatever the wall clock says."""
        hung = make(good(), updated=NOW + 3600, monotonic=5000.0, boot_id="b1")
        beat = health.heartbeat_age(hung, now=NOW, boot_id="b1", monotonic=5100.0)
        assert beat == 100.0
        rep = health.judge(hung, now=NOW, alive=True, zones=SAME, beat=beat)
        assert rep.daemon.state == "hung"
        assert nagios(rep)[0] == status.NAGIOS_CRITICAL
        assert "heartbeat_age=100s" in nagios(rep)[1]
        # Another boot's monotonic clock says nothing: the wall clock has to do.
        assert health.heartbeat_age(hung, now=NOW, boot_id="b2", monotonic=5100.0) is None
        assert health.heartbeat_age(make(), now=NOW, boot_id="b1", monotonic=5100.0) is None

    @pytest.mark.usefixtures("daemon_process")
    def test_daemon_writes_the_monotonic_clock(self, tmp_path: Path) -> None:
        """The real daemon's state file carries its boot and monotonic clock, and
        status measures the heartbeat on it: a stopped daemon (SIGSTOP) whose last
        heartbeat is dated an hour ahead is hung, not OK."""
        config = _setup(tmp_path)[2]
        daemon = DaemonProcess(config).start()
        try:
            daemon.wait("daemon.start", timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while True:
                with contextlib.suppress(OSError, ValueError):
                    current = state.read(tmp_path / "state.json")
                    if current.pid == daemon.pid and current.build is not None:
                        break
                assert time.monotonic() < deadline, "no state file from the daemon"
                time.sleep(0.1)
            assert current.boot_id == state.this_boot() is not None
            assert current.monotonic is not None
            assert current.monotonic <= time.monotonic()
            daemon.signal(signal.SIGSTOP)
            try:
                # Hung for 40 s by its monotonic clock, its wall clock an hour ahead.
                document = json.loads((tmp_path / "state.json").read_text())
                document["updated"] = time.time() + 3600
                document["monotonic"] = time.monotonic() - 40
                (tmp_path / "state.json").write_text(json.dumps(document))
                code, line, _ = _nagios(config, "--nagios")
                assert code == status.NAGIOS_CRITICAL, line
                assert line.startswith("DNSMASTER CRITICAL - daemon hung")
            finally:
                daemon.signal(signal.SIGCONT)
        finally:
            daemon.kill()
