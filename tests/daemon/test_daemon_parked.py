"""Slaves the daemon must not keep retrying: re-keyed, or running an outdated receiver.

A changed host key is not a network hiccup: the daemon must say which known_hosts
line is stale and how to accept the new key, stop pushing to that slave (no retry
loop, no push through the session it had open), show it CRITICAL, and push again
by itself once known_hosts is updated. Real sshd and tinydns slaves, the real
daemon, ``dnsmaster status --nagios``.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess
from tests.lab.site import TIMEOUT, Rig, example_com, write

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab


@pytest.fixture
def rig(tmp_path: Path, lab: Lab) -> Iterator[Rig]:
    # host keys are re-checked before every reuse of a kept connection
    the_rig = Rig(tmp_path, lab, lab(2))
    text = the_rig.config.read_text().replace("[push]\n", "[push]\nhost_key_recheck = 0\n")
    the_rig.config.write_text(text)
    try:
        yield the_rig
    finally:
        the_rig.close()


def nagios(config: Path) -> subprocess.CompletedProcess[str]:
    """``status --nagios`` in this process: the verdict is its exit status and line
    (tests/commands/test_status.py runs it as the process a monitor starts)."""
    return dnsmaster_here("status", "--config", str(config), "--nagios", timeout=60)


def test_rekeyed_slave_is_parked_then_resumed(rig: Rig) -> None:
    daemon = rig.start()
    rekeyed = rig.slaves[0]
    rekeyed.sshd.regenerate_host_key()
    mark = daemon.mark()
    write(rig.zones / "zones.example.com", example_com("192.0.2.61"))
    done = daemon.wait("build.done", mark, timeout=TIMEOUT)
    failed = daemon.wait("push.failed", mark, timeout=TIMEOUT, slave=rekeyed.name)
    assert failed["phase"] == "hostkey"
    assert failed["retryable"] is False
    assert f"{rig.lab.known_hosts}:1" in failed["error"]
    assert "ssh-keygen -R" in failed["error"]
    held = daemon.wait("retry.held", mark, timeout=TIMEOUT, slave=rekeyed.name)
    daemon.wait("push.done", mark, timeout=TIMEOUT, slave=rig.slaves[1].name)
    # The old session is still open on the slave, yet nothing went through it.
    assert rekeyed.tinydns.soa_serial("example.com") != done["serial"]
    # At rest with a retry due is no rest: a retry loop would never get there.
    daemon.idle_after(held, TIMEOUT)
    assert len(daemon.find("push.failed", mark, slave=rekeyed.name)) == 1
    assert not daemon.find("retry.scheduled", mark, slave=rekeyed.name)
    check = nagios(rig.config)
    assert check.returncode == 2, check.stdout + check.stderr
    assert check.stdout.startswith("DNSMASTER CRITICAL")
    # The operator checks the new key and records it: the daemon resumes by itself.
    mark = daemon.mark()
    rig.lab.write_known_hosts()
    daemon.wait("push.done", mark, timeout=TIMEOUT, slave=rekeyed.name, serial=done["serial"])
    assert rekeyed.tinydns.wait_serial("example.com", done["serial"]) == done["serial"]
    assert daemon.stop() == 0


def test_outdated_receiver_is_parked_until_upgraded(rig: Rig) -> None:
    """A slave whose receiver predates protocol versions: the daemon says to upgrade
    it and pushes nothing to it; after the upgrade, SIGHUP brings it in."""
    old = rig.lab.workdir / "bin" / "old-receiver"
    # What dnsmaster receive answered before it named its protocol.
    old.write_text(
        '#!/bin/sh\n[ "$SSH_ORIGINAL_COMMAND" = status ] && echo "status none" && exit 0\nexit 2\n'
    )
    old.chmod(0o755)
    outdated, current = rig.slaves
    good_line = outdated.sshd.authorized_keys.read_text()
    outdated.sshd.set_authorized_keys(
        f'restrict,command="{old}" ' + rig.lab.pubkey.read_text().strip()
    )
    daemon = DaemonProcess(rig.config).start()
    rig.daemons.append(daemon)
    done = daemon.wait("build.done", timeout=TIMEOUT)
    daemon.wait("push.done", timeout=TIMEOUT, slave=current.name, serial=done["serial"])
    refused = daemon.wait("status.failed", timeout=TIMEOUT, slave=outdated.name)
    assert refused["phase"] == "status"
    assert "speaks no protocol version" in refused["error"]
    assert "upgrade it" in refused["error"]
    daemon.wait("retry.held", timeout=TIMEOUT, slave=outdated.name)
    assert not daemon.find("push.done", slave=outdated.name)
    assert outdated.installed() is None
    mark = daemon.mark()
    outdated.sshd.set_authorized_keys(good_line)  # the upgrade
    daemon.signal(signal.SIGHUP)
    daemon.wait("push.done", mark, timeout=TIMEOUT, slave=outdated.name)
    assert outdated.installed() is not None
    assert daemon.stop() == 0
