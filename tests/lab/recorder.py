"""An in-process logger for tests that run the Daemon object itself: it keeps every event."""

from __future__ import annotations

import asyncio
from typing import Any

TIMEOUT = 30.0


class Recorder:
    """A logger that keeps every event as a dict, and wakes waiters."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self.events.append({"level": level, "event": event, **fields})
        self.changed.set()

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log("critical", event, **fields)

    def find(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    async def wait(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.find(name)) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.find(name)

    async def idle_after(self, event: dict[str, Any]) -> dict[str, Any]:
        """The daemon's first ``daemon.idle`` after ``event`` (one of :attr:`events`):
        whatever led to ``event`` is done then (:mod:`dnsmaster.daemon.rest`)."""
        since = next(i for i, e in enumerate(self.events) if e is event) + 1
        async with asyncio.timeout(TIMEOUT):
            while True:
                idle = [e for e in self.events[since:] if e["event"] == "daemon.idle"]
                if idle:
                    return idle[0]
                self.changed.clear()
                await self.changed.wait()
