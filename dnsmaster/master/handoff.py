"""A manual ``build`` or ``push`` beside a running daemon: one writer, one serial.

The daemon holds the output directory's lock for its whole life. A ``dnsmaster
push`` (or ``build``, or ``make``) typed while it runs must not build beside it:
the two would give one edit two serials, and ``status`` would show one no slave
serves. So the command hands its request to the daemon instead, with a signal
(``SIGUSR1``: build if the zones changed; ``SIGALRM``: push the current build to
every slave again), then follows the daemon's state file and prints each slave's
outcome as the daemon reports it, so the terminal shows what it always showed.

A request that needs more than a signal (``push --accept``, ``rollback``) is a
flag file in the output directory. Such a file is carried out only by the daemon
it was written for, and only while its asker waits: it names the daemon's
``instance`` (new at each start, published in the state file), the asker's pid and
the monotonic time the asker gives up (:func:`write_request`). The daemon discards
anything else it finds (:func:`refusal`), at start too, and the asker removes its
own request when it gives up (:func:`withdraw`): a request left behind by a killed
daemon or asker is never carried out later, on another operator's signal.

A request for a slave the daemon does not run (added to the configuration file
after the daemon loaded it) would wait for an outcome that never comes:
:func:`unknown_slaves` finds it first, from the slaves the daemon's state file
lists, and says to send SIGHUP. A SIGHUP sent just before (``svc -h`` returns
before the daemon has re-read the file) is given :data:`RELOAD_GRACE` to land.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from dnsmaster.master import state as statefile

__all__ = [
    "ACCEPT_FILE",
    "GRACE",
    "HANDOFF_FILES",
    "NO_INSTANCE",
    "ROLLBACK_FILE",
    "SIGHUP_HOW",
    "Outcome",
    "config_behind",
    "daemon_pid",
    "follow",
    "follow_request",
    "instance",
    "interruptible",
    "parse_request",
    "put_request",
    "refusal",
    "request_text",
    "unknown_slaves",
    "withdraw",
    "write_request",
]

#: How often the state file is read while following the daemon.
POLL = 0.1

#: Beyond the push timeout and the quiet period, how long an asker waits for the
#: daemon to act on its request.
GRACE = 60.0

#: Why a request cannot be written for the daemon (:func:`instance` is None).
NO_INSTANCE = (
    "the daemon's state file does not name it for a hand-off (it is restarting, or "
    "an older dnsmaster that cannot be asked safely): try again, or restart it"
)

#: Written by ``push --accept`` in the output directory (then SIGUSR2):
#: ``sha256=HELD`` the held build the operator accepts, with the words of every
#: request file (:func:`write_request`: the daemon asked, the asker and until when
#: it waits).
ACCEPT_FILE = ".dnsmaster-accept"

#: Written by ``dnsmaster rollback`` in the output directory, then SIGUSR2:
#: ``request=to kept=KEPT_SHA256 id=ID`` (roll back to that kept build) or
#: ``request=release id=ID``, with the words of every request file. The daemon
#: answers in its state file (``request``: the id, and the error if any).
ROLLBACK_FILE = ".dnsmaster-rollback"

#: The hand-off files; any found when a daemon starts was written for an earlier one.
HANDOFF_FILES = (ACCEPT_FILE, ROLLBACK_FILE)

#: How an operator has the daemon read its configuration file again.
SIGHUP_HOW = "svc -h /service/dnsmaster or sv hup dnsmaster"

#: Seconds a command naming a slave the daemon does not run gives the daemon to
#: apply the file, while the file is one the daemon has neither loaded nor failed
#: to load: ``svc -h``/``sv hup`` return before the daemon has re-read it, and the
#: next line of a script (``dnsmaster wait --slave NEW``) must not fail for that.
#: A forgotten SIGHUP costs this long before the message that says to send it.
RELOAD_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a handed-over request ended."""

    #: The build every slave should have now (None: the daemon has none).
    build: statefile.BuildState | None
    #: The build the request asked for failed (the zones have errors).
    build_failed: bool
    #: Slave name -> None when it took the build, else why not.
    slaves: dict[str, str | None]
    #: Slaves that did not report before the timeout.
    pending: tuple[str, ...]
    #: Why the guard (or a rollback) holds the build asked for (it is built, and
    #: pushed nowhere).
    held: str | None = None
    #: What holds it: ``guard`` (``push --accept`` releases it) or ``rollback``
    #: (``rollback --release``).
    held_by: str = "guard"
    #: Why the daemon refused the request (``rollback``), in its words.
    error: str | None = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; it is another user's
    return True


def daemon_pid(state_path: Path) -> int | None:
    """The pid of the daemon that wrote ``state_path``, if it still runs."""
    try:
        state = statefile.read(state_path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state.stopped is not None or not _alive(state.pid):
        return None
    return state.pid


def instance(state_path: Path, pid: int) -> str | None:
    """The hand-off name of daemon ``pid`` (the state file's ``instance``); None when
    the file is another daemon's now, or the daemon names none (an older one)."""
    state = _read(state_path)
    if state is None or state.pid != pid:
        return None
    return state.instance


def write_request(path: Path, *, daemon: str, timeout: float, **words: str) -> str:
    """Write the request file ``path`` for daemon ``daemon`` (its instance), with
    ``words``; it holds while this process waits, ``timeout`` seconds. The text
    written, to :func:`withdraw` it with."""
    text = request_text(daemon=daemon, timeout=timeout, **words)
    put_request(path, text)
    return text


def request_text(*, daemon: str, timeout: float, **words: str) -> str:
    """The request :func:`put_request` writes (see :func:`write_request`). Made
    first, so that an asker interrupted while the file is being put in place (its
    directory's fsync, after the rename) knows what to :func:`withdraw`."""
    until = time.monotonic() + timeout
    fields = {"daemon": daemon, "asker": str(os.getpid()), "until": f"{until:.3f}", **words}
    return " ".join(f"{k}={v}" for k, v in fields.items()) + "\n"


def put_request(path: Path, text: str) -> None:
    """Put the request ``text`` (:func:`request_text`) in place at ``path``."""
    from dnsmaster import fsutil  # noqa: PLC0415

    payload = text.encode()
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, payload)), path)])


def withdraw(path: Path, text: str) -> bool:
    """Remove the request ``text`` at ``path`` if it is still there (the asker gives
    up, or is interrupted): no daemon may act on it later. Whether it was there."""
    with contextlib.suppress(OSError):
        if path.read_text(errors="replace") == text:
            path.unlink()
            return True
    return False


def parse_request(text: str) -> dict[str, str] | None:
    """A request file's ``key=value`` words; None when it is not one."""
    words = text.split()
    if not words or any("=" not in w for w in words):
        return None
    fields = dict(w.split("=", 1) for w in words)
    return fields if {"daemon", "asker", "until"} <= fields.keys() else None


def refusal(request: dict[str, str] | None, instance: str) -> str | None:
    """Why daemon ``instance`` must not carry out ``request`` (None: it may)."""
    if request is None:
        return "not a request (written by another version of dnsmaster?)"
    if request["daemon"] != instance:
        return "written for another daemon (one that is gone: killed or restarted)"
    try:
        asker, until = int(request["asker"]), float(request["until"])
    except ValueError:
        return "not a request: asker or until is no number"
    if until < time.monotonic():
        return "its asker gave up waiting"
    if asker < 1 or not _alive(asker):
        return f"its asker (pid {asker}) is gone"
    return None


def unknown_slaves(
    state_path: Path, config: Path, names: Collection[str], *, grace: float = 0.0
) -> str | None:
    """Why the running daemon cannot act for ``names``: the slaves of ``config`` it
    does not run, and what to do. None when it runs them all, or no daemon runs.

    With ``grace``, while ``config`` is a version of the file the daemon has not
    answered yet (neither loaded nor failed to load: a SIGHUP may be on its way),
    the state file is read again every :data:`POLL` seconds for up to ``grace``.
    """
    deadline = time.monotonic() + grace
    while True:
        why = _unknown(state_path, config, names)
        if why is None or time.monotonic() >= deadline or not _unanswered(state_path, config):
            return why
        time.sleep(POLL)


def _unanswered(state_path: Path, config: Path) -> bool:
    """Whether the file is a version the running daemon has neither loaded nor
    failed to load (False when it does not say)."""
    state = _read(state_path)
    if state is None or state.config is None or state.config.sha256 is None:
        return False
    try:
        now = statefile.stamp(config).sha256
    except OSError:
        return False
    answered: set[str | None] = {state.config.sha256}
    if state.config.error is not None:
        answered.add(state.config.file_sha256)
    return now not in answered


def _unknown(state_path: Path, config: Path, names: Collection[str]) -> str | None:
    """:func:`unknown_slaves`, from one reading of the state file."""
    state = _read(state_path)
    if state is None or state.stopped is not None or not _alive(state.pid):
        return None
    running = {s.name for s in state.slaves}
    missing = [n for n in names if n not in running]
    if not missing:
        return None
    which = ", ".join(missing)
    they = "was" if len(missing) == 1 else "were"
    failed = state.config.error if state.config is not None else None
    if failed is not None:
        return (
            f"the daemon (pid {state.pid}) does not run {which}: its last SIGHUP could not "
            f"load {config}: {failed}; fix the file, then send it SIGHUP "
            f"({SIGHUP_HOW}), and try again"
        )
    return (
        f"the daemon (pid {state.pid}) loaded {config} before {which} {they} added to it: "
        f"send it SIGHUP ({SIGHUP_HOW}), then try again"
    )


def config_behind(state_path: Path, config: Path) -> bool:
    """Whether the running daemon runs on another version of ``config`` than the
    file's now (False when no daemon runs, or it does not say)."""

    state = _read(state_path)
    if state is None or state.config is None or state.config.sha256 is None:
        return False
    if state.stopped is not None or not _alive(state.pid):
        return False
    try:
        return statefile.stamp(config).sha256 != state.config.sha256
    except OSError:
        return False


def _read(path: Path) -> statefile.State | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return statefile.read(path)
    return None  # being replaced, or the daemon went away: try again


#: Decides, from one reading of the state file, how a request stands: an
#: :class:`Outcome` ends it, a build is the one to follow to the slaves, None: wait.
_Find = Callable[[statefile.State], "Outcome | statefile.BuildState | None"]


def follow(
    state_path: Path,
    pid: int,
    *,
    fingerprint: str,
    repush: bool,
    slaves: Collection[str],
    timeout: float,
    on_slave: Callable[[str, statefile.SlaveState], None],
    on_build: Callable[[statefile.BuildState], None] | None = None,
    signum: int | None = None,
) -> Outcome:
    """Ask daemon ``pid`` for a build of the sources with ``fingerprint`` (and, with
    ``repush``, a push of it to every slave again); wait for the outcome.

    ``slaves`` are the names to wait for (empty: none, only the build). Each one is
    passed to ``on_slave`` once, as soon as its outcome is known.
    """
    asked = time.time()
    seen = False

    def find(state: statefile.State) -> Outcome | statefile.BuildState | None:
        nonlocal seen
        held = state.held
        if held is not None and held.fingerprint == fingerprint and signum != signal.SIGUSR2:
            return Outcome(state.build, True, {}, (), held=held.reason)
        rolled = state.rollback
        if rolled is not None and rolled.held_fingerprint == fingerprint:
            return Outcome(state.build, True, {}, (), held=_rollback(rolled), held_by="rollback")
        build = state.build
        if build is None or seen:
            return build
        if build.fingerprint == fingerprint:
            seen = True
            return build
        if build.error is not None and state.updated >= asked:
            return Outcome(build, True, {}, ())
        return None

    os.kill(pid, signum if signum is not None else signal.SIGALRM if repush else signal.SIGUSR1)
    return _follow(
        state_path,
        pid,
        asked=asked,
        timeout=timeout,
        slaves=slaves,
        on_slave=on_slave,
        on_build=on_build,
        find=find,
        repush=repush,
    )


def follow_request(
    state_path: Path,
    pid: int,
    ident: str,
    *,
    fingerprint: str | None,
    slaves: Collection[str],
    timeout: float,
    on_slave: Callable[[str, statefile.SlaveState], None],
    on_build: Callable[[statefile.BuildState], None] | None = None,
) -> Outcome:
    """Signal daemon ``pid`` (SIGUSR2) to act on the request ``ident`` written in its
    flag file (``dnsmaster rollback``), then follow it to every slave in ``slaves``.

    The daemon answers the request in the state file first; a refusal ends here
    (``error``). Then the build to follow is the rolled-back one or, for a release
    (``fingerprint``: the zones' now), the build of the zones, which the guard may
    hold or which may fail.
    """
    asked = time.time()
    chosen: statefile.BuildState | None = None

    def find(state: statefile.State) -> Outcome | statefile.BuildState | None:
        nonlocal chosen
        if chosen is not None:
            return chosen
        request = state.request
        if request is None or request.id != ident:
            return None  # not answered yet
        if request.error is not None:
            return Outcome(state.build, False, {}, (), error=request.error)
        found = _rolled_back(state) if fingerprint is None else _released(state, fingerprint, asked)
        if isinstance(found, statefile.BuildState):
            chosen = found
        return found

    os.kill(pid, signal.SIGUSR2)
    return _follow(
        state_path,
        pid,
        asked=asked,
        timeout=timeout,
        slaves=slaves,
        on_slave=on_slave,
        on_build=on_build,
        find=find,
        repush=False,
    )


def _rolled_back(state: statefile.State) -> statefile.BuildState | None:
    """The build a rollback made current, once the state file says so."""
    build, rolled = state.build, state.rollback
    if build is not None and rolled is not None and build.sha256 == rolled.sha256:
        return build
    return None


def _released(
    state: statefile.State, fingerprint: str, asked: float
) -> Outcome | statefile.BuildState | None:
    """After a release: the build of the zones, or why there is none to push."""
    build, held = state.build, state.held
    if held is not None and held.fingerprint == fingerprint and held.since >= asked:
        return Outcome(build, True, {}, (), held=held.reason)
    if build is None:
        return None
    if build.fingerprint == fingerprint:
        return build if build.time >= asked else None
    if build.error and state.updated >= asked:
        return Outcome(build, True, {}, ())
    return None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """^C ends the wait at once (KeyboardInterrupt), and the asker's ``finally``
    withdraws its request. The commands wait inside ``asyncio.run``, whose SIGINT
    handler only cancels the main task: a task that cannot run until this blocking
    wait ends, minutes later. An asker holds it from before it writes its request
    file, so that no ^C falls between the file and the wait."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@interruptible()
def _follow(
    state_path: Path,
    pid: int,
    *,
    asked: float,
    timeout: float,
    slaves: Collection[str],
    on_slave: Callable[[str, statefile.SlaveState], None],
    on_build: Callable[[statefile.BuildState], None] | None,
    find: _Find,
    repush: bool,
) -> Outcome:
    """Read the state file until ``find`` ends the request or every slave reported."""
    deadline = time.monotonic() + timeout
    build: statefile.BuildState | None = None
    reported: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        state = _read(state_path)
        if state is not None and state.pid != pid:
            break  # another daemon took over: what we asked of the first is moot
        found = find(state) if state is not None else None
        if isinstance(found, Outcome):
            return found
        if state is not None and found is not None:
            if build is None and on_build is not None:
                on_build(found)
            build = found
            for slave in state.slaves:
                if slave.name not in slaves or slave.name in reported:
                    continue
                done, reason = _outcome(slave, build, asked, repush=repush)
                if done:
                    reported[slave.name] = reason
                    on_slave(slave.name, slave)
            if len(reported) == len(slaves):
                return Outcome(build, False, reported, ())
        if not _alive(pid):
            break
        time.sleep(POLL)
    pending = tuple(sorted(set(slaves) - set(reported)))
    return Outcome(build, False, reported, pending)


def _rollback(rolled: statefile.RollbackState) -> str:
    return (
        f"a rollback holds serial {rolled.serial} (kept build {rolled.kept_serial}) "
        "on every slave until dnsmaster rollback --release"
    )


def _outcome(
    slave: statefile.SlaveState, build: statefile.BuildState, asked: float, *, repush: bool
) -> tuple[bool, str | None]:
    """Whether the slave's outcome is known, and why it failed (None: it has ``build``)."""
    if slave.result == "pushing":
        return False, None
    fresh = slave.last_push is not None and slave.last_push >= asked
    if slave.result == "ok" and slave.installed_sha256 == build.sha256:
        # Already on it before we asked counts, unless we asked for a push again.
        return fresh or not repush, None
    if slave.result == "failed" and fresh:
        return True, slave.error or "failed"
    return False, None
