"""``dnsmaster run``: watch, debounce, build, push, retry, verify.

Shape of the loop:

* the watcher pokes a :class:`~dnsmaster.daemon.debounce.Debouncer`; one build task waits
  on it and builds, one build at a time (in a worker thread, so slave output keeps
  streaming while a large build runs). Changes during a build start the next
  burst, so they cause exactly one more build.
* every good build becomes :attr:`Daemon.current`; each slave has its own worker
  task that pushes whatever is current when it gets to run. A slow or dead slave
  only holds up its own worker, and a slave that comes back gets the newest build,
  never the one that failed.
* a failed push is retried with exponential backoff; a newer build (or SIGALRM)
  wakes the worker at once.
* signals (:mod:`dnsmaster.daemon.signals`): SIGHUP applies the configuration file
  anew, then builds now and lifts every hold; SIGALRM pushes again; SIGUSR2 acts on
  an operator's flag file; SIGTERM/SIGINT stop watching, let pushes in flight finish
  (up to ``stop_timeout``), write the state file and exit 0.
* the guard's hold and a rollback in force keep builds from the slaves
  (:mod:`dnsmaster.daemon.holds`); the state file says what the daemon did
  (:mod:`dnsmaster.daemon.statefile`).
* events can be missed (an inotify queue overflow, a zones directory swapped by a
  rename): the watcher then asks for a rescan, and every ``rescan`` seconds the
  daemon checks anyway. A rescan hashes the sources and builds only if their
  fingerprint differs from the current build's.
* the daemon says when it has come to rest (:mod:`dnsmaster.daemon.rest`): once
  the builds, the pushes, the retries due and the errands a signal started are
  done, ``daemon.idle``, once after each time it logged anything else. Whoever
  waits for "nothing more follows" (a test, an operator) waits for that.
* nothing dies quietly (:class:`Supervisor`): an unexpected exception in any task,
  callback or thread is logged with its traceback (``daemon.crash``) and the daemon
  exits with status 70, so its supervisor starts it again, instead of a daemon that
  looks alive and no longer builds or pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from dnsmaster import fsutil
from dnsmaster.config import Config, DaemonOptions, Slave
from dnsmaster.core.serial import newer as serial_newer
from dnsmaster.daemon import memory
from dnsmaster.daemon.building import Builds
from dnsmaster.daemon.debounce import Debouncer
from dnsmaster.daemon.holds import Holds
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.rest import Rest
from dnsmaster.daemon.secondary import Secondaries
from dnsmaster.daemon.signals import Reloader, Signals, loaded
from dnsmaster.daemon.statefile import StateFile
from dnsmaster.daemon.watch import Change, ZonesWatcher
from dnsmaster.daemon.worker import (
    Current,
    SlaveWorker,
)
from dnsmaster.errors import WatchError
from dnsmaster.exits import EXIT_CRASH, EXIT_OK, EXIT_SYSTEM
from dnsmaster.master import payload
from dnsmaster.master import state as statefile
from dnsmaster.master.build import Builder
from dnsmaster.master.pushing import PushLog

__all__ = ["Daemon", "Supervisor", "cannot_start"]


class Supervisor:
    """Nothing dies quietly: a task, callback or thread that raises stops the daemon.

    So does a task meant to run for ever that ends, unless the daemon is stopping
    or the task was retired (a slave removed by a reload).
    """

    def __init__(self, log: Any, *, stopping: Callable[[], bool]) -> None:
        self.log = log
        self._stopping = stopping
        #: Set to end the run; :attr:`exit` says with what status.
        self.stop_requested = asyncio.Event()
        self.exit = EXIT_OK
        self._retiring: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]:
        """A task whose exception (or, if ``forever``, whose end) stops the daemon."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(functools.partial(self._task_done, forever=forever))
        return task

    async def retire(self, task: asyncio.Task[None], *, grace: float | None) -> None:
        """End ``task`` (after up to ``grace`` seconds); its end is no crash."""
        self._retiring.add(task)
        if grace is not None:
            await asyncio.wait({task}, timeout=grace)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._retiring.discard(task)

    def fail(self, status: int) -> None:
        """Stop the run with ``status``."""
        self.exit = status
        self.stop_requested.set()

    @contextlib.contextmanager
    def watching(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """Catch what the loop's callbacks and other threads raise, meanwhile."""
        self._loop = loop
        loop.set_exception_handler(self._loop_exception)
        previous_hook = threading.excepthook
        threading.excepthook = self._thread_exception
        try:
            yield
        finally:
            threading.excepthook = previous_hook
            loop.set_exception_handler(None)

    def crashed(self, where: str, exc: BaseException) -> None:
        """An exception nothing expected: log it whole and stop with EXIT_CRASH."""
        self.log.critical(
            "daemon.crash",
            task=where,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if self.exit == EXIT_OK:
            self.exit = EXIT_CRASH
        self.stop_requested.set()

    def _task_done(self, task: asyncio.Task[None], *, forever: bool) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed(task.get_name(), exc)
        elif forever and not self._stopping() and task not in self._retiring:
            self.crashed(task.get_name(), RuntimeError("task ended while the daemon runs"))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is None:
            self.log.error("daemon.loop_error", error=context.get("message"))
            return
        self.crashed("callback", exc)

    def _thread_exception(self, args: threading.ExceptHookArgs) -> None:
        # The watcher's threads: an exception there would silently end the watch.
        exc = args.exc_value or RuntimeError(f"{args.exc_type.__name__} in a thread")
        name = args.thread.name if args.thread is not None else "thread"
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self.crashed, f"thread {name}", exc)


def _builder(config: Config) -> Builder:
    """The daemon's Builder of ``config``'s zones and output."""
    return Builder(
        config.zones,
        config.output,
        strict=config.strict,
        ipv6_int=config.ipv6_int,
        catalog=config.catalog,
        max_file_size=config.max_file_size,
        locking=False,  # the daemon holds the output directory's lock for its life
        keep=config.daemon.keep,
    )


class Daemon:
    """The master: one per zones directory; at rest, it logs ``daemon.idle``."""

    def __init__(self, config: Config, log: Any) -> None:
        self.config = config
        self.rest = Rest(self, log)
        self.log = log = self.rest.log  # every part's events stir the rest
        self.builder = _builder(config)
        self.current: Current | None = None
        self.build_error: str | None = None
        self.stopping = False
        self.gate = asyncio.Semaphore(config.push.parallel)
        self.debouncer = Debouncer(config.daemon.debounce, config.daemon.max_delay)
        self.hooks = Hooks(config.hooks, log)
        self.supervisor = Supervisor(log, stopping=lambda: self.stopping)
        #: One writer of the output directory at a time: a build or a rollback. The
        #: pushes' deltas are made under it too (:func:`payload.compute_under`).
        self.writer = writer = asyncio.Lock()
        self.state_file = StateFile(self, loaded(config.path), log, written=self.rest.settle)
        self.holds = Holds(
            self,
            builder=self.builder,
            hooks=self.hooks,
            writer=writer,
            instance=self.state_file.instance,
            log=log,
        )
        self.reloader = Reloader(
            self,
            builder=self.builder,
            hooks=self.hooks,
            debouncer=self.debouncer,
            writer=writer,
            state_file=self.state_file,
            log=log,
        )
        self.builds = Builds(
            self,
            builder=self.builder,
            debouncer=self.debouncer,
            hooks=self.hooks,
            writer=writer,
            log=log,
        )
        self.signals = Signals(self, self.reloader, log)
        self.workers = [SlaveWorker(self, slave) for slave in config.slaves]
        #: The standard secondaries, fed each new current build beside the workers.
        self.secondaries = Secondaries(self, log)
        self._idle = asyncio.Event()
        self._logs: dict[str, PushLog] = {}
        self._done_for: str | None = None
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        #: The slaves' workers run (after the first build); a reload starts new ones.
        self._serving = False
        self._watcher: ZonesWatcher | None = None

    # -- what the parts ask of the daemon -------------------------------------------

    def save_state(self, *, now: bool = False) -> None:
        """Write the state file soon (:meth:`StateFile.save`), or ``now``."""
        self.state_file.save(now=now)

    def slave_states(self) -> list[statefile.SlaveState]:
        """What each slave's worker knows, in the configuration's order."""
        return [w.state for w in self.workers]

    def secondary_states(self) -> list[statefile.SecondaryState]:
        """What each secondary's feed last said, in the configuration's order."""
        return list(self.secondaries.states())

    def installed_serials(self) -> list[int | None]:
        """The serial each slave has installed, as far as its worker knows."""
        return [w.state.installed_serial for w in self.workers]

    def wake_workers(self, *, force: bool = False) -> None:
        """Every slave's worker looks at the current build now; a new one is fed to
        the secondaries (never awaited by the workers)."""
        for worker in self.workers:
            worker.wake(force=force)
        if self._serving:
            self.secondaries.new_build(self.current)

    def push_log(self, current: Current) -> PushLog:
        if current.sha256 not in self._logs:
            self._logs = {current.sha256: PushLog(self.log, current.serial)}
        return self._logs[current.sha256]

    def idle_changed(self) -> None:
        if not any(w.busy for w in self.workers):
            self._idle.set()
        self.rest.settle()

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]:
        """A task of the daemon's (see :meth:`Supervisor.start`)."""
        task = self.supervisor.start(coro, name, forever=forever)
        if not forever:
            self.rest.errand(task)
        return task

    def stop(self) -> None:
        """End the run: pushes in flight may finish (up to ``stop_timeout``), exit 0."""
        self.supervisor.stop_requested.set()

    def rebuild(self) -> None:
        """After a reload: build now, and try again every slave that waits."""
        self.builds.rebuild()
        for worker in self.workers:
            worker.release()

    def rescan(self, reason: str) -> None:
        """Compare the sources with the current build soon (on the loop)."""
        self.builds.rescan(reason)

    # -- the slaves' workers -----------------------------------------------------------

    def new_worker(self, slave: Slave) -> SlaveWorker:
        """A worker for ``slave``, running if the others are."""
        worker = SlaveWorker(self, slave)
        if self._serving:
            self._start_worker(worker)
        return worker

    async def stop_worker(self, worker: SlaveWorker) -> None:
        """End a worker: a push under way may finish (up to ``stop_timeout``)."""
        worker.retired = True
        task = self._worker_tasks.pop(worker.slave.name, None)
        if task is not None:
            grace = None
            if worker.busy:
                worker.wake()
                grace = self.config.daemon.stop_timeout
            await self.supervisor.retire(task, grace=grace)
        await worker.channel.close()

    def _start_worker(self, worker: SlaveWorker) -> None:
        self._worker_tasks[worker.slave.name] = self.start(
            worker.run(), f"slave {worker.slave.name}"
        )

    # -- builds and pushes ----------------------------------------------------------

    def pushed(self, current: Current) -> None:
        """After each push: once every slave has ``current`` or failed it, the done hook."""
        if self._done_for == current.sha256 or self.current is not current:
            return
        outcomes = [w.outcome(current.sha256) for w in self.workers]
        if None in outcomes:
            return
        self._done_for = current.sha256
        self.hooks.fire(
            "done",
            serial=current.serial,
            sha256=current.sha256,
            ok=outcomes.count("ok"),
            failed=outcomes.count("failed"),
            result="ok" if "failed" not in outcomes else "failed",
        )

    def reverify_workers(self) -> None:
        """Every slave's worker asks its tinydns again."""
        for worker in self.workers:
            worker.reverify()

    async def newest_installed_serial(self) -> int | None:
        """The newest serial any slave has installed (RFC 1982), asked now.

        Each worker keeps what it learns, so it does not ask again.
        """
        await asyncio.gather(*(w.ask_status() for w in self.workers))
        newest: int | None = None
        for serial in self.installed_serials():
            if serial is not None and (newest is None or serial_newer(serial, newest)):
                newest = serial
        return newest

    def restart_rescan(self) -> None:
        """A reload changed ``[daemon] rescan``."""
        self.builds.retime()

    # -- watching -----------------------------------------------------------------

    def _watch(self) -> ZonesWatcher:
        """A watcher of the zones as the configuration says, started."""
        cfg = self.config
        watcher = ZonesWatcher(
            cfg.zones,
            self._on_change,
            poll=cfg.daemon.poll,
            poll_interval=cfg.daemon.poll_interval,
            on_lost=self._on_lost,
            on_rescan=self.rescan,
            on_missing=self._on_missing,
        )
        # A zones directory that is missing now (mid-swap, a mount not up yet) is
        # waited for, not a reason to exit and be restarted in a loop.
        watcher.start(missing_ok=True)
        return watcher

    async def rewatch(self, before: DaemonOptions, after: DaemonOptions) -> None:
        """When a reload changes how to watch: the new watcher starts before the old
        one stops, and a rescan catches any save made while they changed places."""
        old = self._watcher
        same = (before.poll, before.poll_interval) == (after.poll, after.poll_interval)
        if old is None or same:
            return  # not watching yet: the start uses the new configuration
        self._watcher = self._watch()
        await old.stop()
        self.log.info("watch.restarted", watch="poll" if self.config.daemon.poll else "inotify")
        self.rescan("rewatched")

    def _on_change(self, change: Change) -> None:
        self.log.info("watch.change", file=change.name, kind=change.kind)
        self.builds.touched(change.name)
        self.debouncer.poke()

    def _on_lost(self, error: WatchError) -> None:
        self.log.error("watch.lost", path=error.path, error=error.reason)
        self.supervisor.fail(EXIT_SYSTEM)

    def _on_missing(self, reason: str) -> None:
        self.log.warning("watch.missing", path=str(self.config.zones), reason=reason)

    # -- the whole run ----------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit status."""
        memory.tune()  # before the first worker thread allocates
        payload.compute_under(self.writer)  # a delta never beside a build
        loop = asyncio.get_running_loop()
        self.signals.install(loop)
        try:
            with self.supervisor.watching(loop):
                return await self._run()
        finally:
            self.signals.remove(loop)

    async def _run(self) -> int:
        cfg = self.config
        refusal = await asyncio.to_thread(cannot_start, cfg)
        if refusal is not None:
            path, reason = refusal
            self.log.error("daemon.refused", path=path, error=reason)
            return EXIT_SYSTEM
        lock = fsutil.DirectoryLock(cfg.output)
        try:
            if not await _lock(lock, self.supervisor.stop_requested, self.log, cfg):
                return self.supervisor.exit
            return await self._serve()
        finally:
            lock.release()

    async def _serve(self) -> int:
        cfg = self.config
        stop = self.supervisor.stop_requested
        self.holds.discard_handoffs()
        self.holds.owner = True
        self._watcher = self._watch()
        self.log.info(
            "daemon.start",
            zones=str(cfg.zones),
            output=str(cfg.output),
            slaves=len(self.workers),
            watch="poll" if cfg.daemon.poll else "inotify",
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            first = self.start(self.builds.first(), "first build", forever=False)
            await asyncio.wait(
                {first, asyncio.ensure_future(stop.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if first.done() and not first.cancelled() and first.exception() is None:
                self.save_state()
                self._serving = True
                for worker in self.workers:
                    self._start_worker(worker)
                self.secondaries.resume(self.current)
                self.secondaries.new_build(self.current)
                tasks.append(self.start(self.builds.loop(), "build"))
                tasks.append(self.start(self.state_file.heartbeat(), "heartbeat"))
                self.builds.start_rescans()
                await stop.wait()
            else:
                first.cancel()
        finally:
            await self._watcher.stop()
            await self._shutdown(tasks)
        return self.supervisor.exit

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stopping = True
        tasks = [*tasks, *self._worker_tasks.values()]
        if self.builds.timer is not None:
            tasks.append(self.builds.timer)
        busy = [w.slave.name for w in self.workers if w.busy]
        if busy:
            self.log.info("daemon.stopping", pushing=",".join(busy))
            self._idle.clear()
            self.idle_changed()
            try:
                async with asyncio.timeout(self.config.daemon.stop_timeout):
                    await self._idle.wait()
            except TimeoutError:
                self.log.warning("daemon.stop_timeout", seconds=self.config.daemon.stop_timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.secondaries.stop()
        for worker in self.workers:
            await worker.channel.close()
        await self.hooks.close()
        self.state_file.stopped = time.time()
        self.save_state(now=True)
        self.log.info("daemon.stop")


def cannot_start(cfg: Config) -> tuple[str, str] | None:
    """Why the daemon cannot work at all: (path, what is wrong and what to do).

    Found now, a daemon that cannot write its output or its state exits with a
    message its supervisor logs, instead of running and failing every build.
    """
    user = fsutil.user_name()
    for directory, what in ((cfg.output, "output"), (cfg.state.parent, "state")):
        if not directory.is_dir():
            return str(directory), f"the {what} directory does not exist; create it"
        try:
            fsutil.discard([fsutil.stage(directory / ".dnsmaster-probe", lambda fd: None)])
        except OSError as exc:
            return str(directory), (
                f"cannot write the {what} directory as {user}: {fsutil.describe(exc)}; "
                f"make it writable by {user} (chown {user} {directory})"
            )
    if cfg.state.exists() and not os.access(cfg.state, os.W_OK):
        return str(cfg.state), f"the state file is not writable by {user}"
    return None


async def _lock(lock: fsutil.DirectoryLock, stop: asyncio.Event, log: Any, cfg: Config) -> bool:
    """Take the output directory's lock for good; False if stopped while waiting.

    One writer: ``dnsmaster build``/``push`` by hand take the same lock, and hand
    their request to a running daemon instead of building beside it.
    """
    if lock.try_acquire():
        return True
    log.warning("lock.wait", path=str(cfg.output), holder="another dnsmaster build or daemon")
    while not lock.try_acquire():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()
        if stop.is_set():
            return False
    log.info("lock.taken", path=str(cfg.output))
    return True
