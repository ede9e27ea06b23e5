"""The daemon's standard secondaries: one feed task per secondary, per build.

Each new current build (a build, a rollback, a build released from a hold, the
build on disk at start) is first put in the served root, where the master's
axfrdns and tinydns read it (:mod:`dnsmaster.master.served`; a held build never
is); only then is every secondary fed it
(:func:`dnsmaster.master.secondaries.feed`: NOTIFY for the zones whose serial
changed, then SOA questions until it serves the build). A newer
build cancels a feed still running and starts over with the newer one. No slave
worker ever awaits a feed: a NOTIFY failure or a late secondary holds up nothing
but its own state. A feed is an errand of the daemon's (:mod:`dnsmaster.daemon.rest`):
``daemon.idle`` follows its ``secondary.serving`` or ``secondary.late``.

The zones notified are those whose serial differs from the build the secondary
was last seen serving; when it never was (after a reload, or when its last feed
ended late or failed), every zone it carries. At start, the state file the
daemon wrote before says what each secondary served: one that served the build
on disk is only asked again, not notified (a restart is no NOTIFY storm).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from dnsmaster import fsutil
from dnsmaster.config import Config, NotifyOptions, Secondary
from dnsmaster.daemon.worker import Current
from dnsmaster.errors import DnsmasterError
from dnsmaster.master import served
from dnsmaster.master import state as statefile
from dnsmaster.master.secondaries import feed, plan
from dnsmaster.master.state import SecondaryState

__all__ = ["Secondaries", "SecondaryFeeder", "last_states"]


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
        p = plan(self.secondary, current.text(), current.serial, self.served)
        final = await feed(
            p,
            self.options,
            self.log,
            update=self._update,
            source=cfg.axfrdns.ip,
            query_timeout=min(cfg.daemon.verify_timeout, 1.0),
        )
        self.served = current.text() if final.result == "serving" else None

    def _update(self, state: SecondaryState) -> None:
        self.state = state
        self.host.save_state()

    async def stop(self) -> None:
        """Cancel the feed under way, if any."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


def last_states(path: Path) -> tuple[SecondaryState, ...]:
    """The secondaries the state file at ``path`` records (none if it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        return statefile.read(path).secondaries
    return ()


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
        #: The served root's replacement under way or last done (one at a time).
        self.serving: asyncio.Task[None] | None = None
        #: What the last run's state file said of the secondaries, read now, before
        #: this daemon's first write replaces it (for :meth:`resume`).
        self.saved = last_states(host.config.state)

    def states(self) -> Sequence[SecondaryState]:
        return [f.state for f in self.feeders]

    def resume(self, current: Current | None) -> None:
        """At start: each secondary the last run's state file said served ``current``
        counts as serving it, so feeding it sends no NOTIFY."""
        if current is None:
            return
        saved, self.saved = self.saved, ()
        served = {s.name for s in saved if s.result == "serving" and s.serial == current.serial}
        for feeder in self.feeders:
            if feeder.secondary.name in served:
                feeder.served = current.text()

    def new_build(self, current: Current | None) -> None:
        """Serve ``current`` and then feed it to every secondary, unless it was fed
        already."""
        if current is None or current.sha256 == self.fed:
            return
        self.fed = current.sha256
        self._serve(current, feed=True)

    def _serve(self, current: Current, *, feed: bool) -> None:
        if not served.wanted(self.host.config):
            self._feed_all(current, feed=feed)
            return
        previous = self.serving
        self.serving = self.host.start(
            self._served(current, previous, feed=feed), "served root", forever=False
        )

    async def _served(
        self, current: Current, previous: asyncio.Task[None] | None, *, feed: bool
    ) -> None:
        if previous is not None:
            # One replacement at a time, in order: a thread cannot be cancelled, so
            # an older one still running must not land after this one.
            await asyncio.wait({previous})
        if self.fed != current.sha256:
            return  # a newer build came meanwhile: it is served next
        cfg = self.host.config
        root = served.root_of(cfg)
        try:
            done = await asyncio.to_thread(
                served.serve, cfg.output, root, current.sha256, current.text(), current.serial
            )
        except (OSError, DnsmasterError) as exc:
            # No NOTIFY: a secondary told of this build would transfer the old one.
            error = fsutil.describe(exc) if isinstance(exc, OSError) else str(exc)
            self.log.error("served.failed", root=str(root), serial=current.serial, error=error)
            return
        self.log.info(
            "served.replaced",
            root=str(done.root),
            serial=current.serial,
            sha256=current.sha256[:16],
            how=done.how,
        )
        if self.fed == current.sha256:
            self._feed_all(current, feed=feed)

    def _feed_all(self, current: Current, *, feed: bool) -> None:
        if feed:
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
        moved = served.root_of(old) != served.root_of(new) or not served.wanted(old)
        current = self.host.current
        if served.wanted(new) and moved and self.fed is not None and current is not None:
            # A new root (or one newly wanted) gets the current build now; the old
            # one is left as it is, for whatever still reads it.
            self._serve(current, feed=False)
        self.host.save_state()

    async def stop(self) -> None:
        """Cancel every feed (the daemon stops); a replacement under way ends first,
        and feeds nobody."""
        self.fed = None
        if self.serving is not None:
            await asyncio.wait({self.serving})
        await asyncio.gather(*(f.stop() for f in self.feeders))
