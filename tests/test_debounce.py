"""The debouncer: quiet period, max delay, coalescing.

Real asyncio sleeping with short timings and generous margins; the pure deadline
rule is also checked without any clock.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dnsmaster.debounce import Debouncer, DebounceTiming


async def _collect(deb: Debouncer, out: list[tuple[float, int]]) -> None:
    loop = asyncio.get_running_loop()
    async for n in deb:
        out.append((loop.time(), n))


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
            now[0] += 0.3
            deb.poke()
        assert deb.pending == 11
        assert deb.due() == 102.0  # capped: 100 + max_delay, not 103 + quiet


class TestDebouncer:
    async def test_quiet_period_respected(self) -> None:
        """wait() returns only after the quiet period has passed since the last poke."""
        loop = asyncio.get_running_loop()
        deb = Debouncer(quiet=0.3, max_delay=5.0)
        start = loop.time()
        deb.poke()
        await asyncio.sleep(0.2)
        deb.poke()  # restarts the quiet period
        n = await asyncio.wait_for(deb.wait(), 3)
        elapsed = loop.time() - start
        assert n == 2
        assert 0.5 - 0.02 <= elapsed < 1.2

    async def test_idle_waits_for_first_poke(self) -> None:
        """With no pokes wait() does not return, however long it waits."""
        deb = Debouncer(quiet=0.05, max_delay=0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(deb.wait(), 0.5)

    async def test_burst_coalesces_to_one(self) -> None:
        """Fifty pokes in quick succession are one trigger that counts fifty."""
        deb = Debouncer(quiet=0.2, max_delay=5.0)
        fired: list[tuple[float, int]] = []
        task = asyncio.create_task(_collect(deb, fired))
        for _ in range(50):
            deb.poke()
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.2 + 1.0)
        task.cancel()
        assert [n for _, n in fired] == [50]

    async def test_max_delay_caps_trickle(self) -> None:
        """A poke every 0.1 s for 3 s with max delay 1 s fires about every second."""
        loop = asyncio.get_running_loop()
        deb = Debouncer(quiet=0.3, max_delay=1.0)
        fired: list[tuple[float, int]] = []
        task = asyncio.create_task(_collect(deb, fired))
        start = loop.time()
        pokes = 0
        while loop.time() - start < 3.0:
            deb.poke()
            pokes += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3 + 1.0)  # the tail burst ends by its quiet period
        task.cancel()
        times = [t - start for t, _ in fired]
        assert 3 <= len(fired) <= 5, times
        assert times[0] == pytest.approx(1.0, abs=0.3)
        gaps = [b - a for a, b in itertools.pairwise(times[:-1])]  # the last ends by quiet
        assert all(0.8 <= g <= 1.4 for g in gaps), times
        assert sum(n for _, n in fired) == pokes  # nothing lost, nothing counted twice

    async def test_poke_during_build_means_one_more(self) -> None:
        """Pokes that arrive while the caller is busy make exactly one more trigger."""
        deb = Debouncer(quiet=0.1, max_delay=1.0)
        deb.poke()
        assert await asyncio.wait_for(deb.wait(), 2) == 1
        # "building": three changes arrive meanwhile
        for _ in range(3):
            deb.poke()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert await asyncio.wait_for(deb.wait(), 2) == 3
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(deb.wait(), 0.5)
