"""``dnsmaster rollback`` on the real lab: sshd, the receiver, tinydns, dnspython.

A rollback puts an earlier kept build on every slave with a serial above the one
they served, the daemon holds it across saves (and across its own restart) until
``--release``, which pushes the zones as they are then. Without a daemon the
command does the same itself, and a push by hand is refused while the hold lasts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster.commands.status import nagios
from dnsmaster.exits import EXIT_BUILD
from dnsmaster.master import state as statefile
from dnsmaster.master.health import ZonesCheck, judge
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess
from tests.lab.recorder import push_here
from tests.lab.site import (
    TIMEOUT,
    Local,
    Rig,
    example_com,
    status,
    wait_state,
    write,
)

if TYPE_CHECKING:
    from tests.lab.realworld import Lab


OLD, NEW, NEWER = "192.0.2.80", "192.0.2.99", "192.0.2.55"


def dnsmaster(config: Path, *argv: str) -> tuple[int, str, list[dict[str, Any]]]:
    """Run a command in this process; its exit status, stdout and JSON log events.
    (``status``, ``status --nagios`` and the daemon are the processes here.)"""
    proc = dnsmaster_here(*argv, "--config", str(config), "--log-format", "json", timeout=180)
    return proc.returncode, proc.stdout, [json.loads(line) for line in proc.stderr.splitlines()]


def events(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in found if e["event"] == name]


def serves(rig: Rig, www: str, serial: int) -> None:
    """Every slave's tinydns answers ``www`` for www.example.com, with ``serial``."""
    rig.assert_served(serial)
    for s in rig.slaves:
        assert s.tinydns.answer("www.example.com", "A") == [www], s.name


def nagios_cli(config: Path) -> int:
    """``status --nagios``'s exit status, in this process (what a monitor's process
    would exit with: tests/commands/test_status.py runs that process)."""
    return dnsmaster_here("status", "--nagios", "--config", str(config), timeout=60).returncode


@pytest.fixture
def rig(tmp_path: Path, lab: Lab) -> Iterator[Rig]:
    the_rig = Rig(tmp_path, lab, lab(2))
    try:
        yield the_rig
    finally:
        the_rig.close()


def test_rollback_is_held_by_the_daemon_until_released(rig: Rig) -> None:
    daemon = rig.start()
    first = daemon.find("build.done")[-1]["serial"]
    mark = daemon.mark()
    write(rig.zones / "zones.example.com", example_com(NEW))
    second = daemon.wait("build.done", mark)["serial"]
    daemon.wait_count("push.done", 2, mark, serial=second)
    serves(rig, NEW, second)
    assert_listed(rig, [second, first])
    rolled = roll_back(rig, daemon, first, second)
    held = saves_are_held(rig, daemon, rolled)

    # The hold survives a restart of the daemon.
    assert daemon.stop() == 0
    daemon = DaemonProcess(rig.config).start()
    rig.daemons.append(daemon)
    daemon.wait("rollback.held", serial=rolled, timeout=TIMEOUT)
    daemon.wait_named(rig.state, TIMEOUT)  # the release below hands off to it
    write(rig.zones / "zones.example.com", example_com("192.0.2.56"))
    daemon.idle_after(daemon.wait("build.held", reason="rollback", timeout=TIMEOUT), TIMEOUT)
    assert not daemon.find("push.done")
    serves(rig, OLD, rolled)
    assert statefile.read(rig.state).rollback is not None

    mark = daemon.mark()
    code, _, found = dnsmaster(rig.config, "rollback", "--release")
    assert code == 0, found
    assert {e["slave"] for e in events(found, "push.done")} == rig.names
    released = daemon.wait("build.done", mark)["serial"]
    assert released > held
    serves(rig, "192.0.2.56", released)
    wait_state(rig.state, "verified")
    assert statefile.read(rig.state).rollback is None
    proc = status(rig.config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code, _, found = dnsmaster(rig.config, "rollback", "--release")
    assert code == 0
    assert events(found, "rollback.nothing_held")
    assert daemon.stop() == 0


def assert_listed(rig: Rig, serials: list[int]) -> None:
    """``rollback --list`` shows ``serials``, newest first, the newest marked live."""
    code, out, _ = dnsmaster(rig.config, "rollback", "--list")
    assert code == 0
    rows = [line for line in out.splitlines() if line[2:].strip()[:1].isdigit()]
    assert [int(r.split()[1 if r.startswith("*") else 0]) for r in rows] == serials
    assert rows[0].startswith("*")
    assert "live" in rows[0]


def roll_back(rig: Rig, daemon: DaemonProcess, first: int, second: int) -> int:
    """``dnsmaster rollback`` beside the daemon: ``first`` served, with a newer serial."""
    mark = daemon.mark()
    code, _, found = dnsmaster(rig.config, "rollback")  # -1: the build before the newest
    assert code == 0, found
    assert {e["slave"] for e in events(found, "push.done")} == rig.names
    done = daemon.wait("rollback.done", mark)
    rolled: int = done["serial"]
    assert done["kept_serial"] == first
    assert rolled > second  # above what the slaves served: the receivers take it
    serves(rig, OLD, rolled)
    wait_state(rig.state, "verified")
    state = statefile.read(rig.state)
    assert state.rollback is not None
    assert state.rollback.serial == rolled
    assert state.rollback.kept_serial == first
    assert (rig.output / "data").read_bytes().startswith(b"# dnsmaster serial %d " % rolled)
    proc = status(rig.config)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "rollback" in proc.stdout + proc.stderr
    assert "dnsmaster rollback --release" in proc.stdout + proc.stderr
    assert nagios_cli(rig.config) == 1  # WARNING: a state the operator chose
    return rolled


def saves_are_held(rig: Rig, daemon: DaemonProcess, rolled: int) -> int:
    """A save during the hold is built and checked, not pushed; a push by hand neither.

    Returns the held build's serial.
    """
    mark = daemon.mark()
    write(rig.zones / "zones.example.com", example_com(NEWER))
    held = daemon.wait("build.held", mark, reason="rollback")
    assert held["serial"] > rolled
    code, _, found = dnsmaster(rig.config, "push")
    assert code == 1, found
    assert events(found, "rollback.held")
    daemon.settled()  # the save's build and whatever the refused push asked are done
    assert not daemon.find("push.done", mark)
    serves(rig, OLD, rolled)
    serial: int = held["serial"]
    return serial


def test_rollback_without_a_daemon(rig: Rig) -> None:
    # Two builds pushed, in process: set-up (tests/commands/test_push.py tests push).
    first = push_here(rig.config).find("build.done")[0]["serial"]
    write(rig.zones / "zones.example.com", example_com(NEW))
    second = push_here(rig.config).find("build.done")[0]["serial"]
    serves(rig, NEW, second)

    code, _, found = dnsmaster(rig.config, "rollback", "--to", str(first))
    assert code == 0, found
    rolled = events(found, "rollback.done")[0]["serial"]
    assert rolled > second
    assert {e["slave"] for e in events(found, "push.done")} == rig.names
    serves(rig, OLD, rolled)
    code, out, _ = dnsmaster(rig.config, "rollback", "--list")
    assert f"live as serial {rolled}" in out
    assert "a rollback holds serial" in out

    write(rig.zones / "zones.example.com", example_com(NEWER))
    code, _, found = dnsmaster(rig.config, "push")
    assert code == 1, found  # it would undo the rollback without a word
    assert events(found, "rollback.held")
    serves(rig, OLD, rolled)

    # A release whose build fails keeps the hold: nothing else would say so.
    (rig.zones / "zones.broken").write_bytes(b"+broken.example.com\n")
    code, _, found = dnsmaster(rig.config, "rollback", "--release")
    assert code == 1, found
    assert events(found, "rollback.still_held")
    code, out, _ = dnsmaster(rig.config, "rollback", "--list")
    assert "a rollback holds serial" in out
    (rig.zones / "zones.broken").unlink()

    code, _, found = dnsmaster(rig.config, "rollback", "--release")
    assert code == 0, found
    released = events(found, "build.done")[0]["serial"]
    assert released > rolled
    serves(rig, NEWER, released)
    code, out, _ = dnsmaster(rig.config, "rollback", "--list")
    assert "rollback holds" not in out


def test_status_names_the_hold_and_never_pages() -> None:
    """A rollback is a state the operator chose: WARNING however old, with the way out."""
    now = 1_800_000_000.0
    build = statefile.BuildState(1_700_000_009, "b" * 64, 9, now - 86400)
    rolled = statefile.RollbackState(
        1_700_000_009, "b" * 64, 1_700_000_001, "a" * 64, now - 86400, held_serial=1_700_000_012
    )
    slave = statefile.SlaveState("ns2", "b" * 64, 1_700_000_009, "ok", verified="ok")
    state = statefile.State(
        pid=os.getpid(),
        updated=now,
        build=build,
        slaves=(slave,),
        heartbeat_interval=10.0,
        rollback=rolled,
    )
    rep = judge(state, now=now, alive=True, zones=ZonesCheck(True, now - 60))
    assert rep.build.state == "rollback"
    assert "serial 1700000009 (kept build 1700000001" in rep.build.reason
    assert "the newest is serial 1700000012" in rep.build.reason
    assert "dnsmaster rollback --release" in str(rep.build.action)
    assert rep.exit_status == EXIT_BUILD
    code, line = nagios(rep, warning=120, critical=600)
    assert code == 1, line
    assert "build rollback" in line


def test_the_hold_reads_back_from_the_state_file(tmp_path: Path) -> None:
    rolled = statefile.RollbackState(7, "b" * 64, 5, "a" * 64, 1.5, held_fingerprint="c" * 64)
    answer = statefile.RequestAnswer("0123abcd", "no kept build aaaa")
    path = tmp_path / "state.json"
    written = statefile.State(pid=1, updated=2.0, build=None, rollback=rolled, request=answer)
    statefile.write(path, written)
    assert statefile.read(path) == written
    document = json.loads(path.read_text())
    del document["rollback"], document["request"]  # an older daemon's file
    path.write_text(json.dumps(document))
    assert statefile.read(path).rollback is None


def test_bad_to_values_name_what_is_kept(tmp_path: Path) -> None:
    local = Local(tmp_path)
    code, _, found = dnsmaster(local.config, "rollback")
    assert code == 2
    assert "no builds are kept yet" in str(events(found, "rollback.failed")[0]["error"])
    serials = []
    for www in (OLD, NEW):
        write(local.zones / "zones.example.com", example_com(www))
        code, _, found = dnsmaster(local.config, "build")
        assert code == 0, found
        serials.append(events(found, "build.done")[0]["serial"])
    kept = f"kept, newest first: {serials[1]} ("
    for to, says in (
        ("12345", "no kept build has that serial"),
        ("-2", "only 2 builds are kept, so -1 is the oldest"),
        ("2001-01-01T00:00", "no kept build is that old"),
        ("last tuesday", "not a serial, a date-time (2026-11-26T01:30) or -N"),
    ):
        code, _, found = dnsmaster(local.config, "rollback", "--to", to)
        assert code == 2, (to, found)
        (failed,) = events(found, "rollback.failed")
        assert says in str(failed["error"]), failed
        if "last" not in to:
            assert kept in str(failed["error"]), failed
    code, out, _ = dnsmaster(local.config, "rollback", "--list")
    assert code == 0
    assert str(serials[0]) in out
    assert str(serials[1]) in out
    for root in local.roots:
        assert not (root / "data").exists()  # nothing was pushed anywhere


def test_damaged_hold_still_holds_the_daemon(rig: Rig) -> None:
    """A hold whose data no longer matches its sha256 is a doubt: the daemon pushes
    nothing (a push by hand neither) until ``--release``."""
    code, _, found = dnsmaster(rig.config, "push")
    assert code == 0, found
    first = events(found, "build.done")[0]["serial"]
    write(rig.zones / "zones.example.com", example_com(NEW))
    assert dnsmaster(rig.config, "push")[0] == 0
    code, _, found = dnsmaster(rig.config, "rollback", "--to", str(first))
    assert code == 0, found
    rolled = events(found, "rollback.done")[0]["serial"]
    serves(rig, OLD, rolled)

    hold = rig.output / ".dnsmaster-builds" / "rollback"
    raw = bytearray(hold.read_bytes())
    raw[-2] ^= 0x20  # in the data after the header: its sha256 no longer matches
    hold.write_bytes(bytes(raw))
    write(rig.zones / "zones.example.com", example_com(NEWER))
    daemon = rig.start(initial_push=False)
    daemon.wait_named(rig.state, TIMEOUT)  # the push and release below hand off to it
    damaged = daemon.wait("rollback.damaged", timeout=TIMEOUT)
    assert damaged["serial"] == rolled
    daemon.idle_after(damaged, TIMEOUT)  # every slave asked: nothing to push them
    assert not daemon.find("push.done")
    serves(rig, OLD, rolled)
    assert dnsmaster(rig.config, "push")[0] == 1

    mark = daemon.mark()
    code, _, found = dnsmaster(rig.config, "rollback", "--release")
    assert code == 0, found
    released = daemon.wait("build.done", mark)["serial"]
    assert released > rolled
    daemon.wait_count("push.done", 2, mark, serial=released)
    serves(rig, NEWER, released)
    assert daemon.stop() == 0
