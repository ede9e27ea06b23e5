"""The build: a zones directory in, ``data`` and ``data.cdb`` out, or nothing at all.

Reads ``header`` and every ``zones.*``, compiles each one that changed since the
last build of this :class:`Builder` (the others come from its cache), stamps the
serial, and replaces ``data`` and ``data.cdb`` by renaming complete, fsynced temp
files. Any error — a bad line, an unreadable file, an unwritable directory — raises
before the first rename, so the output directory is left exactly as it was.

The :class:`Builder` holds the settings and runs the steps; each step is its own
module: reading the zones directory, which is not trusted
(:mod:`dnsmaster.master.zones`), compiling each source once
(:mod:`dnsmaster.master.compiling`), and writing the output directory
(:mod:`dnsmaster.master.output`). The output directory is written under its lock
(:func:`dnsmaster.fsutil.locked`): what a killed build left is swept first, and a
pair whose install was cut short is never taken for current.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Literal, overload

from dnsmaster import fsutil
from dnsmaster.core.catalog import CATALOG_SOURCE, catalog_lines, catalog_wire, inside, zones_in
from dnsmaster.core.makedata import (
    banner_of,
    built_from,
    check_source,
    compile_source,
    fingerprint,
    next_serial,
    previous_serial,
)
from dnsmaster.core.serial import newer
from dnsmaster.errors import BuildError, DataError
from dnsmaster.log import get_logger
from dnsmaster.master import output as out
from dnsmaster.master.archive import DEFAULT_KEEP
from dnsmaster.master.buildcache import INDEX, BuildCache, Index, Kept, Ready
from dnsmaster.master.compiling import CompiledSources, Looked, Setup, Source, build_cache
from dnsmaster.master.zones import DEFAULT_MAX_FILE_SIZE, ZonesDir

__all__ = ["BuildResult", "Builder", "Diagnosis"]

_nrecords, _lines = attrgetter("nrecords"), attrgetter("lines")
_warnings = attrgetter("warnings")


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What one build wrote."""

    serial: int
    sha256: str
    records: int
    lines: int
    sources: tuple[str, ...]
    recompiled: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    warnings: tuple[DataError, ...]
    seconds: float
    #: ``data`` as written, mapped read-only (the installed inode, which no later
    #: build writes into): the daemon pushes it without reading it back, and a
    #: process that does not look at it pays nothing for it.
    text: mmap.mmap = field(repr=False)
    #: The sources read from the build cache (:mod:`dnsmaster.master.buildcache`), not compiled.
    cached: tuple[str, ...] = ()
    _copy: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @property
    def data(self) -> bytes:
        """The text written to ``data``, as bytes (copied from :attr:`text` once, when
        first asked)."""
        if not self._copy:
            self._copy.append(self.text[:])
        return self._copy[0]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Every error and warning in a zones directory (``dnsmaster check``)."""

    sources: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    errors: tuple[DataError, ...]
    warnings: tuple[DataError, ...]
    lines: int


@dataclass
class Builder:
    """Builds one zones directory into one output directory, caching per source."""

    zones: Path
    output: Path
    strict: bool = False
    #: A ``6`` line's PTR under ip6.int too, as the IPv6 patch writes it (the
    #: configuration's ``ipv6_int``; see :func:`dnsmaster.core.makedata.check_source`).
    #: Set it before the first build: what is cached was compiled with it.
    ipv6_int: bool = True
    clock: Callable[[], float] = time.time
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    #: Take the output directory's lock for each write; False when the caller holds
    #: it already (the daemon holds it for its whole life).
    locking: bool = True
    #: How many builds the output directory keeps for rollback (``[daemon] keep``).
    keep: int = DEFAULT_KEEP
    #: Keep each source's compile in ``OUTPUT/.dnsmaster-cache/`` (see
    #: :mod:`dnsmaster.master.buildcache`), so that a new process compiles only what changed.
    cache: bool = True
    #: The catalog zone's name (the configuration's ``catalog``): when set, each build
    #: ends with a catalog zone listing every zone of the build
    #: (:mod:`dnsmaster.core.catalog`). "" for none.
    catalog: str = ""
    #: What this Builder compiled so far (in memory between builds).
    sources: CompiledSources = field(default_factory=CompiledSources, repr=False)
    # sha256 of a source -> the zones it has, so a rebuild reads only what changed
    _zones: dict[bytes, list[bytes]] = field(default_factory=dict, repr=False)
    # The last catalog made: its name, its members in build order, and the source
    _catalog_made: tuple[bytes, list[bytes], Ready] | None = field(default=None, repr=False)

    def use_ipv6_int(self, value: bool) -> None:
        """Set :attr:`ipv6_int` after builds (a SIGHUP's reload): what was compiled with
        the other value is forgotten, so no source keeps or lacks its ip6.int PTRs."""
        if value != self.ipv6_int:
            self.ipv6_int = value
            self.sources.forget()

    def zones_dir(self) -> ZonesDir:
        """The zones directory, read with this Builder's cap on each file."""
        return ZonesDir(self.zones, self.max_file_size)

    def build_cache(self) -> BuildCache | None:
        """The build cache on disk for these settings; None when it is off."""
        if not self.cache:
            return None
        return build_cache(self.output, ipv6_int=self.ipv6_int)

    def diagnose(self) -> Diagnosis:
        """Every error and warning of every source, without writing anything.

        A source the build cache holds is not checked again: only a clean source
        has an entry, and the entry keeps its warnings.
        """
        zones = self.zones_dir()
        names, skipped = zones.scan()
        errors: list[DataError] = []
        warnings: list[DataError] = []
        lines = 0
        index = self.sources.index(self._setup())
        kept = index.sources if index is not None else {}
        for name in names:
            content = zones.read(name)
            digest = hashlib.sha256(content).digest()
            known = kept.get(name)
            if known is not None and known.digest == digest:
                warnings.extend(known.warnings)
            else:
                found = check_source(name, content, digest=digest, ipv6_int=self.ipv6_int)
                errors.extend(found.errors)
                warnings.extend(found.warnings)
            lines += content.count(b"\n") + (not content.endswith(b"\n") and bool(content))
        return Diagnosis(tuple(names), tuple(skipped), tuple(errors), tuple(warnings), lines)

    def is_current(self) -> bool:
        """Whether ``data`` and ``data.cdb`` were built from the sources there now.

        Lets ``dnsmaster push`` skip a build that would change nothing but the
        serial (and so every SOA record on every slave).
        """
        if fsutil.interrupted_install(self.output):
            return False  # data.cdb may not be the one built from data
        written = built_from(out.head(self.output / "data"))
        return written == self.fingerprint() and (self.output / "data.cdb").is_file()

    def tidy(self) -> list[str]:
        """Remove what a killed build left in the output directory; the names.

        Under the lock, so a build running beside us keeps its temp files.
        """
        out.check_output(self.output)
        try:
            with self._locked():
                return fsutil.sweep_litter(self.output)
        except OSError as exc:
            raise out.cannot_write(self.output, exc) from None

    def fingerprint(self) -> str:
        """The fingerprint of the sources there now (what ``data``'s banner records)."""
        setup = self._setup()
        names, _ = setup.zones.scan()
        digests = self.sources.digests(setup, names)
        return fingerprint(digests, ipv6_int=self.ipv6_int, catalog=self.catalog)

    def previous_serial(self) -> int | None:
        """The serial of the build in the output directory (None: no data of ours)."""
        return previous_serial(out.head(self.output / "data"))

    def plan(self) -> bytes:
        """The ``data`` a build would write now, compiled in memory; nothing is written.

        What ``dnsmaster diff`` and the dry runs compare with the current build. The
        serial is the one a build would stamp now (after the data on disk's, by this
        Builder's clock); no lock is taken, and errors raise as :meth:`build`'s do.
        """
        setup = self._setup()
        names, _ = setup.zones.scan()
        compiled, _ = self.sources.compile(setup, names)
        serial = next_serial(int(self.clock()), self.previous_serial())
        written = self._with_catalog(compiled)
        index = self.sources.index(setup)
        built = out.assemble(written, serial, index, ipv6_int=self.ipv6_int, catalog=self.catalog)
        return built[0]

    @overload
    def build(
        self,
        *,
        force: Literal[True] = True,
        floor: int | None = None,
        changed: Collection[str] | None = None,
    ) -> BuildResult: ...
    @overload
    def build(
        self, *, force: bool, floor: int | None = None, changed: Collection[str] | None = None
    ) -> BuildResult | None: ...

    def build(
        self,
        *,
        force: bool = True,
        floor: int | None = None,
        changed: Collection[str] | None = None,
    ) -> BuildResult | None:
        """Build and write ``data`` and ``data.cdb``; raise and write nothing on error.

        Without ``force``, sources identical to those the data on disk was built from
        (same fingerprint, pair complete) write nothing and return None: a save that
        changes nothing must not bump every SOA serial on every slave. ``floor`` is a
        serial the new one must come after (the newest a slave reports, when the
        master's own ``data`` is gone). ``changed``: the names a watcher saw change
        since this Builder's last build, when it is sure it missed none; the other
        files this Builder compiled are then not statted (None: all are).
        """
        started = time.perf_counter()
        setup = self._setup()
        names, skipped = setup.zones.scan()
        looked = self.sources.look(setup, names, changed)
        # A cold build compiles and writes at once (see _stream); others compile first.
        streaming = not self.catalog and self.sources.streams(setup, looked)
        compiled: list[Source] = []
        recompiled: list[str] = []
        if not streaming:
            compiled, recompiled = self.sources.finish(setup, looked)
        written = self._with_catalog(compiled)
        out.check_output(self.output)
        try:
            with self._locked():
                # Whatever a killed build left is litter now that we hold the lock.
                fsutil.sweep_litter(self.output)
                head = out.head(self.output / "data")
                sources_id = self.sources.fingerprint(
                    looked, ipv6_int=self.ipv6_int, catalog=self.catalog
                )
                if not force and out.unchanged(
                    self.output,
                    (),
                    head,
                    ipv6_int=self.ipv6_int,
                    catalog=self.catalog,
                    sources_id=sources_id,
                ):
                    if streaming:  # to describe the pair there, its sources are needed
                        compiled, recompiled = self.sources.finish(setup, looked)
                        written = compiled
                    if self.sources.index(setup) is None or recompiled:
                        # the pair there is these sources': describe it for the next process
                        serial = previous_serial(head) or 0
                        self.sources.save(setup.disk, written, serial, len(head))
                    return None
                previous = previous_serial(head)
                if floor is not None and (previous is None or newer(floor, previous)):
                    previous = floor
                serial = next_serial(int(self.clock()), previous)
                if streaming:
                    pair, kept = self._stream(setup, looked, sources_id, serial)
                    compiled = written = list(kept)
                    recompiled = list(names)
                    self.sources.adopt(looked, kept)
                else:
                    try:
                        pair = self._write(written, serial, self.sources.index(setup), sources_id)
                    except out.StalePair as exc:
                        # The index lies about the pair: compile everything, as without it.
                        get_logger().warning("cache.ignored", file=INDEX, reason=exc.reason)
                        self.sources.forget()
                        bare = Setup(setup.zones, None, setup.strict, setup.ipv6_int)
                        compiled, recompiled = self.sources.compile(bare, names)
                        written = self._with_catalog(compiled)
                        pair = self._write(written, serial, None, sources_id)
                self._keep(setup, written, serial, pair, streamed=streaming)
        except MemoryError:
            raise BuildError(str(self.output), "out of memory while building") from None
        except OSError as exc:  # the lock or the sweep
            where = exc.filename or str(self.output)
            raise BuildError(str(where), f"cannot write: {fsutil.describe(exc)}") from None
        return BuildResult(
            serial=serial,
            sha256=pair.sha256,
            records=sum(map(_nrecords, written)),
            lines=sum(map(_lines, compiled)),
            sources=tuple(names),
            recompiled=tuple(recompiled),
            skipped=tuple(skipped),
            warnings=tuple(chain.from_iterable(map(_warnings, compiled))),
            seconds=time.perf_counter() - started,
            text=pair.text,
            cached=tuple(self.sources.loaded),
        )

    def _keep(
        self, setup: Setup, written: list[Source], serial: int, pair: out.Written, *, streamed: bool
    ) -> None:
        """The pair installed: kept for rollback, and described in the build cache."""
        # first: its link changes data's ctime, which the index records
        out.keep(self.output, count=self.keep, written=pair, serial=serial, now=self.clock())
        serials = None
        if pair.patches is not None:
            serials = (pair.stamps[1:], pair.patches)  # the banner's own serial aside
        saved = self.sources.save(
            setup.disk, written, serial, pair.banner, pair.pairs, serials=serials
        )
        if streamed and not saved:
            self.sources.forget()  # what was streamed is kept nowhere else

    def _write(
        self, written: list[Source], serial: int, index: Index | None, sources_id: str
    ) -> out.Written:
        return out.write_pair(
            self.output,
            written,
            serial,
            index,
            ipv6_int=self.ipv6_int,
            catalog=self.catalog,
            sources_id=sources_id,
        )

    def _stream(
        self, setup: Setup, looked: Looked, sources_id: str, serial: int
    ) -> tuple[out.Written, list[Kept]]:
        """Compile every source and write each as it comes (a cold build): neither
        ``data``'s text nor all the records are ever in memory at once."""
        kept: list[Kept] = []
        banner = banner_of(sources_id, serial)
        with contextlib.closing(self.sources.stream(setup, looked, kept)) as sources:
            pair = out.stream_pair(self.output, banner, serial, sources)
        return pair, kept

    def _with_catalog(self, compiled: list[Source]) -> list[Source]:
        """``compiled``, and the catalog zone of their zones after them when one is set.

        Raises BuildError when a zones file has the catalog zone, or a zone inside
        it: its records would be mixed into the catalog that secondaries read.
        """
        if not self.catalog:
            return compiled
        try:
            catalog = catalog_wire(self.catalog)
        except ValueError as exc:
            raise BuildError(self.catalog, f"catalog: {exc}") from None
        zones = {
            src.digest: self._zones.get(src.digest) or zones_in(self._pieces(src))
            for src in compiled
        }
        self._zones = zones  # only what this build has: a removed source is forgotten
        for src in compiled:
            for zone in zones[src.digest]:
                if inside(zone, catalog):
                    shown = zone.decode("ascii")
                    reason = f"has the zone {shown}, which is the catalog zone or inside it"
                    raise BuildError(str(self.zones / src.name), reason)
        members = [zone for src in compiled for zone in zones[src.digest]]
        made = self._catalog_made
        # Most builds add or drop no zone: the catalog of the last one is kept.
        if made is None or made[0] != catalog or made[1] != members:
            lines = catalog_lines(catalog, members)
            made = (catalog, members, Ready.of(compile_source(CATALOG_SOURCE, lines)))
            self._catalog_made = made
        return [*compiled, made[2]]

    def _pieces(self, src: Source) -> tuple[bytes | memoryview, ...]:
        """The text of ``src`` cut where the serial goes, from the last build's pair
        when it is kept there."""
        if isinstance(src, Ready):
            return src.pieces
        index = self.sources.index(self._setup())
        assert index is not None  # a Kept source comes with the index of its pair
        return out.pieces_of(src, index)

    def _setup(self) -> Setup:
        # Taken afresh for each call: the settings are public and may change between builds.
        return Setup(self.zones_dir(), self.build_cache(), self.strict, self.ipv6_int)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return fsutil.locked(self.output) if self.locking else contextlib.nullcontext()
