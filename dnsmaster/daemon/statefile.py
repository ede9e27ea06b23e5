"""The running daemon's state file (and its metrics file): what it did, dated.

The file is the single truth about the daemon for ``dnsmaster status``,
``dnsmaster wait`` and a command handing a request over (:mod:`dnsmaster.master.state`
reads and writes its format; this module decides what goes in it and when).
Updates made close together are written once (:data:`STATE_DELAY`), and the file is
rewritten every :data:`HEARTBEAT` seconds even when nothing happens, so a reader can
tell a live daemon from a dead one by its date.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dnsmaster.config import Config
from dnsmaster.daemon import metrics
from dnsmaster.daemon.holds import Holds
from dnsmaster.daemon.worker import Current
from dnsmaster.errors import reason
from dnsmaster.master import state as statefile

__all__ = ["HEARTBEAT", "STATE_DELAY", "Published", "StateFile"]

#: State file updates within this many seconds are written together.
STATE_DELAY = 0.05

#: The state file is rewritten at least this often, busy or idle: its date is the
#: heartbeat that tells ``status`` the daemon is alive.
HEARTBEAT = 10.0


class Published(Protocol):
    """What the state file shows of the daemon that writes it."""

    @property
    def config(self) -> Config: ...

    @property
    def current(self) -> Current | None: ...

    @property
    def build_error(self) -> str | None: ...

    @property
    def holds(self) -> Holds: ...

    def slave_states(self) -> Sequence[statefile.SlaveState]: ...

    def secondary_states(self) -> Sequence[statefile.SecondaryState]: ...


class StateFile:
    """Writes the state file (and the metrics file with it) for one daemon's life."""

    def __init__(
        self,
        daemon: Published,
        config_state: statefile.ConfigState,
        log: Any,
        *,
        written: Callable[[], None] | None = None,
    ) -> None:
        self.daemon = daemon
        self.log = log
        #: Called after each write (the daemon may be at rest now).
        self._written = written
        self.started = time.time()
        self.stopped: float | None = None
        #: The heartbeat's monotonic clock is this boot's: a reader on another boot
        #: must not compare it with its own.
        self.boot_id = statefile.this_boot()
        #: New at each start: a hand-off request must name it (:mod:`~dnsmaster.master.handoff`).
        self.instance = secrets.token_hex(8)
        #: The configuration file as it was read at start or by the last SIGHUP.
        self.config = config_state
        self._pending: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        """Whether an update waits to be written (see :meth:`save`)."""
        return self._pending is not None

    def save(self, *, now: bool = False) -> None:
        """Write the state file: at once with ``now``, else once for every update made
        within :data:`STATE_DELAY` (ten slaves starting a push are one fsynced write,
        not ten that each hold up the loop)."""
        if now:
            self.write()
        elif self._pending is None:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(STATE_DELAY, self.write)

    def write(self) -> None:
        """Write the state file now, then the metrics file if configured."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        snapshot = self.snapshot()
        config = self.daemon.config
        try:
            statefile.write(config.state, snapshot)
        except OSError as exc:
            self.log.error("state.failed", path=str(config.state), error=reason(exc))
        if config.metrics is not None:
            # With every state write: the file's own timestamp is a heartbeat too.
            try:
                metrics.write(config.metrics, metrics.render(snapshot))
            except OSError as exc:
                self.log.error("metrics.failed", path=str(config.metrics), error=reason(exc))
        if self._written is not None:
            self._written()

    def snapshot(self) -> statefile.State:
        """The daemon as it is now, as the state file says it."""
        daemon, holds = self.daemon, self.daemon.holds
        current = daemon.current
        build = holds.kept_build if current is None else None
        if current is not None:
            build = statefile.BuildState(
                current.serial,
                current.sha256,
                current.records,
                current.time,
                daemon.build_error,
                fingerprint=current.fingerprint,
                seconds=current.seconds,
            )
        return statefile.State(
            pid=os.getpid(),
            updated=time.time(),
            monotonic=time.monotonic(),
            boot_id=self.boot_id,
            instance=self.instance,
            build=build,
            slaves=tuple(daemon.slave_states()),
            heartbeat_interval=HEARTBEAT,
            started=self.started,
            stopped=self.stopped,
            host=socket.gethostname(),
            zones=str(daemon.config.zones),
            build_error=daemon.build_error,
            rollback=_rollback_state(holds),
            request=holds.request,
            config=self.config,
            held=_held_state(holds),
            secondaries=tuple(daemon.secondary_states()),
        )

    async def heartbeat(self) -> None:
        """Rewrite the file every :data:`HEARTBEAT` seconds, for ever."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            self.save()


def _held_state(holds: Holds) -> statefile.HeldBuild | None:
    if holds.held is None:
        return None
    build, why, since = holds.held
    return statefile.HeldBuild(
        build.serial, build.sha256, why, since, fingerprint=build.fingerprint
    )


def _rollback_state(holds: Holds) -> statefile.RollbackState | None:
    hold, held = holds.rollback, holds.rollback_held
    if hold is None:
        return None
    return statefile.RollbackState(
        hold.serial,
        hold.sha256,
        hold.kept_serial,
        hold.kept_sha256,
        hold.since,
        held_serial=held.serial if held else None,
        held_sha256=held.sha256 if held else None,
        held_fingerprint=held.fingerprint if held else None,
    )
