"""Each source compiled once: what a :class:`~dnsmaster.master.build.Builder` keeps
between builds, and where each source of a build comes from.

A source comes from the last build when it is unchanged since: its text and
records are then copied from that build's ``data`` and ``data.cdb``, which the
build cache's index describes (:mod:`dnsmaster.master.buildcache`); else from the
compiler. A file is not even read when its stat is the one recorded with its
sha256, in memory or in the index. Between builds a Builder keeps, per source,
only a :class:`~dnsmaster.master.buildcache.Kept` (numbers, no text, no record).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dnsmaster.core import cdb
from dnsmaster.core.compiler import PackedRecords
from dnsmaster.core.makedata import compile_source
from dnsmaster.errors import DataError, DataErrors
from dnsmaster.log import get_logger
from dnsmaster.master.buildcache import DIRECTORY as CACHE_DIRECTORY
from dnsmaster.master.buildcache import (
    INDEX,
    BuildCache,
    Index,
    Kept,
    Ready,
    Rejected,
    kept_of,
)
from dnsmaster.master.zones import Stat, ZonesDir

__all__ = ["RACY_NS", "CompiledSources", "Setup", "Source", "build_cache"]

#: A stat younger than this is not trusted next time (see CompiledSources.remember).
RACY_NS = 2_000_000_000

#: A source as a build uses it: compiled now, or kept from the last build.
Source = Ready | Kept


def build_cache(output: Path, *, ipv6_int: bool) -> BuildCache:
    """The build cache of ``output`` for sources compiled with ``ipv6_int``."""
    options = b"" if ipv6_int else b"\0ipv6_int=false"
    return BuildCache(output / CACHE_DIRECTORY, options)


@dataclass(frozen=True, slots=True)
class Setup:
    """What one build compiles with: the Builder's settings at that moment."""

    zones: ZonesDir
    #: The build cache on disk; None when it is off.
    disk: BuildCache | None
    strict: bool
    ipv6_int: bool


@dataclass(frozen=True, slots=True)
class _Found:
    """One source as CompiledSources._look_up found it: ``source`` (None: it does not
    compile, ``errors`` say why), and whether it was ``compiled`` here."""

    source: Source | None
    compiled: bool = False
    errors: tuple[DataError, ...] = ()


@dataclass
class CompiledSources:
    """The sources compiled so far, by name, and what says each is still current."""

    ready: dict[str, Source] = field(default_factory=dict, repr=False)
    #: What the last :meth:`compile` took from the last build's pair on disk (not
    #: from memory, not compiled), and the index it ignored and why.
    loaded: list[str] = field(default_factory=list, repr=False)
    rejected: list[tuple[str, str]] = field(default_factory=list, repr=False)
    # name -> the stat of the file whose content is in ready, when safe to trust
    _stats: dict[str, Stat] = field(default_factory=dict, repr=False)
    # The index of the pair the Kept sources of ready are in (None: not read yet)
    _index: Index | None = field(default=None, repr=False)
    _read: bool = field(default=False, repr=False)

    def forget(self) -> None:
        """Drop everything: what is kept was compiled with other settings."""
        self.ready.clear()
        self._stats.clear()
        if self._index is not None:
            self._index.close()
        self._index = None
        self._read = False

    def index(self, setup: Setup) -> Index | None:
        """The index of the pair the kept sources are in; read once, when first asked."""
        if not self._read and setup.disk is not None:
            self._read = True
            found = setup.disk.load()
            if isinstance(found, Rejected):
                self.rejected.append((INDEX, found.reason))
            elif found is not None:
                self._index = found
        return self._index

    def digests(self, setup: Setup, names: list[str]) -> list[tuple[str, bytes]]:
        """The sha256 of each source, from memory or the index when the file's stat
        says it is unchanged, else read."""
        stats = setup.zones.stats(names)
        index = self.index(setup)
        known = {}
        for name in names:
            seen = stats[name]
            if seen is None:
                continue
            if name in self.ready and self._stats.get(name) == seen:
                known[name] = self.ready[name].digest
            elif index is not None and index.stats.get(name) == seen:
                known[name] = index.sources[name].digest
        return [
            (name, known.get(name) or hashlib.sha256(setup.zones.read(name)).digest())
            for name in names
        ]

    def compile(
        self, setup: Setup, names: list[str], changed: Collection[str] | None = None
    ) -> tuple[list[Source], list[str]]:
        """Every source compiled, and the names of those compiled here.

        ``changed``, when given, holds every name that may have changed since the
        last compile (a watcher's word): a source memory holds with a trusted stat
        and not in it is taken without a stat. None: every file is statted.

        What came from the last build's pair on disk, and the index it ignored,
        are left in :attr:`loaded` and :attr:`rejected`.
        """
        recompiled: list[str] = []
        errors: list[DataError] = []
        self.loaded = []
        self.rejected = []
        index = self.index(setup)
        on_disk = index.sources if index is not None else {}
        ready = self.ready
        mine = self._stats
        stats, looked = self._stats_of(setup, names, changed)
        unsure = self._unsure(setup, looked, stats, errors)
        found = zip(unsure, self._look_up(setup, unsure, on_disk), strict=True)
        # Only what was looked up is handled one by one (one file, after a one-file
        # change); the rest is in ready already, taken by one comprehension below.
        for name, got in found:
            mine.pop(name, None)
            if got.source is None:
                errors.extend(got.errors)
                continue
            src = got.source
            if got.compiled:
                recompiled.append(name)
            elif src is not ready.get(name):
                self.loaded.append(name)
                if setup.strict and src.warnings:
                    errors.extend(src.warnings)  # what compile_source(strict=True) raises
                    continue
            ready[name] = src
            self.remember(name, stats[name])
        if len(ready) != len(names):
            for gone in set(ready) - set(names):
                del ready[gone]
                mine.pop(gone, None)
        if errors:
            raise DataErrors(tuple(errors))
        return [ready[name] for name in names], recompiled

    def _stats_of(
        self, setup: Setup, names: list[str], changed: Collection[str] | None
    ) -> tuple[dict[str, Stat | None], list[str]]:
        """Each name's stat: from memory when ``changed`` vouches for it, else taken;
        and the names whose stat was taken (the others are memory's, unchanged).

        100,000 stats cost a daemon most of a one-file rebuild; the watcher already
        knows which one file it was.
        """
        mine = self._stats
        if changed is None or not mine:
            return setup.zones.stats(names), names
        stale = set(changed)
        get = mine.get
        looked = [n for n in names if n in stale or get(n) is None]
        stats: dict[str, Stat | None] = dict(mine)
        stats.update(setup.zones.stats(looked))
        return stats, looked

    def _unsure(
        self,
        setup: Setup,
        names: list[str],
        stats: dict[str, Stat | None],
        errors: list[DataError],
    ) -> list[str]:
        """Of ``names``, the sources whose stat says neither memory nor the index holds
        them; the others are taken (and, strict, their warnings are ``errors``)."""
        index = self._index
        on_disk = index.sources if index is not None else {}
        trusted = index.stats if index is not None else {}
        ready = self.ready
        mine = self._stats
        unsure = []
        # Most names, in a daemon, are what memory holds: found by one comprehension,
        # not the branches below (mine holds only names that ready holds).
        get = mine.get
        others = [n for n in names if (st := stats[n]) is None or get(n) != st] if mine else names
        for name in others:
            seen = stats[name]
            if seen is None:
                unsure.append(name)
            elif name in ready and mine.get(name) == seen:
                pass
            elif trusted.get(name) == seen:
                ready[name] = on_disk[name]
                mine[name] = seen
                self.loaded.append(name)
                if setup.strict:
                    errors.extend(on_disk[name].warnings)  # what a strict compile raises
            else:
                unsure.append(name)
        return unsure

    def _look_up(self, setup: Setup, names: list[str], on_disk: dict[str, Kept]) -> list[_Found]:
        """Each source from memory, else from the last build, else compiled.

        Two threads: reading, hashing and the C part of a compile release the GIL,
        so one thread's work runs while the other parses.
        """

        def look_up(name: str) -> _Found:
            content = setup.zones.read(name)
            digest = hashlib.sha256(content).digest()
            cached = self.ready.get(name)
            if cached is not None and cached.digest == digest:
                return _Found(cached)
            kept = on_disk.get(name)
            if kept is not None and kept.digest == digest:
                return _Found(kept)
            packed = PackedRecords()
            try:
                src = compile_source(
                    name,
                    content,
                    strict=setup.strict,
                    packed=packed,
                    digest=digest,
                    ipv6_int=setup.ipv6_int,
                )
            except DataErrors as exc:
                return _Found(None, errors=exc.errors)
            # A read-only view, not a copy: bytes() would copy every record under the
            # GIL, which the other thread's compile is waiting for.
            blob = memoryview(packed.blob).toreadonly()
            records = cdb.Packed(blob, tuple(packed.serials), packed.count)
            ready = Ready(src.name, src.digest, src.pieces, records, src.warnings, src.lines)
            return _Found(ready, compiled=True)

        if len(names) < 2:  # nothing to share between two threads
            return [look_up(name) for name in names]
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(look_up, names))

    def save(
        self,
        disk: BuildCache | None,
        written: list[Source],
        serial: int,
        banner: int,
        pairs: bytes = b"",
    ) -> None:
        """Describe the pair just installed, made of ``written`` (``pairs``: its
        records' hashes and positions), in the build cache's index, under the output
        directory's lock; from now on keep each source as a
        :class:`~dnsmaster.master.buildcache.Kept` of that pair.

        Never raises: the build is done, and a cache that cannot be written costs
        the next process time, not this build.
        """
        log = get_logger()
        for name, reason in self.rejected:
            log.warning("cache.ignored", file=name, reason=reason)
        self.rejected = []
        if disk is None:
            return
        kept = [src if isinstance(src, Kept) else kept_of(src) for src in written]
        # After a one-file change one source was compiled: only it becomes a Kept.
        fresh = [new for old, new in zip(written, kept, strict=True) if old is not new]
        # the catalog's section is in the pair too, but is made anew by each build
        stats = self._stats  # only sources of this build: compile() drops the others
        disk.sweep()
        found = disk.save(kept, stats, serial=serial, banner=banner, pairs=pairs)
        if isinstance(found, str):
            log.warning("cache.failed", error=found)
            return
        if self._index is not None:
            self._index.close()
        self._index = found
        self._read = True
        for src in fresh:
            if src.name in self.ready:
                self.ready[src.name] = src

    def remember(self, name: str, stat: Stat | None) -> None:
        """Trust ``stat`` (taken before the read) next time, unless it is too recent.

        A write in the same clock tick as the stat could leave every field the same,
        so, like git's racy-clean rule, a file changed in the last two seconds is read
        and hashed again next time rather than trusted.
        """
        if stat is not None and max(stat[3], stat[4]) < time.time_ns() - RACY_NS:
            self._stats[name] = stat
