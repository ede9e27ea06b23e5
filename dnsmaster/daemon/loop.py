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
* signals: SIGHUP re-reads the configuration file and applies it (slaves added,
  removed or changed get their workers started, stopped or restarted; see
  :mod:`dnsmaster.daemon.reload` for what needs a restart instead), then builds now and
  lifts every hold; a file that does not load is logged and the daemon keeps
  running on what it loaded before; SIGALRM pushes the current build to every slave
  again; SIGUSR2 acts on an operator's flag file (``push --accept``, ``rollback``);
  SIGTERM/SIGINT stop watching, let pushes in flight finish (up to
  ``stop_timeout``), write the state file and exit 0.
* a rollback (:mod:`dnsmaster.master.rollback`) makes an earlier build current and holds
  it: saves are built and checked, pushed nowhere, until it is released.
* events can be missed (an inotify queue overflow, a zones directory swapped by a
  rename): the watcher then asks for a rescan, and every ``rescan`` seconds the
  daemon checks anyway. A rescan hashes the sources and builds only if their
  fingerprint differs from the current build's.
* nothing dies quietly: an unexpected exception in any task, callback or thread is
  logged with its traceback (``daemon.crash``) and the daemon exits with status 70,
  so its supervisor starts it again, instead of a daemon that looks alive and no
  longer builds or pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import pwd
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from dnsmaster import config as configuration
from dnsmaster import fsutil
from dnsmaster.config import Config, DaemonOptions
from dnsmaster.core import guard
from dnsmaster.core.makedata import built_from
from dnsmaster.core.serial import newer as serial_newer
from dnsmaster.core.soa import zone_serials
from dnsmaster.daemon import metrics, reload
from dnsmaster.daemon.debounce import Debouncer, DebounceTiming
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.watch import Change, ZonesWatcher
from dnsmaster.daemon.worker import (
    VERIFY_ZONES,
    Current,
    SlaveWorker,
    current_from_disk,
    current_of,
)
from dnsmaster.errors import (
    ArchiveError,
    BuildError,
    ConfigError,
    DataErrors,
    WatchError,
)
from dnsmaster.master import guarded, handoff, rollback
from dnsmaster.master import state as statefile
from dnsmaster.master.archive import Archive
from dnsmaster.master.build import Builder, BuildResult
from dnsmaster.master.handoff import SIGHUP_HOW
from dnsmaster.master.pushing import PushLog

__all__ = ["Daemon"]

#: State file updates within this many seconds are written together.
STATE_DELAY = 0.05

#: Written by ``push --accept`` in the output directory (then SIGUSR2):
#: ``sha256=HELD`` the held build the operator accepts, with the words of every
#: request file (:func:`dnsmaster.master.handoff.write_request`: the daemon asked, the
#: asker and until when it waits).
ACCEPT_FILE = ".dnsmaster-accept"

#: Written by ``dnsmaster rollback`` in the output directory, then SIGUSR2:
#: ``request=to kept=KEPT_SHA256 id=ID`` (roll back to that kept build) or
#: ``request=release id=ID``, with the words of every request file. The daemon
#: answers in its state file (``request``: the id, and the error if any).
ROLLBACK_FILE = ".dnsmaster-rollback"

#: The hand-off files; any found at start was written for an earlier daemon.
HANDOFF_FILES = (ACCEPT_FILE, ROLLBACK_FILE)

#: The state file is rewritten at least this often, busy or idle: its date is the
#: heartbeat that tells ``status`` the daemon is alive.
HEARTBEAT = 10.0

EXIT_OK = 0
#: EX_SOFTWARE: an unexpected exception (a bug); the traceback is in the log.
EXIT_CRASH = 70
EXIT_SYSTEM = 111


class Daemon:
    """The master: one per zones directory."""

    def __init__(self, config: Config, log: Any) -> None:
        self.config = config
        self.log = log
        self.builder = Builder(
            config.zones,
            config.output,
            strict=config.strict,
            ipv6_int=config.ipv6_int,
            max_file_size=config.max_file_size,
            locking=False,  # the daemon holds the output directory's lock for its life
            keep=config.daemon.keep,
        )
        self.current: Current | None = None
        self.build_error: str | None = None
        self.stopping = False
        self.gate = asyncio.Semaphore(config.push.parallel)
        self.debouncer = Debouncer(config.daemon.debounce, config.daemon.max_delay)
        self.workers = [SlaveWorker(self, slave) for slave in config.slaves]
        self._stop = asyncio.Event()
        self._hup = asyncio.Event()
        self._rescan = asyncio.Event()
        self._idle = asyncio.Event()
        self._exit = EXIT_OK
        self.started = time.time()
        #: Published in the state file: the heartbeat's monotonic clock is this boot's.
        self.boot_id = statefile.this_boot()
        #: Published in the state file: a hand-off request must name it (see handoff).
        self.instance = secrets.token_hex(8)
        self.stopped: float | None = None
        self._logs: dict[str, PushLog] = {}
        self.hooks = Hooks(config.hooks, log)
        self._done_for: str | None = None
        #: A build the guard holds back: (build, why, since).
        self.held: tuple[Current, str, float] | None = None
        #: What the slaves have, when a restart found a held build on disk.
        self._kept_build: statefile.BuildState | None = None
        self._state_pending: asyncio.TimerHandle | None = None
        #: A rollback in force: ``current`` is its data, and no build is pushed
        #: until ``rollback --release``; the newest build held meanwhile.
        self.rollback: rollback.Hold | None = None
        self.rollback_held: Current | None = None
        #: The answer to the last request handed over in ROLLBACK_FILE.
        self.request: statefile.RequestAnswer | None = None
        #: One writer of the output directory at a time: a build or a rollback.
        self._writer = asyncio.Lock()
        #: This daemon holds the output directory's lock: the hand-off files are its.
        self._owner = False
        self._release = asyncio.Event()
        #: The configuration file as it was read at start or by the last SIGHUP.
        self.config_state = _config_state(config.path, _stamp(config.path), time.time())
        #: One reload at a time: two SIGHUPs in a row apply in order.
        self._reloading = asyncio.Lock()
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        #: Workers stopped by a reload: their end is no crash.
        self._retiring: set[asyncio.Task[None]] = set()
        self._rescan_task: asyncio.Task[None] | None = None
        #: The slaves' workers run (after the first build); a reload starts new ones.
        self._serving = False
        self._watcher: ZonesWatcher | None = None

    # -- state ------------------------------------------------------------------

    def save_state(self, *, now: bool = False) -> None:
        """Write the state file: at once with ``now``, else once for every update made
        within :data:`STATE_DELAY` (ten slaves starting a push are one fsynced write,
        not ten that each hold up the loop)."""
        if now:
            self._write_state()
        elif self._state_pending is None:
            loop = asyncio.get_running_loop()
            self._state_pending = loop.call_later(STATE_DELAY, self._write_state)

    def _write_state(self) -> None:
        if self._state_pending is not None:
            self._state_pending.cancel()
            self._state_pending = None
        current = self.current
        build = self._kept_build if current is None else None
        if current is not None:
            build = statefile.BuildState(
                current.serial,
                current.sha256,
                current.records,
                current.time,
                self.build_error,
                fingerprint=current.fingerprint,
                seconds=current.seconds,
            )
        snapshot = statefile.State(
            pid=os.getpid(),
            updated=time.time(),
            monotonic=time.monotonic(),
            boot_id=self.boot_id,
            instance=self.instance,
            build=build,
            slaves=tuple(w.state for w in self.workers),
            heartbeat_interval=HEARTBEAT,
            started=self.started,
            stopped=self.stopped,
            host=socket.gethostname(),
            zones=str(self.config.zones),
            build_error=self.build_error,
            rollback=self._rollback_state(),
            request=self.request,
            config=self.config_state,
            held=None
            if self.held is None
            else statefile.HeldBuild(
                self.held[0].serial,
                self.held[0].sha256,
                self.held[1],
                self.held[2],
                fingerprint=self.held[0].fingerprint,
            ),
        )
        try:
            statefile.write(self.config.state, snapshot)
        except OSError as exc:
            self.log.error("state.failed", path=str(self.config.state), error=_reason(exc))
        if self.config.metrics is not None:
            # With every state write: the file's own timestamp is a heartbeat too.
            try:
                metrics.write(self.config.metrics, metrics.render(snapshot))
            except OSError as exc:
                self.log.error("metrics.failed", path=str(self.config.metrics), error=_reason(exc))

    def _rollback_state(self) -> statefile.RollbackState | None:
        hold, held = self.rollback, self.rollback_held
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

    def push_log(self, current: Current) -> PushLog:
        if current.sha256 not in self._logs:
            self._logs = {current.sha256: PushLog(self.log, current.serial)}
        return self._logs[current.sha256]

    def idle_changed(self) -> None:
        if not any(w.busy for w in self.workers):
            self._idle.set()

    # -- building ---------------------------------------------------------------

    async def build(self, reason: str, changes: int = 0, *, floor: int | None = None) -> bool:
        """One build; on success it becomes current and every slave is woken.

        Only SIGHUP and the start force a build: after a save or a rescan, sources
        identical to the current build's allocate no serial and push nothing.
        """
        # A release must give the slaves a serial above the rolled-back one even when
        # the zones have not changed since the last build.
        force = reason in ("sighup", "start", "release")
        quiet = reason == "rescan"  # every minute: logged only when it finds a change
        if not quiet:
            self.log.info("build.start", reason=reason, changes=changes)
        try:
            async with self._writer:
                result = await asyncio.to_thread(self.builder.build, force=force, floor=floor)
        except DataErrors as exc:
            for error in exc.errors:
                self.log.error("build.error", file=error.file, line=error.line, error=error.reason)
            self._build_failed(f"{len(exc.errors)} errors in the zones")
            return False
        except BuildError as exc:
            self.log.error("build.error", path=exc.path, error=exc.reason)
            self._build_failed(f"{exc.path}: {exc.reason}")
            return False
        if result is None:
            (self.log.debug if quiet else self.log.info)(
                "build.unchanged", serial=self.current.serial if self.current else None
            )
            if self.build_error is not None:
                self.build_error = None  # the zones are back to what is built
                self.save_state()
            return True
        if quiet:
            self.log.info("rescan.changed", changed=",".join(result.recompiled) or None)
        await self._built(result)
        return True

    def _build_failed(self, why: str) -> None:
        self.build_error = why
        kept = self.current.serial if self.current else None
        self.log.error("build.failed", error=why, kept_serial=kept)
        self.save_state()
        self.hooks.fire("failure", result="build failed", error=why, serial=kept)

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

    async def _built(self, result: BuildResult) -> None:
        for warning in result.warnings:
            self.log.warning(
                "build.warning", file=warning.file, line=warning.line, error=warning.reason
            )
        data = result.data
        changed = frozenset(result.recompiled)
        # The zones of the files that changed; a change to header alone touches them all.
        verify = zone_serials(data, changed) if changed else {}
        verify = verify or zone_serials(data)
        new = Current(
            data=data,
            sha256=result.sha256,
            serial=result.serial,
            records=result.records,
            time=time.time(),
            verify=dict(list(verify.items())[:VERIFY_ZONES]),
            fingerprint=built_from(data[:300]),
            seconds=result.seconds,
        )
        self.build_error = None
        if self.rollback is not None:
            # Built and checked, written on the master, pushed nowhere: a save made
            # during the incident must not silently undo the rollback.
            self.rollback_held = new
            self.log.warning(
                "build.held",
                reason="rollback",
                serial=result.serial,
                sha256=result.sha256[:16],
                live=self.rollback.serial,
                hint="dnsmaster rollback --release pushes the zones as they are then",
            )
            self.save_state()
            return
        base = self.current if self.current is not None else self.held_build
        verdict = await asyncio.to_thread(self._judge, base, new) if base is not None else None
        if verdict is not None:
            self._hold_build(new, verdict)
            return
        self.current = new
        self.held = self._kept_build = None
        self.log.info(
            "build.done",
            serial=result.serial,
            records=result.records,
            changed=",".join(result.recompiled) or None,
            sha256=result.sha256[:16],
            seconds=round(result.seconds, 3),
        )
        self.save_state()
        self.hooks.fire("build", serial=result.serial, sha256=result.sha256, records=result.records)
        for worker in self.workers:
            worker.wake()

    def _judge(self, old: Current, new: Current) -> guard.Verdict | None:
        """The guard's verdict on pushing ``new`` where slaves have ``old``."""
        options = self.config.guard
        return guard.judge_data(
            old.data,
            new.data,
            max_removed=options.max_removed,
            zones=options.zones,
            allow=options.allow,
            old_records=old.records,
            new_records=new.records or 0,
        )

    @property
    def held_build(self) -> Current | None:
        return self.held[0] if self.held is not None else None

    def _hold_build(self, new: Current, verdict: guard.Verdict) -> None:
        """Built, written on the master, pushed nowhere until ``push --accept``."""
        self.held = (new, verdict.reason, time.time())
        self.log.critical(
            "guard.held",
            serial=new.serial,
            sha256=new.sha256[:16],
            records=new.records,
            was=verdict.old_records,
            zones=",".join(verdict.removed_zones) or None,
            reason=verdict.reason,
            hint="check with dnsmaster diff; release with dnsmaster push --accept",
        )
        self.save_state()
        self.hooks.fire(
            "failure", result="held", error=verdict.reason, serial=new.serial, sha256=new.sha256
        )

    def _hold_again(self) -> None:
        """After a restart: the build on disk is one the guard held; hold it still.

        Held by this daemon before (its state file) or refused by ``dnsmaster push``
        meanwhile (:mod:`dnsmaster.master.guarded`): either way nobody accepted it. The
        slaves keep what they had, and the next build is judged against the held one.
        """
        current = self.current
        held = guarded.held(self.config, current.sha256) if current is not None else None
        if current is None or held is None:
            return
        kept = None
        with contextlib.suppress(OSError, ValueError):
            kept = statefile.read(self.config.state).build
        if held.by == "push" and held.base is not None:
            kept = statefile.BuildState(None, held.base, None, held.since)
        self.held = (current, held.reason, held.since)
        self.current = None
        self._kept_build = kept
        self.log.critical(
            "guard.held", serial=held.serial, reason=held.reason, since=held.since, by=held.by
        )

    def _take(self, name: str) -> dict[str, str] | None:
        """The request in hand-off file ``name``, if it is one for this daemon whose
        asker still waits; the file is removed either way (``handoff.discarded``)."""
        flag = self.config.output / name
        try:
            text = flag.read_bytes()[:4096].decode("ascii", "replace")
        except OSError:
            return None
        with contextlib.suppress(OSError):
            flag.unlink()
        request = handoff.parse_request(text)
        why = handoff.refusal(request, self.instance)
        if why is not None:
            self.log.warning("handoff.discarded", file=name, reason=why)
            return None
        return request

    def _discard_handoffs(self) -> None:
        """At start: a hand-off file is an earlier daemon's (killed before it answered,
        or its asker killed): nobody waits for it now. Carried out later, on another
        operator's signal, it would roll back or release what nobody asked for."""
        for name in HANDOFF_FILES:
            flag = self.config.output / name
            with contextlib.suppress(FileNotFoundError):
                flag.unlink()
                self.log.warning("handoff.discarded", file=name, reason="left by an earlier daemon")

    def _handoff(self) -> None:
        """SIGUSR2: act on the hand-off files written for this daemon (a rollback, an
        accept, or both at once: signals sent together arrive as one)."""
        if not self._owner:
            # Waiting for the lock: the files are the running daemon's, not ours.
            return
        rolling = self._take(ROLLBACK_FILE)
        if rolling is not None:
            self._start(self._requested(rolling), "rollback", forever=False)
        accept = self._take(ACCEPT_FILE)
        if accept is not None or rolling is None:
            self._accept(accept)

    def _accept(self, request: dict[str, str] | None) -> None:
        """``push --accept``: push the held build, if it is the one accepted."""
        accepted = (request or {}).get("sha256", "")
        held = self.held_build
        if held is None or accepted != held.sha256:
            self.log.warning("guard.not_accepted", accepted=accepted[:16] or None)
            return
        self.current, self.held, self._kept_build = held, None, None
        self.log.info("guard.accepted", serial=held.serial, sha256=held.sha256[:16])
        self.save_state()
        for worker in self.workers:
            worker.wake()

    async def _requested(self, request: dict[str, str]) -> None:
        """``dnsmaster rollback``: roll back, or release; answer in the state file."""
        ident = request.get("id", "")
        what = request.get("request")
        try:
            if what == "to" and "kept" in request:
                await self._roll_back(request["kept"])
            elif what == "release":
                await self._release_hold()
            else:
                raise ArchiveError(ROLLBACK_FILE, f"not a request: {what!r:.80}")
        except ArchiveError as exc:
            self.log.error("rollback.failed", path=exc.path, error=exc.reason)
            self.request = statefile.RequestAnswer(ident, str(exc))
        except MemoryError:
            # An operator's request that cannot be done fails alone, not the daemon.
            self.log.error("rollback.failed", path=ROLLBACK_FILE, error="out of memory")
            self.request = statefile.RequestAnswer(ident, "out of memory")
        else:
            self.request = statefile.RequestAnswer(ident)
        self.save_state(now=True)

    async def _roll_back(self, kept_sha256: str) -> None:
        """Put the kept build with ``kept_sha256`` on every slave, with a new serial."""
        archive = Archive(self.config.output, self.config.daemon.keep)
        async with self._writer:
            kept = next((k for k in archive.entries() if k.sha256 == kept_sha256), None)
            if kept is None:
                raise ArchiveError(str(archive.directory), f"no kept build {kept_sha256[:16]}")
            # Above every serial a slave may serve: the receivers refuse an older one.
            floor = rollback.newest(
                self.builder.previous_serial(),
                *(c.serial for c in (self.current, self.held_build, self.rollback_held) if c),
                *(w.state.installed_serial for w in self.workers),
                self._kept_build.serial if self._kept_build else None,
            )
            rolled = await asyncio.to_thread(rollback.prepare, archive, kept, floor)
            await asyncio.to_thread(rollback.install, self.config.output, rolled)
        if self.held is not None:
            self.log.warning("guard.dropped", serial=self.held[0].serial, reason="rollback")
        self.held = self._kept_build = self.rollback_held = None
        self.rollback = rolled.hold
        self.current = current_of(rolled.data, rolled.hold.sha256, records=rolled.records.count)
        self.build_error = None
        self.log.warning(
            "rollback.done",
            serial=rolled.hold.serial,
            kept_serial=kept.serial,
            kept_sha256=kept.sha256[:16],
            built=kept.stamp,
            hint="held until dnsmaster rollback --release",
        )
        self.save_state(now=True)
        for worker in self.workers:
            worker.wake()

    async def _release_hold(self) -> None:
        """End the rollback; the build loop then builds the zones and pushes them."""
        hold = self.rollback
        if hold is None:
            raise ArchiveError(str(self.config.output), "no rollback holds a build")
        async with self._writer:
            await asyncio.to_thread(rollback.clear, self.config.output)
        self.rollback = self.rollback_held = None
        self.log.info("rollback.released", serial=hold.serial, kept_serial=hold.kept_serial)
        self._release.set()

    async def _first_build(self) -> None:
        """Build unless data on disk already comes from these zones; else keep it."""
        try:
            for name in await asyncio.to_thread(self.builder.tidy):
                self.log.info("build.swept", file=name)
            if await asyncio.to_thread(self._restore_rollback):
                return
            fresh = await asyncio.to_thread(self.builder.is_current)
        except BuildError as exc:
            self.log.error("build.error", path=exc.path, error=exc.reason)
            fresh = False
        if fresh:
            self.current = current_from_disk(self.config.output)
            if self.current is not None:
                self.log.info("build.current", serial=self.current.serial)
                self._hold_again()
                return
        floor = None
        if self.builder.previous_serial() is None:
            floor = await self._slaves_newest_serial()
        if not await self.build("start", floor=floor) and self.current is None:
            # Keep serving what is there: slaves behind it still get it.
            self.current = current_from_disk(self.config.output)

    def _hold_damaged(self, exc: ArchiveError) -> None:
        """A rollback file that cannot be trusted: hold all the same, push nothing.

        The operator asked for the slaves to stay on an earlier build; a damaged
        record of which one is a doubt, and a doubt never pushes. The master's own
        data is pushed only when it is the build the hold names (a rollback
        installs it there); ``rollback --release`` ends the hold.
        """
        try:
            hold = rollback.read(self.config.output)
        except ArchiveError:
            hold = None
        disk = current_from_disk(self.config.output)
        if hold is None:
            hold = rollback.Hold(0, "", 0, "", time.time())
        self.rollback = hold
        self.current = disk if disk is not None and disk.sha256 == hold.sha256 else None
        self.log.error(
            "rollback.damaged",
            path=exc.path,
            error=exc.reason,
            serial=hold.serial or None,
            pushing=self.current is not None,
            hint="the slaves keep what they have; dnsmaster rollback --release ends the hold",
        )

    def _restore_rollback(self) -> bool:
        """After a restart: a rollback in force is held still; whether there is one.

        Its data, kept with the hold, stays current (what the slaves get); a build on
        disk from other sources is a save made during the hold: held too. The zones
        are not built now: ``rollback --release`` builds them.
        """
        try:
            found = rollback.load(self.config.output)
        except ArchiveError as exc:
            self._hold_damaged(exc)
            return True
        if found is None:
            return False
        hold, data = found
        self.rollback = hold
        self.current = current_of(data, hold.sha256, time_=hold.since)
        disk = current_from_disk(self.config.output)
        if disk is not None and disk.sha256 != hold.sha256:
            self.rollback_held = disk
        self.log.warning(
            "rollback.held",
            serial=hold.serial,
            kept_serial=hold.kept_serial,
            since=hold.since,
            hint="dnsmaster rollback --release pushes the zones as they are then",
        )
        return True

    async def _slaves_newest_serial(self) -> int | None:
        """The newest serial any slave has installed (RFC 1982), asked now.

        The master's own ``data`` is gone, so its serial is unknown: a serial from
        the clock alone could be older than what the slaves serve, and they would
        refuse it. Each worker keeps what it learns, so it does not ask again.
        """
        await asyncio.gather(*(w.ask_status() for w in self.workers))
        newest: int | None = None
        for worker in self.workers:
            serial = worker.state.installed_serial
            if serial is not None and (newest is None or serial_newer(serial, newest)):
                newest = serial
        if newest is not None:
            self.log.info("build.floor", serial=newest)
        return newest

    async def _build_loop(self) -> None:
        while True:
            waiting = asyncio.ensure_future(self.debouncer.wait())
            hup = asyncio.ensure_future(self._hup.wait())
            rescan = asyncio.ensure_future(self._rescan.wait())
            release = asyncio.ensure_future(self._release.wait())
            done, _ = await asyncio.wait(
                {waiting, hup, rescan, release}, return_when=asyncio.FIRST_COMPLETED
            )
            changes = waiting.result() if waiting in done else 0
            for task in (waiting, hup, rescan, release):
                task.cancel()
            if self._release.is_set():
                self._release.clear()
                await self.build("release")
            elif hup in done:
                self._hup.clear()
                await self.build("sighup")
            elif waiting in done:
                await self.build("change", changes)
            else:
                # Events may have been missed: build if the sources differ from the
                # current build (the build compares fingerprints and writes nothing
                # when they agree).
                self._rescan.clear()
                await self.build("rescan")

    def rescan(self, reason: str) -> None:
        """Compare the sources with the current build soon (on the loop)."""
        self.log.info("watch.rescan", reason=reason)
        self._rescan.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            self.save_state()

    async def _rescan_timer(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.log.debug("watch.rescan", reason="periodic")
            self._rescan.set()
            for worker in self.workers:
                worker.reverify()

    # -- signals ----------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self.log.info("signal", signal=name)
        if signum == signal.SIGHUP:
            self._start(self._sighup(), "reload", forever=False)
        elif signum == signal.SIGUSR2:
            self._handoff()
        elif signum == signal.SIGUSR1:
            # A build or push by hand, handed to us: build if the zones changed.
            self.rescan("sigusr1")
        elif signum == signal.SIGALRM:
            for worker in self.workers:
                worker.wake(force=True)
        else:
            self._stop.set()

    # -- reloading the configuration ---------------------------------------------

    async def _sighup(self) -> None:
        """Re-read the configuration, then build now and lift every hold."""
        async with self._reloading:
            await self.reload_config()
        self._hup.set()
        for worker in self.workers:
            worker.release()

    async def reload_config(self) -> bool:
        """Load the configuration file again and apply it; False when it does not
        load (logged, recorded in the state file, the running one kept)."""
        path = self.config.path
        # Stamped before it is read: a file saved in between shows as changed since.
        stamp = await asyncio.to_thread(_stamp, path)
        try:
            new = await asyncio.to_thread(configuration.load, path)
        except ConfigError as exc:
            self._reload_failed(exc, stamp)
            return False
        change = await self._apply(new)
        self.config_state = _config_state(path, stamp, time.time(), change.restart_needed)
        self.save_state(now=True)
        return True

    def _reload_failed(self, exc: ConfigError, stamp: reload.FileStamp | None) -> None:
        self.log.error(
            "config.reload_failed",
            file=exc.path or str(self.config.path),
            key=exc.key or None,
            reason=exc.reason,
            hint="the daemon keeps running on the configuration it loaded before; "
            f"fix the file, then SIGHUP again ({SIGHUP_HOW})",
        )
        self.config_state = dataclasses.replace(
            self.config_state,
            error=str(exc),
            failed_at=time.time(),
            file_sha256=stamp.sha256 if stamp else None,
            file_mtime=stamp.mtime if stamp else None,
        )
        self.save_state(now=True)

    async def _apply(self, new: Config) -> reload.Change:
        """Run on ``new`` from now on, but for what needs a restart."""
        change = reload.compare(self.config, new)
        new = reload.keep_restart_needed(self.config, new)
        async with self._writer:  # not under a build running in its thread
            self.builder.strict = new.strict
            self.builder.max_file_size = new.max_file_size
            self.builder.use_ipv6_int(new.ipv6_int)
            self.builder.keep = new.daemon.keep
        old, self.config = self.config, new
        self._retime(old, new)
        await self._rewatch(old.daemon, new.daemon)
        await self._reslave(change)
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
        """The timings, hooks and limits read outside ``self.config`` at each use."""
        self.hooks.options = new.hooks
        timing = (new.daemon.debounce, new.daemon.max_delay)
        if (old.daemon.debounce, old.daemon.max_delay) != timing:
            self.debouncer.timing = DebounceTiming(new.daemon.debounce, new.daemon.max_delay)
        if old.push.parallel != new.push.parallel:
            # Pushes under way release the old gate; new ones take this one.
            self.gate = asyncio.Semaphore(new.push.parallel)
        if old.log.level != new.log.level:
            from dnsmaster import log as logsetup  # noqa: PLC0415

            logsetup.set_level(new.log.level)
        if old.daemon.rescan != new.daemon.rescan and self._serving:
            if self._rescan_task is not None:
                self._rescan_task.cancel()
            self._start_rescan()

    async def _reslave(self, change: reload.Change) -> None:
        """Stop the workers of slaves removed or changed; start the added and changed."""
        gone = set(change.removed) | set(change.changed)
        kept = {w.slave.name: w for w in self.workers if w.slave.name not in gone}
        await asyncio.gather(*(self._retire(w) for w in self.workers if w.slave.name in gone))
        workers = []
        for slave in self.config.slaves:
            worker = kept.get(slave.name)
            if worker is None:
                worker = SlaveWorker(self, slave)
                if self._serving:
                    self._start_worker(worker)
                self.log.info("slave.started", slave=slave.name, reason="reload")
            workers.append(worker)
        self.workers = workers
        self.save_state()

    async def _retire(self, worker: SlaveWorker) -> None:
        """End a worker: a push under way may finish (up to ``stop_timeout``)."""
        worker.retired = True
        task = self._worker_tasks.pop(worker.slave.name, None)
        if task is not None:
            self._retiring.add(task)
            if worker.busy:
                worker.wake()
                await asyncio.wait({task}, timeout=self.config.daemon.stop_timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._retiring.discard(task)
        await worker.channel.close()
        self.log.info("slave.stopped", slave=worker.slave.name, reason="reload")

    def _start_worker(self, worker: SlaveWorker) -> None:
        self._worker_tasks[worker.slave.name] = self._start(
            worker.run(), f"slave {worker.slave.name}"
        )

    def _start_rescan(self) -> None:
        every = self.config.daemon.rescan
        self._rescan_task = self._start(self._rescan_timer(every), "rescan") if every else None

    def _on_change(self, change: Change) -> None:
        self.log.info("watch.change", file=change.name, kind=change.kind)
        self.debouncer.poke()

    def _on_lost(self, error: WatchError) -> None:
        self.log.error("watch.lost", path=error.path, error=error.reason)
        self._exit = EXIT_SYSTEM
        self._stop.set()

    def _on_missing(self, reason: str) -> None:
        self.log.warning("watch.missing", path=str(self.config.zones), reason=reason)

    # -- nothing dies quietly ----------------------------------------------------

    def _crashed(self, where: str, exc: BaseException) -> None:
        """An exception nothing expected: log it whole and stop with EXIT_CRASH."""
        self.log.critical(
            "daemon.crash",
            task=where,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if self._exit == EXIT_OK:
            self._exit = EXIT_CRASH
        self._stop.set()

    def _task_done(self, task: asyncio.Task[None], *, forever: bool) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(task.get_name(), exc)
        elif forever and not self.stopping and task not in self._retiring:
            self._crashed(task.get_name(), RuntimeError("task ended while the daemon runs"))

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is None:
            self.log.error("daemon.loop_error", error=context.get("message"))
            return
        self._crashed("callback", exc)

    def _thread_exception(self, args: threading.ExceptHookArgs) -> None:
        # The watcher's threads: an exception there would silently end the watch.
        exc = args.exc_value or RuntimeError(f"{args.exc_type.__name__} in a thread")
        name = args.thread.name if args.thread is not None else "thread"
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._crashed, f"thread {name}", exc)

    def _start(self, coro: Any, name: str, *, forever: bool = True) -> asyncio.Task[None]:
        """A task whose exception (or, if ``forever``, whose end) stops the daemon."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(functools.partial(self._task_done, forever=forever))
        return task

    # -- the whole run ----------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit status."""
        loop = self._loop = asyncio.get_running_loop()
        signals = (
            signal.SIGHUP,
            signal.SIGALRM,
            signal.SIGUSR1,
            signal.SIGUSR2,
            signal.SIGTERM,
            signal.SIGINT,
        )
        for signum in signals:
            loop.add_signal_handler(signum, self._signal, signum)
        loop.set_exception_handler(self._loop_exception)
        previous_hook = threading.excepthook
        threading.excepthook = self._thread_exception
        try:
            return await self._run()
        finally:
            threading.excepthook = previous_hook
            loop.set_exception_handler(None)
            for signum in signals:
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        cfg = self.config
        refusal = await asyncio.to_thread(self._cannot_start)
        if refusal is not None:
            path, reason = refusal
            self.log.error("daemon.refused", path=path, error=reason)
            return EXIT_SYSTEM
        lock = fsutil.DirectoryLock(cfg.output)
        try:
            if not await self._lock(lock):
                return self._exit
            return await self._serve()
        finally:
            lock.release()

    def _cannot_start(self) -> tuple[str, str] | None:
        """Why the daemon cannot work at all: (path, what is wrong and what to do).

        Found now, a daemon that cannot write its output or its state exits with a
        message its supervisor logs, instead of running and failing every build.
        """
        cfg = self.config
        user = _user()
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

    async def _lock(self, lock: fsutil.DirectoryLock) -> bool:
        """Take the output directory's lock for good; False if stopped while waiting.

        One writer: ``dnsmaster build``/``push`` by hand take the same lock, and hand
        their request to a running daemon instead of building beside it.
        """
        if lock.try_acquire():
            return True
        self.log.warning(
            "lock.wait", path=str(self.config.output), holder="another dnsmaster build or daemon"
        )
        while not lock.try_acquire():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await self._stop.wait()
            if self._stop.is_set():
                return False
        self.log.info("lock.taken", path=str(self.config.output))
        return True

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

    async def _rewatch(self, before: DaemonOptions, after: DaemonOptions) -> None:
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

    async def _serve(self) -> int:
        cfg = self.config
        self._discard_handoffs()
        self._owner = True
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
            first = self._start(self._first_build(), "first build", forever=False)
            await asyncio.wait(
                {first, asyncio.ensure_future(self._stop.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if first.done() and not first.cancelled() and first.exception() is None:
                self.save_state()
                self._serving = True
                for worker in self.workers:
                    self._start_worker(worker)
                tasks.append(self._start(self._build_loop(), "build"))
                tasks.append(self._start(self._heartbeat(), "heartbeat"))
                self._start_rescan()
                await self._stop.wait()
            else:
                first.cancel()
        finally:
            await self._watcher.stop()
            await self._shutdown(tasks)
        return self._exit

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stopping = True
        tasks = [*tasks, *self._worker_tasks.values()]
        if self._rescan_task is not None:
            tasks.append(self._rescan_task)
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
        for worker in self.workers:
            await worker.channel.close()
        await self.hooks.close()
        self.stopped = time.time()
        self.save_state(now=True)
        self.log.info("daemon.stop")


def _stamp(path: Path) -> reload.FileStamp | None:
    try:
        return reload.stamp(path)
    except OSError:
        return None  # unreadable now: the load that follows says why


def _config_state(
    path: Path, stamp: reload.FileStamp | None, loaded: float, restart: tuple[str, ...] = ()
) -> statefile.ConfigState:
    return statefile.ConfigState(
        str(path),
        stamp.sha256 if stamp else None,
        stamp.mtime if stamp else None,
        loaded,
        restart_needed=restart,
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason) or type(exc).__name__
