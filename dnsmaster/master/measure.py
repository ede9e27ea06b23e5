"""The measurements :mod:`dnsmaster.master.health` judges, taken on the master: whether
the daemon's pid runs, how old its heartbeat is, whether the zones are the ones
built, whether a rollback is in force, and the configuration file as it is now.

:func:`report` takes them all and judges; asking the slaves themselves is
:mod:`dnsmaster.master.probe`'s.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

from dnsmaster.config import Config
from dnsmaster.core.banner import built_from
from dnsmaster.core.sources import is_source
from dnsmaster.errors import ArchiveError, BuildError
from dnsmaster.master import rollback
from dnsmaster.master import state as statefile
from dnsmaster.master.build import Builder
from dnsmaster.master.health import Report, ZonesCheck, heartbeat_age, judge
from dnsmaster.master.secondaryhealth import judge_secondaries
from dnsmaster.master.state import State

__all__ = ["check_zones", "pid_alive", "report", "with_rollback"]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs here; a zombie (killed, not yet reaped) does not."""
    if pid <= 0:
        return False
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc: ask the kernel
    else:
        # "PID (COMMAND) STATE ...": the command may hold spaces and parentheses.
        return text.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def _same_host(state: State) -> bool:
    return state.host is None or state.host == socket.gethostname()


def _changed_at(path: Path) -> float:
    st = path.stat()
    # ctime too: a file renamed into place keeps its old mtime.
    return max(st.st_mtime, st.st_ctime)


def _oldest_change(zones: Path, after: float) -> float | None:
    """The oldest change to a source newer than ``after`` (a deletion dates the
    directory only)."""
    newer = []
    with contextlib.suppress(OSError), os.scandir(zones) as entries:
        for entry in entries:
            if is_source(entry.name):
                with contextlib.suppress(OSError):
                    stamp = _changed_at(Path(entry.path))
                    if stamp > after:
                        newer.append(stamp)
    if newer:
        return min(newer)
    with contextlib.suppress(OSError):
        stamp = zones.stat().st_mtime
        if stamp > after:
            return stamp
    return None


def check_zones(cfg: Config, state: State) -> ZonesCheck:
    """Compare the sources' fingerprint now with the build's."""
    zones = Path(state.zones) if state.zones else cfg.zones
    build = state.build
    built = build.fingerprint if build is not None else None
    if built is None:
        # A daemon that does not record it: the banner of the data it wrote.
        with contextlib.suppress(OSError), (cfg.output / "data").open("rb") as f:
            built = built_from(f.read(300))
    after = build.time if build is not None else 0.0
    if built is None:
        return ZonesCheck(None if build is not None else True, _oldest_change(zones, after))
    try:
        now = Builder(
            zones,
            cfg.output,
            max_file_size=cfg.max_file_size,
            ipv6_int=cfg.ipv6_int,
            catalog=cfg.catalog,
        ).fingerprint()
    except BuildError as exc:
        return ZonesCheck(None, error=f"{exc.path}: {exc.reason}")
    if now == built:
        return ZonesCheck(False)
    return ZonesCheck(True, _oldest_change(zones, after))


def with_rollback(cfg: Config, state: State) -> State:
    """``state`` with the rollback the output directory holds, which is what counts.

    A rollback made (or released) by hand while no daemon ran is in the output
    directory only; the state file may be an older daemon's.
    """
    try:
        hold = rollback.read(cfg.output)
    except ArchiveError:
        return state  # damaged: the daemon says what it does about it
    if hold is None:
        return replace(state, rollback=None) if state.rollback is not None else state
    if state.rollback is not None and state.rollback.sha256 == hold.sha256:
        return state
    rolled = statefile.RollbackState(
        hold.serial, hold.sha256, hold.kept_serial, hold.kept_sha256, hold.since
    )
    return replace(state, rollback=rolled)


def _verifies(cfg: Config) -> dict[str, bool]:
    """Which slaves the daemon asks over DNS after a push, by the configuration."""
    return {s.name: bool(cfg.daemon.verify and s.dns) for s in cfg.slaves}


def report(
    cfg: Config, state: State, *, now: float | None = None, config_error: str | None = None
) -> Report:
    """Measure (pid, heartbeat, zones, the configuration file) and judge.

    ``config_error``: why the configuration file does not load (``cfg`` then holds
    only its paths, :func:`dnsmaster.config.load_paths`).
    """
    state = with_rollback(cfg, state)
    try:
        stamp: statefile.FileStamp | None = statefile.stamp(cfg.path)
    except OSError:
        stamp = None
    wall = time.time()
    now = wall if now is None else now
    # A ``now`` given (a report as of another time) moves the monotonic clock too.
    clock = time.monotonic() + (now - wall)
    beat = heartbeat_age(state, now=now, boot_id=statefile.this_boot(), monotonic=clock)
    return judge(
        state,
        now=now,
        beat=beat,
        alive=pid_alive(state.pid) if _same_host(state) else None,
        zones=check_zones(cfg, state),
        verifies=_verifies(cfg),
        config_file=stamp,
        config_error=config_error,
        secondaries=judge_secondaries(state, now=now),
    )
