"""``dnsmaster status --live``: ask every slave now what it has installed (the
receiver's ``status`` over SSH) and what its tinydns serves (SOA over DNS), and
compare both with the master's ``data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsmaster.config import Config, Slave
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.soa import zone_serials
from dnsmaster.errors import SlaveError, reason
from dnsmaster.master.health import serial_text
from dnsmaster.master.pushing import channel_for
from dnsmaster.sshlib import asyncssh
from dnsmaster.transport.channel import Receiver, fetch_receiver
from dnsmaster.transport.dns import SoaCheck, check_serials

__all__ = ["LIVE_ZONES", "LiveSlave", "Master", "ask_all", "ask_slave", "read_master"]

#: Zones asked for over DNS by ``--live`` (as the daemon asks after a push).
LIVE_ZONES = 20


@dataclass(frozen=True, slots=True)
class Master:
    """The master's data now: what every slave should have and serve."""

    sha256: str
    serial: int | None
    #: zone (wire name) -> SOA serial, the zones asked for
    zones: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class LiveSlave:
    """One slave, asked now."""

    name: str
    verdict: str  # ok, differs, stale, dns-failed, unreachable
    reason: str
    installed_sha256: str | None = None
    installed_serial: int | None = None
    ssh_ms: float | None = None
    ssh_error: str | None = None
    #: This master's name on a slave that serves several (its status says
    #: ``master=NAME``; what it reports installed is this master's section there).
    master: str | None = None
    #: (zone, expected, served or None, error or None) per zone asked
    served: tuple[tuple[str, int, int | None, str | None], ...] = ()
    dns_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def read_master(output: Path) -> Master:
    """The master's ``data``; raises OSError."""
    data = (output / "data").read_bytes()
    zones = dict(list(zone_serials(data).items())[:LIVE_ZONES])
    return Master(hashlib.sha256(data).hexdigest(), previous_serial(data[:200]), zones)


async def _ask_ssh(
    cfg: Config, slave: Slave, timeout: float
) -> tuple[Receiver | None, str | None, float]:
    started = time.perf_counter()
    channel = channel_for(slave, cfg)
    try:
        receiver: Receiver | None = await fetch_receiver(channel, timeout, lambda *_: None)
        error = None
    except (OSError, TimeoutError, asyncssh.Error, SlaveError) as exc:
        receiver, error = None, reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return receiver, error, (time.perf_counter() - started) * 1000


async def _ask_dns(
    slave: Slave, zones: Mapping[bytes, int], timeout: float
) -> tuple[list[SoaCheck], float]:
    started = time.perf_counter()
    checks: list[SoaCheck] = []
    for wire, serial in zones.items():
        found = await check_serials(slave.dns, slave.dns_port, {wire: serial}, timeout)
        checks += found
        if all(c.served is None for c in found):
            break  # a server that did not answer one zone will not answer the next
    return checks, (time.perf_counter() - started) * 1000


async def ask_slave(cfg: Config, slave: Slave, master: Master, timeout: float) -> LiveSlave:
    """What ``slave`` has installed (SSH ``status``) and serves (DNS SOA), now."""
    legacy = slave.protocol == "legacy"
    dns_wanted = bool(slave.dns) and bool(master.zones)

    async def no_dns() -> tuple[list[SoaCheck], float | None]:
        return [], None

    ssh_part = _ask_ssh(cfg, slave, timeout)
    dns_part = _ask_dns(slave, master.zones, timeout) if dns_wanted else no_dns()
    (receiver, ssh_error, ssh_ms), (checks, dns_ms) = await asyncio.gather(ssh_part, dns_part)
    version = receiver.installed if receiver is not None else None
    served = tuple((c.zone, c.expected, c.served, c.error) for c in checks)
    common: dict[str, Any] = {
        "installed_sha256": version.sha256 if version else None,
        "installed_serial": version.serial if version else None,
        "ssh_ms": ssh_ms,
        "ssh_error": ssh_error,
        "master": receiver.master if receiver is not None else None,
        "served": served,
        "dns_ms": dns_ms,
    }

    def result(verdict: str, reason: str) -> LiveSlave:
        return LiveSlave(slave.name, verdict, reason, **common)

    if ssh_error is not None:
        return result("unreachable", f"status over SSH failed: {ssh_error}")
    if version is None and not legacy:
        return result("differs", "has nothing installed that it vouches for")
    if version is not None and version.sha256 != master.sha256:
        return result(
            "differs",
            f"has serial {serial_text(version.serial)} sha256 {version.sha256[:16]}, the master "
            f"serial {serial_text(master.serial)} sha256 {master.sha256[:16]}",
        )
    for c in checks:
        if c.served is not None and c.served != c.expected:
            return result("stale", f"{c.zone}: serves serial {c.served}, the master {c.expected}")
    for c in checks:
        if c.served is None:
            return result("dns-failed", f"{c.zone}: {c.error or 'no answer'}")
    if not dns_wanted:
        return result("ok", "installed; not asked over DNS (no dns address or no zone)")
    return result("ok", "has and serves the master's data")


async def ask_all(cfg: Config, master: Master, timeout: float) -> list[LiveSlave]:
    """Every slave in parallel (at most ``[push] parallel`` at once), in config order."""
    gate = asyncio.Semaphore(cfg.push.parallel)

    async def one(slave: Slave) -> LiveSlave:
        async with gate:
            try:
                async with asyncio.timeout(timeout * 2):
                    return await ask_slave(cfg, slave, master, timeout)
            except TimeoutError:
                return LiveSlave(slave.name, "unreachable", f"no answer in {timeout * 2:g} s")

    return list(await asyncio.gather(*(one(s) for s in cfg.slaves)))
