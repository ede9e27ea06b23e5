"""The daemon's standard secondaries: one feed task per secondary, per build.

Each new current build (a build, a rollback, a build released from a hold) is in
the output directory, where the master's axfrdns serves it: every secondary is
fed it at once (:func:`dnsmaster.master.secondaries.feed`: NOTIFY for the zones
whose serial changed, then SOA questions until it serves the build). A newer
build cancels a feed still running and starts over with the newer one. No slave
worker ever awaits a feed: a NOTIFY failure or a late secondary holds up nothing
but its own state. A feed is an errand of the daemon's (:mod:`dnsmaster.daemon.rest`):
``daemon.idle`` follows its ``secondary.serving`` or ``secondary.late``.

The zones notified are those whose serial differs from the build the secondary
was last seen serving; when it never was (at start, after a reload, or when its
last feed ended late or failed), every zone it carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from dnsmaster.config import Config, NotifyOptions, Secondary
from dnsmaster.daemon.worker import Current
from dnsmaster.master.secondaries import feed, plan
from dnsmaster.master.state import SecondaryState

__all__ = ["Secondaries", "SecondaryFeeder"]


class Host(Protocol):
    """What the feeds need of the daemon."""

    config: Config
    current: Current | None

    def save_state(self, *, now: bool = False) -> None: ...

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]: ...


class SecondaryFeeder:
    """One secondary: its feed task and what it last reported."""

    def __init__(self, host: Host, secondary: Secondary, options: NotifyOptions, log: Any) -> None:
        self.host = host
        self.secondary = secondary
        self.options = options
        self.log = log
        self.state = SecondaryState(secondary.name)
        #: The data it was last seen serving (None: never, as far as this daemon knows).
        self.served: bytes | None = None
        self.task: asyncio.Task[None] | None = None

    def feed(self, current: Current) -> None:
        """Feed ``current``; a feed still running for an older build is cancelled."""
        if self.task is not None:
            self.task.cancel()
        self.task = self.host.start(
            self._feed(current, self.task), f"secondary {self.secondary.name}", forever=False
        )

    async def _feed(self, current: Current, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # Its last update must not land after this feed's first (a wait, not an
            # await: the older feed's cancellation is not this one's).
            await asyncio.wait({previous})
        cfg = self.host.config
        p = plan(self.secondary, current.data, current.serial, self.served)
        final = await feed(
            p,
            self.options,
            self.log,
            update=self._update,
            query_timeout=min(cfg.daemon.verify_timeout, 1.0),
        )
        self.served = current.data if final.result == "serving" else None

    def _update(self, state: SecondaryState) -> None:
        self.state = state
        self.host.save_state()

    async def stop(self) -> None:
        """Cancel the feed under way, if any."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def _settings(config: Config) -> dict[str, tuple[Secondary, NotifyOptions]]:
    return {s.name: (s, config.notify) for s in config.secondaries}


class Secondaries:
    """Every secondary's feeder, fed each new current build once."""

    def __init__(self, host: Host, log: Any) -> None:
        self.host = host
        self.log = log
        self.feeders = [
            SecondaryFeeder(host, s, host.config.notify, log) for s in host.config.secondaries
        ]
        #: The build last fed (its sha256): a wake-up for the same build feeds nothing.
        self.fed: str | None = None

    def states(self) -> Sequence[SecondaryState]:
        return [f.state for f in self.feeders]

    def new_build(self, current: Current | None) -> None:
        """Feed ``current`` to every secondary, unless it was fed already."""
        if current is None or current.sha256 == self.fed:
            return
        self.fed = current.sha256
        for feeder in self.feeders:
            feeder.feed(current)

    async def reconfigure(self, old: Config, new: Config) -> None:
        """After a reload: stop the feeders of secondaries removed or changed (their
        own table or ``[notify]``), start the new ones on the current build."""
        before, after = _settings(old), _settings(new)
        kept = {
            f.secondary.name: f
            for f in self.feeders
            if before.get(f.secondary.name) == after.get(f.secondary.name)
        }
        gone = [f for f in self.feeders if f.secondary.name not in kept]
        await asyncio.gather(*(f.stop() for f in gone))
        for feeder in gone:
            self.log.info("secondary.stopped", secondary=feeder.secondary.name, reason="reload")
        feeders = []
        for secondary in new.secondaries:
            found = kept.get(secondary.name)
            if found is None:
                found = SecondaryFeeder(self.host, secondary, new.notify, self.log)
                self.log.info("secondary.started", secondary=secondary.name, reason="reload")
                if self.fed is not None and self.host.current is not None:
                    found.feed(self.host.current)
            feeders.append(found)
        self.feeders = feeders
        self.host.save_state()

    async def stop(self) -> None:
        """Cancel every feed (the daemon stops)."""
        await asyncio.gather(*(f.stop() for f in self.feeders))
