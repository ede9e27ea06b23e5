"""Watching the zones directory: watchdog's observer thread -> the asyncio loop.

This is the only module that touches watchdog. It watches the *directory*, not
the files, because editors rarely write a file in place: vim renames the old file
to ``zones.x~`` and writes a new ``zones.x``, ``sed -i`` renames a temp file over
it, emacs does both plus an autosave file. A watch on the file itself would be
left on the renamed inode; a watch on the directory sees every step.

Each step is judged by its names alone (:func:`dnsmaster.core.sources.is_source`):
an event counts when its ``src_path`` or, for moves, its ``dest_path`` is
``header`` or a ``zones.*`` file that is not an editor leftover. A move
``sedAb12 -> zones.x`` counts through its destination (new content arrived), a
move ``zones.x -> zones.x~`` through its source (the content left). Swap, backup,
autosave and temp files never count on their own.

The observer calls us on its own thread; everything is handed to the loop with
``loop.call_soon_threadsafe`` (filling an asyncio queue from another thread is
unsafe and would not wake a sleeping loop). One save still yields several
:class:`Change` records; :mod:`dnsmaster.daemon.debounce` turns them into one build.

Events can be missed, and the watcher says so instead of staying silent:

- inotify's queue overflows (``fs.inotify.max_queued_events``, 16384 by default:
  a stopped daemon, a script creating thousands of files). The kernel drops the
  events and queues one IN_Q_OVERFLOW; watchdog 7 only logs it and tells its
  watch group, so :class:`_WatchGroup` hooks that call and the watcher reports
  ``on_rescan("overflow")``.
- The directory at the path is replaced (``mv z z.old && mv z.new z``, a symlink
  retargeted, ``rm -r z && mkdir z``). An inotify watch follows the *inode*, so it
  would go on reporting the old directory, or nothing. The watcher watches the
  path's real directory, hears IN_MOVE_SELF / IN_DELETE_SELF / IN_IGNORED on it,
  and also compares the path's ``(st_dev, st_ino)`` with the watched one every
  ``check_interval`` seconds (a symlink swap makes no event on the target). When
  they differ it drops the old watch, watches the path again once it is a
  directory, and reports ``on_rescan("rewatched")``: whatever changed in between
  is found by the daemon comparing the sources' fingerprint with its build.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from watchdog.events import (
    DirDeletedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)
from watchdog.observers.polling import PollingObserver

from dnsmaster.core.sources import is_source
from dnsmaster.errors import WatchError

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "Change",
    "ChangeKind",
    "RescanReason",
    "ZonesWatcher",
    "change_from_event",
]

ChangeKind = Literal["created", "modified", "deleted", "moved", "closed"]

RescanReason = Literal["overflow", "rewatched"]
"""Why events may have been missed: ``overflow`` (inotify dropped events) or
``rewatched`` (the directory at the path was replaced or came back)."""

# What the watch itself tells the loop, besides changes: "overflow" (events were
# dropped), "moved" (the watched directory was renamed: is it still the one at
# the path?), "deleted" (the watch is gone: deleted, unmounted, or the polling
# observer found the directory missing).
_Signal = Literal["overflow", "moved", "deleted"]

# Only these reach our handler: attrib, opened and closed-without-writing say
# nothing about content, and the directory's own "modified" events duplicate the
# file events. DirDeletedEvent is how both backends report that the watched
# directory itself went away (they stop watching after it).
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirDeletedEvent,
]

_KINDS: frozenset[str] = frozenset({"created", "modified", "deleted", "moved", "closed"})

# After the directory disappeared, retry this soon and then back off (doubling) to
# check_interval: `mv z z.old && mv z.new z` leaves the path empty for an
# instant, and coming back within milliseconds beats waiting a whole interval.
_FIRST_RETRY = 0.05

DEFAULT_CHECK_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class Change:
    """One relevant step of a change to the zones directory.

    ``name`` is the data file concerned: for a move, the destination when that is a
    data file (new content arrived under it), else the source (content left it).
    """

    name: str
    kind: ChangeKind


def _basename(path: bytes | str) -> str:
    return os.path.basename(os.fsdecode(path))


def change_from_event(event: FileSystemEvent) -> Change | None:
    """The :class:`Change` a watchdog event means, or None when it is not ours.

    Pure (no I/O), so the name rules are unit-testable without a watcher.
    """
    if event.is_directory or event.event_type not in _KINDS:
        return None
    kind: ChangeKind = event.event_type  # type: ignore[assignment]  # checked just above
    if event.dest_path:
        dest = _basename(event.dest_path)
        if is_source(dest):
            return Change(dest, kind)
    src = _basename(event.src_path)
    if src and is_source(src):
        return Change(src, kind)
    return None


def _dir_identity(path: str, shown: str) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the directory ``path`` names (symlinks followed).

    Raises WatchError naming ``shown`` (the configured path) when it is not one.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WatchError(shown, "zones directory does not exist") from None
    except OSError as exc:
        raise WatchError(shown, f"cannot stat: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise WatchError(shown, "not a directory")
    return st.st_dev, st.st_ino


# -- the inotify backend, with the two things watchdog 7 does not report --------


class _WatchGroup(InotifyWatchGroup):
    """watchdog's watch group for one directory, telling us about itself.

    watchdog 7.1's group handles IN_Q_OVERFLOW only by rebuilding recursive
    watches (``on_queue_overflow``; the fd thread merely logs a warning) and
    ignores IN_MOVE_SELF (a "todo" in ``on_event``). These hooks run on the
    InotifyFD thread and must not raise: the daemon treats an exception in a
    watchdog thread as a crash.
    """

    def __init__(
        self,
        signal: Callable[[_Signal], None],
        inotify_fd: InotifyFD,
        path: bytes,
        *,
        event_mask: Mask,
    ) -> None:
        # Set before the dataclass __init__, whose __post_init__ adds the watch:
        # events may arrive from then on.
        self._signal = signal
        super().__init__(inotify_fd, path, event_mask=event_mask, is_recursive=False)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.is_active:
            self._signal("overflow")

    def on_event(self, event: InotifyEvent) -> None:
        # Not recursive: the only watch is the directory, and an event without a
        # name is about the directory itself.
        if not event.name and self.is_active:
            if event.is_move_self:
                self._signal("moved")
            elif event.is_delete_self or event.mask & InotifyConstants.IN_UNMOUNT:
                self._signal("deleted")
        super().on_event(event)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        # IN_IGNORED: the kernel removed the watch (directory deleted, file system
        # unmounted). Our own removals on stop do not come here while active.
        if self.is_active:
            self._signal("deleted")
        super().on_watch_deleted(wd)


class _Emitter(InotifyEmitter):
    """InotifyEmitter with our watch group, IN_MOVE_SELF and IN_ONLYDIR added."""

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        signal: Callable[[_Signal], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(event_queue, watch, **kwargs)
        self._signal = signal

    def on_thread_start(self) -> None:
        # InotifyEmitter.on_thread_start, with _WatchGroup. IN_ONLYDIR: a path
        # swapped for a file (or, with IN_DONT_FOLLOW, a symlink) between our stat
        # and this call is refused (ENOTDIR) instead of watched.
        mask = Mask(
            self.get_event_mask_from_filter()
            | InotifyConstants.IN_MOVE_SELF
            | InotifyConstants.IN_ONLYDIR
        )
        self._inotify = _WatchGroup(
            self._signal, self._inotify_fd, os.fsencode(self.watch.path), event_mask=mask
        )


class _InotifyObserver(BaseObserver):
    """watchdog's InotifyObserver (one inotify instance of its own), our emitter."""

    def __init__(self, signal: Callable[[_Signal], None]) -> None:
        self._inotify_fd = InotifyFD()
        self._inotify_fd.start()
        super().__init__(_Emitter, inotify_fd=self._inotify_fd, signal=signal)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()


# -- from watchdog's threads to the loop -----------------------------------------


class _Handler(FileSystemEventHandler):
    """One watch's voice: runs on watchdog's threads, filters by name, hops to the loop.

    ``active`` and ``dead`` are only touched on the loop. A retired handler's late
    events are dropped there, so the old directory never speaks after a re-watch.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        directory: str,
        post: Callable[[_Handler, Change | _Signal], None],
    ) -> None:
        self._loop = loop
        self._directory = directory
        self._post = post
        self.active = True
        self.dead = False

    def send(self, item: Change | _Signal) -> None:
        # RuntimeError: the loop closed under a late event (shutdown); nobody is
        # left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._post, self, item)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirDeletedEvent):
            if os.fsdecode(event.src_path) == self._directory:
                self.send("deleted")
            return
        change = change_from_event(event)
        if change is not None:
            self.send(change)


@dataclass(slots=True)
class _Watch:
    """A running observer on one directory, and the identity it was opened with."""

    observer: BaseObserver
    handler: _Handler
    identity: tuple[int, int]


def _close_observer(observer: BaseObserver) -> None:
    """Stop and join (blocking: run it in a worker thread)."""
    observer.stop()
    observer.join()


class ZonesWatcher:
    """Watches one zones directory (not recursively) and reports :class:`Change` s.

    Give ``on_change`` to be called on the loop for every change, or leave it out
    and iterate: ``async for change in watcher``.

    ``on_rescan(reason)`` is called on the loop whenever events may have been
    missed (see :data:`RescanReason`): compare the sources with the last build.
    ``on_missing(reason)`` is called on the loop when the path stops naming a
    watchable directory (``"zones directory does not exist"``, ``"not a
    directory"``, ``"cannot watch: inotify watch limit reached"``...), and again
    only if that reason changes; the watcher keeps trying, and says
    ``on_rescan("rewatched")`` when it watches the path again. Nothing of this is
    fatal. ``on_lost`` is left for what cannot recover: the watcher's own task
    failing (a bug, or an exception from a callback); iterator users get the
    :class:`~dnsmaster.errors.WatchError` raised from ``async for``.

    The path is checked every ``check_interval`` seconds (one ``stat``) besides the
    inotify events about the directory itself, because retargeting a symlink
    makes no event on the directory it pointed to.

    ``poll=True`` uses a ``PollingObserver`` that compares directory snapshots every
    ``poll_interval`` seconds: inotify does not see changes made on another NFS or
    CIFS client.

    Use as ``async with ZonesWatcher(path, ...) as watcher:`` or call
    :meth:`start` (on the loop) and ``await`` :meth:`stop`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        on_change: Callable[[Change], object] | None = None,
        *,
        poll: bool = False,
        poll_interval: float = 1.0,
        on_lost: Callable[[WatchError], object] | None = None,
        on_rescan: Callable[[str], object] | None = None,
        on_missing: Callable[[str], object] | None = None,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
    ) -> None:
        if check_interval <= 0:
            raise ValueError(f"check interval must be positive, not {check_interval!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.poll = poll
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self._on_change = on_change
        self._on_lost = on_lost
        self._on_rescan = on_rescan
        self._on_missing = on_missing
        self._queue: asyncio.Queue[Change | WatchError] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: _Watch | None = None
        self._task: asyncio.Task[None] | None = None
        # Set on the loop by a signal from the watch: check the path now.
        self._wake = asyncio.Event()
        # The reason last given to on_missing during this outage (None: watching).
        self._missing: str | None = None

    @property
    def watching(self) -> bool:
        """Whether a directory is watched right now (False during an outage)."""
        return self._current is not None

    # -- lifecycle -------------------------------------------------------------

    def _open(self, loop: asyncio.AbstractEventLoop) -> _Watch:
        """Watch the directory the path names now. Blocking; raises WatchError.

        The identity is read *before* the watch is added: if the path is swapped
        in between, the watch may be on the new directory while we remember the
        old one, and the next check re-watches needlessly but correctly. The other
        order could remember the new one while watching the old, for ever.
        """
        real = os.path.realpath(self.directory)
        identity = _dir_identity(real, self.directory)
        handler = _Handler(loop, real, self._post)
        try:
            observer: BaseObserver = (
                PollingObserver(timeout=self.poll_interval)
                if self.poll
                else _InotifyObserver(handler.send)
            )
        except OSError as exc:  # inotify's max_user_instances is reached
            raise WatchError(self.directory, f"cannot watch: {exc.strerror or exc}") from exc
        try:
            observer.schedule(handler, real, recursive=False, event_filter=_EVENT_FILTER)
            observer.start()
        except OSError as exc:
            # Raced with a removal, or inotify's max_user_watches is reached.
            observer.stop()
            raise WatchError(self.directory, f"cannot watch: {exc.strerror or exc}") from exc
        return _Watch(observer, handler, identity)

    def start(self, *, missing_ok: bool = False) -> None:
        """Start watching. Must be called from the running loop's thread.

        Raises :class:`~dnsmaster.errors.WatchError` when the directory is missing or
        cannot be watched (e.g. the inotify watch limit is reached): at start an
        operator is usually there to read it. With ``missing_ok=True`` that is
        reported through ``on_missing`` instead and retried like a later outage
        (``on_rescan("rewatched")`` once watched), so a supervised daemon need not
        exit and restart in a loop until the directory appears.
        """
        if self._task is not None:
            raise RuntimeError("ZonesWatcher already started")
        loop = self._loop = asyncio.get_running_loop()
        self._missing = None
        self._wake.clear()
        try:
            self._current = self._open(loop)
        except WatchError as exc:
            if not missing_ok:
                raise
            self._report_missing(exc.reason)
        self._task = loop.create_task(
            self._supervise(watching=self._current is not None), name=f"watch {self.directory}"
        )

    async def stop(self) -> None:
        """Stop the observer thread; harmless when not started.

        The join runs in a worker thread: a polling observer may take up to one
        poll interval to notice, and the loop must not block meanwhile.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait() rather than `await task`: the task's CancelledError is not
            # ours, but a cancellation of stop() itself still propagates.
            await asyncio.wait([task])
        current, self._current = self._current, None
        if current is not None:
            current.handler.active = False
            await asyncio.to_thread(_close_observer, current.observer)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- keeping the watch on the path's directory (a task on the loop) -----------

    async def _supervise(self, *, watching: bool) -> None:
        delay = self.check_interval if watching else min(_FIRST_RETRY, self.check_interval)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
                was_watching, watching = watching, await self._check()
                if watching:
                    delay = self.check_interval
                elif was_watching:
                    delay = min(_FIRST_RETRY, self.check_interval)
                else:
                    delay = min(delay * 2, self.check_interval)
        except Exception as exc:  # reported, not swallowed: see on_lost
            error = WatchError(self.directory, f"watcher failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._lost(error)

    async def _check(self) -> bool:
        """Make sure the path's directory is the one watched; True when it is."""
        current = self._current
        if current is not None and not current.handler.dead:
            try:
                identity = await asyncio.to_thread(_dir_identity, self.directory, self.directory)
            except WatchError:
                identity = None
            if identity == current.identity:
                return True
        if current is not None:
            # The old directory is gone or no longer at the path: its events would
            # be about the wrong files. Close it first, so a re-watch never needs
            # a second inotify instance.
            self._current = None
            current.handler.active = False
            await asyncio.to_thread(_close_observer, current.observer)
        assert self._loop is not None
        opening = asyncio.ensure_future(asyncio.to_thread(self._open, self._loop))
        try:
            # Shielded: if stop() cancels us meanwhile, the thread still opens a
            # watch, and _close_orphan must close it.
            new = await asyncio.shield(opening)
        except WatchError as exc:
            self._report_missing(exc.reason)
            return False
        except asyncio.CancelledError:
            opening.add_done_callback(_close_orphan)
            raise
        self._current = new
        self._missing = None
        self._rescan("rewatched")
        return True

    def _report_missing(self, reason: str) -> None:
        # Once per outage, and again only if the reason changes: a retry every
        # few seconds must not flood the log with the same line.
        if self._missing != reason:
            self._missing = reason
            if self._on_missing is not None:
                self._on_missing(reason)

    # -- delivery (on the loop) --------------------------------------------------

    def _post(self, handler: _Handler, item: Change | _Signal) -> None:
        if not handler.active:
            return
        if isinstance(item, Change):
            self._deliver(item)
            return
        if item == "overflow":
            self._rescan("overflow")
        elif item == "deleted":
            handler.dead = True
        # Any signal means: look at the path now (an overflow may have eaten a
        # move-self; a moved directory may or may not have been replaced).
        self._wake.set()

    def _deliver(self, change: Change) -> None:
        if self._on_change is not None:
            self._on_change(change)
        else:
            self._queue.put_nowait(change)

    def _rescan(self, reason: RescanReason) -> None:
        if self._on_rescan is not None:
            self._on_rescan(reason)

    def _lost(self, error: WatchError) -> None:
        if self._on_lost is not None:
            self._on_lost(error)
        elif self._on_change is None:
            self._queue.put_nowait(error)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        """The next change; raises WatchError if the watcher failed for good."""
        item = await self._queue.get()
        if isinstance(item, WatchError):
            raise item
        return item


def _close_orphan(opening: asyncio.Future[_Watch]) -> None:
    """Close a watch opened for a watcher that was stopped while it opened."""
    if opening.cancelled() or opening.exception() is not None:
        return
    watch = opening.result()
    watch.handler.active = False
    # Fire and forget: nobody awaits a stopped watcher's leftovers, and the
    # default executor is drained when the loop shuts down.
    asyncio.get_running_loop().run_in_executor(None, _close_observer, watch.observer)
