"""The served root: the ``data.cdb`` the master's own axfrdns and tinydns read.

A build is written to the output directory whether or not the guard lets it go
to the slaves, so the master's servers must not read the output directory: a
standard secondary would transfer a held build on its own SOA refresh. They read
``[axfrdns] root`` (default ``OUTPUT/served``) instead, a directory holding only
``data.cdb``, replaced here each time a build becomes current for the slaves
(never while one is held) and before any NOTIFY for it leaves.

The replacement is atomic: the build's ``data.cdb`` is hard-linked to a temp name
in the served root and renamed over the old one, so a reader sees the old or the
new file whole, and a crash between the two leaves the old one served (and a temp
file that the next replacement sweeps). Where no link can be made (another file
system, a file system without links) it is copied instead. When the output
directory no longer has the build's ``data.cdb`` (a rollback in force whose saves
were written there since), it is compiled again from the build's ``data``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dnsmaster import fsutil
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.cdb import CdbReader
from dnsmaster.core.compiler import compile_data, default_serial
from dnsmaster.core.soa import zone_serials
from dnsmaster.errors import ArchiveError, BuildError
from dnsmaster.master import guarded, rollback

if TYPE_CHECKING:
    from dnsmaster.config import Config

__all__ = [
    "SERVED",
    "Expected",
    "How",
    "Served",
    "expected",
    "make_root",
    "root_of",
    "serve",
    "served_zones",
    "soa_serials",
    "wanted",
]

#: The served root's default name, in the output directory.
SERVED = "served"

#: How a data.cdb got into the served root.
How = Literal["link", "copy", "compiled"]

_SOA_TYPE = b"\x00\x06"

# Why os.link fails where a copy still works.
_NO_LINK = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EACCES}
)


@dataclass(frozen=True, slots=True)
class Served:
    """A replacement done: where, and how the file got there."""

    root: Path
    how: How


def root_of(cfg: Config) -> Path:
    """The served root of ``cfg``: ``[axfrdns] root``, or ``OUTPUT/served``."""
    return cfg.axfrdns.root if cfg.axfrdns.root is not None else cfg.output / SERVED


def wanted(cfg: Config) -> bool:
    """Whether ``cfg`` has a served root to keep: secondaries, or ``[axfrdns] ip``."""
    return bool(cfg.secondaries) or bool(cfg.axfrdns.ip)


def _temp_name(root: Path) -> Path:
    # The litter pattern fsutil.sweep_litter knows (``.data.*.tmp``).
    return root / f".data.cdb.{os.getpid()}.{secrets.token_hex(6)}.tmp"


def _linked(source: Path, root: Path) -> Path | None:
    """``source`` linked into ``root`` under a temp name; None when it cannot be."""
    tmp = _temp_name(root)
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in _NO_LINK:
            return None
        raise
    return tmp


def _copied(source: Path, root: Path) -> Path:
    def write(fd: int) -> None:
        with source.open("rb") as f, os.fdopen(os.dup(fd), "wb") as out:
            shutil.copyfileobj(f, out)

    return fsutil.stage(root / "data.cdb", write)


def _install(tmp: Path, root: Path) -> None:
    try:
        fsutil.publish([(tmp, root / "data.cdb")])
    except BaseException:
        fsutil.discard([tmp])
        raise


def make_root(root: Path) -> None:
    """Make the served root if missing: mode 755 whatever the umask, since axfrdns
    and tinydns read it as accounts of their own."""
    try:
        root.mkdir(mode=0o755, parents=True)
    except FileExistsError:
        return
    root.chmod(0o755)


def _prepare(root: Path) -> None:
    make_root(root)
    # Only this process writes here (it holds the output directory's lock).
    fsutil.sweep_litter(root)


def _same_build(output: Path, sha256: str, size: int) -> bool:
    """Whether ``output/data`` is the build ``sha256`` (of ``size`` bytes) and its
    data.cdb was installed with it (no pair install cut short)."""
    try:
        if (output / "data").stat().st_size != size or fsutil.interrupted_install(output):
            return False
        digest = hashlib.sha256()
        with (output / "data").open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def serve(output: Path, root: Path, sha256: str, data: bytes, serial: int | None) -> Served:
    """Make ``root/data.cdb`` the build ``sha256`` (its ``data``, its ``serial``).

    Linked from ``output/data.cdb`` when that is the build's: the link is made first
    and checked after (the same file as ``output/data.cdb``, beside the build's
    ``data``, no install cut short), so a build written meanwhile is never served
    by mistake. Otherwise compiled from ``data``. Raises OSError or BuildError.
    """
    _prepare(root)
    source = output / "data.cdb"
    tmp = None
    how: How = "link"
    try:
        tmp = _linked(source, root)
        if tmp is None:
            tmp, how = _copied(source, root), "copy"
        before = os.stat(tmp) if how == "link" else None
        if not _same_build(output, sha256, len(data)) or (
            before is not None and os.stat(source).st_ino != before.st_ino
        ):
            fsutil.discard([tmp])
            tmp = None
    except FileNotFoundError:  # no data.cdb in the output, or gone meanwhile
        if tmp is not None:
            fsutil.discard([tmp])
        tmp = None
    if tmp is None:
        how = "compiled"
        blob = compile_data(data, serial if serial is not None else default_serial(0))
        try:
            tmp = fsutil.stage(root / "data.cdb", lambda fd: fsutil.write_all(fd, blob))
        except OSError as exc:
            raise BuildError(str(root), f"cannot write: {fsutil.describe(exc)}") from None
    _install(tmp, root)
    return Served(root, how)


@dataclass(frozen=True, slots=True)
class Expected:
    """The build the served root should hold, for ``doctor``."""

    sha256: str
    serial: int | None
    #: zone (wire name) -> SOA serial
    zones: dict[bytes, int]
    #: Which build it is, in words.
    what: str


def expected(cfg: Config, data: bytes) -> Expected | None:
    """The build the served root should hold when the output holds ``data``: a
    rollback's, when one is in force; else the build the guard judged a held
    ``data`` against (None when the master no longer has it); else ``data``'s."""

    def of(build: bytes, sha256: str, what: str) -> Expected:
        return Expected(sha256, previous_serial(build[:200]), zone_serials(build), what)

    try:
        found = rollback.load(cfg.output)
    except ArchiveError:
        found = None
    if found is not None:
        return of(found[1], found[0].sha256, "the rollback's build")
    sha256 = hashlib.sha256(data).hexdigest()
    held = guarded.held(cfg, sha256)
    if held is None:
        return of(data, sha256, "the output's build")
    given = guarded.given(cfg.output, cfg.daemon.keep, held.base)
    if given is None:
        return None
    return of(given.data, given.sha256, "the slaves' build (the output's is held)")


def served_zones(cfg: Config, data: bytes) -> dict[bytes, int] | None:
    """The serial the served root's data.cdb gives each zone of ``data`` that it has
    (wire name -> serial); None when there is no readable served data.cdb yet."""
    try:
        blob = (root_of(cfg) / "data.cdb").read_bytes()
        found = soa_serials(blob, zone_serials(data))
    except (OSError, ValueError):
        return None
    return {zone: serial for zone, serial in found.items() if serial is not None}


def soa_serials(blob: bytes, zones: Iterable[bytes]) -> dict[bytes, int | None]:
    """The SOA serial the data.cdb ``blob`` gives each of ``zones`` (None: no SOA).
    Raises ValueError when ``blob`` is not a cdb."""
    reader = CdbReader(blob)
    found: dict[bytes, int | None] = {}
    for zone in zones:
        values = [v for v in reader.get_all(zone.lower()) if v[:2] == _SOA_TYPE]
        # The serial is the first of the five numbers that end an SOA record.
        found[zone] = int.from_bytes(values[0][-20:-16], "big") if values else None
    return found
