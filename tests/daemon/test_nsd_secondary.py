"""Standard secondaries end to end: the daemon, the master's axfrdns, a real NSD.

One site per module (starting NSD, axfrdns and the daemon costs more than the
tests): the daemon builds into its output directory and puts each build the
slaves get in its served root, which tinydns (UDP) and axfrdns under tcpserver
(TCP) serve on one 127.0.1.N (:mod:`tests.lab.axfrdns`,
rules allowing NSD's address); two ``local`` slaves stand for the tinydns slaves.
Two ``[[secondary]]``:

- ``nsd1``, Debian's NSD (:mod:`tests.lab.nsd`) with ``request-xfr`` from that
  axfrdns and ``allow-notify`` from loopback, its refresh and retry pinned to an
  hour: NSD serving a new serial within seconds is the NOTIFY's doing;
- ``silent``, a UDP socket on port 53 of its own address that reads nothing: a
  secondary that never answers NOTIFY.

The tests share the running daemon and NSD, so each waits for the events of its
own save (``mark``); the order in the file is not relied upon.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster.commands.main import main
from dnsmaster.core.axfrrules import grants, rules_text
from dnsmaster.core.banner import previous_serial
from dnsmaster.master import state as statefile
from tests.conftest import dnsmaster_here
from tests.lab.axfrdns import Axfrdns
from tests.lab.daemonrun import DaemonProcess, config_text, toml_value
from tests.lab.nsd import Nsd
from tests.lab.realworld import release_dns_address, take_dns_address
from tests.lab.site import DEBOUNCE, NO_GUARD, TIMEOUT, example_com, make_zones, write

ZONES = ("example.com", "example.net")
#: NOTIFY's waits: 0.25 + 0.5 + 1 + 2 + 4 s = 7.75 s in all, which the silent
#: secondary costs; NSD restarted after the first retransmission (at 0.25 s) has
#: until the last one (at 3.75 s) to be up, on a loaded machine too.
NOTIFY = {"timeout": 0.25, "retries": 4, "confirm_timeout": 15.0}
#: "Within a few seconds" (issue 20), from the build to NSD answering its serial.
QUICK = 5.0


class Site:
    """The master (daemon, output, axfrdns), its local slaves and the two secondaries."""

    def __init__(self, base: Path) -> None:
        self.zones, self.output = make_zones(base / "master")
        self.state = base / "master" / "state.json"
        self.config = base / "master" / "dnsmaster.toml"
        self.roots = [base / "slaves" / name for name in ("ns2", "ns3")]
        for root in self.roots:
            root.mkdir(parents=True)
        served = self.output / "served"
        served.mkdir(mode=0o755)  # axfrdns and tinydns chroot there as they start
        self.axfr = Axfrdns(served, base / "axfrdns")
        self.nsd = Nsd(base / "nsd", master=self.axfr.address, zones=ZONES)
        self.axfr.set_rules(rules_text(grants([([self.nsd.address], list(ZONES))])))
        self.silent_address = take_dns_address()
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind((self.silent_address, 53))
        self.config.write_text(self.config_text())
        self.daemon = DaemonProcess(self.config)

    def config_text(self, *names: str) -> str:
        """The site's configuration, with only the secondaries ``names`` (default: both)."""
        secondaries = [
            (name, address)
            for name, address in (("nsd1", self.nsd.address), ("silent", self.silent_address))
            if not names or name in names
        ]
        extra = [
            "\n[axfrdns]",
            f"ip = {toml_value(self.axfr.address)}",
            "port = 53",
            "\n[notify]",
            *(f"{k} = {toml_value(v)}" for k, v in NOTIFY.items()),
        ]
        for name, address in secondaries:
            extra += ["\n[[secondary]]", f"name = {toml_value(name)}"]
            extra += [f"address = {toml_value(address)}", "port = 53"]
        return (
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                daemon={"debounce": DEBOUNCE, "retry_initial": 0.2, "retry_max": 1.0},
                slaves=[{"name": r.name, "transport": "local", "root": r} for r in self.roots],
            )
            + "\n".join(extra)
            + "\n"
            + NO_GUARD
        )

    def start(self) -> None:
        self.axfr.start()
        self.nsd.start()
        self.daemon.start()
        first = self.daemon.wait("build.done", timeout=TIMEOUT)
        self.daemon.wait_count("push.done", 2, timeout=TIMEOUT, serial=first["serial"])
        # The first build reaches NSD by NOTIFY too: it had nothing, and asks again
        # only after its hour of retry.
        self.daemon.wait("secondary.serving", timeout=TIMEOUT, secondary="nsd1")

    def close(self) -> None:
        try:
            self.daemon.kill()
        finally:
            try:
                self.nsd.close()
            finally:
                self.axfr.close()
                self.silent.close()
                release_dns_address(self.silent_address)

    def save(self, www: str) -> tuple[int, float]:
        """Change example.com; the new build's serial and when its build.done was read."""
        mark = self.daemon.mark()
        write(self.zones / "zones.example.com", example_com(www))
        done = self.daemon.wait("build.done", mark, timeout=TIMEOUT)
        return done["serial"], self.daemon.wait_time("build.done", mark)

    def wait_secondary(self, name: str, result: str, serial: int) -> statefile.SecondaryState:
        """Poll the state file until it records ``name`` with ``result`` for ``serial``
        (the daemon logs an event before it writes the state that follows)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            state = statefile.read(self.state)
            found = next(s for s in state.secondaries if s.name == name)
            if (found.result, found.serial) == (result, serial):
                return found
            assert time.monotonic() < deadline, f"never {result} for {serial}: {state}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    nsd_bin: str,
    axfrdns_bin: str,
    tcpserver_bin: str,
) -> Iterator[Site]:
    the_site = Site(tmp_path_factory.mktemp("nsd-secondary"))
    try:
        the_site.start()
        yield the_site
    finally:
        the_site.close()


def status(site: Site, *options: str) -> tuple[int, str, str]:
    """``dnsmaster status`` in this process (no interpreter to start)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["status", "--config", str(site.config), *options])
    return code, out.getvalue(), err.getvalue()


def test_save_reaches_nsd_by_notify(site: Site) -> None:
    """A save is served by NSD within seconds, and the log says how it got there."""
    daemon = site.daemon
    mark = daemon.mark()
    serial, built = site.save("192.0.2.31")
    seen = site.nsd.wait_serial("example.com", serial, timeout=QUICK)
    took = time.monotonic() - built
    assert seen == serial, f"NSD serves {seen}, not {serial}\n{site.nsd.log_tail()}"
    assert took < QUICK
    answer = site.nsd.query("www.example.com", "A")
    assert [rd.to_text() for rrset in answer.answer for rd in rrset] == ["192.0.2.31"]
    daemon.wait("notify.sent", mark, secondary="nsd1", zone="example.com", serial=serial)
    daemon.wait("notify.acked", mark, secondary="nsd1", zone="example.com", serial=serial)
    serving = daemon.wait("secondary.serving", mark, secondary="nsd1", serial=serial)
    assert 0 <= serving["seconds"] < QUICK
    assert site.wait_secondary("nsd1", "serving", serial).serving == serial


def test_silent_secondary_fails_and_slaves_do_not_wait(site: Site) -> None:
    """A secondary that never answers NOTIFY is failing in status; the slaves got
    the build long before its NOTIFYs gave up, and are ok."""
    daemon = site.daemon
    mark = daemon.mark()
    serial, _ = site.save("192.0.2.32")
    failed = daemon.wait("notify.failed", mark, timeout=TIMEOUT, secondary="silent", serial=serial)
    assert failed["reason"]
    pushed = daemon.find("push.done", mark, serial=serial)
    assert {p["slave"] for p in pushed} == {"ns2", "ns3"}
    # The pushes were done while the silent secondary's NOTIFY was still being
    # retransmitted: they did not wait for it to give up.
    assert max(daemon.events.index(p) for p in pushed) < daemon.events.index(failed)
    sent = daemon.find("notify.sent", mark, secondary="silent", zone="example.com", serial=serial)
    assert [e["attempt"] for e in sent] == [1, 2, 3, 4, 5]  # 1 + [notify] retries
    site.wait_secondary("nsd1", "serving", serial)
    site.wait_secondary("silent", "failed", serial)
    code, out, err = status(site)
    assert code == 3, out + err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert rows["ns2"] == rows["ns3"] == "ok"
    assert rows["nsd1"] == "ok"
    assert rows["silent"] == "failed"
    assert err.startswith("dnsmaster: silent: failed")
    code, out, _ = status(site, "--nagios")
    assert code == 0  # named, but younger than --warning
    assert "silent failed" in out
    code, out, _ = status(site, "--nagios", "--warning", "0")
    assert (code, out.split(" - ")[0]) == (1, "DNSMASTER WARNING")


def test_nsd_down_then_back_catches_up(site: Site) -> None:
    """NSD stopped at the save, started again while the NOTIFY is retransmitted:
    a retransmission reaches it and it transfers (its refresh is an hour away)."""
    daemon = site.daemon
    site.nsd.stop()
    try:
        mark = daemon.mark()
        serial, _ = site.save("192.0.2.33")
        daemon.wait(
            "notify.sent",
            mark,
            timeout=TIMEOUT,
            secondary="nsd1",
            zone="example.com",
            serial=serial,
            attempt=2,
        )
        assert not daemon.find("notify.acked", mark, secondary="nsd1", serial=serial)
    finally:
        site.nsd.start()
    # Back with the zone it had written at its stop: only a NOTIFY can bring it on.
    acked = daemon.wait(
        "notify.acked", mark, timeout=TIMEOUT, secondary="nsd1", zone="example.com", serial=serial
    )
    assert acked["attempt"] >= 3
    daemon.wait("secondary.serving", mark, timeout=TIMEOUT, secondary="nsd1", serial=serial)
    assert site.nsd.soa_serial("example.com") == serial


def test_push_wait_secondaries_waits_for_nsd(site: Site) -> None:
    """push --wait --secondaries returns once NSD serves the build, not before.

    The push hands the build to the running daemon, which notifies NSD; the command
    (with a configuration naming NSD alone: the silent one would never come) then
    asks NSD's SOA as it asks the slaves' until it serves the serial. The command
    runs in this process: its exit status and log are what is judged.
    """
    config = site.config.with_name("nsd-only.toml")
    config.write_text(site.config_text("nsd1"))
    write(site.zones / "zones.example.com", example_com("192.0.2.34"))
    argv = ["push", "--wait", "--secondaries", "--timeout", "30", "--config", str(config)]
    proc = dnsmaster_here(*argv, "--log-format", "json")
    serial = previous_serial((site.output / "data").read_bytes()[:200])
    # Asked the moment it returns: no polling here, the command waited.
    served = site.nsd.soa_serial("example.com")
    assert proc.returncode == 0, proc.stderr
    assert served == serial
    answer = site.nsd.query("www.example.com", "A")
    assert [rd.to_text() for rrset in answer.answer for rd in rrset] == ["192.0.2.34"]
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    start = next(e for e in events if e["event"] == "wait.start")
    assert (start["serial"], start["secondaries"]) == (serial, 1)
