"""A clock the test sets, for builds that stamp times."""

from __future__ import annotations


class Clock:
    """A settable clock so serials are predictable."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
