"""The guard: a build that drops a zone or too many records waits for the operator.

The judge is pure and tested on numbers; the hold is tested on the real daemon with
local slaves: the slaves keep the old data, status is CRITICAL, ``push --accept``
releases the build, and the hold survives a restart.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dnsmaster.core.guard import MIN_RECORDS, judge, judge_data, zone_text, zones_of
from dnsmaster.core.soa import zone_serials
from dnsmaster.master.guarded import names
from tests.conftest import dnsmaster_here
from tests.lab.recorder import push_here
from tests.lab.site import TIMEOUT, Local, example_com, running, status, write


def dnsmaster(*argv: str) -> tuple[int, list[dict[str, object]]]:
    """The command in this process (what it prints and returns is what a process
    would); ``status``, from :mod:`tests.lab.site`, is the one run as a process."""
    proc = dnsmaster_here(*argv, "--log-format", "json")
    return proc.returncode, [json.loads(line) for line in proc.stderr.splitlines()]


class TestJudge:
    def test_within_limits(self) -> None:
        assert judge(100, 95, {"a", "b"}, {"a", "b"}, max_removed=0.1, zones=True) is None

    def test_too_many_records(self) -> None:
        verdict = judge(100, 80, {"a"}, {"a"}, max_removed=0.1, zones=True)
        assert verdict is not None
        assert verdict.reason == "removes 20 of 100 records (20%, more than 10%)"

    def test_a_zone_removed(self) -> None:
        verdict = judge(100, 99, {"a", "b"}, {"a"}, max_removed=0.1, zones=True)
        assert verdict is not None
        assert verdict.removed_zones == ("b",)
        assert verdict.reason == "removes the zones b"

    def test_allowed_zone_and_no_zone_check(self) -> None:
        assert judge(100, 99, {"a", "b"}, {"a"}, max_removed=0.1, zones=True, allow=["B."]) is None
        assert judge(100, 99, {"a", "b"}, {"a"}, max_removed=0.1, zones=False) is None

    def test_growth_is_never_held(self) -> None:
        assert judge(10, 1000, set(), {"a"}, max_removed=0.0, zones=True) is None

    def test_few_records_are_not_judged_by_share(self) -> None:
        """Below MIN_RECORDS any change is a big share: an ACME hook's cleanup goes out."""
        assert judge(MIN_RECORDS - 1, 1, {"a"}, {"a"}, max_removed=0.1, zones=True) is None
        verdict = judge(MIN_RECORDS, 1, {"a"}, {"a"}, max_removed=0.1, zones=True)
        assert verdict is not None
        assert "records" in verdict.reason
        dropped = judge(MIN_RECORDS - 1, 8, {"a", "b"}, {"a"}, max_removed=0.1, zones=True)
        assert dropped is not None
        assert dropped.removed_zones == ("b",)

    def test_on_data_texts(self) -> None:
        """judge_data counts records and zones (their SOA lines, as make-data writes
        them) in the texts, as the daemon and push do."""
        com = (
            b"Zexample.com:a.ns.example.com:hostmaster.example.com:7\n+www.example.com:192.0.2.2\n"
        )
        net = b"Zexample.net:a.ns.example.net:hostmaster.example.net:7\n"
        verdict = judge_data(com + net, com, max_removed=1.0, zones=True)
        assert verdict is not None
        assert verdict.removed_zones == ("example.net",)
        assert judge_data(com, com + net, max_removed=0.0, zones=True) is None


class TestAcceptNames:
    """push --accept BUILD: which builds BUILD names."""

    def test_names(self) -> None:
        sha = "0123abcd" * 8
        assert names("", 1796626616, sha)
        assert names("1796626616", 1796626616, sha)
        assert names("0123ABCD", 1796626616, sha)
        assert not names("1796626615", 1796626616, sha)
        assert not names("0123", 1796626616, sha)  # too short a prefix to be sure


def guarded(tmp_path: Path, **guard: object) -> Local:
    """A master with one local slave: the guard judges the build, before any slave
    is chosen, so a second slave proves nothing more about the hold (pushing to
    several slaves is tests/master's and tests/daemon's) and costs a receiver's
    start at every push and status."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in guard.items())
    return Local(tmp_path, slaves=1, extra=f"\n[guard]\n{lines}")


@pytest.mark.usefixtures("daemon_process")
def test_dropped_zone_is_held_until_accepted(tmp_path: Path) -> None:
    local = guarded(tmp_path)
    with running(local) as (daemon, _first):
        mark = daemon.mark()
        (local.zones / "zones.example.net").unlink()
        held = daemon.wait("guard.held", mark, timeout=TIMEOUT)
        assert held["zones"] == "example.net"
        assert "removes the zones example.net" in held["reason"]
        daemon.idle_after(held, TIMEOUT)  # at rest: the state file says it holds
        assert all(b"example.net" in d for d in local.installed())  # the old data stays
        assert not daemon.find("push.done", mark)
        proc = status(local.config)
        assert proc.returncode == 4, proc.stdout + proc.stderr
        assert "held" in proc.stderr
        code, events = dnsmaster("push", "--config", str(local.config))
        assert code == 4  # a push by hand does not slip past the guard
        assert [e for e in events if e["event"] == "guard.held"]
        assert_plans_show_the_hold(local, held)
        code, events = dnsmaster("build", "--config", str(local.config))
        assert code == 4, events  # handed to the daemon, which holds it
        code, events = dnsmaster("push", "--accept", "1", "--config", str(local.config))
        assert code == 4, events  # not the build held: nothing released
        assert events_named(events, "guard.not_accepted")
        assert all(b"example.net" in d for d in local.installed())
        code, events = dnsmaster("push", "--accept", "--config", str(local.config))
        assert code == 0, events
        assert {e["slave"] for e in events if e["event"] == "push.done"} == {"ns2"}
        daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=held["serial"])
        assert not any(b"example.net" in d for d in local.installed())
        assert status(local.config).returncode == 0
        assert daemon.stop() == 0


@pytest.mark.usefixtures("daemon_process")
def test_share_of_records_and_restart(tmp_path: Path) -> None:
    """Most records of a zone gone: held; still held after a restart; accepted then."""
    local = guarded(tmp_path, max_removed=0.2)
    big = example_com(extra="".join(f"+h{i}.example.com:192.0.2.{i}\n" for i in range(1, 40)))
    write(local.zones / "zones.example.com", big)
    with running(local) as (daemon, _first):
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com())
        held = daemon.wait("guard.held", mark, timeout=TIMEOUT)
        assert "records" in held["reason"]
        assert daemon.stop() == 0
    restart = local.daemon.mark()
    with running_held(local) as daemon:
        daemon.wait("guard.held", restart, timeout=TIMEOUT)
        assert not daemon.find("push.done", restart)
        assert all(b"h39.example.com" in d for d in local.installed())
        code, events = dnsmaster("push", "--accept", "--config", str(local.config))
        assert code == 0, events
        assert not any(b"h39.example.com" in d for d in local.installed())
        assert daemon.stop() == 0


@pytest.mark.usefixtures("daemon_process")
def test_allowed_zone_goes_out(tmp_path: Path) -> None:
    local = guarded(tmp_path, allow=["example.net"], max_removed=1.0)
    with running(local) as (daemon, _first):
        mark = daemon.mark()
        (local.zones / "zones.example.net").unlink()
        done = daemon.wait("build.done", mark, timeout=TIMEOUT)
        daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=done["serial"])
        assert not daemon.find("guard.held")


class running_held:
    """The daemon restarted on a held build: it pushes nothing, so no first push."""

    def __init__(self, local: Local) -> None:
        self.local = local

    def __enter__(self):  # type: ignore[no-untyped-def]
        daemon = self.local.daemon.start()
        daemon.wait_named(self.local.state, TIMEOUT)  # the pushes below hand off to it
        return daemon

    def __exit__(self, *exc: object) -> None:
        self.local.daemon.kill()


def events_named(events: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [e for e in events if e["event"] == name]


@pytest.mark.usefixtures("dnsmaster_cli")
class TestPushByHand:
    """Without a daemon, ``dnsmaster push`` judges what it would push against the
    build the last push installed, refuses what the guard would hold (exit 4), and
    ``push --accept`` pushes exactly that build."""

    def test_dropped_zone_refused_until_accepted(self, tmp_path: Path) -> None:
        local = guarded(tmp_path)
        push_here(local.config)  # the base the pushes below are judged against
        (local.zones / "zones.example.net").unlink()
        code, events = dnsmaster("push", "--config", str(local.config))
        assert code == 4, events
        (held,) = events_named(events, "guard.held")
        assert held["zones"] == "example.net"
        assert "removes the zones example.net" in str(held["reason"])
        assert f"dnsmaster push --accept {held['serial']}" in str(held["hint"])
        assert not events_named(events, "push.done")
        assert all(b"example.net" in d for d in local.installed())
        # Still refused the next time, and not accepted under another name.
        code, events = dnsmaster("push", "--config", str(local.config))
        assert code == 4, events
        assert events_named(events, "guard.held")
        assert_plans_show_the_hold(local, held)
        code, events = dnsmaster("push", "--accept", "1", "--config", str(local.config))
        assert code == 4, events
        assert events_named(events, "guard.not_accepted")
        assert all(b"example.net" in d for d in local.installed())
        code, events = dnsmaster(
            "push", "--accept", str(held["serial"]), "--config", str(local.config)
        )
        assert code == 0, events
        assert events_named(events, "guard.accepted")
        assert len(events_named(events, "push.done")) == 1
        assert not any(b"example.net" in d for d in local.installed())
        # Accepted and installed: nothing is held any more.
        code, events = dnsmaster("push", "--config", str(local.config))
        assert code == 0, events
        assert not events_named(events, "guard.held")
        code, events = dnsmaster("push", "--accept", "--config", str(local.config))
        assert code == 0, events
        assert events_named(events, "guard.nothing_held")

    def test_a_fixed_build_goes_out(self, tmp_path: Path) -> None:
        """The zone comes back before anyone accepts: the next push needs no accept."""
        local = guarded(tmp_path)
        push_here(local.config)  # the base the pushes below are judged against
        kept = (local.zones / "zones.example.net").read_text()
        (local.zones / "zones.example.net").unlink()
        assert dnsmaster("push", "--config", str(local.config))[0] == 4
        write(local.zones / "zones.example.net", kept + "+new.example.net:192.0.2.9\n")
        code, events = dnsmaster("push", "--config", str(local.config))
        assert code == 0, events
        assert all(b"new.example.net" in d for d in local.installed())

    def test_daemon_started_on_a_refused_build_holds_it(self, tmp_path: Path) -> None:
        local = guarded(tmp_path)
        push_here(local.config)  # the base the pushes below are judged against
        (local.zones / "zones.example.net").unlink()
        assert dnsmaster("push", "--config", str(local.config))[0] == 4
        with running_held(local) as daemon:
            held = daemon.wait("guard.held", timeout=TIMEOUT)
            assert held["by"] == "push"
            assert not daemon.find("push.done")
            assert all(b"example.net" in d for d in local.installed())
            code, events = dnsmaster("push", "--accept", "--config", str(local.config))
            assert code == 0, events
            assert not any(b"example.net" in d for d in local.installed())
            assert daemon.stop() == 0


def plan(*argv: str) -> subprocess.CompletedProcess[str]:
    return dnsmaster_here(*argv)


def assert_plans_show_the_hold(local: Local, held: dict[str, object]) -> None:
    """While a build is held, diff (against the slaves' build, or one slave's) and
    push --dry-run say it is held and why, and list the zone it removes: exit 1."""
    heading = f"held: the guard holds serial {held['serial']}: "
    for argv in (("diff",), ("diff", "--slave", "ns2"), ("push", "--dry-run")):
        proc = plan(*argv, "--config", str(local.config))
        assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(heading), (argv, lines)
        assert "removes the zones example.net" in lines[0]
        assert f"dnsmaster push --accept {held['serial']}" in lines[0]
        assert any(line.startswith("- zone example.net: removed") for line in lines), lines
    proc = plan("diff", "--json", "--config", str(local.config))
    document = json.loads(proc.stdout)
    assert document["zones_removed"] == ["example.net"]
    assert document["held"]["serial"] == held["serial"]
    assert document["held"]["pending"] is False


@pytest.mark.usefixtures("dnsmaster_cli")
def test_push_dry_run_says_the_push_would_be_held(tmp_path: Path) -> None:
    """Zones saved, not built yet: push --dry-run says the guard would hold the build."""
    local = guarded(tmp_path)
    push_here(local.config)  # the base the plan is judged against
    (local.zones / "zones.example.net").unlink()
    proc = plan("push", "--dry-run", "--config", str(local.config))
    assert proc.returncode == 1, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("held: the guard would hold serial "), first
    assert "removes the zones example.net" in first


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"Zexample.com:ns.example.com.:h.example.com.:123::::::\n",
        b"+x:1.2.3.4\nZFoo.Example.:a:b:7\nZfoo.example:a:b:8\nZbad:a:b:x\nZ\\101b.c:a:b:9\n",
        b"Z" + b"a" * 70 + b".com:a:b:1\nZ.:a:b:2\nZshort:a:b\nZ:a:b:3\n",
    ],
)
def test_zones_of_is_what_zone_serials_finds(text: bytes) -> None:
    """The guard's own scan finds the zones of soa.zone_serials: a Z line with a
    serial and a valid name, lower case, each piece's first line included."""
    expected = {zone_text(z) for z in zone_serials(text)}
    assert zones_of(text) == expected
    lines = text.splitlines(keepends=True)
    assert zones_of(lambda: iter(lines)) == expected  # every line a piece of its own
