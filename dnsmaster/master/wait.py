"""Waiting until every slave's tinydns serves a build (``wait``, ``push --wait``).

A push that exited 0 proves each receiver installed data.cdb; an ACME DNS-01 hook
needs more: the TXT record answered by every slave before it tells the CA to look.
So each slave's ``dns`` address is asked for the SOA of every zone of the build,
concurrently, every :data:`INTERVAL` seconds, until each zone answers the target
serial (or a newer one, by RFC 1982) or the time is up. One line is logged per
slave as it turns live; on timeout, one line per laggard says what it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnsmaster.core.serial import newer
from dnsmaster.core.soa import zone_serials
from dnsmaster.transport.dns import SoaCheck, check_serials

if TYPE_CHECKING:
    from dnsmaster.config import Slave

__all__ = ["INTERVAL", "SlaveWait", "build_zones", "is_live", "report", "wait_live"]

#: Seconds between two rounds of questions to a slave that is not live yet.
INTERVAL = 0.15
#: Questions in flight to one slave at once (a build can have thousands of zones).
PARALLEL = 32


@dataclass(frozen=True, slots=True)
class SlaveWait:
    """How waiting for one slave ended."""

    name: str
    #: None: the slave has no ``dns`` address, so it was not asked.
    live: bool | None
    #: Seconds from the start until it served every zone (None unless live).
    seconds: float | None = None
    #: The last answer for each zone it did not serve yet (empty when live).
    pending: tuple[SoaCheck, ...] = ()


def build_zones(data: bytes, serial: int) -> dict[bytes, int]:
    """The zones of the build that stamped ``serial``: zone (wire) -> serial.

    make-data stamps the build's serial on every SOA it writes; a ``Z`` line with
    its own serial keeps it, and is not the build's to wait for.
    """
    return {zone: s for zone, s in zone_serials(data).items() if s == serial % (1 << 32)}


def is_live(check: SoaCheck) -> bool:
    """The zone answers its expected serial or a newer one (RFC 1982)."""
    return check.served is not None and (
        check.served == check.expected or newer(check.served, check.expected)
    )


async def _ask(
    slave: Slave, zones: Mapping[bytes, int], timeout: float, limit: asyncio.Semaphore
) -> dict[bytes, SoaCheck]:
    async def one(wire: bytes, expected: int) -> tuple[bytes, SoaCheck]:
        async with limit:
            (check,) = await check_serials(slave.dns, slave.dns_port, {wire: expected}, timeout)
        return wire, check

    return dict(await asyncio.gather(*(one(w, e) for w, e in zones.items())))


async def _wait_one(
    slave: Slave,
    zones: Mapping[bytes, int],
    *,
    start: float,
    deadline: float,
    query_timeout: float,
    interval: float,
    logger: Any,
) -> SlaveWait:
    loop = asyncio.get_running_loop()
    pending = dict(zones)
    last: dict[bytes, SoaCheck] = {}
    limit = asyncio.Semaphore(PARALLEL)
    while True:
        remaining = deadline - loop.time()
        # Never outstay the deadline by a whole query timeout; a silent tinydns is
        # asked again at the next round anyway.
        checks = await _ask(slave, pending, max(0.05, min(query_timeout, remaining)), limit)
        for wire, check in checks.items():
            if is_live(check):
                del pending[wire]
                last.pop(wire, None)
            else:
                last[wire] = check
        now = loop.time()
        if not pending:
            seconds = round(now - start, 3)
            logger.info("wait.live", slave=slave.name, seconds=seconds)
            return SlaveWait(slave.name, True, seconds)
        if now >= deadline:
            return SlaveWait(slave.name, False, pending=tuple(last[w] for w in pending))
        await asyncio.sleep(min(interval, deadline - now))


async def wait_live(
    slaves: Sequence[Slave],
    zones: Mapping[bytes, int],
    *,
    timeout: float,
    logger: Any,
    query_timeout: float = 1.0,
    interval: float = INTERVAL,
) -> list[SlaveWait]:
    """Ask every slave (concurrently) until it serves ``zones`` or ``timeout`` passes.

    Args:
        slaves: the slaves to wait for; one without a ``dns`` address is skipped,
            and logged as such (``wait.skip``).
        zones: zone (wire name) -> the serial it must serve (or a newer one).
        timeout: seconds for the whole wait.
        logger: structlog logger; ``wait.live`` is logged as each slave turns.
        query_timeout: seconds one DNS question may take.
        interval: seconds between two rounds of questions to one slave.

    Returns:
        One :class:`SlaveWait` per slave, in the order given.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    results: dict[str, SlaveWait] = {}
    tasks = {}
    for slave in slaves:
        if not slave.dns:
            logger.warning("wait.skip", slave=slave.name, reason="no dns address in the config")
            results[slave.name] = SlaveWait(slave.name, None)
            continue
        tasks[slave.name] = asyncio.create_task(
            _wait_one(
                slave,
                zones,
                start=start,
                deadline=deadline,
                query_timeout=query_timeout,
                interval=interval,
                logger=logger,
            )
        )
    for name, task in tasks.items():
        results[name] = await task
    return [results[s.name] for s in slaves]


def report(results: Sequence[SlaveWait], logger: Any, *, seconds: float) -> bool:
    """Log the laggards, one line each, and the summary; whether every slave is live."""
    late = [r for r in results if r.live is False]
    for r in late:
        first = r.pending[0]
        served: object = first.served if first.served is not None else "no answer"
        logger.error(
            "wait.late",
            slave=r.name,
            zone=first.zone,
            expected=first.expected,
            serves=served,
            error=first.error,
            zones_pending=len(r.pending),
        )
    (logger.error if late else logger.info)(
        "wait.end",
        live=sum(r.live is True for r in results),
        late=len(late),
        skipped=sum(r.live is None for r in results),
        seconds=round(seconds, 3),
        laggards=[r.name for r in late],
    )
    return not late
