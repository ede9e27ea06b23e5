"""A slave re-keyed under the running daemon: said plainly, not retried, resumed.

A changed host key is not a network hiccup: the daemon must say which known_hosts
line is stale and how to accept the new key, stop pushing to that slave (no retry
loop, no push through the session it had open), show it CRITICAL, and push again
by itself once known_hosts is updated. Real sshd and tinydns slaves, the real
daemon, ``dnsmaster status --nagios``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.daemonrun import PROJECT
from tests.test_daemon import TIMEOUT, Rig, example_com, write

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.realworld import Lab

pytest_plugins = ["tests.realworld"]


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
    return subprocess.run(
        [sys.executable, "-m", "dnsmaster", "status", "--config", str(config), "--nagios"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        timeout=60,
    )


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
    daemon.wait("retry.held", mark, timeout=TIMEOUT, slave=rekeyed.name)
    daemon.wait("push.done", mark, timeout=TIMEOUT, slave=rig.slaves[1].name)
    # The old session is still open on the slave, yet nothing went through it.
    assert rekeyed.tinydns.soa_serial("example.com") != done["serial"]
    time.sleep(3)  # retry_initial is 0.2 s: a retry loop would show by now
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
