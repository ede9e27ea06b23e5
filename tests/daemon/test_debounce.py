"""The debouncer: quiet period, max delay, coalescing.

No wall-clock timing windows: a loaded 2-core CI machine can stall a real sleep by
any amount. The asyncio tests run on :class:`VirtualTimeLoop`, whose clock only
moves when every task is waiting, and then jumps straight to the next timer. So
the debouncer's real asyncio sleeping is exercised, and each trigger's time is
exact: the assertions are about order and exact instants, whatever the load.
The timings are dyadic fractions (0.125, 0.375...) so that every sum is exact in
binary floating point. The pure deadline rule is also checked without any loop.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from dnsmaster.daemon.debounce import Debouncer, DebounceTiming

_T = TypeVar("_T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of sleeping until a timeout, advances a virtual clock.

    Ready file descriptors (the loop's self-pipe) are still polled for real.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            # Nothing scheduled and nothing to read: a real loop would sleep for
            # ever. Fail the test instead of hanging it.
            raise RuntimeError("virtual time deadlock: every task waits and no timer is set")
        # Strictly forward, even if the timeout is below the clock's resolution.
        self.now = max(self.now + timeout, math.nextafter(self.now, math.inf))
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and jumps to the next timer when idle."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``main()`` to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


async def _collect(deb: Debouncer, out: list[tuple[float, int]]) -> None:
    loop = asyncio.get_running_loop()
    async for n in deb:
        out.append((loop.time(), n))


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(when - asyncio.get_running_loop().time())


class TestVirtualTimeLoop:
    def test_sleep_jumps(self) -> None:
        """A long sleep takes no real time and lands exactly on its deadline."""

        async def main() -> float:
            await asyncio.sleep(3600.0)
            return asyncio.get_running_loop().time()

        assert run_virtual(main) == 3600.0

    def test_deadlock_is_an_error(self) -> None:
        """Waiting on something nobody will ever set fails instead of hanging."""

        async def main() -> None:
            await asyncio.Event().wait()

        with pytest.raises(RuntimeError, match="deadlock"):
            run_virtual(main)


class TestDebounceTiming:
    def test_quiet_period_after_last_poke(self) -> None:
        """A short burst fires one quiet period after its last poke."""
        assert DebounceTiming(0.5, 5.0).due(first=10.0, last=11.0) == 11.5

    def test_capped_by_first_poke(self) -> None:
        """A long burst fires max_delay after its first poke, whatever came later."""
        assert DebounceTiming(0.5, 5.0).due(first=10.0, last=14.9) == 15.0

    @pytest.mark.parametrize(("quiet", "max_delay"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
    def test_rejects_nonsense(self, quiet: float, max_delay: float) -> None:
        """A non-positive quiet period or a max delay below it is refused."""
        with pytest.raises(ValueError, match="must"):
            DebounceTiming(quiet, max_delay)


class TestDebouncerClock:
    def test_injected_clock(self) -> None:
        """With an injected clock, due() follows the pokes without any event loop."""
        now = [100.0]
        deb = Debouncer(quiet=0.5, max_delay=2.0, clock=lambda: now[0])
        assert deb.due() is None
        deb.poke()
        assert deb.due() == 100.5
        for _ in range(10):
            now[0] += 0.25
            deb.poke()
        assert deb.pending == 11
        assert deb.due() == 102.0  # capped: 100 + max_delay, not 102.5 + quiet

    def test_poke_of_nothing(self) -> None:
        """poke(0) is no change: the debouncer stays idle."""
        deb = Debouncer(clock=lambda: 0.0)
        deb.poke(0)
        assert deb.pending == 0
        assert deb.due() is None


class TestDebouncer:
    def test_quiet_period_respected(self) -> None:
        """wait() returns exactly one quiet period after the last poke, not the first."""

        async def main() -> tuple[int, float]:
            loop = asyncio.get_running_loop()
            deb = Debouncer(quiet=0.375, max_delay=5.0)
            deb.poke()
            await asyncio.sleep(0.25)
            deb.poke()  # restarts the quiet period
            n = await deb.wait()
            return n, loop.time()

        assert run_virtual(main) == (2, 0.25 + 0.375)

    def test_idle_waits_for_first_poke(self) -> None:
        """With no pokes wait() does not return, however long it waits."""

        async def main() -> None:
            deb = Debouncer(quiet=0.125, max_delay=0.25)
            await asyncio.wait_for(deb.wait(), 3600.0)

        with pytest.raises(TimeoutError):
            run_virtual(main)

    def test_burst_coalesces_to_one(self) -> None:
        """Fifty pokes in quick succession are one trigger that counts fifty."""

        async def main() -> list[tuple[float, int]]:
            deb = Debouncer(quiet=0.25, max_delay=5.0)
            fired: list[tuple[float, int]] = []
            task = asyncio.create_task(_collect(deb, fired))
            for _ in range(50):
                deb.poke()
                await asyncio.sleep(1 / 512)
            await asyncio.sleep(10.0)  # long after: still one trigger
            task.cancel()
            return fired

        # The last poke is at 49/512; the trigger one quiet period later.
        assert run_virtual(main) == [(49 / 512 + 0.25, 50)]

    def test_max_delay_caps_trickle(self) -> None:
        """A poke every 0.375 s, quiet 0.5 s, max delay 2 s: fires at the cap, then by quiet."""

        async def main() -> list[tuple[float, int]]:
            deb = Debouncer(quiet=0.5, max_delay=2.0)
            fired: list[tuple[float, int]] = []
            task = asyncio.create_task(_collect(deb, fired))
            for k in range(14):  # pokes at 0, 0.375, ..., 4.875
                await _sleep_until(k * 0.375)
                deb.poke()
            await asyncio.sleep(10.0)
            task.cancel()
            return fired

        assert run_virtual(main) == [
            (2.0, 6),  # pokes 0 .. 1.875: capped at first + max_delay
            (4.25, 6),  # pokes 2.25 .. 4.125: capped at 2.25 + 2
            (5.375, 2),  # pokes 4.5, 4.875: the trickle stopped, quiet after the last
        ]

    def test_poke_during_build_means_one_more(self) -> None:
        """Pokes that arrive while the caller is busy make exactly one more trigger."""

        async def main() -> tuple[int, int, float]:
            loop = asyncio.get_running_loop()
            deb = Debouncer(quiet=0.125, max_delay=1.0)
            deb.poke()
            first = await deb.wait()
            # "building": three changes arrive meanwhile
            for _ in range(3):
                deb.poke()
                await asyncio.sleep(0.0625)
            second = await deb.wait()
            when = loop.time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(deb.wait(), 3600.0)
            return first, second, when

        # second burst: pokes at 0.125, 0.1875, 0.25; fires at 0.25 + 0.125
        assert run_virtual(main) == (1, 3, 0.375)

    def test_injected_clock_drives_wait(self) -> None:
        """A clock passed in decides when wait() returns (the loop only sleeps)."""

        async def main() -> list[str]:
            now = [0.0]
            deb = Debouncer(quiet=1.0, max_delay=4.0, clock=lambda: now[0])
            order: list[str] = []
            deb.poke()
            waiter = asyncio.create_task(deb.wait())
            await asyncio.sleep(0)
            order.append(f"waiting done={waiter.done()}")
            now[0] = 0.5  # not yet due: a poke now restarts the quiet period
            deb.poke()
            await asyncio.sleep(0)
            order.append(f"poked done={waiter.done()}")
            now[0] = 1.5  # due (0.5 + quiet); the loop's own timer wakes the waiter
            order.append(f"fired n={await waiter}")
            return order

        assert run_virtual(main) == ["waiting done=False", "poked done=False", "fired n=2"]
