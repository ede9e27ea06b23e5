"""The slave operator's commands on a root of confined masters, run on the slave
itself (never through a key: :mod:`dnsmaster.slave.receive` refuses them when
``SSH_ORIGINAL_COMMAND`` is set):

``--masters``
    one line per master: ``master NAME sha256=H serial=N bytes=N time=T
    allow=a.example,b.example except=... locations=no``;
``--remove-master NAME``
    NAME's section dropped and the merged pair installed without it, under the
    lock and the journal (a crash leaves the old pair or the new, or the journal);
``--adopt NAME``
    a single master's root converted: its ``data`` (and copies) become
    ``masters/NAME``'s, its compiled records are kept there, and what tinydns
    serves is not touched. NAME's key line then needs ``--master NAME --allow ...``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import TextIO

from dnsmaster import fsutil
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.text import printable
from dnsmaster.errors import TinydnsDataError
from dnsmaster.slave import masters, records
from dnsmaster.slave.confined import refuse_offences, session
from dnsmaster.slave.masters import ALLOW, MASTERS, Confinement, SectionBroken
from dnsmaster.slave.outcome import Refused, Usage, say
from dnsmaster.slave.root import COPY, NotInstalled, NotRegular, read_data, status

__all__ = ["adopt", "list_masters", "remove_master"]

#: Where an adoption builds the sections before one rename makes the root confined.
_ADOPTING = ".dnsmaster-adopting"


def _confined(root: Path) -> None:
    if not os.path.isdir(root / MASTERS):
        raise Usage(f"{printable(str(root))} serves no confined masters (no {MASTERS}/)")


def list_masters(root: Path, out: TextIO) -> list[str]:
    """The ``master ...`` line of each master, in name order."""
    _confined(root)
    lines = []
    with session(root, out):
        for name in masters.known(root):
            where = masters.section(root, name)
            stamp = records.stamp_of(where / "data")
            with (where / "data").open("rb") as f:
                serial = previous_serial(f.read(256))
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp.mtime_ns / 1e9))
            try:
                conf = masters.read_confinement(name, where / ALLOW)
                allow = "allow=unknown" if conf is None else conf.shown()
            except SectionBroken as exc:
                allow = f"allow=unknown ({exc})"
            shown = "none" if serial is None else str(serial)
            lines.append(
                f"master {name} sha256={stamp.sha256} serial={shown} bytes={stamp.body} "
                f"time={when} {allow}"
            )
    return lines


def remove_master(root: Path, name: str, out: TextIO) -> None:
    """Drop master ``name``'s section and install the merged pair without it."""
    _confined(root)
    with session(root, out) as unmatched:
        present = masters.known(root)
        if name not in present:
            raise Usage(f"no master {printable(name)} here; known: {', '.join(present) or 'none'}")
        if unmatched is not None:
            say(out, f"not repaired: {unmatched}; the removal merges the pair again")
        away = root / MASTERS / f".removed.{name}.{os.getpid()}"
        with masters.parts(root, out, skip=name) as parts:
            merged = masters.stage_merged(root, parts)
            try:
                masters.install(root, [(masters.section(root, name), away)], merged)
            except BaseException:
                fsutil.discard(merged)
                raise
        # Gone from what tinydns serves; its files go now, or with the next run's sweep.
        shutil.rmtree(away, ignore_errors=True)
    say(out, f"removed master {name}; the merged data and data.cdb no longer hold it")


def adopt(root: Path, confinement: Confinement | None, name: str, out: TextIO) -> None:
    """Make the single master's data master ``name``'s section, serving the same."""
    masters.check_name(name)
    if os.path.isdir(root / MASTERS):
        raise Usage(f"{printable(str(root))} serves confined masters already")
    # Status repairs an interrupted install first (under the lock), as a push would.
    report = status(root, out)
    if isinstance(report, NotInstalled) and report.reason is not None:
        raise Refused(f"data.cdb is not known to match data: {report.reason}")
    with fsutil.locked(root):
        if os.path.isdir(root / MASTERS):
            raise Usage(f"{printable(str(root))} serves confined masters already")
        try:
            content, _ = read_data(root)
        except FileNotFoundError:
            raise Usage(f"nothing to adopt: no data in {printable(str(root))}") from None
        except NotRegular as exc:
            raise Usage(f"nothing to adopt: {exc}") from None
        if confinement is not None:
            refuse_offences(content, confinement)
        try:
            packed = masters.compile_packed(content)
        except TinydnsDataError as exc:
            raise Refused(
                f"data does not compile: line {exc.lineno}: {printable(exc.reason)}"
            ) from None
        work = root / _ADOPTING
        shutil.rmtree(work, ignore_errors=True)
        masters.make_dir(work)
        where = work / name
        masters.make_dir(where)
        os.link(root / "data", where / "data")
        copies = sorted(n for n in os.listdir(root) if COPY.fullmatch(n))
        for copy in copies:
            os.link(root / copy, where / copy)
        tmp = records.stage(where, records.stamp_of(where / "data"), packed)
        os.replace(tmp, where / records.RECORDS)
        if confinement is not None:
            text = confinement.text()
            tmp = fsutil.stage(where / ALLOW, lambda fd: fsutil.write_all(fd, text))
            os.replace(tmp, where / ALLOW)
        fsutil.fsync_directory(where)
        fsutil.fsync_directory(work)
        os.rename(work, root / MASTERS)
        fsutil.fsync_directory(root)
        for copy in copies:
            with contextlib.suppress(OSError):
                (root / copy).unlink()
    say(out, f"adopted: the root's data is now master {name}'s; tinydns serves the same")
