"""An in-process logger for tests that run the Daemon object itself: it keeps every
event; and a test's set-up build and push, done in process with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dnsmaster import config as configuration
from dnsmaster.commands.common import builder_for, run_build
from dnsmaster.commands.push import push_to_slaves

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


def build_here(config: Path) -> Recorder:
    """What ``dnsmaster build --config CONFIG`` does, for a test's set-up: in this
    process, without the half second of CPU a ``python -m dnsmaster`` start costs.
    The build must succeed; its events are in the Recorder returned. A test of the
    command itself runs the command."""
    logger = Recorder()
    status = run_build(builder_for(configuration.load(config)), logger)
    assert status == 0, logger.events
    return logger


def push_here(config: Path) -> Recorder:
    """What ``dnsmaster push --config CONFIG`` does on a master without a daemon and
    without a build held by the guard, for a test's set-up: build if the zones
    changed, then push to every slave, in this process (:func:`build_here`). Every
    slave must take it."""
    cfg = configuration.load(config)
    # As the command: no new build (nor serial) when the one there is current.
    logger = Recorder() if builder_for(cfg).is_current() else build_here(config)
    status = asyncio.run(push_to_slaves(cfg, cfg.slaves, logger))
    assert status == 0, logger.events
    return logger
