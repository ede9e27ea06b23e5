"""Turning a burst of file changes into one build.

One editor save is several file system events (vim: rename, create, modify,
close, delete), and an operator often saves several zones files in a row. Building
on every event would build half-saved states and waste the push to every slave,
so the daemon waits until the directory has been quiet for a moment. A steady
trickle of changes (a script rewriting files in a loop) must not postpone the
build for ever, so a burst is also capped at ``max_delay`` after its first change.

This module is pure asyncio: no threads, no watchdog. The watcher's callback
calls :meth:`Debouncer.poke` on the loop; the daemon awaits
:meth:`Debouncer.wait`. Changes that arrive while the daemon builds simply start
the next burst, which is how "a change during a build schedules exactly one more
build" falls out without extra state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

__all__ = ["DebounceTiming", "Debouncer"]


@dataclass(frozen=True, slots=True)
class DebounceTiming:
    """How long to wait: ``quiet`` seconds of silence, but never more than
    ``max_delay`` seconds after the first change of a burst."""

    quiet: float = 0.5
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.quiet <= 0:
            raise ValueError(f"quiet period must be positive, not {self.quiet!r}")
        if self.max_delay < self.quiet:
            raise ValueError(
                f"max delay ({self.max_delay!r}) must not be shorter than the quiet period"
                f" ({self.quiet!r})"
            )

    def due(self, first: float, last: float) -> float:
        """When a burst that began at ``first`` and was last poked at ``last`` fires.

        Pure, so the rule can be tested without a clock.
        """
        return min(last + self.quiet, first + self.max_delay)


class Debouncer:
    """Coalesces pokes into bursts; :meth:`wait` returns once per burst.

    Only one task may :meth:`wait` at a time (the daemon's build loop). ``clock``
    defaults to the running loop's monotonic ``time()``; tests may pass their
    own, the sleeping itself is always real asyncio sleeping.
    """

    def __init__(
        self,
        quiet: float = 0.5,
        max_delay: float = 5.0,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.timing = DebounceTiming(quiet, max_delay)
        self._clock = clock
        self._count = 0
        self._first = 0.0
        self._last = 0.0
        # Set by poke(), so a waiter re-reads the deadline; asyncio.Event binds to
        # the running loop lazily (3.10+), so constructing it here is fine.
        self._poked = asyncio.Event()

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()

    @property
    def pending(self) -> int:
        """How many pokes the current burst holds (0: nothing to do)."""
        return self._count

    def due(self) -> float | None:
        """The clock time at which the current burst fires, or None when idle."""
        if self._count == 0:
            return None
        return self.timing.due(self._first, self._last)

    def poke(self, n: int = 1) -> None:
        """Record ``n`` changes now. Call it on the loop's thread (it is not thread-safe;
        the watcher gets here through ``call_soon_threadsafe``)."""
        if n <= 0:
            return
        now = self._now()
        if self._count == 0:
            self._first = now
        self._last = now
        self._count += n
        self._poked.set()

    async def wait(self) -> int:
        """Wait until a burst is over and return how many pokes it coalesced (>= 1).

        The counter is reset on return, so pokes that arrive after this returns
        (during the build) make the next call return again.
        """
        while True:
            self._poked.clear()
            due = self.due()
            if due is None:
                await self._poked.wait()
                continue
            remaining = due - self._now()
            if remaining <= 0:
                count, self._count = self._count, 0
                return count
            try:
                async with asyncio.timeout(remaining):
                    await self._poked.wait()
            except TimeoutError:
                pass

    async def __aiter__(self) -> AsyncIterator[int]:
        """``async for n in debouncer:`` yields the size of each burst, for ever."""
        while True:
            yield await self.wait()
