"""What ``dnsmaster doctor`` checks for each standard secondary (``[[secondary]]``).

Three things, each for the secondary's zones (its ``zones``, or every zone of the
build):

- it answers the SOA of each zone over UDP, and with which serial against the
  master's (behind is a warning: it may not have transferred yet; silence or no SOA
  fails);
- the master's axfrdns (``[axfrdns] ip`` and ``port``) lets each zone be
  transferred: doctor does the AXFR itself, from the secondary's first transfer
  address when this machine holds it (the rules then judge that address), and
  compares the serial axfrdns gives with the build's; otherwise from its own
  address, which the rules should refuse (a refusal then proves that axfrdns
  answers; the rules check judges the secondary's address);
- when ``[axfrdns] service`` names the directory ``service-conf --axfrdns`` made,
  its ``tcp`` rules allow each transfer address each zone (read as tcpserver reads
  them), and ``tcp.cdb`` is not older than ``tcp``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.name

from dnsmaster.config import Config, Secondary
from dnsmaster.core.axfrrules import Grant, allows, grants, parse
from dnsmaster.core.fields import name_to_wire
from dnsmaster.errors import TransferError
from dnsmaster.fsutil import describe
from dnsmaster.master import served
from dnsmaster.master.checkup import Build, Check, Findings
from dnsmaster.transport.axfr import transfer
from dnsmaster.transport.dns import check_serials

__all__ = [
    "MAX_ZONES",
    "SecondaryCheckup",
    "check_secondary",
    "secondary_grants",
    "transfer_addresses",
]

#: At most this many zones are asked of a secondary and transferred from axfrdns.
MAX_ZONES = 20
#: Seconds one zone's transfer from axfrdns may take.
TRANSFER_TIMEOUT = 10.0


def secondary_grants(cfg: Config) -> list[Grant]:
    """The tcp rules' grants the configuration calls for (ValueError when a rule
    cannot say one: an IPv6 transfer address, a zone a rule cannot carry)."""
    return grants([(transfer_addresses(s), s.zones) for s in cfg.secondaries], cfg.catalog)


def transfer_addresses(secondary: Secondary) -> tuple[str, ...]:
    """Where the secondary's transfers come from (its address unless configured)."""
    return secondary.transfer_from or (secondary.address,)


def _wire(zone: str) -> bytes:
    """The key :func:`dnsmaster.core.soa.zone_serials` gives the zone."""
    return name_to_wire(zone.encode()).lower()


def _text(wire: bytes) -> str:
    return dns.name.from_wire(wire, 0)[0].to_text(omit_final_dot=True)


def _holds(address: str) -> bool:
    """Whether this machine has ``address``, so a connection may come from it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError:
        return False
    return True


class SecondaryCheckup:
    """One secondary's checks, collected in :attr:`group`."""

    def __init__(self, cfg: Config, secondary: Secondary, build: Build | None) -> None:
        self.cfg = cfg
        self.secondary = secondary
        self.build = build
        self.group = Findings(f"secondary {secondary.name}")
        #: Its zones: text name -> the master's serial (None: not in the build).
        self.zones: dict[str, int | None] = {}

    def _zones(self) -> bool:
        built = self.build.zones if self.build is not None else {}
        if self.secondary.zones:
            for zone in self.secondary.zones[:MAX_ZONES]:
                self.zones[zone] = built.get(_wire(zone))
            missing = [zone for zone, serial in self.zones.items() if serial is None]
            if missing and self.build is not None:
                self.group.fail(
                    "zones",
                    f"{', '.join(missing)}: not in the master's data (no Z or . line)",
                    "add the zone to the zones files, or remove it from the secondary's zones",
                )
        else:
            for wire, serial in list(built.items())[:MAX_ZONES]:
                self.zones[_text(wire)] = serial
        if self.build is None or not self.zones:
            self.group.warn(
                "zones", "not checked: the master has no built zones to ask for", "dnsmaster build"
            )
            return False
        return True

    async def run(self) -> None:
        if not self._zones():
            return
        await self._soa()
        if not self.cfg.axfrdns.ip:
            self.group.fail(
                "axfrdns",
                "[axfrdns] ip is not set: nothing serves the zones' transfers",
                f"set [axfrdns] ip in {self.cfg.path} (see feeding.rst)",
            )
        else:
            await self._transfers()
        if self.cfg.axfrdns.service is not None:
            self._rules(self.cfg.axfrdns.service)

    async def _soa(self) -> None:
        sec = self.secondary
        where = f"SOA from {sec.address} port {sec.port}"
        # A catalog consumer answers no question about the catalog (Knot: REFUSED);
        # its members show it was transferred, and the transfer check covers it.
        catalog = self.cfg.catalog
        expected = {_wire(z): s for z, s in self.zones.items() if s is not None and z != catalog}
        checks = await check_serials(
            sec.address, sec.port, expected, self.cfg.daemon.verify_timeout
        )
        for c in checks:
            if c.served is None:
                self.group.fail(
                    where,
                    f"{c.zone}: {c.error or 'no SOA in the answer'}",
                    "start the secondary, check its address and port in the config, "
                    "and that it carries the zone (its primary: [axfrdns] ip)",
                )
            elif c.behind:
                self.group.warn(
                    where,
                    f"{c.zone}: serial {c.served}, the master's is {c.expected}: it has not "
                    "transferred the build yet",
                    "wait for NOTIFY and its transfer; if it stays behind, see the "
                    "transfer checks below and its own log",
                )
            elif not c.ok:
                self.group.fail(
                    where,
                    f"{c.zone}: serial {c.served}, above the master's {c.expected}: it will "
                    "refuse the master's zone until the master's serial passes it",
                    "build with a serial above it (see feeding.rst, Serials)",
                )
            else:
                self.group.ok(f"{where}: {c.zone} serial {c.served} (the master's)")

    async def _transfers(self) -> None:
        ax = self.cfg.axfrdns
        wanted = transfer_addresses(self.secondary)[0]
        source = wanted if _holds(wanted) else None
        if source is None:
            where = f"AXFR from axfrdns {ax.ip} port {ax.port} from this machine"
        else:
            where = f"AXFR from axfrdns {ax.ip} port {ax.port} as {source}"
        for zone, serial in self.zones.items():
            if serial is None:
                continue
            try:
                done = await transfer(ax.ip, ax.port, zone, source=source, timeout=TRANSFER_TIMEOUT)
            except TransferError as exc:
                if source is None and exc.refused:
                    # Expected: the rules let the secondaries in, not the master.
                    self.group.ok(
                        f"{where}: axfrdns answers, and refuses this machine as its rules "
                        f"should (it cannot ask as {wanted}: the rules check judges that)"
                    )
                    return
                self.group.fail(
                    where,
                    f"{zone}: {exc.reason}",
                    "run dnsmaster service-conf --axfrdns again after changing [[secondary]], "
                    "and check that axfrdns runs on [axfrdns] ip and port"
                    if exc.refused
                    else "start the axfrdns service (see feeding.rst) on [axfrdns] ip and port",
                )
                continue
            if done.serial != serial:
                self.group.fail(
                    where,
                    f"{zone}: axfrdns gives serial {done.serial}, the build has {serial}",
                    f"axfrdns' ROOT must be the served root {served.root_of(self.cfg)}; "
                    "a build the guard holds or a rollback is not served until it goes",
                )
            else:
                self.group.ok(f"{where}: {zone} serial {serial}, {done.records} records")

    def _rules(self, service: Path) -> None:
        rules_file, cdb = service / "tcp", service / "tcp.cdb"
        where = f"rules {rules_file}"
        try:
            text = rules_file.read_text(errors="replace")
            stale = cdb.stat().st_mtime < rules_file.stat().st_mtime
        except OSError as exc:
            self.group.fail(
                where,
                f"cannot read: {describe(exc)}",
                "dnsmaster service-conf --axfrdns ACCT LOGACCT DIR CONFIG (see feeding.rst)",
            )
            return
        if stale:
            self.group.fail(
                where,
                "tcp.cdb is older than tcp: tcpserver does not use the rules as written",
                f"cd {service} && tcprules tcp.cdb tcp.tmp < tcp",
            )
        rules = parse(text)
        denied: list[str] = []
        for address in transfer_addresses(self.secondary):
            for zone in self.zones:
                try:
                    ok, why = allows(rules, address, zone)
                except ValueError as exc:  # a zone name no rules line can carry
                    ok, why = False, str(exc)
                if not ok:
                    denied.append(f"{zone}: {why}")
        if denied:
            self.group.fail(
                where,
                "; ".join(denied[:3])
                + (f" (and {len(denied) - 3} more)" if len(denied) > 3 else ""),
                "run dnsmaster service-conf --axfrdns again (same command) to rewrite the "
                "rules from the configuration",
            )
        else:
            addresses = ", ".join(transfer_addresses(self.secondary))
            self.group.ok(f"{where} allow {addresses} each of its {len(self.zones)} zones")


async def check_secondary(
    cfg: Config, secondary: Secondary, build: Build | None, timeout: float
) -> list[Check]:
    """One secondary's checks in order; a deadline missed is one more failure."""
    check = SecondaryCheckup(cfg, secondary, build)
    try:
        async with asyncio.timeout(timeout):
            await check.run()
    except TimeoutError:
        check.group.fail("checks", f"not done in {timeout:g} s", "check its network and load")
    return check.group.checks
