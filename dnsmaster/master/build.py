"""The build: a zones directory in, ``data`` and ``data.cdb`` out, or nothing at all.

Reads ``header`` and every ``zones.*``, compiles each one that changed since the
last build of this :class:`Builder` (the others come from its cache), stamps the
serial, and replaces ``data`` and ``data.cdb`` by renaming complete, fsynced temp
files. Any error — a bad line, an unreadable file, an unwritable directory — raises
before the first rename, so the output directory is left exactly as it was.

The zones directory is not trusted: only regular files (or symlinks to them) are
read, never a FIFO or a device that would block or never end, each up to a size
cap, and a name with a control character is refused rather than written into a
``# zones.X:LINE`` comment of ``data``. The output directory is written under its
lock (:func:`dnsmaster.fsutil.locked`): what a killed build left is swept first,
and a pair whose install was cut short is never taken for current.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from dnsmaster import fsutil
from dnsmaster.core import cdb
from dnsmaster.core.compiler import PackedRecords
from dnsmaster.core.makedata import (
    assemble_text,
    built_from,
    check_source,
    compile_source,
    fingerprint,
    next_serial,
    previous_serial,
)
from dnsmaster.core.serial import newer
from dnsmaster.core.sources import source_order, why_skipped
from dnsmaster.core.text import has_control, printable
from dnsmaster.errors import ArchiveError, BuildError, CdbTooLarge, DataError, DataErrors
from dnsmaster.log import get_logger
from dnsmaster.master.archive import DEFAULT_KEEP, Archive
from dnsmaster.master.buildcache import DIRECTORY as CACHE_DIRECTORY
from dnsmaster.master.buildcache import BuildCache, Ready, Rejected, Seen

__all__ = ["DEFAULT_MAX_FILE_SIZE", "BuildResult", "Builder", "Diagnosis", "list_sources"]

_RACY_NS = 2_000_000_000

#: The largest zones file read: far above any real one (1M lines are about 50 MB),
#: far below what would exhaust memory.
DEFAULT_MAX_FILE_SIZE = 256 * 1024 * 1024


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
    #: The text written to ``data``, so the daemon can push it without reading it back.
    data: bytes = field(repr=False)
    #: The sources read from the build cache (:mod:`dnsmaster.master.buildcache`), not compiled.
    cached: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Every error and warning in a zones directory (``dnsmaster check``)."""

    sources: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    errors: tuple[DataError, ...]
    warnings: tuple[DataError, ...]
    lines: int


@dataclass(frozen=True, slots=True)
class _Found:
    """One source as Builder._look_up found it: ``source`` (None: it does not compile,
    ``errors`` say why), whether it was ``compiled`` here, and the build cache's
    entry that was ignored for it (``rejected``), if any."""

    source: Ready | None
    rejected: Rejected | None = None
    compiled: bool = False
    errors: tuple[DataError, ...] = ()


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
    _cache: dict[str, Ready] = field(default_factory=dict, repr=False)
    # What the last _compile read from the build cache, and the entries it ignored and why
    _loaded: list[str] = field(default_factory=list, repr=False)
    _rejected: list[tuple[str, str]] = field(default_factory=list, repr=False)
    # name -> the stat of the file whose content is cached, when safe to trust (see _fresh)
    _stats: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    # The build cache's index as this Builder last read or wrote it (None: not yet read)
    _index: dict[str, Seen] | None = field(default=None, repr=False)

    def use_ipv6_int(self, value: bool) -> None:
        """Set :attr:`ipv6_int` after builds (a SIGHUP's reload): what was compiled with
        the other value is forgotten, so no source keeps or lacks its ip6.int PTRs."""
        if value != self.ipv6_int:
            self.ipv6_int = value
            self._cache.clear()
            self._stats.clear()
            self._index = None

    def diagnose(self) -> Diagnosis:
        """Every error and warning of every source, without writing anything.

        A source the build cache holds is not checked again: only a clean source
        has an entry, and the entry keeps its warnings.
        """
        names, skipped = self._scan()
        errors: list[DataError] = []
        warnings: list[DataError] = []
        lines = 0
        disk = self._disk()
        for name in names:
            content = self._read(name)
            digest = hashlib.sha256(content).digest()
            known = disk.load(name, digest, len(content)) if disk else None
            if isinstance(known, Ready):
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
        written = built_from(_head(self.output / "data"))
        return written == self.fingerprint() and (self.output / "data.cdb").is_file()

    def tidy(self) -> list[str]:
        """Remove what a killed build left in the output directory; the names.

        Under the lock, so a build running beside us keeps its temp files.
        """
        self._check_output()
        try:
            with self._locked():
                return fsutil.sweep_litter(self.output)
        except OSError as exc:
            raise self._cannot_write(exc) from None

    def fingerprint(self) -> str:
        """The fingerprint of the sources there now (what ``data``'s banner records)."""
        names, _ = self._scan()
        stats = {name: self._stat(name) for name in names}
        known = {
            name: self._cache[name].digest
            for name in names
            if name in self._cache
            and stats[name] is not None
            and self._stats.get(name) == stats[name]
        }
        known |= self._trusted([name for name in names if name not in known], stats)
        return fingerprint(
            [
                (name, known.get(name) or hashlib.sha256(self._read(name)).digest())
                for name in names
            ],
            ipv6_int=self.ipv6_int,
        )

    def previous_serial(self) -> int | None:
        """The serial of the build in the output directory (None: no data of ours)."""
        return previous_serial(_head(self.output / "data"))

    def plan(self) -> bytes:
        """The ``data`` a build would write now, compiled in memory; nothing is written.

        What ``dnsmaster diff`` and the dry runs compare with the current build. The
        serial is the one a build would stamp now (after the data on disk's, by this
        Builder's clock); no lock is taken, and errors raise as :meth:`build`'s do.
        """
        names, _ = self._scan()
        compiled, _ = self._compile(names)
        serial = next_serial(int(self.clock()), self.previous_serial())
        return assemble_text(compiled, serial, ipv6_int=self.ipv6_int)[0]

    @overload
    def build(self, *, force: Literal[True] = True, floor: int | None = None) -> BuildResult: ...
    @overload
    def build(self, *, force: bool, floor: int | None = None) -> BuildResult | None: ...

    def build(self, *, force: bool = True, floor: int | None = None) -> BuildResult | None:
        """Build and write ``data`` and ``data.cdb``; raise and write nothing on error.

        Without ``force``, sources identical to those the data on disk was built from
        (same fingerprint, pair complete) write nothing and return None: a save that
        changes nothing must not bump every SOA serial on every slave. ``floor`` is a
        serial the new one must come after (the newest a slave reports, when the
        master's own ``data`` is gone).
        """
        started = time.perf_counter()
        names, skipped = self._scan()
        compiled, recompiled = self._compile(names)
        data_path = self.output / "data"
        self._check_output()
        try:
            with self._locked():
                # Whatever a killed build left is litter now that we hold the lock.
                fsutil.sweep_litter(self.output)
                head = _head(data_path)
                if not force and self._unchanged(compiled, head):
                    self._save(compiled, recompiled)
                    return None
                previous = previous_serial(head)
                if floor is not None and (previous is None or newer(floor, previous)):
                    previous = floor
                serial = next_serial(int(self.clock()), previous)
                data, stamps, sha256 = self._write(compiled, serial)
                self._keep(data, serial, sha256, stamps)
                self._save(compiled, recompiled)
        except MemoryError:
            raise BuildError(str(self.output), "out of memory while building") from None
        except OSError as exc:  # the lock or the sweep
            where = exc.filename or str(self.output)
            raise BuildError(str(where), f"cannot write: {fsutil.describe(exc)}") from None
        return BuildResult(
            serial=serial,
            sha256=sha256,
            records=sum(src.records.count for src in compiled),
            lines=sum(src.lines for src in compiled),
            sources=tuple(names),
            recompiled=tuple(recompiled),
            skipped=tuple(skipped),
            warnings=tuple(w for src in compiled for w in src.warnings),
            seconds=time.perf_counter() - started,
            data=data,
            cached=tuple(self._loaded),
        )

    def _keep(self, data: bytes, serial: int, sha256: str, stamps: list[int]) -> None:
        """Keep the installed build for rollback; a failure is logged, never fatal.

        The build is on disk already: losing a rollback point must not cost the
        operator the build itself (nor the push that follows it).
        """
        try:
            archive = Archive(self.output, self.keep)
            # data is installed, fsynced and never written in place: link, do not copy
            archive.add(data, serial, sha256, stamps, self.clock(), source=self.output / "data")
        except ArchiveError as exc:
            get_logger().warning("archive.failed", path=exc.path, error=exc.reason, serial=serial)

    def _scan(self) -> tuple[list[str], list[tuple[str, str]]]:
        try:
            names, skipped = list_sources(self.zones)
        except FileNotFoundError:
            raise BuildError(str(self.zones), "zones directory does not exist") from None
        except NotADirectoryError:
            raise BuildError(str(self.zones), "is not a directory") from None
        except OSError as exc:
            raise BuildError(str(self.zones), f"cannot list: {fsutil.describe(exc)}") from None
        for name in names:
            if has_control(name):
                # It would be written into a "# zones.X:LINE" comment of data, where a
                # newline starts a line of its own: a record nobody wrote.
                raise BuildError(
                    printable(str(self.zones / name)),
                    "file name contains a control character; rename the file",
                )
        return names, skipped

    def _compile(self, names: list[str]) -> tuple[list[Ready], list[str]]:
        """Every source compiled, and the names of those compiled here, not cached.

        A source comes from memory when it is unchanged since this Builder last
        compiled it, else from the build cache when that holds its content, else
        from the compiler. What came from the build cache, and the entries it
        ignored, are left in ``_loaded`` and ``_rejected``.
        """
        compiled: list[Ready] = []
        recompiled: list[str] = []
        errors: list[DataError] = []
        self._loaded = []
        self._rejected = []
        stats = {name: self._stat(name) for name in names}
        unsure = [
            name
            for name in names
            if name not in self._cache
            or stats[name] is None
            or self._stats.get(name) != stats[name]
        ]
        trusted = self._trusted(unsure, stats)
        found = dict(zip(unsure, self._look_up(unsure, trusted, stats), strict=True))
        for name in names:
            if name not in found:
                compiled.append(self._cache[name])
                continue
            got = found.pop(name)
            self._stats.pop(name, None)
            if got.rejected is not None:
                self._rejected.append((name, got.rejected.reason))
            if got.source is None:
                errors.extend(got.errors)
                continue
            src = got.source
            if got.compiled:
                recompiled.append(name)
            elif src is not self._cache.get(name):
                if self.strict and src.warnings:
                    errors.extend(src.warnings)  # what compile_source(strict=True) raises
                    continue
                self._loaded.append(name)
            self._cache[name] = src
            self._remember(name, stats[name])
            compiled.append(src)
        for gone in set(self._cache) - set(names):
            del self._cache[gone]
            self._stats.pop(gone, None)
        if errors:
            raise DataErrors(tuple(errors))
        return compiled, recompiled

    def _trusted(
        self, names: list[str], stats: dict[str, tuple[int, ...] | None]
    ) -> dict[str, bytes]:
        """The sha256 of each source whose stat is the one the build cache's index holds.

        Those files need not be read when the cache holds their compile: a new
        process after a one-line change reads one file, not all of them.
        """
        disk = self._disk()
        if disk is None:
            return {}
        if self._index is None:
            self._index = disk.load_stats()
        index = self._index
        return {
            name: index[name][1]
            for name in names
            if name in index and stats[name] is not None and index[name][0] == stats[name]
        }

    def _look_up(
        self,
        names: list[str],
        trusted: dict[str, bytes],
        stats: dict[str, tuple[int, ...] | None],
    ) -> list[_Found]:
        """Each source from memory, else from the build cache, else compiled.

        Two threads: reading, hashing (of the sources and of the entries) and the
        C part of a compile release the GIL, so one thread's work runs while the
        other parses, and a changed file compiles while the others are read back.
        """
        disk = self._disk()

        def look_up(name: str) -> _Found:
            seen = stats[name]
            if name in trusted and seen is not None and disk is not None:
                # the size of the file whose stat the index holds (seen[2])
                known = disk.load(name, trusted[name], seen[2])
                if isinstance(known, Ready):
                    return _Found(known)
            content = self._read(name)
            digest = hashlib.sha256(content).digest()
            cached = self._cache.get(name)
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
                    strict=self.strict,
                    packed=packed,
                    digest=digest,
                    ipv6_int=self.ipv6_int,
                )
            except DataErrors as exc:
                return _Found(None, known, errors=exc.errors)
            records = cdb.Packed(bytes(packed.blob), tuple(packed.serials), packed.count)
            ready = Ready(src.name, src.digest, src.pieces, records, src.warnings, src.lines)
            return _Found(ready, known, compiled=True)

        if len(names) < 2:  # nothing to share between two threads
            return [look_up(name) for name in names]
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(look_up, names))

    def _disk(self) -> BuildCache | None:
        if not self.cache:
            return None
        # An entry holds the text and the records of a source: a few times its size.
        options = b"" if self.ipv6_int else b"\0ipv6_int=false"
        return BuildCache(
            self.output / CACHE_DIRECTORY, 16 * self.max_file_size + (1 << 20), options
        )

    def _save(self, compiled: list[Ready], recompiled: list[str]) -> None:
        """Bring the build cache up to these sources, under the output directory's lock.

        Never raises: the build is done, and a cache that cannot be written costs
        the next process time, not this build.
        """
        disk = self._disk()
        if disk is None:
            return
        log = get_logger()
        for name, reason in self._rejected:
            log.warning("cache.ignored", file=name, reason=reason)
        synced = disk.sync(compiled, fresh=set(recompiled))
        if synced.error is not None:
            log.warning("cache.failed", error=synced.error)
        index = {
            name: (st, self._cache[name].digest)
            for name, st in self._stats.items()
            if name in self._cache
        }
        if index != self._index:
            error = disk.save_stats(index)
            if error is not None:
                log.warning("cache.failed", error=error)
            self._index = index

    def _stat(self, name: str) -> tuple[int, ...] | None:
        """What says a file is unchanged without reading it: inode, size, mtime, ctime."""
        try:
            st = os.stat(self.zones / name)
        except OSError:
            return None  # _read reports it
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _remember(self, name: str, stat: tuple[int, ...] | None) -> None:
        """Trust ``stat`` (taken before the read) next time, unless it is too recent.

        A write in the same clock tick as the stat could leave every field the same,
        so, like git's racy-clean rule, a file changed in the last two seconds is read
        and hashed again next time rather than trusted.
        """
        if stat is not None and max(stat[3], stat[4]) < time.time_ns() - _RACY_NS:
            self._stats[name] = stat

    def _read(self, name: str) -> bytes:
        """The content of a regular file, whatever else sits under its name.

        A FIFO would block the open and then the read for ever, /dev/zero would
        never end: the open does not block (O_NONBLOCK), the descriptor is checked
        for a regular file, and the read stops at the cap.
        """
        path = self.zones / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise BuildError(str(path), f"cannot read: {fsutil.describe(exc)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(
                    str(path),
                    f"not a regular file ({_kind(st.st_mode)}); "
                    "zones files must be plain files or symlinks to them",
                )
            if st.st_size > self.max_file_size:
                raise BuildError(str(path), self._too_large())
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > self.max_file_size:  # it grew while we read it
                    raise BuildError(str(path), self._too_large())
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise BuildError(str(path), f"cannot read: {fsutil.describe(exc)}") from None
        finally:
            os.close(fd)

    def _too_large(self) -> str:
        return f"larger than the cap of {self.max_file_size} bytes for one zones file"

    def _check_output(self) -> None:
        if not self.output.is_dir():
            reason = "does not exist" if not self.output.exists() else "is not a directory"
            raise BuildError(str(self.output), f"output directory {reason}")
        if not os.access(self.output, os.W_OK | os.X_OK):
            raise BuildError(str(self.output), "output directory is not writable")

    def _write(self, compiled: list[Ready], serial: int) -> tuple[bytes, list[int], str]:
        """Stage both files, then install them as a pair.

        Returns ``data``, the offsets of its serials, and its sha256 in hex. A thread
        joins ``data`` and hashes, writes and fsyncs it while this one writes the cdb
        from the sources' packed records: but for the join, both spend their time in
        hashlib, the C writer and system calls, which release the GIL, so on two
        cores they overlap.
        """
        data_final = self.output / "data"
        cdb_final = self.output / "data.cdb"
        records = [src.records for src in compiled]

        def stage_data() -> tuple[bytes, list[int], Path, str]:
            data, stamps = assemble_text(compiled, serial, ipv6_int=self.ipv6_int)
            sha256 = hashlib.sha256(data).hexdigest()
            tmp = fsutil.stage(data_final, lambda fd: fsutil.write_all(fd, data))
            return data, stamps, tmp, sha256

        failure: BaseException | None = None
        data_tmp: Path | None = None
        cdb_tmp: Path | None = None
        data = b""
        stamps: list[int] = []
        sha256 = ""
        with ThreadPoolExecutor(max_workers=1) as pool:
            data_job = pool.submit(stage_data)
            try:
                cdb_tmp = fsutil.stage(cdb_final, lambda fd: cdb.write_packed(fd, records, serial))
            except OSError as exc:
                failure = self._cannot_write(exc)
            except CdbTooLarge as exc:
                failure = BuildError(str(cdb_final), str(exc))
            except BaseException as exc:  # out of memory: the data thread's file goes too
                failure = exc
            try:
                data, stamps, data_tmp, sha256 = data_job.result()
            except OSError as exc:
                # data is written first in spirit: its error is the one to report
                failure = self._cannot_write(exc)
            except BaseException as exc:  # out of memory joining data
                failure = exc
        staged = [tmp for tmp in (data_tmp, cdb_tmp) if tmp is not None]
        if failure is not None or data_tmp is None or cdb_tmp is None:
            fsutil.discard(staged)
            raise failure or BuildError(str(self.output), "cannot write")
        try:
            # One pair, under a journal: a crash between the two renames is seen by
            # the next run (is_current is then false, and it builds both again).
            fsutil.install_pair(self.output, data_tmp, cdb_tmp, sha256)
        except OSError as exc:
            fsutil.discard(staged)
            raise self._cannot_write(exc) from None
        return data, stamps, sha256

    def _unchanged(self, compiled: list[Ready], head: bytes) -> bool:
        sources = fingerprint([(src.name, src.digest) for src in compiled], ipv6_int=self.ipv6_int)
        return (
            built_from(head) == sources
            and not fsutil.interrupted_install(self.output)
            and (self.output / "data.cdb").is_file()
        )

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return fsutil.locked(self.output) if self.locking else contextlib.nullcontext()

    def _cannot_write(self, exc: OSError) -> BuildError:
        where = exc.filename or str(self.output)
        return BuildError(str(where), f"cannot write: {fsutil.describe(exc)}")


def list_sources(zones: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The sources in ``zones`` in build order, and the look-alikes skipped with why
    (``zones.x~``: an editor backup), by name.

    What build, check and doctor count, so that they never disagree. Raises OSError
    when the directory cannot be listed.
    """
    with os.scandir(zones) as entries:
        names = [e.name for e in entries if not e.is_dir()]
    skipped = []
    for name in sorted(names):
        reason = why_skipped(name)
        # Only what looks meant as data is worth a word; the rest is simply not ours.
        if reason is not None and (name.startswith((".", "#")) or "zones." in name):
            skipped.append((name, reason))
    return source_order(names), skipped


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a plain file"


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.readline(200)
    except OSError:
        return b""
