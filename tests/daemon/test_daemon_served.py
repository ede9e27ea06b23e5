"""The served root end to end: the master's axfrdns and tinydns (tests/lab/axfrdns.py)
read ``OUTPUT/served``, and only a build that goes to the slaves lands there.

One site, in one test: ``dnsmaster push`` by hand, then a daemon whose saves the
guard holds until ``push --accept``, then a rollback. A stand-in secondary
(tests/lab/notifyd.py) answers NOTIFY and relays its SOA questions to the
master's tinydns. What a secondary transfers is asked of axfrdns itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dnsmaster.core.axfrrules import grants, rules_text
from dnsmaster.errors import TransferError
from tests.conftest import dnsmaster_here
from tests.lab.axfrdns import Axfrdns
from tests.lab.daemonrun import DaemonProcess
from tests.lab.notifyd import NotifyResponder
from tests.lab.site import TIMEOUT, Local

#: Where the secondary's transfers come from (any 127.x is ours on loopback).
SECONDARY = "127.0.2.7"
#: Dropping a whole zone holds the build; nothing else does.
GUARD = "\n[guard]\nmax_removed = 1.0\nzones = true\n"
NOTIFY = "\n[notify]\ntimeout = 0.2\nretries = 2\nconfirm_timeout = 5.0\n"


@dataclass
class Site:
    local: Local
    axfrdns: Axfrdns
    secondary: NotifyResponder

    def serial(self, zone: str) -> int:
        """The serial of ``zone`` a secondary gets by AXFR from the master now."""
        serial: int = self.axfrdns.transfer(zone, source=SECONDARY).serial
        return serial

    def command(self, *argv: str) -> list[dict[str, Any]]:
        """``dnsmaster ARGV`` on the site, in this process (its log and exit status are
        what is judged, not its start); its JSON log events (it must succeed)."""
        config = ("--config", str(self.local.config), "--log-format", "json")
        proc = dnsmaster_here(*argv, *config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [json.loads(line) for line in proc.stderr.splitlines()]


@pytest.fixture
def site(tmp_path: Path, daemon_process: type[DaemonProcess]) -> Iterator[Site]:
    del daemon_process  # asked for the ``real`` mark: this test starts the daemon
    local = Local(tmp_path, slaves=1, extra=GUARD)  # what is served is the master's
    served = local.output / "served"
    served.mkdir(mode=0o755)  # axfrdns and tinydns chroot there as they start
    with Axfrdns(served, tmp_path / "axfrdns") as axfrdns:
        axfrdns.set_rules(rules_text(grants([([SECONDARY], [])])))
        with NotifyResponder(upstream=(axfrdns.address, 53)) as secondary:
            local.config.write_text(
                local.config.read_text()
                + f'\n[axfrdns]\nip = "{axfrdns.address}"\n'
                + NOTIFY
                + f'\n[[secondary]]\nname = "sec"\naddress = "{secondary.address}"\n'
                + f"port = {secondary.port}\n"
            )
            try:
                yield Site(local, axfrdns, secondary)
            finally:
                local.daemon.kill()


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def test_only_what_the_slaves_get_is_served(site: Site) -> None:
    """A push by hand serves its build before it notifies; the daemon holds a build
    that drops a zone (not served, not notified: a secondary refreshing on its own
    still transfers the build before); ``push --accept`` serves and notifies it; a
    rollback serves the rolled-back build."""
    first = push_by_hand(site)
    daemon = site.local.daemon.start()
    daemon.wait("served.replaced", serial=first, timeout=TIMEOUT)
    daemon.settled(timeout=TIMEOUT)
    held = save_held(site, daemon, first)
    accept(site, daemon, held)
    roll_back(site, daemon, held)


def push_by_hand(site: Site) -> int:
    found = site.command("push")
    [replaced] = [e for e in found if e["event"] == "served.replaced"]
    first: int = replaced["serial"]
    assert replaced["how"] == "link"
    # The served data.cdb is in place before any NOTIFY leaves.
    order = names(found)
    assert order.index("served.replaced") < order.index("notify.sent")
    assert sorted(r.zone for r in site.secondary.wait_count(2)) == ["example.com", "example.net"]
    assert site.serial("example.com") == site.serial("example.net") == first
    assert [p.name for p in (site.local.output / "served").iterdir()] == ["data.cdb"]
    return first


def save_held(site: Site, daemon: DaemonProcess, first: int) -> int:
    mark = daemon.mark()
    notified = len(site.secondary.received)
    (site.local.zones / "zones.example.net").unlink()
    held = daemon.wait("guard.held", mark, timeout=TIMEOUT)
    daemon.idle_after(held, timeout=TIMEOUT)
    assert held["serial"] != first
    assert (
        (site.local.output / "data")
        .read_bytes()
        .startswith(b"# dnsmaster serial %d " % held["serial"])
    )
    assert not daemon.find("served.replaced", mark)
    assert not daemon.find("notify.sent", mark)
    assert len(site.secondary.received) == notified
    # What an SOA refresh would find: the build the slaves have, the zone still in it.
    assert site.serial("example.net") == first
    serial: int = held["serial"]
    return serial


def accept(site: Site, daemon: DaemonProcess, held: int) -> None:
    mark = daemon.mark()
    site.command("push", "--accept")
    replaced = daemon.wait("served.replaced", mark, serial=held, timeout=TIMEOUT)
    sent = daemon.wait("notify.sent", mark, serial=held, timeout=TIMEOUT)
    assert daemon.events.index(replaced) < daemon.events.index(sent)
    assert site.serial("example.com") == held
    with pytest.raises(TransferError):
        site.serial("example.net")  # dropped with the build accepted
    daemon.idle_after(daemon.wait("secondary.serving", mark, serial=held, timeout=TIMEOUT))


def roll_back(site: Site, daemon: DaemonProcess, held: int) -> None:
    mark = daemon.mark()
    site.command("rollback")  # the build before the newest: both zones again
    done = daemon.wait("rollback.done", mark, timeout=TIMEOUT)
    rolled: int = done["serial"]
    assert rolled > held
    daemon.wait("served.replaced", mark, serial=rolled, timeout=TIMEOUT)
    assert site.serial("example.com") == site.serial("example.net") == rolled
