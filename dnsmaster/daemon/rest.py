"""``daemon.idle``: the daemon says when it has come to rest.

Whoever reads the log (a test, an operator after a save) needs to know that
nothing more follows what it did: not "nothing was logged for a second", which a
loaded machine makes untrue, but the daemon's own word. The daemon is at rest when

* the build loop waits, with no burst in the debouncer (no timer armed) and no
  SIGHUP, rescan or release waiting for it;
* every slave's worker sleeps with no push and no retry due: up to date, or parked
  (a parked slave's silent looks at known_hosts do not wake the daemon);
* no errand runs (a reload, a rollback handed over, or a standard secondary's feed:
  its NOTIFYs and its confirmation, up to ``[notify] confirm_timeout``);
* the state file is written (no update waits for :data:`~dnsmaster.daemon.statefile.STATE_DELAY`).

It says ``daemon.idle`` once each time it comes to rest after logging anything
else at info or above, so the first ``daemon.idle`` after an event means that
whatever the event set going is done. A signal is always answered: its ``signal``
event is followed by a ``daemon.idle``, even when there was nothing to do. The
check is a few attribute reads, made when a part goes to sleep. Hooks may still
run: they run beside the daemon's work, never in its way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from dnsmaster.daemon.building import Builds
from dnsmaster.daemon.statefile import StateFile
from dnsmaster.daemon.worker import Current, SlaveWorker

__all__ = ["Rest", "Resting", "SaidLog"]


class Resting(Protocol):
    """What tells whether the daemon is at rest."""

    current: Current | None
    stopping: bool

    @property
    def workers(self) -> Sequence[SlaveWorker]: ...

    @property
    def builds(self) -> Builds: ...

    @property
    def state_file(self) -> StateFile: ...


class SaidLog:
    """The daemon's log: every event at info or above means the next rest is said."""

    def __init__(self, log: Any, rest: Rest) -> None:
        self._log = log
        self._rest = rest

    def debug(self, event: str, **fields: Any) -> None:
        self._log.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._rest.stir()
        self._log.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._rest.stir()
        self._log.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._rest.stir()
        self._log.error(event, **fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._rest.stir()
        self._log.critical(event, **fields)


class Rest:
    """Says ``daemon.idle`` when the daemon comes to rest after saying something."""

    def __init__(self, daemon: Resting, log: Any) -> None:
        self.daemon = daemon
        #: The log the daemon's parts write to (see :class:`SaidLog`).
        self.log = SaidLog(log, self)
        self._log = log
        self._said = True  # nothing happened yet: nothing to say
        self._errands: set[asyncio.Task[None]] = set()

    def stir(self) -> None:
        """Something happened: the next time the daemon is at rest, say so."""
        self._said = False

    def errand(self, task: asyncio.Task[None]) -> None:
        """``task`` runs to an end (a reload, a rollback): no rest until it ends."""
        self._errands.add(task)
        task.add_done_callback(self._errand_done)

    def _errand_done(self, task: asyncio.Task[None]) -> None:
        self._errands.discard(task)
        self.settle()

    def at_rest(self) -> bool:
        """Whether nothing runs and nothing is due but the daemon's periodic looks."""
        daemon = self.daemon
        if daemon.stopping or self._errands or daemon.state_file.pending:
            return False
        return daemon.builds.resting and all(w.resting for w in daemon.workers)

    def settle(self) -> None:
        """A part went to sleep: ``daemon.idle`` if that brought the daemon to rest."""
        if self._said or not self.at_rest():
            return
        self._said = True
        current = self.daemon.current
        self._log.info("daemon.idle", serial=current.serial if current is not None else None)
