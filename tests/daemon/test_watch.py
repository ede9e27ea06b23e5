"""The zones watcher against a real inotify watcher (and the polling one).

Each test replays what an editor or tool does on disk, in a fresh directory, and
checks the end-to-end contract the daemon relies on: the watcher's changes, fed
through a :class:`Debouncer` with a 0.2 s quiet period, give EXACTLY ONE trigger
per save, and files that are not data never trigger at all. "No second trigger" is
proved by a fence, not by a wait: the test's own file written and removed after
the save comes out of the watcher after every change the save made (inotify keeps
their order; a poll that sees the removal took its snapshot after them), and once
the debouncer has fired with nothing left pending, nothing else can trigger.

Event sequences seen on Linux/inotify (watchdog 7, opened/attrib/closed-no-write
and directory events left out), for the record:

- vim, writebackup + backupcopy=no (replayed, after vim/vim#15733):
  created(.zones.x.swp) ... moved(zones.x -> zones.x~) created(zones.x)
  modified(zones.x) closed(zones.x) deleted(zones.x~) deleted(.zones.x.swp); only
  the moved/created/modified/closed of zones.x count.
- vim as it actually ran here (real binary, backupcopy=auto chose in-place):
  swap-file traffic, then modified(zones.x) closed(zones.x).
- emacs (replayed): created(.#zones.x) (lock symlink) created/modified/closed(#zones.x#)
  moved(zones.x -> zones.x~) created/modified/closed(zones.x) deleted(#zones.x#)
  deleted(.#zones.x); again only the zones.x steps count.
- ``sed -i``: created(sedXXXXXX) modified(sedXXXXXX) closed(sedXXXXXX)
  moved(sedXXXXXX -> zones.x); only the move counts, through its destination.

:class:`TestMissedEvents` makes inotify lose events for real (a queue overflow, the
directory replaced under the watch) and checks that the watcher says so
(``on_rescan``) and goes on seeing edits in the directory now at the path.

CI needs the ``vim`` and ``sed`` packages (sed is essential in Debian) and root
(the overflow test lowers ``fs.inotify.max_queued_events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from watchdog.events import (
    DirModifiedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
)

from dnsmaster.daemon import watch as daemon_watch
from dnsmaster.daemon.debounce import Debouncer
from dnsmaster.daemon.watch import Change, ZonesWatcher, change_from_event
from dnsmaster.errors import DnsmasterError, WatchError
from tests.conftest import IN_CI, require, require_root

QUIET = 0.2
FENCE = "zones.fence"  # the test's own file: see Rig.settle
NOT_DATA = ["zones.x~", ".zones.x.swp", "#zones.x#", "zones.x.tmp", "notes.txt", "zones.x.bak"]


@dataclass
class Rig:
    """A watched directory, every change the watcher reported, every trigger."""

    dir: Path
    debouncer: Debouncer
    changes: list[Change] = field(default_factory=list)
    triggers: list[int] = field(default_factory=list)
    #: The fence's own changes, kept apart: they are the test's, not the save's.
    fence: list[str] = field(default_factory=list)

    def on_change(self, change: Change) -> None:
        if change.name == FENCE:
            self.fence.append(change.kind)
            return
        self.changes.append(change)
        self.debouncer.poke()

    async def settle(self) -> None:
        """Until every change made so far has come out of the watcher and its burst,
        if any, has fired: after that, nothing made so far can trigger."""
        fence = self.dir / FENCE
        _write(fence, "")
        await _until(lambda: bool(self.fence))  # a poll must see it exist first
        fence.unlink()
        await _until(lambda: "deleted" in self.fence)
        self.fence.clear()
        await _until(lambda: self.debouncer.pending == 0)  # fired: triggers are final

    def kinds(self, name: str) -> set[str]:
        return {c.kind for c in self.changes if c.name == name}


async def _until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():
            await asyncio.sleep(0.01)


async def _rig(zones: Path, *, poll: bool = False) -> AsyncIterator[Rig]:
    rig = Rig(zones, Debouncer(quiet=QUIET, max_delay=5.0))

    async def count() -> None:
        async for n in rig.debouncer:
            rig.triggers.append(n)

    task = asyncio.create_task(count())
    try:
        async with ZonesWatcher(zones, rig.on_change, poll=poll, poll_interval=0.1):
            yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    """A zones directory holding header and zones.x before the watch starts."""
    d = tmp_path / "zones"
    d.mkdir()
    (d / "header").write_text("Z.example:ns.example:hostmaster.example\n")
    (d / "zones.x").write_text("+a.example:10.0.0.1\n")
    return d


@pytest.fixture
async def rig(zones: Path) -> AsyncIterator[Rig]:
    async for r in _rig(zones):
        yield r


def _write(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)


class TestEditorSaves:
    async def test_plain_overwrite(self, rig: Rig) -> None:
        """open('w') + write + close of zones.x: one trigger."""
        _write(rig.dir / "zones.x", "+b.example:10.0.0.2\n")
        await rig.settle()
        assert rig.triggers == [len(rig.changes)]
        assert {"modified", "closed"} <= rig.kinds("zones.x")

    async def test_vim_rename_save(self, rig: Rig) -> None:
        """vim (writebackup, backupcopy=no): swap file, rename to ~, write, delete ~."""
        d = rig.dir
        _write(d / ".zones.x.swp", "b0VIM 9.0\0" * 10)
        os.rename(d / "zones.x", d / "zones.x~")
        _write(d / "zones.x", "+b.example:10.0.0.2\n")
        os.unlink(d / "zones.x~")
        os.unlink(d / ".zones.x.swp")
        await rig.settle()
        assert len(rig.triggers) == 1
        assert {c.name for c in rig.changes} == {"zones.x"}
        assert {"moved", "created", "closed"} <= rig.kinds("zones.x")

    async def test_vim_real_binary(self, rig: Rig, vim_bin: str) -> None:
        """The real vim, run headless with its defaults: one trigger."""
        vim = vim_bin
        proc = await asyncio.create_subprocess_exec(
            vim,
            *("--clean", "-es", "-c", "s/10/11/", "-c", "wq", "zones.x"),
            cwd=rig.dir,
            stdin=subprocess.DEVNULL,
        )
        assert await proc.wait() == 0
        await rig.settle()
        assert len(rig.triggers) == 1
        assert {c.name for c in rig.changes} == {"zones.x"}
        assert (rig.dir / "zones.x").read_text() == "+a.example:11.0.0.1\n"

    async def test_emacs_save(self, rig: Rig) -> None:
        """emacs: lock symlink, #autosave#, rename to ~ backup, new file, autosave gone."""
        d = rig.dir
        os.symlink("root@host.1234:1700000000", d / ".#zones.x")
        _write(d / "#zones.x#", "+b.example:10.0.0.2\n")
        os.rename(d / "zones.x", d / "zones.x~")
        _write(d / "zones.x", "+b.example:10.0.0.2\n")
        os.unlink(d / "#zones.x#")
        os.unlink(d / ".#zones.x")
        await rig.settle()
        assert len(rig.triggers) == 1
        assert {c.name for c in rig.changes} == {"zones.x"}

    async def test_sed_in_place(self, rig: Rig) -> None:
        """`sed -i` writes a sedXXXXXX temp file and renames it over zones.x."""
        sed = require("sed", "sed")
        proc = await asyncio.create_subprocess_exec(sed, "-i", "s/a/b/", "zones.x", cwd=rig.dir)
        assert await proc.wait() == 0
        await rig.settle()
        assert len(rig.triggers) == 1
        assert rig.changes == [Change("zones.x", "moved")]
        assert (rig.dir / "zones.x").read_text() == "+b.example:10.0.0.1\n"

    async def test_new_file(self, rig: Rig) -> None:
        """A new zones file: one trigger."""
        _write(rig.dir / "zones.new", "+n.example:10.0.0.9\n")
        await rig.settle()
        assert len(rig.triggers) == 1
        assert {"created", "closed"} <= rig.kinds("zones.new")

    async def test_deleted_file(self, rig: Rig) -> None:
        """Removing a zones file: one trigger."""
        os.unlink(rig.dir / "zones.x")
        await rig.settle()
        assert rig.triggers == [1]
        assert rig.changes == [Change("zones.x", "deleted")]

    async def test_renamed_file(self, rig: Rig) -> None:
        """zones.x -> zones.y: one trigger, reported under the new name."""
        os.rename(rig.dir / "zones.x", rig.dir / "zones.y")
        await rig.settle()
        assert rig.triggers == [1]
        assert rig.changes == [Change("zones.y", "moved")]

    async def test_renamed_to_backup_counts(self, rig: Rig) -> None:
        """zones.x -> zones.x~ takes zones.x's data away: one trigger, under zones.x."""
        os.rename(rig.dir / "zones.x", rig.dir / "zones.x~")
        await rig.settle()
        assert rig.changes == [Change("zones.x", "moved")]
        assert rig.triggers == [1]

    async def test_header(self, rig: Rig) -> None:
        """header is data too."""
        _write(rig.dir / "header", "Z.example:ns.example:hm.example\n")
        await rig.settle()
        assert len(rig.triggers) == 1

    async def test_two_files_saved_together(self, rig: Rig) -> None:
        """Saving two files within the quiet period is still one build."""
        _write(rig.dir / "zones.x", "+b.example:10.0.0.2\n")
        await asyncio.sleep(QUIET / 4)  # paces the saves: the second within the quiet period
        _write(rig.dir / "zones.z", "+z.example:10.0.0.3\n")
        await rig.settle()
        assert len(rig.triggers) == 1

    async def test_two_saves_apart_are_two_triggers(self, rig: Rig) -> None:
        """Saves further apart than the quiet period build twice (sanity of the rig)."""
        _write(rig.dir / "zones.x", "+b.example:10.0.0.2\n")
        await rig.settle()
        assert len(rig.triggers) == 1  # fired: the next save is after its quiet period
        _write(rig.dir / "zones.x", "+c.example:10.0.0.3\n")
        await rig.settle()
        assert len(rig.triggers) == 2

    @pytest.mark.parametrize("name", NOT_DATA)
    async def test_not_data_never_triggers(self, rig: Rig, name: str) -> None:
        """Creating, writing, renaming within and deleting a non-data file: nothing."""
        path = rig.dir / name
        _write(path, "junk\n")
        _write(path, "more junk\n")
        os.rename(path, rig.dir / "scratch.tmp")
        os.rename(rig.dir / "scratch.tmp", path)
        os.unlink(path)
        await rig.settle()
        assert rig.changes == []
        assert rig.triggers == []

    async def test_subdirectory_ignored(self, rig: Rig) -> None:
        """A directory named like a zones file, and files inside it, are not data."""
        sub = rig.dir / "zones.sub"
        sub.mkdir()
        _write(sub / "zones.inner", "x\n")
        await rig.settle()
        assert rig.changes == []
        assert rig.triggers == []


class TestPolling:
    async def test_polling_overwrite(self, zones: Path) -> None:
        """PollingObserver (for NFS/CIFS), 0.1 s interval: one overwrite, one trigger."""
        async for rig in _rig(zones, poll=True):
            _write(rig.dir / "zones.x", "+b.example:10.0.0.2 and a longer line\n")
            await rig.settle()
            assert len(rig.triggers) == 1
            assert rig.kinds("zones.x")
            _write(rig.dir / "zones.x~", "junk\n")
            await rig.settle()
            assert len(rig.triggers) == 1


class TestIterator:
    async def test_async_for(self, zones: Path) -> None:
        """Without a callback, changes come out of ``async for``."""
        async with ZonesWatcher(zones) as watcher:
            _write(zones / "zones.x~", "junk\n")
            os.unlink(zones / "header")
            async with asyncio.timeout(5):
                change = await anext(watcher)
        assert change == Change("header", "deleted")

    async def test_directory_removed_and_back(self, zones: Path) -> None:
        """Removing the directory does not end the iteration: changes resume when it is back."""
        async with ZonesWatcher(zones, check_interval=0.2) as watcher:
            shutil.rmtree(zones)
            await _until(lambda: not watcher.watching)  # gone, as the watcher sees it
            zones.mkdir()
            async with asyncio.timeout(5):
                while not watcher.watching:
                    await asyncio.sleep(0.02)
            _write(zones / "zones.back", "+b.example:10.0.0.2\n")
            async with asyncio.timeout(5):
                while (change := await anext(watcher)).name != "zones.back":
                    assert change.name in {"header", "zones.x"}  # deleted by rmtree


@dataclass
class Record:
    """Everything one watcher reported, through every callback."""

    changes: list[Change] = field(default_factory=list)
    rescans: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    lost: list[WatchError] = field(default_factory=list)

    def watcher(self, path: Path, **kwargs: float | bool) -> ZonesWatcher:
        return ZonesWatcher(
            path,
            self.changes.append,
            on_rescan=self.rescans.append,
            on_missing=self.missing.append,
            on_lost=self.lost.append,
            **kwargs,  # type: ignore[arg-type]  # only poll, poll_interval, check_interval
        )

    async def until(self, what: Callable[[], bool], timeout: float = 5.0) -> None:
        await _until(what, timeout)

    def names(self) -> set[str]:
        return {c.name for c in self.changes}

    async def fence(self, directory: Path) -> None:
        """Until every change made so far in ``directory`` has come out of the watcher
        (as :meth:`Rig.settle`); the fence's own changes are left out."""
        fence = directory / FENCE
        _write(fence, "")
        await self.until(lambda: FENCE in self.names())
        fence.unlink()
        await self.until(lambda: Change(FENCE, "deleted") in self.changes)
        self.changes[:] = [c for c in self.changes if c.name != FENCE]


def _count_looks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every look the watcher takes at a directory's identity (its checks and retries)."""
    looks: list[str] = []
    look = daemon_watch._dir_identity

    def counted(path: str, shown: str) -> tuple[int, int]:
        looks.append(path)
        return look(path, shown)

    monkeypatch.setattr(daemon_watch, "_dir_identity", counted)
    return looks


MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")

# Creates argv[2] empty zones.* files in argv[1]: three inotify events each
# (create, close-write; the open-for-write of os.open adds none we watch, the
# close does), at C-loop speed from another process, so no GIL slows it.
_MAKE_FILES = """\
import os, sys
for i in range(int(sys.argv[3]), int(sys.argv[3]) + int(sys.argv[2])):
    os.close(os.open(os.path.join(sys.argv[1], f"zones.f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
"""


class TestMissedEvents:
    async def test_queue_overflow(self, zones: Path) -> None:
        """inotify's queue overflows under a burst of files: on_rescan("overflow"), watch goes on.

        The queue limit is read when an inotify instance is created, so it is
        lowered just around the watcher's start (other tests running meanwhile
        would get a small queue too) and restored at once.
        """
        require_root("lowering fs.inotify.max_queued_events")
        rec = Record()
        watcher = rec.watcher(zones)
        saved = MAX_QUEUED.read_text()
        try:
            MAX_QUEUED.write_text("64\n")
        except OSError as exc:  # a read-only /proc/sys in a container
            reason = f"cannot lower {MAX_QUEUED}: {exc.strerror}"
            if IN_CI:
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
        try:
            watcher.start()
        finally:
            MAX_QUEUED.write_text(saved)
        try:
            # 64 events overflow within microseconds of a tight loop in another
            # process; batches only so that a very slow machine gets more tries.
            for batch in range(5):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _MAKE_FILES, str(zones), "2000", str(batch * 2000)
                )
                assert await proc.wait() == 0
                with contextlib.suppress(TimeoutError):
                    await rec.until(lambda: "overflow" in rec.rescans, timeout=2)
                if "overflow" in rec.rescans:
                    break
            assert set(rec.rescans) == {"overflow"}
            # The watch is still there, and still good for an edit (once the
            # burst has drained, or the edit's own events could overflow).
            await asyncio.sleep(0.5)
            _write(zones / "zones.after", "+a.example:10.0.0.9\n")
            await rec.until(lambda: "zones.after" in rec.names(), timeout=10)
            assert watcher.watching
            assert rec.missing == []
            assert rec.lost == []
        finally:
            await watcher.stop()

    @pytest.mark.parametrize(
        ("poll", "check_interval"),
        [
            # A long interval: only IN_MOVE_SELF can make inotify notice in time.
            pytest.param(False, 60.0, id="inotify"),
            # Polling has no move-self event: the periodic identity check does it.
            pytest.param(True, 0.2, id="poll"),
        ],
    )
    async def test_directory_swapped_by_rename(
        self, zones: Path, *, poll: bool, check_interval: float
    ) -> None:
        """`mv z z.old && mv z.new z`: re-watched at the path, then edits in the new one count."""
        fresh = zones.with_name("zones.new")
        shutil.copytree(zones, fresh)
        old = zones.with_name("zones.old")
        rec = Record()
        async with rec.watcher(
            zones, poll=poll, poll_interval=0.1, check_interval=check_interval
        ) as watcher:
            os.rename(zones, old)
            os.rename(fresh, zones)
            await rec.until(lambda: "rewatched" in rec.rescans)
            assert watcher.watching
            _write(old / "zones.stale", "+s.example:10.0.0.7\n")  # no longer at the path
            _write(zones / "zones.fresh", "+f.example:10.0.0.8\n")
            await rec.until(lambda: "zones.fresh" in rec.names())
            await rec.fence(zones)  # the stale write, made before, would be out by now
        assert "zones.stale" not in rec.names()
        assert rec.rescans == ["rewatched"]
        assert rec.lost == []

    async def test_directory_deleted_and_recreated(
        self, zones: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """rm -r, then mkdir: on_missing once while it is gone, re-watched when it is back."""
        looks = _count_looks(monkeypatch)
        rec = Record()
        async with rec.watcher(zones, check_interval=0.5) as watcher:
            shutil.rmtree(zones)
            await rec.until(lambda: rec.missing != [])
            assert not watcher.watching
            retried = len(looks) + 3
            await rec.until(lambda: len(looks) >= retried)  # several retries: said only once
            assert rec.missing == ["zones directory does not exist"]
            assert rec.rescans == []
            zones.mkdir()
            await rec.until(lambda: "rewatched" in rec.rescans)
            _write(zones / "zones.y", "+y.example:10.0.0.5\n")
            await rec.until(lambda: "zones.y" in rec.names())
        assert rec.rescans == ["rewatched"]
        assert rec.missing == ["zones directory does not exist"]
        assert rec.lost == []

    async def test_symlink_retargeted(self, tmp_path: Path) -> None:
        """A symlinked path: its target is watched; retargeted, the new target is."""
        first, second = tmp_path / "zones-1", tmp_path / "zones-2"
        first.mkdir()
        second.mkdir()
        link = tmp_path / "zones"
        link.symlink_to(first.name)
        rec = Record()
        async with rec.watcher(link, check_interval=0.2) as watcher:
            _write(link / "zones.one", "+o.example:10.0.0.1\n")
            await rec.until(lambda: "zones.one" in rec.names())
            tmp_link = tmp_path / "zones.tmp"
            tmp_link.symlink_to(second.name)
            os.replace(tmp_link, link)  # atomic, as `ln -sfn` + `mv -T` does
            await rec.until(lambda: "rewatched" in rec.rescans)
            assert watcher.watching
            _write(first / "zones.stale", "+s.example:10.0.0.7\n")
            _write(link / "zones.two", "+t.example:10.0.0.2\n")
            await rec.until(lambda: "zones.two" in rec.names())
            await rec.fence(second)  # the stale write, made before, would be out by now
        assert "zones.stale" not in rec.names()
        assert rec.rescans == ["rewatched"]
        assert rec.missing == []

    async def test_unchanged_directory_is_left_alone(
        self, zones: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With nothing replaced, the periodic check neither re-watches nor rescans."""
        looks = _count_looks(monkeypatch)
        rec = Record()
        async with rec.watcher(zones, check_interval=0.05) as watcher:
            checked = len(looks) + 5
            await rec.until(lambda: len(looks) >= checked)  # five checks of the same directory
            _write(zones / "zones.x", "+b.example:10.0.0.2\n")
            await rec.until(lambda: "zones.x" in rec.names())
            assert watcher.watching
        assert rec.rescans == []
        assert rec.missing == []


class TestStartErrors:
    async def test_missing_directory(self, tmp_path: Path) -> None:
        """A missing zones directory is a clear WatchError naming it."""
        missing = tmp_path / "nope"
        with pytest.raises(WatchError, match="does not exist") as info:
            async with ZonesWatcher(missing):
                pass
        assert isinstance(info.value, DnsmasterError)
        assert info.value.path == str(missing)

    async def test_missing_ok_waits_for_the_directory(self, tmp_path: Path) -> None:
        """start(missing_ok=True): said through on_missing, watched once it appears."""
        missing = tmp_path / "later"
        rec = Record()
        watcher = rec.watcher(missing, check_interval=0.2)
        watcher.start(missing_ok=True)
        try:
            assert rec.missing == ["zones directory does not exist"]
            assert not watcher.watching
            missing.mkdir()
            await rec.until(lambda: "rewatched" in rec.rescans)
            _write(missing / "zones.x", "+a.example:10.0.0.1\n")
            await rec.until(lambda: "zones.x" in rec.names())
        finally:
            await watcher.stop()
        assert rec.missing == ["zones directory does not exist"]
        assert rec.lost == []

    async def test_not_a_directory(self, tmp_path: Path) -> None:
        """A file where the directory should be is refused."""
        f = tmp_path / "file"
        f.write_text("")
        with pytest.raises(WatchError, match="not a directory"):
            ZonesWatcher(f).start()

    async def test_stop_is_idempotent(self, zones: Path) -> None:
        """stop() before start() and twice after is harmless."""
        w = ZonesWatcher(zones)
        await w.stop()
        w.start()
        with pytest.raises(RuntimeError):
            w.start()
        await w.stop()
        await w.stop()


class TestChangeFromEvent:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            (FileCreatedEvent("/z/zones.x"), Change("zones.x", "created")),
            (FileClosedEvent("/z/header"), Change("header", "closed")),
            (FileMovedEvent("/z/sedAb12", "/z/zones.x"), Change("zones.x", "moved")),
            (FileMovedEvent("/z/.zones.x.swp", "/z/zones.x"), Change("zones.x", "moved")),
            (FileMovedEvent("/z/zones.x.tmp", "/z/zones.x"), Change("zones.x", "moved")),
            (FileMovedEvent("/z/zones.x", "/z/zones.x~"), Change("zones.x", "moved")),
            (FileMovedEvent("/z/zones.a", "/z/zones.b"), Change("zones.b", "moved")),
            (FileMovedEvent("/z/zones.x~", "/z/#zones.x#"), None),
            (FileCreatedEvent("/z/zones.x~"), None),
            (FileCreatedEvent("/z/notes.txt"), None),
            (FileOpenedEvent("/z/zones.x"), None),
            (DirModifiedEvent("/z"), None),
        ],
    )
    def test_mapping(self, event: FileSystemEvent, expected: Change | None) -> None:
        """Names decide: dest first for moves, then src; non-content events never count."""
        assert change_from_event(event) == expected

    def test_bytes_paths(self) -> None:
        """Paths watched as bytes still map to str names."""
        assert change_from_event(FileCreatedEvent(b"/z/zones.x")) == Change("zones.x", "created")
