"""Waiting until every slave's tinydns serves a build (``wait``, ``push --wait``).

A push that exited 0 proves each receiver installed data.cdb; an ACME DNS-01 hook
needs more: the TXT record answered by every slave before it tells the CA to look.
So each slave's ``dns`` address is asked for the SOA of every zone of the build,
concurrently, every :data:`INTERVAL` seconds, until each zone answers the target
serial (or a newer one, by RFC 1982) or the time is up. One line is logged per
slave as it turns live; on timeout, one line per laggard says what it serves.
Standard secondaries (``[[secondary]]``) are waited for the same way when asked
(``--secondaries``), each for the zones it carries.
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
    from dnsmaster.config import Secondary, Slave

__all__ = [
    "INTERVAL",
    "SlaveWait",
    "build_zones",
    "is_live",
    "report",
    "wait_live",
    "wait_serving",
]

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
    #: What was waited for: a ``slave``'s tinydns or a standard ``secondary``; the
    #: key its log lines name it under.
    kind: str = "slave"


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
    server: str,
    port: int,
    zones: Mapping[bytes, int],
    timeout: float,
    limit: asyncio.Semaphore,
) -> dict[bytes, SoaCheck]:
    async def one(wire: bytes, expected: int) -> tuple[bytes, SoaCheck]:
        async with limit:
            (check,) = await check_serials(server, port, {wire: expected}, timeout)
        return wire, check

    return dict(await asyncio.gather(*(one(w, e) for w, e in zones.items())))


async def wait_serving(
    name: str,
    server: str,
    port: int,
    zones: Mapping[bytes, int],
    *,
    timeout: float,
    query_timeout: float = 1.0,
    interval: float = INTERVAL,
    max_interval: float | None = None,
    kind: str = "slave",
) -> SlaveWait:
    """Ask ``server`` until it serves every zone of ``zones`` (its serial or newer)
    or ``timeout`` seconds pass; nothing is logged.

    ``max_interval``: the pause between rounds doubles from ``interval`` up to it
    (a secondary given minutes is not asked every ``interval`` all along); None
    keeps it at ``interval``.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    pending = dict(zones)
    last: dict[bytes, SoaCheck] = {}
    limit = asyncio.Semaphore(PARALLEL)
    pause = interval
    while True:
        remaining = deadline - loop.time()
        # Never outstay the deadline by a whole query timeout; a silent server is
        # asked again at the next round anyway.
        wait = max(0.05, min(query_timeout, remaining))
        for wire, check in (await _ask(server, port, pending, wait, limit)).items():
            if is_live(check):
                del pending[wire]
                last.pop(wire, None)
            else:
                last[wire] = check
        now = loop.time()
        if not pending:
            return SlaveWait(name, True, round(now - start, 3), kind=kind)
        if now >= deadline:
            return SlaveWait(name, False, pending=tuple(last[w] for w in pending), kind=kind)
        await asyncio.sleep(min(pause, deadline - now))
        if max_interval is not None:
            pause = min(pause * 2, max_interval)


async def _wait_one(
    kind: str,
    name: str,
    server: str,
    port: int,
    zones: Mapping[bytes, int],
    *,
    timeout: float,
    query_timeout: float,
    interval: float,
    logger: Any,
) -> SlaveWait:
    result = await wait_serving(
        name,
        server,
        port,
        zones,
        timeout=timeout,
        query_timeout=query_timeout,
        interval=interval,
        kind=kind,
    )
    if result.live:
        logger.info("wait.live", **{kind: name}, seconds=result.seconds)
    return result


async def wait_live(
    slaves: Sequence[Slave],
    zones: Mapping[bytes, int],
    *,
    timeout: float,
    logger: Any,
    query_timeout: float = 1.0,
    interval: float = INTERVAL,
    secondaries: Sequence[tuple[Secondary, Mapping[bytes, int]]] = (),
) -> list[SlaveWait]:
    """Ask every slave (concurrently) until it serves ``zones`` or ``timeout`` passes.

    Args:
        slaves: the slaves to wait for; one without a ``dns`` address is skipped,
            and logged as such (``wait.skip``).
        zones: zone (wire name) -> the serial it must serve (or a newer one).
        timeout: seconds for the whole wait.
        logger: the log; ``wait.live`` is logged as each slave turns.
        query_timeout: seconds one DNS question may take.
        interval: seconds between two rounds of questions to one slave.
        secondaries: standard secondaries to wait for too, each with the zones it
            must serve (those of ``zones`` it carries).

    Returns:
        One :class:`SlaveWait` per slave, in the order given, then one per secondary.
    """
    results: dict[tuple[str, str], SlaveWait] = {}
    tasks = {}
    options = {
        "timeout": timeout,
        "query_timeout": query_timeout,
        "interval": interval,
        "logger": logger,
    }
    for slave in slaves:
        if not slave.dns:
            logger.warning("wait.skip", slave=slave.name, reason="no dns address in the config")
            results["slave", slave.name] = SlaveWait(slave.name, None)
            continue
        tasks["slave", slave.name] = asyncio.create_task(
            _wait_one("slave", slave.name, slave.dns, slave.dns_port, zones, **options)
        )
    for secondary, carried in secondaries:
        if not carried:
            logger.warning(
                "wait.skip", secondary=secondary.name, reason="it carries no zone of the build"
            )
            results["secondary", secondary.name] = SlaveWait(secondary.name, None, kind="secondary")
            continue
        tasks["secondary", secondary.name] = asyncio.create_task(
            _wait_one(
                "secondary", secondary.name, secondary.address, secondary.port, carried, **options
            )
        )
    for key, task in tasks.items():
        results[key] = await task
    order = [("slave", s.name) for s in slaves] + [("secondary", s.name) for s, _ in secondaries]
    return [results[key] for key in order]


def report(results: Sequence[SlaveWait], logger: Any, *, seconds: float) -> bool:
    """Log the laggards, one line each, and the summary; whether every slave is live."""
    late = [r for r in results if r.live is False]
    for r in late:
        first = r.pending[0]
        served: object = first.served if first.served is not None else "no answer"
        logger.error(
            "wait.late",
            **{r.kind: r.name},
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
