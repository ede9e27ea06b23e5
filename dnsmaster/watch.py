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
:class:`Change` records; :mod:`dnsmaster.debounce` turns them into one build.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self, TypeVar

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
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dnsmaster.core.sources import is_source
from dnsmaster.errors import WatchError

__all__ = ["Change", "ChangeKind", "ZonesWatcher", "change_from_event"]

ChangeKind = Literal["created", "modified", "deleted", "moved", "closed"]

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

_T = TypeVar("_T")

_KINDS: frozenset[str] = frozenset({"created", "modified", "deleted", "moved", "closed"})


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


class _Handler(FileSystemEventHandler):
    """Runs on the observer thread: filter by name, then hop to the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        directory: str,
        on_change: Callable[[Change], None],
        on_lost: Callable[[WatchError], None],
    ) -> None:
        self._loop = loop
        self._directory = directory
        self._on_change = on_change
        self._on_lost = on_lost

    def _send(self, callback: Callable[[_T], None], arg: _T) -> None:
        # RuntimeError: the loop closed under a late event (shutdown); nobody is
        # left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, arg)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirDeletedEvent):
            if os.fsdecode(event.src_path) == self._directory:
                self._send(self._on_lost, WatchError(self._directory, "directory was removed"))
            return
        change = change_from_event(event)
        if change is not None:
            self._send(self._on_change, change)


class ZonesWatcher:
    """Watches one zones directory (not recursively) and reports :class:`Change` s.

    Give ``on_change`` to be called on the loop for every change, or leave it out
    and iterate: ``async for change in watcher``. If the directory disappears while
    watched, the iterator raises :class:`~dnsmaster.errors.WatchError` (callback
    users get it through ``on_lost``, default: ignored until :meth:`stop`).

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
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.poll = poll
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._on_lost = on_lost
        self._queue: asyncio.Queue[Change | WatchError] = asyncio.Queue()
        self._observer: BaseObserver | None = None

    # -- lifecycle -------------------------------------------------------------

    def _check_directory(self) -> None:
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            raise WatchError(self.directory, "zones directory does not exist") from None
        except OSError as exc:
            raise WatchError(self.directory, f"cannot stat: {exc.strerror}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise WatchError(self.directory, "not a directory")

    def start(self) -> None:
        """Start watching. Must be called from the running loop's thread.

        Raises :class:`~dnsmaster.errors.WatchError` when the directory is missing or
        cannot be watched (e.g. the inotify watch limit is reached).
        """
        if self._observer is not None:
            raise RuntimeError("ZonesWatcher already started")
        self._check_directory()
        loop = asyncio.get_running_loop()
        observer: BaseObserver = (
            PollingObserver(timeout=self.poll_interval) if self.poll else Observer()
        )
        handler = _Handler(loop, self.directory, self._deliver, self._lost)
        try:
            observer.schedule(handler, self.directory, recursive=False, event_filter=_EVENT_FILTER)
            observer.start()
        except OSError as exc:
            # Raced with a removal, or inotify's max_user_watches/instances is reached.
            observer.stop()
            reason = exc.strerror or str(exc)
            raise WatchError(self.directory, f"cannot watch: {reason}") from exc
        self._observer = observer

    async def stop(self) -> None:
        """Stop the observer thread; harmless when not started.

        The join runs in a worker thread: a polling observer may take up to one
        poll interval to notice, and the loop must not block meanwhile.
        """
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        await asyncio.to_thread(observer.join)

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

    # -- delivery (on the loop) --------------------------------------------------

    def _deliver(self, change: Change) -> None:
        if self._on_change is not None:
            self._on_change(change)
        else:
            self._queue.put_nowait(change)

    def _lost(self, error: WatchError) -> None:
        if self._on_lost is not None:
            self._on_lost(error)
        elif self._on_change is None:
            self._queue.put_nowait(error)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        """The next change; raises WatchError if the directory went away."""
        item = await self._queue.get()
        if isinstance(item, WatchError):
            raise item
        return item
