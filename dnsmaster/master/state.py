"""The daemon's state file: what was built, what each slave has, what comes next.

Written atomically after every build and push result, and at least every
:attr:`State.heartbeat_interval` seconds, so ``dnsmaster status`` (and a monitoring
check) reads a whole file even while the daemon writes, and can tell a live daemon
from a dead one by the date. The format is plain JSON, meant to be read by people
and scripts alike.

Every field added after the first format has a default, and :func:`read` ignores
keys it does not know: an older daemon's file reads with the defaults ("not
said"), a newer daemon's file reads without its extras. What the values mean, and
when the daemon sets each one, is written beside each field: :mod:`dnsmaster.master.health`
judges health from them and :mod:`dnsmaster.daemon.metrics` exports them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from dnsmaster import fsutil
from dnsmaster.errors import DnsmasterError
from dnsmaster.master.archive import DIRECTORY

__all__ = [
    "HEARTBEAT_MISSES",
    "BuildState",
    "ConfigState",
    "FileStamp",
    "HeldBuild",
    "Pushed",
    "RequestAnswer",
    "RollbackState",
    "SecondaryState",
    "SlaveState",
    "State",
    "Verified",
    "log_pushed",
    "pushed_path",
    "read",
    "read_last_pushed",
    "read_pushed",
    "record_pushed",
    "stamp",
    "this_boot",
    "write",
    "write_pushed",
]

FORMAT = 1

#: A heartbeat older than this many intervals means the daemon is dead or hung.
HEARTBEAT_MISSES = 3

#: What DNS verification found after the slave's last push:
#: ``ok`` every zone asked answered the installed serial; ``stale`` one answered an
#: older (or other) serial; ``failed`` tinydns did not answer; ``skipped`` the daemon
#: does not verify this slave (``[daemon] verify = false``, no ``dns`` address, or no
#: zone in the data); None: not asked yet.
Verified = Literal["ok", "stale", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class BuildState:
    """The newest good build, the one every slave should have."""

    serial: int | None
    sha256: str
    records: int | None
    #: When this build was made (or, at a start that kept the data on disk, its mtime).
    time: float
    #: The last build attempt's failure, if it failed (the zones have errors): the
    #: build above stays current. None after a good build.
    error: str | None = None
    #: The sources fingerprint this build was made from (``data``'s banner,
    #: ``Builder.fingerprint()``): ``status`` compares it with the zones there now.
    fingerprint: str | None = None
    #: How long the build took, in seconds (None: kept from disk at start).
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class SlaveState:
    """One slave as the daemon last saw it."""

    name: str
    #: What the slave has installed, from a push that succeeded or its ``status`` verb.
    installed_sha256: str | None = None
    installed_serial: int | None = None
    result: str = "unknown"  # ok, failed, pushing, unknown
    #: Why the last push failed, in the receiver's or the connection's words.
    error: str | None = None
    #: When the last push ended (ok or not).
    last_push: float | None = None
    next_retry: float | None = None
    verified: Verified | None = None
    #: When the push now running started (``result == "pushing"``).
    push_started: float | None = None
    #: How long the last push took, in seconds, whether it succeeded or not.
    push_seconds: float | None = None
    #: Pushes that failed in a row; 0 after a push that succeeded.
    failures: int = 0
    #: The last time the slave was seen on the then current build: its push
    #: succeeded and DNS answered the serial (or ``verified`` is ``skipped``).
    last_success: float | None = None
    #: The zone verification reports on: the first that did not answer the expected
    #: serial, else the first asked; with the serial it should serve and the one DNS
    #: answered (None: no answer).
    verify_zone: str | None = None
    expected_serial: int | None = None
    served_serial: int | None = None
    #: Why DNS verification failed (``no answer (timeout)``), when ``failed``.
    verify_error: str | None = None
    #: When DNS verification last answered; when it fails (``stale``, ``failed``),
    #: when it first failed that way, however often it was asked again since.
    verified_at: float | None = None
    #: Where the last failed push failed (connect, hostkey, auth, transfer, receive,
    #: status, timeout) and whether pushing the same build again can help; a failure
    #: that cannot is not retried until known_hosts changes, a new build or SIGHUP.
    phase: str | None = None
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class SecondaryState:
    """One standard secondary (``[[secondary]]``) as the daemon last fed it.

    ``result`` is ``notifying`` (NOTIFY sent for the zones whose serial changed,
    not all answered yet), ``waiting`` (the NOTIFYs ended; its SOA is asked until
    it serves ``serial``), ``serving`` (every zone it carries answers ``serial`` or
    newer), ``late`` (``[notify] confirm_timeout`` passed first) or ``failed`` (no
    zone of it to feed, or none of its NOTIFYs was answered and it never served
    the serial); ``unknown`` before the first build is fed.
    """

    name: str
    #: The serial it should serve: the build's (None: no build fed yet).
    serial: int | None = None
    #: How many zones of the build it carries.
    zones: int = 0
    #: When the NOTIFYs for this build were first sent (None: none needed or sent).
    notified: float | None = None
    #: How many of those NOTIFYs it acknowledged.
    acked: int = 0
    #: The lowest serial it answered for its zones at the last question (None: no
    #: answer yet).
    serving: int | None = None
    #: When it was first seen serving ``serial`` for every zone.
    served_at: float | None = None
    #: Seconds from the build's feed to ``served_at``.
    seconds: float | None = None
    #: Why it is late or failed (the last NOTIFY's failure, or the SOA answer).
    error: str | None = None
    result: str = "unknown"


@dataclass(frozen=True, slots=True)
class HeldBuild:
    """A build the guard holds back: built, not pushed, until ``push --accept``."""

    serial: int | None
    sha256: str
    reason: str
    since: float
    #: The sources it was built from; status compares them with the zones now.
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class RollbackState:
    """A rollback in force: the slaves keep an earlier build until ``rollback --release``.

    ``serial``/``sha256`` are the rolled-back data the slaves get (the kept build
    with a new serial), ``kept_serial``/``kept_sha256`` the kept build it is. Saves
    made meanwhile are built and checked, not pushed: the newest is ``held_*``.
    """

    serial: int
    sha256: str
    kept_serial: int
    kept_sha256: str
    since: float
    held_serial: int | None = None
    held_sha256: str | None = None
    held_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class RequestAnswer:
    """The daemon's answer to the last request handed to it in a flag file
    (``dnsmaster rollback``): its id, and why it failed (None: done)."""

    id: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The configuration the daemon runs on, and whether the file still says so.

    Set at start and by every SIGHUP. When a reload fails (``error``), the daemon
    keeps running on the configuration it loaded before: ``sha256``/``mtime`` are
    that one's, ``file_sha256``/``file_mtime`` the file's that failed.
    """

    #: The configuration file.
    path: str
    #: The sha256 and mtime of the file as the running configuration was read.
    sha256: str | None
    mtime: float | None
    #: When the running configuration was loaded.
    loaded: float
    #: Why the last SIGHUP's reload failed (the file is not loaded); None: it loaded.
    error: str | None = None
    #: When that reload failed, and the file's sha256 and mtime then.
    failed_at: float | None = None
    file_sha256: str | None = None
    file_mtime: float | None = None
    #: Settings changed in the file that the daemon keeps at their old value until
    #: it is restarted (``dnsmaster.daemon.reload.RESTART_NEEDED``).
    restart_needed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A configuration file as it was read: its sha256 and mtime (what
    :class:`ConfigState` records, and what ``status`` compares it with)."""

    sha256: str
    mtime: float


def stamp(path: Path) -> FileStamp:
    """The file's stamp now; raises OSError."""
    with path.open("rb") as f:
        # The mtime of the file read, not of one renamed into its place meanwhile.
        mtime = os.fstat(f.fileno()).st_mtime
        return FileStamp(hashlib.sha256(f.read()).hexdigest(), mtime)


@dataclass(frozen=True, slots=True)
class State:
    """The whole file."""

    pid: int
    #: When the daemon wrote this file: the heartbeat.
    updated: float
    build: BuildState | None
    slaves: tuple[SlaveState, ...] = field(default=())
    #: The daemon rewrites the file at least this often, in seconds, busy or idle;
    #: None: a daemon that makes no such promise (only its pid is checked).
    heartbeat_interval: float | None = None
    #: When this daemon started.
    started: float | None = None
    #: When this daemon stopped cleanly (SIGTERM); None while it runs. A daemon
    #: killed with SIGKILL never sets it: its pid is gone and its heartbeat ages.
    stopped: float | None = None
    #: The host the daemon runs on (``socket.gethostname()``): its pid means
    #: something only there.
    host: str | None = None
    #: The zones directory the daemon builds from.
    zones: str | None = None
    #: A newer build the guard holds back (the slaves keep ``build``).
    held: HeldBuild | None = None
    #: The last build attempt's failure, None after a good build: ``build.error``,
    #: here too so that it is said when there was never a good build (``build`` None).
    build_error: str | None = None
    #: A rollback in force (``build`` is the rolled-back build).
    rollback: RollbackState | None = None
    #: The answer to the last ``dnsmaster rollback`` handed to the daemon.
    request: RequestAnswer | None = None
    #: The configuration it runs on (None: a daemon that does not say). Its slaves
    #: are ``slaves``: a slave of the file missing there was added after the start.
    config: ConfigState | None = None
    #: ``time.monotonic()`` when ``updated`` was taken, and the kernel's boot id
    #: then (:func:`this_boot`): a reader on the same boot measures the heartbeat's
    #: age on the monotonic clock, which a wall clock stepped back does not move.
    monotonic: float | None = None
    boot_id: str | None = None
    #: This daemon's own name for hand-offs, new at each start: a request written
    #: for it (``dnsmaster rollback``, ``push --accept``) names it, and any other
    #: daemon discards the request instead of acting on it.
    instance: str | None = None
    #: The standard secondaries, as fed from the current build (``[[secondary]]``).
    secondaries: tuple[SecondaryState, ...] = ()


#: Where Linux says which boot this is: the same id means the same monotonic clock.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def this_boot() -> str | None:
    """The kernel's boot id, None where there is none (not Linux, no /proc)."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def write(path: Path, state: State) -> None:
    """Replace the state file atomically."""
    document = {"format": FORMAT, **asdict(state)}
    text = json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, text)), path)])


def read(path: Path) -> State:
    """Read a state file; raises OSError or ValueError (bad JSON, shape or type).

    Every field is checked against its type here, so that whoever judges the state
    (``status``, a hand-off, the metrics) never meets a string where a time should
    be: a file that is not exactly a state file is an error, never a guess.
    """
    try:
        document = json.loads(path.read_bytes())
    except RecursionError:
        raise ValueError("not a dnsmaster state file: JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise ValueError("not a dnsmaster state file: not a JSON object")
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown state format {_shown(document.get('format'))}")
    state: State = _load(State, document, "")
    if state.pid < 1:
        raise ValueError(f"not a dnsmaster state file: pid: {state.pid} is no process id")
    return state


class _Malformed(DnsmasterError, ValueError):
    """One field of the wrong type; :func:`read` names the file's problem with it."""

    def __init__(self, where: str, wanted: str, value: object) -> None:
        super().__init__(
            f"not a dnsmaster state file: {where or 'the document'}: {wanted} expected, "
            f"found {_shown(value)}"
        )


def _shown(value: object) -> str:
    """A value as the error shows it: its JSON type, and a short repr."""
    kind = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )
    text = repr(value)
    return f"{kind} {text[:40] + '...' if len(text) > 40 else text}"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _load(cls: type, table: object, where: str) -> Any:
    """``table`` (parsed JSON) as a ``cls``, every field checked; keys ``cls`` does not
    have (a newer daemon's) are left out, fields it does not hold take their default."""
    if not isinstance(table, dict):
        raise _Malformed(where, "an object", table)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = f"{where}.{f.name}" if where else f.name
        if f.name in table:
            values[f.name] = _check(table[f.name], hints[f.name], name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _Malformed(name, "a value", None)
    return cls(**values)


def _check(value: object, hint: Any, where: str) -> Any:
    """``value`` if it is of type ``hint`` (as the dataclasses above use them)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return None
        (inner,) = (a for a in get_args(hint) if a is not type(None))
        return _check(value, inner, where)
    if origin is Literal:
        if not isinstance(value, str) or value not in get_args(hint):
            raise _Malformed(where, "one of " + ", ".join(get_args(hint)), value)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Malformed(where, "an array", value)
        inner = get_args(hint)[0]
        return tuple(_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if is_dataclass(hint):
        return _load(hint, value, where)  # type: ignore[arg-type]
    return _SCALARS[hint](value, where)


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Malformed(where, "true or false", value)
    return value


def _integer(value: object, where: str) -> int:
    # JSON's true is no count: bool is an int to Python, not here.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed(where, "an integer", value)
    return value


def _number(value: object, where: str) -> float:
    """A finite number: NaN compares false with everything, and would pass any test
    of age; a huge integer overflows the arithmetic of ages."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise _Malformed(where, "a finite number", value)


def _text(value: object, where: str) -> str:
    """A string that can be printed: a lone surrogate (``"\\ud800"`` in JSON) cannot be
    encoded, and would stop ``status`` at its first write instead of the reader here."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _Malformed(where, "text", value) from None
        if "\0" in value:
            # No path, name or reason holds one; as a path it stops os calls cold.
            raise _Malformed(where, "text without NUL", value)
        return value
    raise _Malformed(where, "a string", value)


_SCALARS: dict[object, Callable[[object, str], Any]] = {
    bool: _boolean,
    int: _integer,
    float: _number,
    str: _text,
}


@dataclass(frozen=True, slots=True)
class Pushed:
    """What the last push installed on a slave (by hand, by the daemon, by a
    rollback): the build's sha256, and the protocol its receiver spoke then (0: it
    did not say, a classic ``update-dns``).

    The next ``dnsmaster push`` sends a delta against that build at once, without
    asking the slave first. Only a hint: the receiver checks the delta's base and
    refuses any other (exit 3), and the master then asks it as usual.
    """

    sha256: str
    protocol: int


#: The record's name in the master's archive directory, beside the builds it names.
_PUSHED = "pushed"
_PUSHED_FORMAT = 1


def pushed_path(output: Path) -> Path:
    """Where every push keeps its :class:`Pushed` records for ``output``."""
    return output / DIRECTORY / _PUSHED


def read_pushed(path: Path) -> dict[str, Pushed]:
    """The records by slave name; empty when there are none or they cannot be read
    (a hint lost costs one ``status`` exchange per slave, never a wrong install)."""
    try:
        document = json.loads(path.read_bytes())
        if document.get("format") != _PUSHED_FORMAT:
            return {}
        return {
            str(name): Pushed(str(entry["sha256"]), int(entry["protocol"]))
            for name, entry in document["slaves"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def read_last_pushed(path: Path) -> str | None:
    """The sha256 of the build the last push that succeeded anywhere installed: what
    the slaves were last given, which the guard judges a manual push against."""
    try:
        last = json.loads(path.read_bytes()).get("last")
        return str(last) if isinstance(last, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def write_pushed(path: Path, pushed: Mapping[str, Pushed], last: str | None = None) -> None:
    """Replace the records atomically."""
    slaves = {name: asdict(entry) for name, entry in sorted(pushed.items())}
    document: dict[str, Any] = {"format": _PUSHED_FORMAT, "slaves": slaves}
    if last is not None:
        document["last"] = last
    text = json.dumps(document, indent=2).encode() + b"\n"
    # Fsynced: beyond the deltas' hint, ``last`` is what the guard judges a push by
    # hand against, and a record lost to a crash would let the next push go unjudged.
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, text)), path)])


def record_pushed(output: Path, installed: Mapping[str, Pushed | None]) -> None:
    """Record what a push installed on each slave; None forgets a slave (its push
    failed: what it holds is not known any more).

    Every push path calls this (``dnsmaster push``, the daemon's slave workers, a
    rollback), so the next one's delta goes against what the slave really holds.
    Nothing is written without the archive directory (no base a delta could go
    against). Raises OSError; callers log it and go on (a record lost costs a
    ``status`` exchange, or leaves the guard without a base: ``guard.no_base``).
    """
    path = pushed_path(output)
    if not path.parent.is_dir():
        return
    pushed, last_before = read_pushed(path), read_last_pushed(path)
    before, last = dict(pushed), last_before
    for slave, entry in installed.items():
        if entry is None:
            pushed.pop(slave, None)
        else:
            pushed[slave] = entry
            last = entry.sha256
    if pushed != before or last != last_before:
        write_pushed(path, pushed, last)


def log_pushed(output: Path, installed: Mapping[str, Pushed | None], logger: Any) -> None:
    """:func:`record_pushed`, with a failure logged (``push.record_failed``): a lost
    hint costs the next push one ``status`` exchange per slave, never a wrong install."""
    try:
        record_pushed(output, installed)
    except OSError as exc:
        logger.warning(
            "push.record_failed", path=str(pushed_path(output)), error=fsutil.describe(exc)
        )
