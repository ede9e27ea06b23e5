"""The shared lab (tests/lab/shared.py): each test gets the same slaves again, as new.

Each change below is one a test of the suite makes to its lab. The reset must put it
back, and the check must see it when the reset did not: the check is what turns a
change no reset knows of into a failure of the next test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from dnsmaster.core.makedata import assemble, compile_source

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Slave
    from tests.lab.shared import SharedLab


# Runs a module of tests that share a lab, to see what the next test makes of a change.
pytest_plugins = ["pytester"]

SERIAL = 1_700_000_000


def zone_data(serial: int) -> bytes:
    source = b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.1\n"
    return assemble([compile_source("zones.x", source)], serial).data


def pushed(lab: SharedLab, slave: Slave) -> None:
    proc = lab.push(slave, zone_data(SERIAL))
    assert proc.returncode == 0, proc.stderr.decode()


def root_written(lab: SharedLab, slave: Slave) -> None:
    (slave.root / "data").write_bytes(zone_data(SERIAL))
    (slave.root / ".receiver").mkdir()


def stopped_sshd(lab: SharedLab, slave: Slave) -> None:
    slave.sshd.stop()


def stopped_tinydns(lab: SharedLab, slave: Slave) -> None:
    slave.tinydns.stop()


def new_host_key(lab: SharedLab, slave: Slave) -> None:
    slave.sshd.regenerate_host_key()


def config_changed(lab: SharedLab, slave: Slave) -> None:
    with slave.sshd.config.open("a") as f:
        f.write("MaxSessions 2\n")
    slave.sshd.restart()


def no_authorized_key(lab: SharedLab, slave: Slave) -> None:
    slave.sshd.set_authorized_keys("")


def root_read_only(lab: SharedLab, slave: Slave) -> None:
    slave.root.chmod(0o555)


def key_readable(lab: SharedLab, slave: Slave) -> None:
    lab.key.chmod(0o640)


def known_hosts_written(lab: SharedLab, slave: Slave) -> None:
    lab.known_hosts.write_text(slave.sshd.host_key_line() + "\n")


def wrapper_left(lab: SharedLab, slave: Slave) -> None:
    (lab.workdir / "bin" / "receiver-p1").write_text("#!/bin/sh\n")
    (lab.workdir / "master" / "out").mkdir(parents=True)


def forced_command_changed(lab: SharedLab, slave: Slave) -> None:
    lab.forced_command.write_text("#!/bin/sh\nexit 0\n")


#: A change a test makes, and what the check says of it.
CHANGES: dict[str, tuple[Callable[[SharedLab, Slave], None], str]] = {
    "root written": (root_written, "its root is not empty: ['.receiver', 'data']"),
    "sshd stopped": (stopped_sshd, "sshd is not running"),
    "tinydns stopped": (stopped_tinydns, "tinydns is not running"),
    "host key": (new_host_key, "sshd runs with another config or host key"),
    "sshd config": (config_changed, "sshd runs with another config or host key"),
    "authorized_keys": (no_authorized_key, "authorized_keys differs from new"),
    "root mode": (root_read_only, "its root's owner or mode is not the lab's"),
    "client key": (key_readable, "client_ed25519 differs from new"),
    "known_hosts": (known_hosts_written, "known_hosts differs from new"),
    "files left": (wrapper_left, "left in the lab: "),
    "forced command": (forced_command_changed, "bin/dnsmaster differs from new"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_reset_puts_back_and_the_check_sees(lab: SharedLab, change: str) -> None:
    """Made by a test, the change is put back by the reset; made after a reset (as if
    the reset had missed it), it is named by the check, and a reset puts it back too.
    The slave then serves a push again.

    The change is made on a slave as lab(1) gives it, without a push first: what a
    push leaves (data, data.cdb, copies, the receiver's lock) is put back by the
    reset after every test of the suite that pushes, each checked by the next."""
    make, named = CHANGES[change]
    (one,) = lab(1)
    make(lab, one)
    lab.reset()
    assert lab.differences() == []
    (again,) = lab(1)
    assert again is one
    lab.reset()
    make(lab, one)
    found = lab.differences()
    assert any(named in line for line in found), found
    lab.reset()
    assert lab.differences() == []
    (one,) = lab(1)
    pushed(lab, one)
    assert one.tinydns.soa_serial("example.com") == SERIAL


def test_the_same_slaves_again(lab: SharedLab) -> None:
    """lab(n) after a reset gives the same running slaves, by the names a new lab
    gives, with known_hosts holding theirs alone; one more is started only when asked."""
    a, b = lab(2)
    pids = [a.sshd.pid, a.tinydns.pid, b.sshd.pid, b.tinydns.pid]
    lab.reset()
    assert lab.slaves == []
    assert lab.known_hosts.read_text() == ""
    (first,) = lab(1)
    assert first is a
    assert first.name == "slave1"
    assert lab.known_hosts.read_text() == a.sshd.host_key_line() + "\n"
    second, third = lab(2)
    assert second is b
    assert third.name == "slave3"
    assert [s.name for s in lab.slaves] == ["slave1", "slave2", "slave3"]
    assert [a.sshd.pid, a.tinydns.pid, b.sshd.pid, b.tinydns.pid] == pids
    assert len(lab.known_hosts.read_text().splitlines()) == 3


def test_a_log_holds_this_tests_lines_only(lab: SharedLab) -> None:
    """sshd's log starts empty at each test, so a test may count its own logins."""
    (one,) = lab(1)
    assert "Accepted publickey" not in one.sshd.log_text()
    assert lab.ssh(one, "status").returncode == 0
    assert one.sshd.log_text().count("Accepted publickey") == 1


def test_something_mounted_on_a_root_fails_the_reset(lab: SharedLab) -> None:
    """What a reset cannot put back (here a mount on a slave's root) fails it, and
    the check names it, so the next test would not run on it."""
    from tests.lab.realworld import ComponentError  # noqa: PLC0415 - see TYPE_CHECKING

    (one,) = lab(1)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(one.root)], check=True)
    try:
        with pytest.raises(ComponentError, match="something is mounted on its root"):
            lab.reset()
        assert any("something is mounted on its root" in line for line in lab.differences())
    finally:
        subprocess.run(["umount", str(one.root)], check=True)
    lab.reset()
    assert lab.differences() == []


#: A module whose first test leaves a change behind that its reset misses.
LEAKY = """
def test_leaks(lab):
    (one,) = lab(1)
    one.tinydns.stop()
    lab.reset = lambda: None  # as a reset that does not know of the change


def test_next(lab):
    pass


def test_after(lab):
    (one,) = lab(1)
    assert one.tinydns.running
"""


@pytest.mark.usefixtures("sshd_bin")  # the inner tests start labs: the real lane
def test_a_change_left_fails_the_next_test(pytester: pytest.Pytester) -> None:
    """The next test fails, naming what is not as new; the one after gets a new lab."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest('pytest_plugins = ["tests.lab.shared"]\n')
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_next*",
            "*the shared lab is not as new*",
            "*slave1: tinydns is not running*",
        ]
    )
