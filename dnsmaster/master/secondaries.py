"""Feeding a standard secondary (``[[secondary]]``): NOTIFY, then confirm over DNS.

The master's axfrdns serves the output directory, so a secondary can transfer a
build as soon as it is written there. :func:`plan` (pure) says which zones of the
new data a secondary carries and which of them to notify: those whose serial
changed against the data it was last fed (all of them when there is none).
:func:`feed` sends those NOTIFYs (concurrently, each retransmitted as
:mod:`dnsmaster.transport.notify` does), then asks the secondary for the SOA of
every zone it carries, over UDP, until it serves the build's serial or a newer
one (RFC 1982) or ``[notify] confirm_timeout`` passes, exactly as a tinydns
slave is confirmed (:mod:`dnsmaster.master.wait`). It reports each step through
``update`` with a :class:`~dnsmaster.master.state.SecondaryState`, for the state
file, and logs ``notify.sent``/``acked``/``failed``, ``secondary.serving`` and
``secondary.late``. Nothing here ever holds a slave's push.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.name

from dnsmaster.config import NotifyOptions, Secondary
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.catalog import catalog_zone
from dnsmaster.core.fields import name_to_wire
from dnsmaster.core.soa import zone_serials
from dnsmaster.master import wait
from dnsmaster.master.state import SecondaryState
from dnsmaster.transport.dns import SoaCheck
from dnsmaster.transport.notify import NotifyResult, notify, source_for

__all__ = [
    "NOTIFY_PARALLEL",
    "Plan",
    "announce",
    "carried",
    "feed",
    "notify_zones",
    "plan",
    "plan_from",
    "zone_text",
]

#: NOTIFYs in flight to one secondary at once (a build may change thousands of zones).
NOTIFY_PARALLEL = 16

#: The longest pause between two rounds of SOA questions while a secondary catches
#: up: it is asked often at first (a NOTIFY makes most transfer within a second),
#: then less, for as long as ``confirm_timeout`` allows.
MAX_INTERVAL = 5.0


def zone_text(wire: bytes) -> str:
    """A wire-format name as text, without the final dot (``example.com``), escaped
    as DNS text is (``a\\.b.example``), so that it reads back as the same name."""
    name, _ = dns.name.from_wire(wire, 0)
    return str(name.to_text(omit_final_dot=True))


def carried(secondary: Secondary, zones: Mapping[bytes, int]) -> dict[bytes, int]:
    """The zones of ``zones`` (wire name -> serial) that ``secondary`` carries: the
    ones it names that are there, or every one when it names none."""
    if not secondary.zones:
        return dict(zones)
    wanted = {name_to_wire(z.encode()).lower() for z in secondary.zones}
    return {wire: serial for wire, serial in zones.items() if wire in wanted}


def notify_zones(
    carried_now: Mapping[bytes, int], before: Mapping[bytes, int] | None
) -> dict[bytes, int]:
    """Of the zones a secondary carries, those whose serial differs from ``before``
    (the zones of the data it was last fed; None: it was fed none, so all)."""
    if before is None:
        return dict(carried_now)
    return {wire: serial for wire, serial in carried_now.items() if before.get(wire) != serial}


@dataclass(frozen=True, slots=True)
class Plan:
    """What one build means for one secondary."""

    secondary: Secondary
    #: The build's serial, the one it should serve.
    serial: int | None
    #: Every zone it carries, wire name -> serial: what is confirmed.
    zones: dict[bytes, int]
    #: The zones to send a NOTIFY for (their serial changed).
    notify: dict[bytes, int]


def plan(secondary: Secondary, data: bytes, serial: int | None, before: bytes | None) -> Plan:
    """The plan for feeding ``data`` (serial ``serial``) to ``secondary``, which was
    last fed ``before`` (None: never, or it did not end up serving it)."""
    return plan_from(secondary, data, serial, zone_serials(before) if before is not None else None)


def plan_from(
    secondary: Secondary, data: bytes, serial: int | None, before: Mapping[bytes, int] | None
) -> Plan:
    """As :func:`plan`, with what ``secondary`` was last fed given as its zones'
    serials (wire name -> serial), as the served data.cdb gives them."""
    now = carried(secondary, zone_serials(data))
    old = carried(secondary, before) if before is not None else None
    changed = notify_zones(now, old)
    catalog = catalog_zone(data)
    if catalog is None or catalog not in now:
        return Plan(secondary, serial, now, changed)
    # An RFC 9432 consumer adds a new member when it transfers the catalog, and
    # until then refuses a NOTIFY for it (Knot: NOTAUTH): the catalog's NOTIFY is
    # the one that matters. It answers no question about the catalog itself (Knot:
    # REFUSED); the members it serves show the catalog came through.
    if old is not None:
        changed = {wire: n for wire, n in changed.items() if wire in old or wire == catalog}
    members = {wire: n for wire, n in now.items() if wire != catalog}
    return Plan(secondary, serial, members or now, changed)


async def _notify_all(
    p: Plan, options: NotifyOptions, logger: Any, serial: int | None, source: str
) -> list[NotifyResult]:
    s = p.secondary
    limit = asyncio.Semaphore(NOTIFY_PARALLEL)

    async def one(wire: bytes) -> NotifyResult:
        zone = zone_text(wire)

        def sent(attempt: int, _wait: float) -> None:
            logger.info("notify.sent", secondary=s.name, zone=zone, serial=serial, attempt=attempt)

        async with limit:
            result = await notify(
                s.address,
                s.port,
                zone,
                timeout=options.timeout,
                retries=options.retries,
                on_sent=sent,
                source=source_for(s.address, source),
            )
        if result.acked:
            logger.info(
                "notify.acked",
                secondary=s.name,
                zone=zone,
                serial=serial,
                attempt=result.attempts,
                ms=result.ms,
            )
        else:
            logger.warning(
                "notify.failed", secondary=s.name, zone=zone, serial=serial, reason=result.reason
            )
        return result

    return list(await asyncio.gather(*(one(wire) for wire in p.notify)))


async def announce(
    secondaries: Sequence[Secondary],
    options: NotifyOptions,
    data: bytes,
    logger: Any,
    *,
    source: str = "",
    before: Mapping[bytes, int] | None = None,
) -> list[NotifyResult]:
    """NOTIFY every secondary of each zone it carries in ``data`` (the build just
    put in the served root) whose serial differs from ``before`` (the zones' serials
    the served root gave until now; None: every zone), without waiting for them to
    serve it: what ``dnsmaster push`` by hand does (``push --wait --secondaries``
    waits after). ``source`` as for :func:`feed`."""
    serial = previous_serial(data[:200])
    plans = [plan_from(s, data, serial, before) for s in secondaries]
    found = await asyncio.gather(*(_notify_all(p, options, logger, serial, source) for p in plans))
    return [result for results in found for result in results]


def _served(pending: Sequence[SoaCheck]) -> int | None:
    """The serial a late secondary serves: the first answer of a zone it lags on."""
    served = [c.served for c in pending if c.served is not None]
    return served[0] if served else None


async def feed(
    p: Plan,
    options: NotifyOptions,
    logger: Any,
    *,
    update: Callable[[SecondaryState], None],
    source: str = "",
    query_timeout: float = 1.0,
    interval: float = wait.INTERVAL,
    max_interval: float = MAX_INTERVAL,
) -> SecondaryState:
    """Notify ``p.secondary`` of the zones that changed, then wait until it serves
    the build (or ``options.confirm_timeout`` passes); how it ended.

    ``update`` is called with the state at each step (notifying, waiting or
    failed, then serving or late); the last call's state is returned. ``source``:
    the address NOTIFY is sent from (``[axfrdns] ip``; "" for the kernel's choice).
    """
    s = p.secondary
    started = time.time()
    state = SecondaryState(
        s.name,
        serial=p.serial,
        zones=len(p.zones),
        notified=started if p.notify else None,
        result="notifying",
    )
    if not p.zones:
        state = dataclasses.replace(state, result="failed", error="it carries no zone of the build")
        logger.error(
            "secondary.late",
            secondary=s.name,
            zone=None,
            expected=p.serial,
            serves=None,
            error=state.error,
        )
        update(state)
        return state
    update(state)
    results = await _notify_all(p, options, logger, p.serial, source)
    failures = [r for r in results if not r.acked]
    acked = len(results) - len(failures)
    if results and not acked:
        # Every NOTIFY failed: say so now; a secondary that refreshes on its own
        # still turns to serving below.
        state = dataclasses.replace(state, acked=0, result="failed", error=failures[0].reason)
    else:
        state = dataclasses.replace(state, acked=acked, result="waiting")
    update(state)
    confirm = await wait.wait_serving(
        s.name,
        s.address,
        s.port,
        p.zones,
        timeout=max(0.0, options.confirm_timeout - (time.time() - started)),
        query_timeout=query_timeout,
        interval=interval,
        max_interval=max_interval,
        kind="secondary",
    )
    now = time.time()
    if confirm.live:
        seconds = round(now - started, 3)
        logger.info("secondary.serving", secondary=s.name, serial=p.serial, seconds=seconds)
        state = dataclasses.replace(
            state, result="serving", serving=p.serial, served_at=now, seconds=seconds, error=None
        )
    else:
        first = confirm.pending[0]
        served: object = first.served if first.served is not None else "no answer"
        error = first.error or f"serves {first.served} for {first.zone}"
        logger.error(
            "secondary.late",
            secondary=s.name,
            zone=first.zone,
            expected=first.expected,
            serves=served,
            error=error,
        )
        state = dataclasses.replace(
            state,
            result="failed" if state.result == "failed" else "late",
            serving=_served(confirm.pending),
            error=state.error if state.result == "failed" else error,
        )
    update(state)
    return state
