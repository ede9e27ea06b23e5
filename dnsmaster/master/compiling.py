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

import functools
import hashlib
import itertools
import operator
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, repeat
from operator import add
from pathlib import Path
from typing import TypeVar, cast

from dnsmaster.core import accel, cdb
from dnsmaster.core.compiler import PackedRecords, no_gc
from dnsmaster.core.makedata import compile_source, fingerprint_of
from dnsmaster.errors import BuildError, DataError, DataErrors
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

__all__ = [
    "KEEP_READ",
    "RACY_NS",
    "CompiledSources",
    "Looked",
    "Pending",
    "Setup",
    "Source",
    "build_cache",
]

#: A stat younger than this is not trusted next time (see CompiledSources.remember).
RACY_NS = 2_000_000_000

#: How many sources a streamed build compiles ahead of the one it writes: enough
#: that both threads always have one, few enough that memory holds a handful.
_AHEAD = 4

#: How much a task of a build's threads reads or compiles: files are taken in runs of
#: about this many bytes (a file counting :data:`_PER_FILE` more), so a directory of
#: 100,000 one-line files is a few hundred tasks, not 100,000.
_BATCH = 1 << 20
_PER_FILE = 2048

_T = TypeVar("_T")
_R = TypeVar("_R")

#: How much of the zones files a build keeps in memory between reading them (for
#: the fingerprint) and compiling them; the rest is read again (and hashed again).
KEEP_READ = 96 << 20

# What no stat equals (a missing entry, where None is a stat not taken)
_MISSING = object()

# Past this many files looked at, the build's order is made anew, not patched.
_PATCH_MAX = 256
_digest = operator.attrgetter("digest")

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
class Pending:
    """A source read and hashed, to be compiled: its ``content`` when kept (None:
    read again when compiled, and checked against ``digest``)."""

    name: str
    content: bytes | None = field(repr=False)
    digest: bytes


@dataclass(frozen=True, slots=True)
class Looked:
    """What :meth:`CompiledSources.look` found: the build's ``names``, those it
    looked at one by one (``unsure``, in order), every stat, the sources still to
    compile, and the errors so far (``late``: per name, reported in ``unsure``'s
    order)."""

    names: list[str]
    unsure: list[str]
    stats: dict[str, Stat | None]
    pending: dict[str, Pending]
    errors: list[DataError]
    late: dict[str, tuple[DataError, ...]]
    #: the names whose stat was taken (the others are as the last build had them)
    statted: list[str] = field(default_factory=list)

    def digests(self, ready: dict[str, Source]) -> list[tuple[str, bytes]]:
        """(name, sha256) of every source, in build order (the banner's fingerprint)."""
        found = {**ready, **self.pending}
        return list(zip(self.names, map(_digest, map(found.__getitem__, self.names)), strict=True))


class _Order:
    """The last build's names in order, the row of each, and what the banner's
    fingerprint hashes (each name, NUL, its sha256), patched in place where a digest
    changed: a one-file change at 100,000 files makes none of it again."""

    __slots__ = ("at", "blob", "names", "row", "unkept", "unpatched")

    def __init__(self, names: list[str], digests: Iterable[bytes]) -> None:
        self.names = names
        #: names whose source may have changed since the blob was patched, and since
        #: the last build's list was kept (a look that no build followed counts too)
        self.unpatched: set[str] = set()
        self.unkept: set[str] = set()
        with no_gc():
            self.row = dict(zip(names, range(len(names)), strict=True))
        encoded = list(map(str.encode, names, repeat("utf-8"), repeat("surrogateescape")))
        self.blob = bytearray(b"".join(map(b"\0".join, zip(encoded, digests, strict=True))))
        # where each one's digest ends
        self.at = list(accumulate(map(add, map(len, encoded), repeat(33))))

    def patch(self, name: str, digest: bytes) -> None:
        end = self.at[self.row[name]]
        self.blob[end - 32 : end] = digest

    def told(self, names: list[str], seen: list[str], changed: Collection[str]) -> list[str] | None:
        """Of ``names``, in order, those ``changed``, when they are these and the last
        look's (``seen``); else None."""
        if self.names != names or seen != names:
            return None
        return sorted(set(changed) & self.row.keys(), key=self.row.__getitem__)


def _synced(order: _Order | None, found: dict[str, Source | Pending], names: list[str]) -> _Order:
    """``order`` patched where the sources ``found`` changed since; a new one when
    the ``names`` are not its own or too many changed."""
    if order is None or order.names != names or len(order.unpatched) > _PATCH_MAX:
        return _Order(names, map(_digest, map(found.__getitem__, names)))
    for name in order.unpatched:
        order.patch(name, found[name].digest)
    order.unpatched.clear()
    return order


def _told(names: list[str], changed: Collection[str], held: dict[str, Stat]) -> list[str]:
    """Of ``names``, in order, those ``changed`` names and those without a stat
    ``held`` (by map and compress, no statement per name: there may be 100,000)."""
    stale = set(changed).union(compress(names, map(operator.not_, map(held.__contains__, names))))
    return list(compress(names, map(stale.__contains__, names)))


def _like(names: list[str], seen: list[Stat | None], held: dict[str, Stat]) -> list[bool]:
    """Whether the stat ``seen`` of each of ``names`` is the one ``held`` (a stat that
    could not be taken, None, is none). By map, not a statement per name: a new
    process finds 100,000 names in the index."""
    return list(map(operator.eq, seen, map(held.get, names, repeat(_MISSING))))


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
    # The last build's names and fingerprint's input, and its sources in order
    _order: _Order | None = field(default=None, repr=False)
    _last: list[Kept] = field(default_factory=list, repr=False)
    # The names of the last look (ready holds them and only them after it)
    _seen: list[str] = field(default_factory=list, repr=False)
    # The names whose stat in memory may differ from the index's (None: any may)
    _statted: list[str] | None = field(default=None, repr=False)

    def forget(self) -> None:
        """Drop everything: what is kept was compiled with other settings."""
        self.ready.clear()
        self._stats.clear()
        self._order, self._last, self._seen, self._statted = None, [], [], None
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
                if not self._stats:  # memory holds what the index says from now on
                    self._statted = []
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

    def fingerprint(self, looked: Looked, *, ipv6_int: bool, catalog: str = "") -> str:
        """The fingerprint of the sources :meth:`look` found (see
        :func:`~dnsmaster.core.makedata.fingerprint`): the last build's input,
        patched at the files whose stat was taken, while the names are the same."""
        order = _synced(self._order, {**self.ready, **looked.pending}, looked.names)
        if order is not self._order:  # the list kept with the other: made at the next save
            self._order, self._last = order, []
        return fingerprint_of(order.blob, ipv6_int=ipv6_int, catalog=catalog)

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
        return self.finish(setup, self.look(setup, names, changed))

    def look(
        self, setup: Setup, names: list[str], changed: Collection[str] | None = None
    ) -> Looked:
        """The first half of :meth:`compile`: each source from memory or the last
        build, else read and hashed, to be compiled by :meth:`finish` or
        :meth:`stream`. Every digest is then known (the banner's fingerprint), and
        nothing is compiled yet."""
        self.loaded = []
        self.rejected = []
        index = self.index(setup)
        on_disk = index.sources if index is not None else {}
        ready = self.ready
        mine = self._stats
        errors: list[DataError] = []
        stats, looked = self._stats_of(setup, names, changed)
        unsure = self._unsure(setup, looked, stats, errors)
        late: dict[str, tuple[DataError, ...]] = {}
        pending: dict[str, Pending] = {}
        room = KEEP_READ
        # Only what was read is handled one by one (one file, after a one-file
        # change); the rest is in ready already, taken as it is by finish().
        for name, (content, digest) in zip(unsure, _read_all(setup, unsure, stats), strict=True):
            mine.pop(name, None)
            src: Source | None = ready.get(name)
            if src is None or src.digest != digest:
                kept = on_disk.get(name)
                if kept is None or kept.digest != digest:
                    # Past the budget the text is read again to compile: a cold
                    # build of 10M lines would hold 500 MB of zones files here.
                    room -= len(content)
                    pending[name] = Pending(name, content if room >= 0 else None, digest)
                    continue
                src = kept
                self.loaded.append(name)
                if setup.strict and src.warnings:
                    late[name] = src.warnings  # what compile_source(strict=True) raises
                    continue
            ready[name] = src
            self.remember(name, stats[name])
        if len(ready) != len(names):
            for gone in set(ready) - set(names):
                del ready[gone]
                mine.pop(gone, None)
        self._seen = names
        if self._order is not None:
            self._order.unpatched.update(looked)
            self._order.unkept.update(looked)
        if self._statted is not None:  # (the others' stat in memory is the index's)
            self._statted = None if len(self._statted) > len(names) else self._statted + unsure
        return Looked(names, unsure, stats, pending, errors, late, looked)

    def finish(self, setup: Setup, looked: Looked) -> tuple[list[Source], list[str]]:
        """:meth:`compile` of what :meth:`look` found: the pending sources compiled in
        memory, two at a time."""
        pending = looked.pending
        todo = [pending[name] for name in looked.unsure if name in pending]
        late = dict(looked.late)
        recompiled: list[str] = []
        for job, got in zip(todo, _compile_all(setup, todo), strict=True):
            if isinstance(got, Ready):
                recompiled.append(job.name)
                self.ready[job.name] = got
                self.remember(job.name, looked.stats[job.name])
            else:
                late[job.name] = got
        errors = looked.errors + [e for name in looked.unsure for e in late.get(name, ())]
        if errors:
            raise DataErrors(tuple(errors))
        return _in_order(self.ready, self._order, self._last, looked), recompiled

    def streams(self, setup: Setup, looked: Looked) -> bool:
        """Whether :meth:`stream` may compile ``looked``: every source to compile (a
        cold build), the C compiler there to write the records as they come, and a
        build cache to describe them afterwards (what is streamed is not kept in
        memory)."""
        return (
            setup.disk is not None
            and len(looked.pending) == len(looked.names) > 1
            and accel.compiler() is not None
        )

    def stream(
        self, setup: Setup, looked: Looked, kept: list[Kept]
    ) -> Generator[Ready, None, None]:
        """Each pending source compiled, in build order, handed out as soon as it and
        those before it are (two compile at a time, a few ahead); ``kept`` gets what is
        left of each once written (:func:`~dnsmaster.master.buildcache.kept_of`). After
        a source that does not compile, none is handed out any more, the rest are
        checked, and DataErrors raises with every error.

        Nothing is remembered until :meth:`adopt`: the sources are Kept of a pair
        that is not installed yet.
        """
        todo = [looked.pending[name] for name in looked.names]
        errors: list[DataError] = list(looked.errors)
        sizes = [_size(job, looked.stats[job.name]) for job in todo]
        for got in _ordered(functools.partial(_compile_batch, setup), _batches(todo, sizes)):
            if isinstance(got, Ready) and not errors:
                yield got
                kept.append(kept_of(got))
            elif not isinstance(got, Ready):
                errors.extend(got)
        if errors:
            raise DataErrors(tuple(errors))

    def adopt(self, looked: Looked, kept: list[Kept]) -> None:
        """Keep what :meth:`stream` wrote, once its pair is installed (before
        :meth:`save`, whose index then trusts their stats)."""
        for src in kept:
            self.ready[src.name] = src
            self.remember(src.name, looked.stats[src.name])

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
        # Memory holds stats of the last look's names alone (ready, which it is part
        # of, holds them all): as many as there are names is one of each.
        told = None
        if self._order is not None and len(mine) == len(names):
            told = self._order.told(names, self._seen, changed)
        looked = _told(names, changed, mine) if told is None else told
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
        mine = self._stats  # memory first (only names that ready holds), then the index
        seen = list(map(stats.__getitem__, names))
        if mine:
            differ = list(map(operator.not_, _like(names, seen, mine)))
            names, seen = list(compress(names, differ)), list(compress(seen, differ))
        known = _like(names, seen, trusted)
        taken = list(compress(names, known))
        if taken:
            found = list(map(on_disk.__getitem__, taken))
            self.ready.update(zip(taken, found, strict=True))
            vouched = cast("list[Stat]", seen)  # those taken equal the index's: not None
            mine.update(zip(taken, compress(vouched, known), strict=True))
            self.loaded.extend(taken)
            if setup.strict:  # what a strict compile raises
                errors.extend(chain.from_iterable(src.warnings for src in found))
        return list(compress(names, map(operator.not_, known)))

    def save(
        self,
        disk: BuildCache | None,
        written: list[Source],
        serial: int,
        banner: int,
        pairs: bytes = b"",
        *,
        serials: tuple[list[int], list[int]] | None = None,
    ) -> bool:
        """Describe the pair just installed, made of ``written`` (``pairs``: its
        records' hashes and positions; ``serials``: where its serials are, when the
        build counted them), in the build cache's index, under the output
        directory's lock; from now on keep each source as a
        :class:`~dnsmaster.master.buildcache.Kept` of that pair.

        Never raises: the build is done, and a cache that cannot be written costs
        the next process time, not this build. Whether the index was written.
        """
        log = get_logger()
        for name, reason in self.rejected:
            log.warning("cache.ignored", file=name, reason=reason)
        self.rejected = []
        if disk is None:
            return False
        kept: list[Kept] = list(written)  # type: ignore[arg-type]  # Ready ones replaced below
        # After a one-file change one source was compiled: only it becomes a Kept
        # (found by map, not a statement per source: there may be 100,000).
        fresh = []
        for k in compress(range(len(kept)), map(isinstance, written, repeat(Ready))):
            kept[k] = kept_of(written[k])  # type: ignore[arg-type]
            fresh.append(kept[k])
        # the catalog's section is in the pair too, but is made anew by each build
        stats = self._stats  # only sources of this build: compile() drops the others
        disk.sweep()
        found = disk.save(
            kept,
            stats,
            serial=serial,
            banner=banner,
            pairs=pairs,
            last=self._index,
            serials=serials,
            statted=self._statted,
        )
        if isinstance(found, str):
            log.warning("cache.failed", error=found)
            return False
        if self._index is not None:
            self._index.close()
        self._index = found
        self._read = True
        for src in fresh:
            if src.name in self.ready:
                self.ready[src.name] = src
        self._last = kept[: len(self._order.names)] if self._order is not None else []
        if self._order is not None:
            self._order.unkept.clear()
        self._statted = []
        return True

    def remember(self, name: str, stat: Stat | None) -> None:
        """Trust ``stat`` (taken before the read) next time, unless it is too recent.

        A write in the same clock tick as the stat could leave every field the same,
        so, like git's racy-clean rule, a file changed in the last two seconds is read
        and hashed again next time rather than trusted.
        """
        if stat is not None and max(stat[3], stat[4]) < time.time_ns() - RACY_NS:
            self._stats[name] = stat


def _in_order(
    ready: dict[str, Source], order: _Order | None, last: list[Kept], looked: Looked
) -> list[Source]:
    """The sources of ``looked``, in order: the last build's (``last``, in ``order``)
    with the files looked at since swapped in, while the names are the same."""
    if (
        order is None
        or len(last) != len(order.names)
        or order.names != looked.names
        or len(order.unkept) > _PATCH_MAX
    ):
        return list(map(ready.__getitem__, looked.names))
    found: list[Source] = list(last)
    for name in order.unkept:
        found[order.row[name]] = ready[name]
    return found


def _read_all(
    setup: Setup, names: list[str], stats: dict[str, Stat | None]
) -> Iterator[tuple[bytes, bytes]]:
    """Each file's content and sha256, in order (two threads: both release the GIL),
    a few batches ahead of the caller, not all: each is dropped once looked at."""

    def read(batch: list[str]) -> list[tuple[bytes, bytes]]:
        found = []
        for name in batch:
            content = setup.zones.read(name)
            found.append((content, hashlib.sha256(content).digest()))
        return found

    sizes = [(st[2] if (st := stats[name]) is not None else 0) for name in names]
    return _ordered(read, _batches(names, sizes))


def _compile_all(setup: Setup, todo: list[Pending]) -> list[Ready | tuple[DataError, ...]]:
    """Each of ``todo`` compiled, two threads at a time: reading, hashing and the C
    part of a compile release the GIL, so one thread's work runs while the other
    parses."""
    sizes = [_size(job, None) for job in todo]
    return list(_ordered(functools.partial(_compile_batch, setup), _batches(todo, sizes)))


def _size(job: Pending, stat: Stat | None) -> int:
    """How big ``job``'s file is, as far as is known without reading it."""
    if job.content is not None:
        return len(job.content)
    return stat[2] if stat is not None else _BATCH


def _compile_batch(setup: Setup, batch: list[Pending]) -> list[Ready | tuple[DataError, ...]]:
    return [_compile_one(setup, job) for job in batch]


def _batches(items: list[_T], sizes: Sequence[int]) -> list[list[_T]]:
    """``items`` in runs of about :data:`_BATCH` bytes (``sizes``: each one's), so
    that 100,000 small files are not 100,000 tasks."""
    batches: list[list[_T]] = []
    batch: list[_T] = []
    room = _BATCH
    for item, size in zip(items, sizes, strict=True):
        batch.append(item)
        room -= size + _PER_FILE
        if room <= 0:
            batches.append(batch)
            batch, room = [], _BATCH
    if batch:
        batches.append(batch)
    return batches


def _ordered(work: Callable[[list[_T]], list[_R]], batches: list[list[_T]]) -> Iterator[_R]:
    """``work`` of each batch on two threads, a few batches ahead of the caller,
    each result handed out in order."""
    if len(batches) < 2:  # nothing to share between two threads
        for batch in batches:
            yield from work(batch)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        window: deque[Future[list[_R]]] = deque()
        todo = iter(batches)
        for batch in itertools.islice(todo, _AHEAD):
            window.append(pool.submit(work, batch))
        while window:
            got = window.popleft().result()
            following = next(todo, None)
            if following is not None:
                window.append(pool.submit(work, following))
            yield from got


def _compile_one(setup: Setup, job: Pending) -> Ready | tuple[DataError, ...]:
    """``job`` compiled, or its errors."""
    content = job.content
    if content is None:
        content = setup.zones.read(job.name)
        if hashlib.sha256(content).digest() != job.digest:
            path = str(setup.zones.path / job.name)
            raise BuildError(path, "changed while it was being built; build again")
    packed = PackedRecords()
    try:
        src = compile_source(
            job.name,
            content,
            strict=setup.strict,
            packed=packed,
            digest=job.digest,
            ipv6_int=setup.ipv6_int,
        )
    except DataErrors as exc:
        return exc.errors
    # A read-only view, not a copy: bytes() would copy every record under the
    # GIL, which the other thread's compile is waiting for.
    blob = memoryview(packed.blob).toreadonly()
    records = cdb.Packed(blob, tuple(packed.serials), packed.count)
    return Ready(src.name, src.digest, src.pieces, records, src.warnings, src.lines)
