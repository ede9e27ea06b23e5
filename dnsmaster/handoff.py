"""A manual ``build`` or ``push`` beside a running daemon: one writer, one serial.

The daemon holds the output directory's lock for its whole life. A ``dnsmaster
push`` (or ``build``, or ``make``) typed while it runs must not build beside it:
the two would give one edit two serials, and ``status`` would show one no slave
serves. So the command hands its request to the daemon instead, with a signal
(``SIGUSR1``: build if the zones changed; ``SIGALRM``: push the current build to
every slave again), then follows the daemon's state file and prints each slave's
outcome as the daemon reports it, so the terminal shows what it always showed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from dnsmaster import state as statefile

__all__ = ["Outcome", "daemon_pid", "follow", "follow_request"]

#: How often the state file is read while following the daemon.
POLL = 0.1


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


def _read(path: Path) -> statefile.State | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return statefile.read(path)
    return None  # being replaced, or the daemon went away: try again


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
    os.kill(pid, signum if signum is not None else signal.SIGALRM if repush else signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    build: statefile.BuildState | None = None
    reported: dict[str, str | None] = {}
    build_seen = False
    while time.monotonic() < deadline:
        state = _read(state_path)
        if state is not None and state.pid != pid:
            break  # another daemon took over: what we asked of the first is moot
        held = state.held if state is not None else None
        if held is not None and held.fingerprint == fingerprint and signum != signal.SIGUSR2:
            return Outcome(state.build if state else None, True, {}, (), held=held.reason)
        rolled = state.rollback if state is not None else None
        if rolled is not None and rolled.held_fingerprint == fingerprint:
            return Outcome(
                state.build if state else None,
                True,
                {},
                (),
                held=_rollback(rolled),
                held_by="rollback",
            )
        if state is not None and state.build is not None:
            build = state.build
            if not build_seen:
                if build.fingerprint != fingerprint:
                    if build.error is not None and state.updated >= asked:
                        return Outcome(build, True, {}, ())
                    time.sleep(POLL)
                    continue
                build_seen = True
                if on_build is not None:
                    on_build(build)
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
    return Outcome(build if build_seen else None, False, reported, pending)


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
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    reported: dict[str, str | None] = {}
    build: statefile.BuildState | None = None
    answered = False
    while time.monotonic() < deadline:
        state = _read(state_path)
        if state is not None and state.pid != pid:
            break
        if state is not None and not answered:
            if state.request is None or state.request.id != ident:
                time.sleep(POLL)
                continue
            if state.request.error is not None:
                return Outcome(state.build, False, {}, (), error=state.request.error)
            answered = True
        if state is not None and build is None:
            candidate = state.build
            if fingerprint is None:
                target = state.rollback.sha256 if state.rollback is not None else None
                if candidate is not None and candidate.sha256 == target:
                    build = candidate
            else:
                held = state.held
                if held is not None and held.fingerprint == fingerprint and held.since >= asked:
                    return Outcome(candidate, True, {}, (), held=held.reason)
                if candidate is not None and candidate.fingerprint == fingerprint:
                    if candidate.time >= asked:
                        build = candidate
                elif candidate is not None and candidate.error and state.updated >= asked:
                    return Outcome(candidate, True, {}, ())
            if build is not None and on_build is not None:
                on_build(build)
        if state is not None and build is not None:
            for slave in state.slaves:
                if slave.name not in slaves or slave.name in reported:
                    continue
                done, reason = _outcome(slave, build, asked, repush=False)
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
