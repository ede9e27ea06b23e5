"""The guard on the master's side: what a push is judged against, and the hold.

:mod:`dnsmaster.core.guard` judges; this module finds the sides and keeps the
record. The daemon judges each build against what it gave the slaves and holds a
build in its state file. ``dnsmaster push`` without a daemon judges the build it
would push against the build the last push installed (the push record,
:func:`dnsmaster.master.state.read_last_pushed`, whose bytes are in the archive or the
rollback's hold), and a build it refuses is recorded in the archive directory
(:data:`HELD_FILE`), so ``push --accept``, ``diff`` and ``push --dry-run`` know
which build is held and against what. Nothing recorded as pushed (a first push),
or a recorded build the master no longer keeps, means nothing to judge against:
the push goes, with ``guard.no_base`` logged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsmaster import fsutil
from dnsmaster.core import guard
from dnsmaster.core.makedata import previous_serial
from dnsmaster.errors import ArchiveError
from dnsmaster.master import rollback
from dnsmaster.master import state as statefile
from dnsmaster.master.archive import DIRECTORY, Archive
from dnsmaster.master.payload import Data, DataFile, pieces

if TYPE_CHECKING:
    from dnsmaster.config import Config

__all__ = [
    "FACTS_FILE",
    "HELD_FILE",
    "Given",
    "Held",
    "clear",
    "given",
    "held",
    "judge",
    "names",
    "write",
]

#: The build ``dnsmaster push`` refused, in the kept builds' directory.
HELD_FILE = "held"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Given:
    """A build the slaves were given: the guard's other side."""

    sha256: str
    serial: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Held:
    """A build the guard holds: built, written on the master, pushed nowhere."""

    serial: int | None
    sha256: str
    reason: str
    since: float
    #: The sha256 of the build it was judged against (what the slaves were given);
    #: None when not known (a daemon's state file of old).
    base: str | None = None
    #: Who holds it: ``daemon`` (its state file) or ``push`` (:data:`HELD_FILE`).
    by: str = "push"


def held_path(output: Path) -> Path:
    """Where ``dnsmaster push`` records the build it refused, for ``output``."""
    return output / DIRECTORY / HELD_FILE


def given(output: Path, keep: int, sha256: str | None = None) -> Given | None:
    """The build with ``sha256`` (default: the one the last push installed), when the
    master still has its bytes: kept in the archive, or a rollback's data."""
    if sha256 is None:
        sha256 = statefile.read_last_pushed(statefile.pushed_path(output))
        if sha256 is None:
            return None
    try:
        data = Archive(output, keep).by_sha256(sha256)
        if data is None:
            found = rollback.load(output)
            if found is not None and found[0].sha256 == sha256:
                data = found[1]
    except ArchiveError:
        return None
    if data is None:
        return None
    return Given(sha256, previous_serial(data[:200]), data)


def judge(cfg: Config, base: Given, data: Data) -> guard.Verdict | None:
    """The guard's verdict on pushing ``data`` where the slaves were given ``base``
    (``data`` read a piece at a time when it is a file).

    What the guard reads of a build (its records counted, its zones) is kept
    (:data:`FACTS_FILE`) for the next push, whose base this build will be: each
    push compiles only its own build, not the one before it again.
    """
    sha256 = data.sha256 if isinstance(data, DataFile) else hashlib.sha256(data).hexdigest()
    if sha256 == base.sha256:
        return None
    text: guard.Text = data if isinstance(data, bytes) else functools.partial(pieces, data)
    known = _read_facts(cfg.output)
    facts = {
        sha: known[sha] if sha in known else _Facts(guard.count_records(t), guard.zones_of(t))
        for sha, t in ((base.sha256, base.data), (sha256, text))
    }
    if facts.keys() - known.keys():
        with contextlib.suppress(OSError):
            _write_facts(cfg.output, facts)
    old, new = facts[base.sha256], facts[sha256]
    options = cfg.guard
    return guard.judge_data(
        base.data,
        text,
        max_removed=options.max_removed,
        zones=options.zones,
        allow=options.allow,
        old_records=old.records,
        new_records=new.records,
        old_zones=old.zones,
        new_zones=new.zones,
    )


#: What the guard read of the last builds it judged, by sha256, in the kept
#: builds' directory: a cache (lost or damaged, the builds are read again).
FACTS_FILE = "guard-facts"


@dataclass(frozen=True, slots=True)
class _Facts:
    records: int
    zones: set[str]


def _read_facts(output: Path) -> dict[str, _Facts]:
    try:
        document: Any = json.loads((output / DIRECTORY / FACTS_FILE).read_bytes())
        if document.get("format") != _FORMAT:
            return {}
        return {
            str(sha): _Facts(int(entry["records"]), {str(z) for z in entry["zones"]})
            for sha, entry in document["builds"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_facts(output: Path, facts: dict[str, _Facts]) -> None:
    builds = {sha: {"records": f.records, "zones": sorted(f.zones)} for sha, f in facts.items()}
    text = json.dumps({"format": _FORMAT, "builds": builds}).encode() + b"\n"
    path = output / DIRECTORY / FACTS_FILE
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, text)), path)])


def held(cfg: Config, data_sha256: str | None) -> Held | None:
    """The hold in force on the build ``data_sha256`` (the master's ``data``), if any:
    the daemon's (its state file) or ``dnsmaster push``'s (:data:`HELD_FILE`).

    A record whose build has since been installed (accepted) holds nothing.
    """
    last = statefile.read_last_pushed(statefile.pushed_path(cfg.output))
    if data_sha256 is None or data_sha256 == last:
        return None
    with contextlib.suppress(OSError, ValueError):
        state = statefile.read(cfg.state)
        if state.held is not None and state.held.sha256 == data_sha256:
            h = state.held
            base = state.build.sha256 if state.build is not None else None
            return Held(h.serial, h.sha256, h.reason, h.since, base, by="daemon")
    record = _read(held_path(cfg.output))
    return record if record is not None and record.sha256 == data_sha256 else None


def write(output: Path, record: Held) -> None:
    """Record the hold ``dnsmaster push`` refused (atomically)."""
    path = held_path(output)
    text = json.dumps({"format": _FORMAT, **asdict(record)}, indent=2).encode() + b"\n"
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, text)), path)])


def clear(output: Path) -> None:
    """No build is held by ``dnsmaster push`` any more."""
    with contextlib.suppress(FileNotFoundError):
        held_path(output).unlink()


def names(spec: str, serial: int | None, sha256: str) -> bool:
    """Whether ``push --accept SPEC`` names the held build with ``serial`` and
    ``sha256``: SPEC empty (the held build, whichever it is), its serial, or its
    sha256 or a prefix of it of 8 digits or more."""
    spec = spec.strip().lower()
    return not spec or spec == str(serial) or (len(spec) >= 8 and sha256.startswith(spec))


def _read(path: Path) -> Held | None:
    try:
        document: Any = json.loads(path.read_bytes())
        if document.get("format") != _FORMAT:
            return None
        return Held(
            serial=None if document["serial"] is None else int(document["serial"]),
            sha256=str(document["sha256"]),
            reason=str(document["reason"]),
            since=float(document["since"]),
            base=None if document.get("base") is None else str(document["base"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
