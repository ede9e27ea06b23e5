"""The daemon's builds: the first one at start, then one for each burst of changes.

One build task waits on the :class:`~dnsmaster.daemon.debounce.Debouncer` (a save),
a SIGHUP, a rescan or the end of a rollback, and builds, one build at a time (in a
worker thread, so slave output keeps streaming while a large build runs). Changes
during a build start the next burst, so they cause exactly one more build. A good
build becomes the daemon's ``current`` unless the holds keep it back
(:mod:`dnsmaster.daemon.holds`); a failed one changes nothing and names the file
and line.

Events can be missed (an inotify queue overflow, a zones directory swapped by a
rename): the watcher then asks for a rescan, and every ``rescan`` seconds the
daemon checks anyway. A rescan hashes the sources and builds only if their
fingerprint differs from the current build's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from dnsmaster.config import Config
from dnsmaster.core.makedata import built_from
from dnsmaster.core.soa import zone_serials
from dnsmaster.daemon.debounce import Debouncer
from dnsmaster.daemon.holds import Holds
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.memory import release as release_memory
from dnsmaster.daemon.worker import VERIFY_ZONES, Current, current_from_disk
from dnsmaster.errors import BuildError, DataErrors
from dnsmaster.master.build import Builder, BuildResult
from dnsmaster.master.payload import DataFile

__all__ = ["Builds", "Host"]


class Host(Protocol):
    """What the builds need from the daemon they build for."""

    config: Config
    current: Current | None
    build_error: str | None

    @property
    def holds(self) -> Holds: ...

    def save_state(self, *, now: bool = False) -> None: ...

    def wake_workers(self, *, force: bool = False) -> None: ...

    def reverify_workers(self) -> None: ...

    async def newest_installed_serial(self) -> int | None: ...

    def idle_changed(self) -> None: ...

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]: ...


class Builds:
    """Builds the zones when asked, and makes each good build current."""

    def __init__(
        self,
        daemon: Host,
        *,
        builder: Builder,
        debouncer: Debouncer,
        hooks: Hooks,
        writer: asyncio.Lock,
        log: Any,
    ) -> None:
        self.daemon = daemon
        self.builder = builder
        self.debouncer = debouncer
        self.hooks = hooks
        #: One writer of the output directory at a time: a build or a rollback.
        self.writer = writer
        self.log = log
        self._hup = asyncio.Event()
        self._rescan = asyncio.Event()
        #: The periodic rescan's task, once :meth:`start_rescans` started it.
        self.timer: asyncio.Task[None] | None = None
        self._timed = False
        self._waiting = False
        # Names the watcher saw since the last build; None: unknown (stat every file).
        self._touched: set[str] | None = None

    @property
    def resting(self) -> bool:
        """Whether the build loop waits with nothing to build and no burst under way."""
        asked = (self._hup, self._rescan, self.daemon.holds.released)
        return self._waiting and not self.debouncer.pending and not any(e.is_set() for e in asked)

    def touched(self, name: str) -> None:
        """The watcher saw ``name`` change: the next build after a save stats it."""
        if self._touched is not None:
            self._touched.add(name)

    def rebuild(self) -> None:
        """Build now, whatever the sources (SIGHUP)."""
        self._hup.set()

    def rescan(self, reason: str) -> None:
        """Compare the sources with the current build soon (on the loop)."""
        self.log.info("watch.rescan", reason=reason)
        self._rescan.set()

    async def build(self, reason: str, changes: int = 0, *, floor: int | None = None) -> bool:
        """One build; on success it becomes current and every slave is woken.

        Only SIGHUP and the start force a build: after a save or a rescan, sources
        identical to the current build's allocate no serial and push nothing.
        """
        daemon = self.daemon
        # A release must give the slaves a serial above the rolled-back one even when
        # the zones have not changed since the last build.
        force = reason in ("sighup", "start", "release")
        # After a save, only the files the watcher named since the last build are
        # statted (a second at 100,000 files); any other build, or one after a
        # failure, stats them all, as a missed event must never go unbuilt.
        changed, self._touched = (self._touched if reason == "change" else None), set()
        quiet = reason == "rescan"  # every minute: logged only when it finds a change
        if not quiet:
            self.log.info("build.start", reason=reason, changes=changes)
        try:
            async with self.writer:
                result = await asyncio.to_thread(
                    self.builder.build, force=force, floor=floor, changed=changed
                )
                # The build's own file, opened before any other write can rename a new
                # one over it: the daemon keeps that, not the bytes.
                file = None if result is None else await asyncio.to_thread(self._open, result)
        except DataErrors as exc:
            self._touched = None
            for error in exc.errors:
                self.log.error("build.error", file=error.file, line=error.line, error=error.reason)
            self._failed(f"{len(exc.errors)} errors in the zones")
            return False
        except BuildError as exc:
            self._touched = None
            self.log.error("build.error", path=exc.path, error=exc.reason)
            self._failed(f"{exc.path}: {exc.reason}")
            return False
        if result is None:
            (self.log.debug if quiet else self.log.info)(
                "build.unchanged", serial=daemon.current.serial if daemon.current else None
            )
            if daemon.build_error is not None:
                daemon.build_error = None  # the zones are back to what is built
                daemon.save_state()
            return True
        if quiet:
            self.log.info("rescan.changed", changed=",".join(result.recompiled) or None)
        await self._built(result, file)
        del result  # its bytes: the daemon keeps the build's file
        release_memory()
        return True

    def _open(self, result: BuildResult) -> DataFile | None:
        """The file ``result`` wrote, when it is still that build's (else None: the
        bytes are kept)."""
        try:
            file = DataFile(self.daemon.config.output / "data", sha256=result.sha256)
        except OSError:
            return None
        if file.size != len(result.data) or file.read(0, 300) != result.data[:300]:
            file.close()
            return None
        return file

    def _failed(self, why: str) -> None:
        daemon = self.daemon
        daemon.build_error = why
        kept = daemon.current.serial if daemon.current else None
        self.log.error("build.failed", error=why, kept_serial=kept)
        daemon.save_state()
        self.hooks.fire("failure", result="build failed", error=why, serial=kept)

    async def _built(self, result: BuildResult, file: DataFile | None = None) -> None:
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
            data=data if file is None else file,
            sha256=result.sha256,
            serial=result.serial,
            records=result.records,
            time=time.time(),
            verify=dict(list(verify.items())[:VERIFY_ZONES]),
            fingerprint=built_from(data[:300]),
            seconds=result.seconds,
        )
        daemon = self.daemon
        daemon.build_error = None
        if not await daemon.holds.admit(new):
            return
        daemon.current = new
        self.log.info(
            "build.done",
            serial=result.serial,
            records=result.records,
            changed=",".join(result.recompiled) or None,
            sha256=result.sha256[:16],
            seconds=round(result.seconds, 3),
        )
        daemon.save_state()
        self.hooks.fire("build", serial=result.serial, sha256=result.sha256, records=result.records)
        daemon.wake_workers()

    async def first(self) -> None:
        """Build unless data on disk already comes from these zones; else keep it."""
        daemon = self.daemon
        try:
            for name in await asyncio.to_thread(self.builder.tidy):
                self.log.info("build.swept", file=name)
            if await asyncio.to_thread(daemon.holds.restore_rollback):
                return
            fresh = await asyncio.to_thread(self.builder.is_current)
        except BuildError as exc:
            self._touched = None
            self.log.error("build.error", path=exc.path, error=exc.reason)
            fresh = False
        if fresh:
            daemon.current = current_from_disk(daemon.config.output)
            if daemon.current is not None:
                self.log.info("build.current", serial=daemon.current.serial)
                daemon.holds.hold_again()
                return
        floor = None
        if self.builder.previous_serial() is None:
            # The master's own ``data`` is gone, so its serial is unknown: a serial
            # from the clock alone could be older than what the slaves serve, and
            # they would refuse it.
            floor = await daemon.newest_installed_serial()
            if floor is not None:
                self.log.info("build.floor", serial=floor)
        if not await self.build("start", floor=floor) and daemon.current is None:
            # Keep serving what is there: slaves behind it still get it.
            daemon.current = current_from_disk(daemon.config.output)

    async def loop(self) -> None:
        """Build for ever: after a save, a SIGHUP, a rescan or a rollback's end."""
        released = self.daemon.holds.released
        while True:
            waiting = asyncio.ensure_future(self.debouncer.wait())
            hup = asyncio.ensure_future(self._hup.wait())
            rescan = asyncio.ensure_future(self._rescan.wait())
            release = asyncio.ensure_future(released.wait())
            self._waiting = True
            self.daemon.idle_changed()
            done, _ = await asyncio.wait(
                {waiting, hup, rescan, release}, return_when=asyncio.FIRST_COMPLETED
            )
            self._waiting = False
            changes = waiting.result() if waiting in done else 0
            for task in (waiting, hup, rescan, release):
                task.cancel()
            if released.is_set():
                released.clear()
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

    def start_rescans(self) -> None:
        """Rescan every ``[daemon] rescan`` seconds from now on."""
        self._timed = True
        every = self.daemon.config.daemon.rescan
        self.timer = self.daemon.start(self._rescan_timer(every), "rescan") if every else None

    def retime(self) -> None:
        """A reload changed ``rescan``: time it anew, if it is timed yet."""
        if not self._timed:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.start_rescans()

    async def _rescan_timer(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.log.debug("watch.rescan", reason="periodic")
            self._rescan.set()
            self.daemon.reverify_workers()
