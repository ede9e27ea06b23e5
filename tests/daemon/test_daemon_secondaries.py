"""``dnsmaster run`` feeding standard secondaries: NOTIFY, confirmation, state, reload.

One daemon (a process, its JSON log read) on two local slaves, with the master's
own tinydns serving the served root (as the one beside axfrdns does) and two
stand-in secondaries from :mod:`tests.lab.notifyd`: ``good`` answers NOTIFY and
relays SOA questions to that tinydns (a secondary that transfers at once), ``mute``
never answers anything. The slaves must not notice either.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsmaster.exits import EXIT_SLAVES
from dnsmaster.master import state as statefile
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess
from tests.lab.notifyd import NotifyResponder
from tests.lab.realworld import Tinydns, release_dns_address, take_dns_address
from tests.lab.site import TIMEOUT, Local, all_ok, example_com, write

NOTIFY = "\n[notify]\ntimeout = 0.1\nretries = 2\nconfirm_timeout = 3.0\n"


def secondary(name: str, responder: NotifyResponder) -> str:
    return (
        f'\n[[secondary]]\nname = "{name}"\naddress = "{responder.address}"\n'
        f"port = {responder.port}\n"
    )


@dataclass
class Site:
    local: Local
    tinydns: Tinydns
    good: NotifyResponder
    mute: NotifyResponder

    @property
    def daemon(self) -> DaemonProcess:
        return self.local.daemon

    def config(self, *names: str) -> str:
        text = f'\n[axfrdns]\nip = "{self.tinydns.address}"\n' + NOTIFY
        for name in names:
            text += secondary(name, getattr(self, name))
        return text


@pytest.fixture
def site(tmp_path: Path, daemon_process: type[DaemonProcess]) -> Iterator[Site]:
    del daemon_process  # asked for the ``real`` mark: this test starts the daemon
    address = take_dns_address()
    try:
        with NotifyResponder(upstream=(address, 53)) as good, NotifyResponder(rcode=None) as mute:
            local = Local(tmp_path, slaves=1)  # the slaves' part is "all the same"
            served = local.output / "served"
            served.mkdir(mode=0o755)  # tinydns chroots there as it starts
            tinydns = Tinydns(served, address=address, log=tmp_path / "tinydns.log")
            the_site = Site(local, tinydns, good, mute)
            local.config.write_text(local.config.read_text() + the_site.config("good", "mute"))
            tinydns.start()
            try:
                yield the_site
            finally:
                local.daemon.kill()
                tinydns.stop()
    finally:
        release_dns_address(address)


def test_secondaries_fed_beside_the_slaves(site: Site) -> None:
    """The good secondary is notified of both zones and confirmed serving; the mute
    one fails (its NOTIFYs retransmitted, then given up) and is late; the slaves get
    every build all the same; a save feeds the new serial; a reload drops ``mute``;
    ``wait --secondaries`` waits for them; a restart notifies nothing served."""
    daemon = site.daemon.start()
    first_build(site, daemon)
    save(site, daemon)
    base = reload_without_mute(site, daemon)
    site.local.config.write_text(base + site.config("good", "mute"))
    wait_command(site)
    restart(site, daemon)


def first_build(site: Site, daemon: DaemonProcess) -> None:
    first = daemon.wait("build.done", timeout=TIMEOUT)
    serial = first["serial"]
    daemon.wait("push.done", timeout=TIMEOUT, serial=serial)
    serving = daemon.wait("secondary.serving", timeout=TIMEOUT, secondary="good", serial=serial)
    assert serving["seconds"] >= 0
    acked = daemon.find("notify.acked", secondary="good", serial=serial)
    assert sorted(e["zone"] for e in acked) == ["example.com", "example.net"]
    assert sorted(site.good.zones()) == ["example.com", "example.net"]
    late = daemon.wait("secondary.late", timeout=TIMEOUT, secondary="mute", expected=serial)
    assert late["serves"] == "no answer"
    failed = daemon.find("notify.failed", secondary="mute", serial=serial)
    assert sorted(e["zone"] for e in failed) == ["example.com", "example.net"]
    assert {e["reason"] for e in failed} == {"no answer"}
    # Each zone's NOTIFY went 1 + retries times, and no more.
    assert len(daemon.find("notify.sent", secondary="mute", serial=serial)) == 6
    assert len(site.mute.wait_count(6)) == 6

    daemon.idle_after(late, timeout=TIMEOUT)
    saved = statefile.read(site.local.state)
    assert all_ok(saved), "the slaves have the build whatever the secondaries do"
    good, mute = saved.secondaries
    assert (good.name, good.result, good.serial, good.serving) == (
        "good",
        "serving",
        serial,
        serial,
    )
    assert (good.zones, good.acked, good.error) == (2, 2, None)
    assert good.notified is not None
    assert good.served_at is not None
    assert (mute.name, mute.result, mute.acked, mute.error) == ("mute", "failed", 0, "no answer")
    assert mute.serving is None


def save(site: Site, daemon: DaemonProcess) -> None:
    """A save: the new serial reaches the good secondary (through the master's tinydns)."""
    mark = daemon.mark()
    write(site.local.zones / "zones.example.com", example_com("192.0.2.99"))
    second = daemon.wait("build.done", mark, timeout=TIMEOUT)["serial"]
    daemon.wait("secondary.serving", mark, timeout=TIMEOUT, secondary="good", serial=second)
    assert site.tinydns.soa_serial("example.com") == second


def reload_without_mute(site: Site, daemon: DaemonProcess) -> str:
    """SIGHUP without ``mute``: its feed is cancelled, the state file forgets it.
    The config file without the secondaries' part."""
    mark = daemon.mark()
    base = site.local.config.read_text().split("\n[axfrdns]", 1)[0]
    site.local.config.write_text(base + site.config("good"))
    daemon.signal(signal.SIGHUP)
    stopped = daemon.wait("secondary.stopped", mark, timeout=TIMEOUT, secondary="mute")
    assert stopped["reason"] == "reload"
    reloaded = daemon.wait("config.reloaded", mark, timeout=TIMEOUT)
    assert "secondaries" in reloaded["sections"].split(",")
    daemon.idle_after(reloaded, timeout=TIMEOUT)
    assert [s.name for s in statefile.read(site.local.state).secondaries] == ["good"]
    return base


def wait_command(site: Site) -> None:
    """``wait --secondaries`` (reading a file with ``mute`` back in it): the good
    secondary is live, the mute one late: exit 3."""
    argv = ["wait", "--secondaries", "--timeout", "1", "--log-format", "json"]
    proc = dnsmaster_here(*argv, "--config", str(site.local.config), timeout=60)
    assert proc.returncode == EXIT_SLAVES, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["secondary"] for e in events if e["event"] == "wait.live"] == ["good"]
    assert [e["secondary"] for e in events if e["event"] == "wait.late"] == ["mute"]


def restart(site: Site, daemon: DaemonProcess) -> None:
    """The state file says ``good`` served the build on disk: after a restart it is
    asked again, not notified."""
    assert daemon.stop(timeout=TIMEOUT) == 0
    last = statefile.read(site.local.state)
    assert last.build is not None
    assert last.secondaries[0].serial == last.build.serial  # the SIGHUP's build
    before = len(site.good.received)
    mark = daemon.mark()
    daemon.start()
    serving = daemon.wait("secondary.serving", mark, timeout=TIMEOUT, secondary="good")
    assert serving["serial"] == last.build.serial
    assert not daemon.find("notify.sent", mark, secondary="good")
    assert len(site.good.received) == before
