"""The master's own kept builds: the last N ``data`` texts, for rollback and deltas.

Each build is kept as two files in ``OUTPUT/.dnsmaster-builds/``: ``NAME.build``,
the exact ``data`` text the build wrote, and ``NAME.meta``, one line
(``dnsmaster-build 1 {json}``: serial, sha256, build time, stamp offsets). The
build's own ``data`` is complete, fsynced and never written in place again (the
next build renames a new file over it), so ``NAME.build`` is a second hard link to
it when the caller names it: keeping a build costs no copy of the data. Otherwise
the bytes are written. The ``.meta`` file is written last, whole (temp file, fsync,
rename, directory fsync), by the one writer of the output directory, which holds
its lock (:func:`dnsmaster.fsutil.locked`); a build counts as kept once its
``.meta`` exists, so readers need no lock. The directory is a subdirectory, so
:func:`dnsmaster.fsutil.sweep_litter` (which removes only files) never touches it;
this module sweeps its own temp files and orphans.

A kept build's bytes are checked against its sha256 every time they are read: a
corrupt file reads as missing (None, or an error naming it), never as wrong data.
``render`` gives a kept build a new serial exactly where make-data wrote the old
one (:attr:`dnsmaster.core.makedata.Assembled.stamps`), so a rollback goes out
with a serial above what every slave serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core.serial import MODULUS
from dnsmaster.errors import ArchiveError

__all__ = ["DEFAULT_KEEP", "DIRECTORY", "Archive", "Kept"]

#: The subdirectory of the output directory holding the kept builds.
DIRECTORY = ".dnsmaster-builds"
#: How many builds are kept when the config does not say.
DEFAULT_KEEP = 10

_MAGIC = b"dnsmaster-build 1 "
# SEQUENCE-SERIAL-SHA256.build: the sequence orders builds (serials wrap, clocks
# jump), the sha256 finds one without reading every file.
_NAME = re.compile(r"([0-9]{10})-([0-9]{1,10})-([0-9a-f]{64})\.meta")
_TEMP = re.compile(r"\..*\.tmp", re.DOTALL)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BACK = re.compile(r"-([0-9]{1,6})")
_SERIAL = re.compile(r"[0-9]{1,10}")
_OFFSET = re.compile(r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})$")


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept build: what ``dnsmaster rollback --list`` shows of it."""

    serial: int
    sha256: str
    #: Unix time of the build.
    built: float
    #: Size of ``data`` in bytes, and its number of lines.
    size: int
    lines: int
    #: Orders the kept builds: higher is newer.
    sequence: int
    path: Path

    @property
    def stamp(self) -> str:
        """The build time as ``dnsmaster rollback --to`` takes it (UTC, to the second)."""
        return datetime.fromtimestamp(self.built, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Archive:
    """The kept builds of one output directory, newest ``keep`` of them."""

    def __init__(self, output: Path, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.output = output
        self.keep = keep
        self.directory = output / DIRECTORY

    def add(
        self,
        data: bytes | mmap.mmap,
        serial: int,
        sha256: str,
        stamps: Sequence[int],
        built: float,
        *,
        source: Path | None = None,
        lines: int | None = None,
    ) -> Kept:
        """Keep one build, then prune to the newest ``keep``; the caller holds the lock.

        ``stamps`` are the offsets of the serial's digits in ``data``; each is
        checked, so a kept build can always be restamped. ``source``: a file holding
        exactly ``data`` (the installed ``data``), linked rather than copied. The
        sha256 is the caller's, not computed again here: every read checks it, so a
        wrong one makes the entry unreadable, never wrong. ``lines``: data's line
        count, when the caller counted it (then ``data`` may be an mmap).
        """
        serial %= MODULUS
        text = str(serial).encode()
        for at in stamps:
            if data[at : at + len(text)] != text:
                raise ArchiveError(
                    str(self.directory), f"serial {serial}: no serial at offset {at} of data"
                )
        if not _SHA256.fullmatch(sha256):
            raise ArchiveError(str(self.directory), f"serial {serial}: not a sha256: {sha256!r}")
        try:
            self.directory.mkdir(mode=0o755, exist_ok=True)
            self._sweep()
            existing = self._names()
            sequence = max((seq for seq, _ in existing), default=0) + 1
            if lines is None:
                lines = bytes(data).count(b"\n")  # no copy of a bytes
            meta = _Meta(serial, sha256, built, len(data), lines, tuple(stamps))
            name = f"{sequence:010d}-{serial}-{sha256}"
            body = self.directory / f"{name}.build"
            if not (source is not None and _link(source, body, len(data))):
                fsutil.publish(
                    [(fsutil.stage(body, lambda fd: fsutil.write_all(fd, memoryview(data))), body)]
                )
            fields = {
                "serial": meta.serial,
                "sha256": meta.sha256,
                "built": meta.built,
                "size": meta.size,
                "lines": meta.lines,
                "stamps": list(meta.stamps),
            }
            line = _MAGIC + json.dumps(fields, separators=(",", ":")).encode() + b"\n"
            final = self.directory / f"{name}.meta"
            # publish fsyncs the directory: the link (or the body) is durable too
            fsutil.publish([(fsutil.stage(final, lambda fd: fsutil.write_all(fd, line)), final)])
            self._prune([n for _, n in existing] + [final.name])
        except OSError as exc:
            where = exc.filename or str(self.directory)
            raise ArchiveError(str(where), f"cannot keep build: {fsutil.describe(exc)}") from None
        return _kept(meta, sequence, body)

    def entries(self) -> list[Kept]:
        """Every readable kept build, newest first (a file with a bad header is left out)."""
        found = []
        for sequence, name in sorted(self._names(), reverse=True):
            meta = self._header(self.directory / name)
            if meta is None:
                continue
            found.append(_kept(meta, sequence, self.directory / _body(name)))
        return found

    def by_sha256(self, sha256: str) -> bytes | None:
        """The exact ``data`` of the kept build with this sha256, or None.

        None too when the file is damaged: its bytes are hashed before they are returned.
        """
        found = self._load_sha256(sha256)
        return None if found is None else found[0]

    def render(self, kept: Kept, serial: int) -> bytes:
        """``kept``'s data with ``serial`` written where make-data wrote the old one."""
        loaded = self._load_sha256(kept.sha256)
        if loaded is None:
            raise ArchiveError(str(kept.path), "kept build is missing or damaged")
        data, meta = loaded
        old = str(meta.serial).encode()
        new = str(serial % MODULUS).encode()
        parts = []
        start = 0
        for at in sorted(meta.stamps):
            if data[at : at + len(old)] != old:
                raise ArchiveError(str(kept.path), f"no serial at offset {at} of kept data")
            parts.append(data[start:at])
            parts.append(new)
            start = at + len(old)
        parts.append(data[start:])
        return b"".join(parts)

    def select(self, spec: str) -> Kept:
        """The kept build ``spec`` names.

        ``-N``: N builds back from the newest kept one (``-1``: the one before it,
        ``-0`` the newest itself). ``SERIAL``: the build with that serial. ``STAMP``:
        an ISO date and time (``2026-11-26T01:30``, UTC unless it carries an offset
        such as ``+01:00``; or a date alone, meaning its end): the newest build
        made at or before it.
        """
        kept = self.entries()
        spec = spec.strip()
        if not kept:
            raise ArchiveError(str(self.directory), "no builds are kept yet")
        if m := _BACK.fullmatch(spec):
            back = int(m.group(1))
            if back < len(kept):
                return kept[back]
            raise ArchiveError(
                str(self.directory),
                f"--to {spec}: only {len(kept)} builds are kept, "
                f"so -{len(kept) - 1} is the oldest; {_kept_list(kept)}",
            )
        if _SERIAL.fullmatch(spec):
            serial = int(spec)
            for entry in kept:
                if entry.serial == serial:
                    return entry
            raise ArchiveError(
                str(self.directory),
                f"--to {spec}: no kept build has that serial; {_kept_list(kept)}",
            )
        moment = _moment(spec)
        if moment is None:
            raise ArchiveError(
                str(self.directory),
                f"--to {spec!r}: not a serial, a date-time (2026-11-26T01:30) or -N",
            )
        for entry in kept:
            if entry.built <= moment:
                return entry
        raise ArchiveError(
            str(self.directory), f"--to {spec}: no kept build is that old; {_kept_list(kept)}"
        )

    def _names(self) -> list[tuple[int, str]]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            where = str(self.directory)
            raise ArchiveError(where, f"cannot list: {fsutil.describe(exc)}") from None
        found = []
        for name in names:
            if m := _NAME.fullmatch(name):
                found.append((int(m.group(1)), name))
        return found

    def _load_sha256(self, sha256: str) -> tuple[bytes, _Meta] | None:
        if not _SHA256.fullmatch(sha256):
            return None
        for _, name in sorted(self._names(), reverse=True):
            if not name.endswith(f"-{sha256}.meta"):
                continue
            loaded = self._load(self.directory / name)
            if loaded is not None and loaded[1].sha256 == sha256:
                return loaded
        return None

    def _load(self, path: Path) -> tuple[bytes, _Meta] | None:
        """A kept build's data and facts from its ``.meta`` path; None if damaged."""
        meta = self._header(path)
        if meta is None:
            return None
        try:
            data = (path.parent / _body(path.name)).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != meta.sha256:
            return None
        return data, meta

    def _header(self, path: Path) -> _Meta | None:
        try:
            with path.open("rb") as f:
                line = f.readline(64 * 1024 * 1024)
        except OSError:
            return None
        return _parse(line.rstrip(b"\n"))

    def _prune(self, names: list[str]) -> None:
        for name in sorted(names, reverse=True)[self.keep :]:
            # The .meta first: a build without one is an orphan, never a kept build.
            for gone in (name, _body(name)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / gone)
        fsutil.fsync_directory(self.directory)

    def _sweep(self) -> None:
        """Temp files of a killed writer, and a ``.build`` whose ``.meta`` never came.

        Safe because the caller holds the lock: no writer is half-way.
        """
        names = set(os.listdir(self.directory))
        for name in names:
            orphan = name.endswith(".build") and name[: -len(".build")] + ".meta" not in names
            if _TEMP.fullmatch(name) or orphan:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.directory / name)


@dataclass(frozen=True, slots=True)
class _Meta:
    """A kept file's header line."""

    serial: int
    sha256: str
    built: float
    size: int
    lines: int
    stamps: tuple[int, ...]


def _parse(line: bytes) -> _Meta | None:
    """The header's facts, or None when it is not one this module wrote."""
    if not line.startswith(_MAGIC):
        return None
    try:
        meta = json.loads(line[len(_MAGIC) :])
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    serial, sha256, built = meta.get("serial"), meta.get("sha256"), meta.get("built")
    size, lines, stamps = meta.get("size"), meta.get("lines"), meta.get("stamps")
    if not (type(serial) is int and type(size) is int and type(lines) is int):
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        return None
    if not isinstance(built, int | float) or isinstance(built, bool):
        return None
    if not isinstance(stamps, list):
        return None
    if not all(type(s) is int for s in stamps):
        return None
    return _Meta(serial, sha256, float(built), size, lines, tuple(stamps))


def _moment(spec: str) -> float | None:
    """A ``--to`` date-time as a Unix time, at the end of the precision given.

    ``2026-11-26`` means the end of that day, ``2026-11-26T01:30`` the end of that
    minute: "the build I had at 01:30" is the newest one made within it.
    """
    text = spec[:-1] + "+00:00" if spec.endswith(("Z", "z")) else spec
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = _OFFSET.sub("", spec) if "T" in spec or " " in spec else spec
    # YYYY-MM-DD is 10 characters, ...THH 13, ...THH:MM 16, ...THH:MM:SS 19
    width = {10: 86400.0, 13: 3600.0, 16: 60.0, 19: 1.0}.get(len(local), 0.0)
    return when.timestamp() + width - 1e-6 if width else when.timestamp()


def _body(meta_name: str) -> str:
    return meta_name[: -len(".meta")] + ".build"


def _link(source: Path, body: Path, size: int) -> bool:
    """Make ``body`` another name of ``source``; False if the file system says no."""
    try:
        if os.stat(source).st_size != size:
            return False  # not the data asked to keep: write the bytes instead
        os.link(source, body)
    except OSError:
        return False
    return True


def _kept(meta: _Meta, sequence: int, path: Path) -> Kept:
    return Kept(meta.serial, meta.sha256, meta.built, meta.size, meta.lines, sequence, path)


def _kept_list(kept: Sequence[Kept]) -> str:
    shown = ", ".join(f"{k.serial} ({k.stamp})" for k in kept)
    return f"kept, newest first: {shown}"
