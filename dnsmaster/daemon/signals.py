"""The daemon's signals, and SIGHUP's reload of the configuration file.

* SIGHUP re-reads the configuration file and applies it (:class:`Reloader`: slaves
  added, removed or changed get their workers started, stopped or restarted; see
  :mod:`dnsmaster.daemon.reload` for what needs a restart instead), then builds now
  and lifts every hold; a file that does not load is logged and the daemon keeps
  running on what it loaded before;
* SIGALRM pushes the current build to every slave again;
* SIGUSR1 (a build or push by hand, handed over) builds if the zones changed;
* SIGUSR2 acts on an operator's flag file (``push --accept``, ``rollback``);
* SIGTERM and SIGINT stop the daemon.

Every other signal is answered by a ``daemon.idle`` once the daemon is at rest
again (:mod:`dnsmaster.daemon.rest`), even when it had nothing to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from dnsmaster import config as configuration
from dnsmaster import log as logsetup
from dnsmaster.config import Config, DaemonOptions, Slave
from dnsmaster.daemon import SIGNALS, reload
from dnsmaster.daemon.debounce import Debouncer, DebounceTiming
from dnsmaster.daemon.holds import Holds
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.secondary import Secondaries
from dnsmaster.daemon.statefile import StateFile
from dnsmaster.daemon.worker import SlaveWorker
from dnsmaster.errors import ConfigError
from dnsmaster.master import state as statefile
from dnsmaster.master.build import Builder
from dnsmaster.master.handoff import SIGHUP_HOW

__all__ = ["SIGNALS", "Reloadable", "Reloader", "Signalled", "Signals", "loaded"]


class Reloadable(Protocol):
    """What a reload changes in the daemon that runs it."""

    config: Config
    gate: asyncio.Semaphore
    workers: list[SlaveWorker]

    def save_state(self, *, now: bool = False) -> None: ...

    def new_worker(self, slave: Slave) -> SlaveWorker: ...

    async def stop_worker(self, worker: SlaveWorker) -> None: ...

    async def rewatch(self, before: DaemonOptions, after: DaemonOptions) -> None: ...

    def restart_rescan(self) -> None: ...

    @property
    def secondaries(self) -> Secondaries: ...


class Signalled(Protocol):
    """What the signals ask of the daemon that receives them."""

    @property
    def holds(self) -> Holds: ...

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]: ...

    def rescan(self, reason: str) -> None: ...

    def rebuild(self) -> None: ...

    def wake_workers(self, *, force: bool = False) -> None: ...

    def idle_changed(self) -> None: ...

    def stop(self) -> None: ...


def loaded(path: Path, *, restart: tuple[str, ...] = ()) -> statefile.ConfigState:
    """The configuration file at ``path`` as read now, for the state file."""
    return _config_state(path, _stamp(path), time.time(), restart)


class Reloader:
    """SIGHUP: load the configuration file again and run on it from now on."""

    def __init__(
        self,
        daemon: Reloadable,
        *,
        builder: Builder,
        hooks: Hooks,
        debouncer: Debouncer,
        writer: asyncio.Lock,
        state_file: StateFile,
        log: Any,
    ) -> None:
        self.daemon = daemon
        self.builder = builder
        self.hooks = hooks
        self.debouncer = debouncer
        self.writer = writer
        self.state_file = state_file
        self.log = log
        #: One reload at a time: two SIGHUPs in a row apply in order.
        self.reloading = asyncio.Lock()

    async def reload_config(self) -> bool:
        """Load the configuration file again and apply it; False when it does not
        load (logged, recorded in the state file, the running one kept)."""
        path = self.daemon.config.path
        # Stamped before it is read: a file saved in between shows as changed since.
        stamp = await asyncio.to_thread(_stamp, path)
        try:
            new = await asyncio.to_thread(configuration.load, path)
        except ConfigError as exc:
            self._reload_failed(exc, stamp)
            return False
        change = await self._apply(new)
        self.state_file.config = _config_state(path, stamp, time.time(), change.restart_needed)
        self.daemon.save_state(now=True)
        return True

    def _reload_failed(self, exc: ConfigError, stamp: statefile.FileStamp | None) -> None:
        self.log.error(
            "config.reload_failed",
            file=exc.path or str(self.daemon.config.path),
            key=exc.key or None,
            reason=exc.reason,
            hint="the daemon keeps running on the configuration it loaded before; "
            f"fix the file, then SIGHUP again ({SIGHUP_HOW})",
        )
        self.state_file.config = dataclasses.replace(
            self.state_file.config,
            error=str(exc),
            failed_at=time.time(),
            file_sha256=stamp.sha256 if stamp else None,
            file_mtime=stamp.mtime if stamp else None,
        )
        self.daemon.save_state(now=True)

    async def _apply(self, new: Config) -> reload.Change:
        """Run on ``new`` from now on, but for what needs a restart."""
        daemon = self.daemon
        change = reload.compare(daemon.config, new)
        new = reload.keep_restart_needed(daemon.config, new)
        async with self.writer:  # not under a build running in its thread
            self.builder.strict = new.strict
            self.builder.max_file_size = new.max_file_size
            self.builder.use_ipv6_int(new.ipv6_int)
            self.builder.catalog = new.catalog
            self.builder.keep = new.daemon.keep
        old, daemon.config = daemon.config, new
        self._retime(old, new)
        await daemon.rewatch(old.daemon, new.daemon)
        await self._reslave(change)
        await daemon.secondaries.reconfigure(old, new)
        for warning in new.warnings:
            if warning not in old.warnings:
                self.log.warning("config.warning", warning=warning)
        self.log.info(
            "config.reloaded",
            file=str(new.path),
            added=",".join(change.added),
            removed=",".join(change.removed),
            changed=",".join(change.changed),
            sections=",".join(change.sections),
        )
        if change.restart_needed:
            self.log.warning(
                "config.restart_needed",
                keys=",".join(change.restart_needed),
                hint="these keep their old value until the daemon is restarted "
                "(svc -t /service/dnsmaster, sv restart dnsmaster)",
            )
        return change

    def _retime(self, old: Config, new: Config) -> None:
        """The timings, hooks and limits read outside the daemon's config at each use."""
        self.hooks.options = new.hooks
        timing = (new.daemon.debounce, new.daemon.max_delay)
        if (old.daemon.debounce, old.daemon.max_delay) != timing:
            self.debouncer.timing = DebounceTiming(new.daemon.debounce, new.daemon.max_delay)
        if old.push.parallel != new.push.parallel:
            # Pushes under way release the old gate; new ones take this one.
            self.daemon.gate = asyncio.Semaphore(new.push.parallel)
        if old.log.level != new.log.level:
            logsetup.set_level(new.log.level)
        if old.daemon.rescan != new.daemon.rescan:
            self.daemon.restart_rescan()

    async def _reslave(self, change: reload.Change) -> None:
        """Stop the workers of slaves removed or changed; start the added and changed."""
        daemon = self.daemon
        gone = set(change.removed) | set(change.changed)
        kept = {w.slave.name: w for w in daemon.workers if w.slave.name not in gone}
        await asyncio.gather(*(self._retire(w) for w in daemon.workers if w.slave.name in gone))
        workers = []
        for slave in daemon.config.slaves:
            worker = kept.get(slave.name)
            if worker is None:
                worker = daemon.new_worker(slave)
                self.log.info("slave.started", slave=slave.name, reason="reload")
            workers.append(worker)
        daemon.workers = workers
        daemon.save_state()

    async def _retire(self, worker: SlaveWorker) -> None:
        await self.daemon.stop_worker(worker)
        self.log.info("slave.stopped", slave=worker.slave.name, reason="reload")


class Signals:
    """Turns each signal into what the daemon does about it."""

    def __init__(self, daemon: Signalled, reloader: Reloader, log: Any) -> None:
        self.daemon = daemon
        self.reloader = reloader
        self.log = log

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in sorted(SIGNALS):
            loop.add_signal_handler(signum, self.handle, signum)
        # Held since the start of ``dnsmaster run`` (dnsmaster.daemon.SIGNALS says
        # why); one that came meanwhile is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def remove(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in sorted(SIGNALS):
            loop.remove_signal_handler(signum)

    def handle(self, signum: int) -> None:
        """Act on ``signum`` as if it had just arrived."""
        daemon = self.daemon
        name = signal.Signals(signum).name
        self.log.info("signal", signal=name)
        if signum == signal.SIGHUP:
            daemon.start(self._sighup(), "reload", forever=False)
        elif signum == signal.SIGUSR2:
            rolling = daemon.holds.handoff()
            if rolling is not None:
                daemon.start(rolling, "rollback", forever=False)
        elif signum == signal.SIGUSR1:
            # A build or push by hand, handed to us: build if the zones changed.
            daemon.rescan("sigusr1")
        elif signum == signal.SIGALRM:
            daemon.wake_workers(force=True)
        else:
            daemon.stop()
            return
        # Answered even when there was nothing to do: whoever sent it waits for the
        # daemon.idle that follows (dnsmaster.daemon.rest), not for a while.
        daemon.idle_changed()

    async def _sighup(self) -> None:
        """Re-read the configuration, then build now and lift every hold."""
        async with self.reloader.reloading:
            await self.reloader.reload_config()
        self.daemon.rebuild()


def _stamp(path: Path) -> statefile.FileStamp | None:
    try:
        return statefile.stamp(path)
    except OSError:
        return None  # unreadable now: the load that follows says why


def _config_state(
    path: Path, stamp: statefile.FileStamp | None, loaded: float, restart: tuple[str, ...] = ()
) -> statefile.ConfigState:
    return statefile.ConfigState(
        str(path),
        stamp.sha256 if stamp else None,
        stamp.mtime if stamp else None,
        loaded,
        restart_needed=restart,
    )
