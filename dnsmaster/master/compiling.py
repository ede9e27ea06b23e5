"""Each source compiled once: what a :class:`~dnsmaster.master.build.Builder` keeps
between builds, and where each source of a build comes from.

A source comes from memory when it is unchanged since it was last compiled here,
else from the build cache on disk (:mod:`dnsmaster.master.buildcache`) when that
holds its content, else from the compiler. A file is not even read when its stat is
the one the build cache's index recorded with its sha256.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dnsmaster.core import cdb
from dnsmaster.core.compiler import PackedRecords
from dnsmaster.core.makedata import compile_source
from dnsmaster.errors import DataError, DataErrors
from dnsmaster.log import get_logger
from dnsmaster.master.buildcache import DIRECTORY as CACHE_DIRECTORY
from dnsmaster.master.buildcache import BuildCache, Ready, Rejected, Seen
from dnsmaster.master.zones import Stat, ZonesDir

__all__ = ["RACY_NS", "CompiledSources", "Setup", "build_cache"]

#: A stat younger than this is not trusted next time (see CompiledSources.remember).
RACY_NS = 2_000_000_000


def build_cache(output: Path, max_file_size: int, *, ipv6_int: bool) -> BuildCache:
    """The build cache of ``output`` for sources compiled with ``ipv6_int``."""
    # An entry holds the text and the records of a source: a few times its size.
    options = b"" if ipv6_int else b"\0ipv6_int=false"
    return BuildCache(output / CACHE_DIRECTORY, 16 * max_file_size + (1 << 20), options)


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
    compile, ``errors`` say why), whether it was ``compiled`` here, and the build
    cache's entry that was ignored for it (``rejected``), if any."""

    source: Ready | None
    rejected: Rejected | None = None
    compiled: bool = False
    errors: tuple[DataError, ...] = ()


@dataclass
class CompiledSources:
    """The sources compiled so far, by name, and what says each is still current."""

    ready: dict[str, Ready] = field(default_factory=dict, repr=False)
    #: What the last :meth:`compile` read from the build cache, and the entries it
    #: ignored and why.
    loaded: list[str] = field(default_factory=list, repr=False)
    rejected: list[tuple[str, str]] = field(default_factory=list, repr=False)
    # name -> the stat of the file whose content is in ready, when safe to trust
    _stats: dict[str, Stat] = field(default_factory=dict, repr=False)
    # The build cache's index as last read or written here (None: not yet read)
    _index: dict[str, Seen] | None = field(default=None, repr=False)

    def forget(self) -> None:
        """Drop everything: what is kept was compiled with other settings."""
        self.ready.clear()
        self._stats.clear()
        self._index = None

    def digests(self, setup: Setup, names: list[str]) -> list[tuple[str, bytes]]:
        """The sha256 of each source, from memory or the index when the file's stat
        says it is unchanged, else read."""
        stats = {name: setup.zones.stat(name) for name in names}
        known = {
            name: self.ready[name].digest
            for name in names
            if name in self.ready
            and stats[name] is not None
            and self._stats.get(name) == stats[name]
        }
        known |= self._trusted(setup, [name for name in names if name not in known], stats)
        return [
            (name, known.get(name) or hashlib.sha256(setup.zones.read(name)).digest())
            for name in names
        ]

    def compile(self, setup: Setup, names: list[str]) -> tuple[list[Ready], list[str]]:
        """Every source compiled, and the names of those compiled here, not cached.

        What came from the build cache, and the entries it ignored, are left in
        :attr:`loaded` and :attr:`rejected`.
        """
        compiled: list[Ready] = []
        recompiled: list[str] = []
        errors: list[DataError] = []
        self.loaded = []
        self.rejected = []
        stats = {name: setup.zones.stat(name) for name in names}
        unsure = [
            name
            for name in names
            if name not in self.ready or stats[name] is None or self._stats.get(name) != stats[name]
        ]
        trusted = self._trusted(setup, unsure, stats)
        found = dict(zip(unsure, self._look_up(setup, unsure, trusted, stats), strict=True))
        for name in names:
            if name not in found:
                compiled.append(self.ready[name])
                continue
            got = found.pop(name)
            self._stats.pop(name, None)
            if got.rejected is not None:
                self.rejected.append((name, got.rejected.reason))
            if got.source is None:
                errors.extend(got.errors)
                continue
            src = got.source
            if got.compiled:
                recompiled.append(name)
            elif src is not self.ready.get(name):
                if setup.strict and src.warnings:
                    errors.extend(src.warnings)  # what compile_source(strict=True) raises
                    continue
                self.loaded.append(name)
            self.ready[name] = src
            self.remember(name, stats[name])
            compiled.append(src)
        for gone in set(self.ready) - set(names):
            del self.ready[gone]
            self._stats.pop(gone, None)
        if errors:
            raise DataErrors(tuple(errors))
        return compiled, recompiled

    def _trusted(
        self, setup: Setup, names: list[str], stats: dict[str, Stat | None]
    ) -> dict[str, bytes]:
        """The sha256 of each source whose stat is the one the build cache's index holds.

        Those files need not be read when the cache holds their compile: a new
        process after a one-line change reads one file, not all of them.
        """
        if setup.disk is None:
            return {}
        if self._index is None:
            self._index = setup.disk.load_stats()
        index = self._index
        return {
            name: index[name][1]
            for name in names
            if name in index and stats[name] is not None and index[name][0] == stats[name]
        }

    def _look_up(
        self,
        setup: Setup,
        names: list[str],
        trusted: dict[str, bytes],
        stats: dict[str, Stat | None],
    ) -> list[_Found]:
        """Each source from memory, else from the build cache, else compiled.

        Two threads: reading, hashing (of the sources and of the entries) and the
        C part of a compile release the GIL, so one thread's work runs while the
        other parses, and a changed file compiles while the others are read back.
        """
        disk = setup.disk

        def look_up(name: str) -> _Found:
            seen = stats[name]
            if name in trusted and seen is not None and disk is not None:
                # the size of the file whose stat the index holds (seen[2])
                known = disk.load(name, trusted[name], seen[2])
                if isinstance(known, Ready):
                    return _Found(known)
            content = setup.zones.read(name)
            digest = hashlib.sha256(content).digest()
            cached = self.ready.get(name)
            if cached is not None and cached.digest == digest:
                return _Found(cached)
            known = disk.load(name, digest, len(content)) if disk else None
            if isinstance(known, Ready):
                return _Found(known)
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
                return _Found(None, known, errors=exc.errors)
            # A read-only view, not a copy: bytes() would copy every record under the
            # GIL, which the other thread's compile is waiting for.
            blob = memoryview(packed.blob).toreadonly()
            records = cdb.Packed(blob, tuple(packed.serials), packed.count)
            ready = Ready(src.name, src.digest, src.pieces, records, src.warnings, src.lines)
            return _Found(ready, known, compiled=True)

        if len(names) < 2:  # nothing to share between two threads
            return [look_up(name) for name in names]
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(look_up, names))

    def save(self, disk: BuildCache | None, compiled: list[Ready], recompiled: list[str]) -> None:
        """Bring the build cache up to these sources, under the output directory's lock.

        Never raises: the build is done, and a cache that cannot be written costs
        the next process time, not this build.
        """
        if disk is None:
            return
        log = get_logger()
        for name, reason in self.rejected:
            log.warning("cache.ignored", file=name, reason=reason)
        synced = disk.sync(compiled, fresh=set(recompiled))
        if synced.error is not None:
            log.warning("cache.failed", error=synced.error)
        index = {
            name: (st, self.ready[name].digest)
            for name, st in self._stats.items()
            if name in self.ready
        }
        if index != self._index:
            error = disk.save_stats(index)
            if error is not None:
                log.warning("cache.failed", error=error)
            self._index = index

    def remember(self, name: str, stat: Stat | None) -> None:
        """Trust ``stat`` (taken before the read) next time, unless it is too recent.

        A write in the same clock tick as the stat could leave every field the same,
        so, like git's racy-clean rule, a file changed in the last two seconds is read
        and hashed again next time rather than trusted.
        """
        if stat is not None and max(stat[3], stat[4]) < time.time_ns() - RACY_NS:
            self._stats[name] = stat
