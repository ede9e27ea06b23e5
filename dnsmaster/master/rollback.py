"""A rollback: an earlier kept build, with a new serial, on the master and held there.

The rolled-back ``data`` is a kept build (:mod:`dnsmaster.master.archive`) restamped with a
serial above every one the slaves may serve: each slave's receiver refuses an older
serial, and secondaries fed by AXFR from a slave only transfer a zone whose SOA
serial went up. It replaces the master's own ``data`` and ``data.cdb`` (so
``status``, ``diff`` and the next build's serial agree with what the slaves serve),
and the hold is written beside the kept builds, as one file holding its facts and
the rolled-back data itself, so whoever writes the output directory next — the
daemon, even after a restart, or a ``push`` by hand — sees that it must not push
newer builds until ``dnsmaster rollback --release``.

Every function that writes is called by the output directory's one writer, which
holds its lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import cdb
from dnsmaster.core.compiler import PackedRecords, compile_text
from dnsmaster.core.makedata import next_serial
from dnsmaster.core.serial import newer
from dnsmaster.errors import ArchiveError, TinydnsDataError
from dnsmaster.master.archive import DIRECTORY, Archive, Kept

__all__ = ["HOLD_FILE", "Hold", "Rolled", "clear", "install", "load", "newest", "prepare", "read"]

#: The hold, in the kept builds' directory.
HOLD_FILE = "rollback"
_MAGIC = b"dnsmaster-rollback 1 "


@dataclass(frozen=True, slots=True)
class Hold:
    """A rollback in force: what is live, where it came from, since when."""

    #: The serial and sha256 of the rolled-back data the slaves get.
    serial: int
    sha256: str
    #: The kept build it is (its own serial and sha256).
    kept_serial: int
    kept_sha256: str
    #: When the rollback was made (Unix time).
    since: float


@dataclass(frozen=True, slots=True)
class Rolled:
    """A rollback ready to install: its hold, its data and its cdb records."""

    hold: Hold
    data: bytes
    #: In cdb's record layout: a rollback of 1M lines makes no Python object per record.
    records: cdb.Packed


def newest(*serials: int | None) -> int | None:
    """The newest of ``serials`` (RFC 1982), ignoring None."""
    found: int | None = None
    for serial in serials:
        if serial is not None and (found is None or newer(serial, found)):
            found = serial
    return found


def prepare(archive: Archive, kept: Kept, floor: int | None, now: float | None = None) -> Rolled:
    """``kept`` restamped with the next serial after ``floor`` (and the clock).

    The result is compiled as tinydns-data would, so a kept build that no longer
    compiles (it cannot happen unless the file was edited) is refused here, before
    anything is written.
    """
    when = time.time() if now is None else now
    serial = next_serial(int(when), newest(floor, kept.serial))
    data = archive.render(kept, serial)
    packed = PackedRecords()
    try:
        compile_text(data, 0, packed=packed)
    except TinydnsDataError as exc:
        raise ArchiveError(str(kept.path), f"kept build does not compile: {exc}") from None
    hold = Hold(serial, hashlib.sha256(data).hexdigest(), kept.serial, kept.sha256, when)
    records = cdb.Packed(memoryview(packed.blob), tuple(packed.serials), packed.count)
    return Rolled(hold, data, records)


def install(output: Path, rolled: Rolled) -> None:
    """Write the hold, then replace the master's ``data`` and ``data.cdb`` as a pair.

    The hold goes first: a crash before the pair is installed leaves the hold, and
    the daemon's next start pushes the rolled-back data from it.
    """
    directory = output / DIRECTORY
    try:
        directory.mkdir(mode=0o755, exist_ok=True)
        header = _MAGIC + json.dumps(asdict(rolled.hold), separators=(",", ":")).encode() + b"\n"

        def write(fd: int) -> None:
            fsutil.write_all(fd, header)
            fsutil.write_all(fd, rolled.data)

        final = directory / HOLD_FILE
        fsutil.publish([(fsutil.stage(final, write), final)])
        data_tmp = fsutil.stage(output / "data", lambda fd: fsutil.write_all(fd, rolled.data))
        try:
            cdb_tmp = fsutil.stage(
                output / "data.cdb",
                lambda fd: cdb.write_packed(fd, [rolled.records], rolled.hold.serial),
            )
        except BaseException:
            fsutil.discard([data_tmp])
            raise
        try:
            fsutil.install_pair(output, data_tmp, cdb_tmp, rolled.hold.sha256)
        except BaseException:
            fsutil.discard([data_tmp, cdb_tmp])
            raise
    except OSError as exc:
        where = exc.filename or str(output)
        raise ArchiveError(str(where), f"cannot roll back: {fsutil.describe(exc)}") from None


def read(output: Path) -> Hold | None:
    """The hold in force, from its header alone (None: no rollback holds)."""
    path = output / DIRECTORY / HOLD_FILE
    try:
        with path.open("rb") as f:
            line = f.readline(4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArchiveError(str(path), f"cannot read the rollback: {fsutil.describe(exc)}") from None
    hold = _parse(line.rstrip(b"\n"))
    if hold is None:
        raise ArchiveError(str(path), "not a rollback this dnsmaster wrote; remove it to release")
    return hold


def load(output: Path) -> tuple[Hold, bytes] | None:
    """The hold in force and its data, checked against its sha256."""
    path = output / DIRECTORY / HOLD_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArchiveError(str(path), f"cannot read the rollback: {fsutil.describe(exc)}") from None
    end = raw.find(b"\n")
    hold = _parse(raw[:end]) if end >= 0 else None
    data = raw[end + 1 :]
    if hold is None or hashlib.sha256(data).hexdigest() != hold.sha256:
        raise ArchiveError(str(path), "damaged: its data does not match its sha256")
    return hold, data


def clear(output: Path) -> bool:
    """End the hold; whether there was one."""
    path = output / DIRECTORY / HOLD_FILE
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ArchiveError(str(path), f"cannot release: {fsutil.describe(exc)}") from None
    with contextlib.suppress(OSError):
        fsutil.fsync_directory(path.parent)
    return True


def _parse(line: bytes) -> Hold | None:
    if not line.startswith(_MAGIC):
        return None
    try:
        fields = json.loads(line[len(_MAGIC) :])
        hold = Hold(**fields)
    except (ValueError, TypeError):
        return None
    if not (isinstance(hold.serial, int) and isinstance(hold.sha256, str)):
        return None
    return hold
