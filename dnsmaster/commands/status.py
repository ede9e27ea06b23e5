"""``dnsmaster status``: what the daemon did, judged, for people, scripts and Nagios.

A report is a measurement. ``ok`` means the daemon is alive (its pid runs and its
heartbeat is fresh), the zones there now are the ones built, and each slave has the
build installed and was seen serving its serial over DNS. Anything else is a named
state with the reason and what to do:

========= ===========================================================================
daemon    ``running``; ``stopped`` (SIGTERM, cleanly); ``dead`` (its pid is gone, or
          it wrote no heartbeat for 3 intervals on another host); ``hung`` (its pid
          runs but its heartbeat is 3 intervals old); ``unsure`` (its heartbeat
          is dated in the future: the clock stepped back, and its age cannot be
          told; UNKNOWN for ``--nagios``)
build     ``ok``; ``none`` (never built); ``failed`` (the last build failed: the
          zones have errors); ``unbuilt`` (the zones changed since the last build);
          ``unreadable`` (status cannot read the zones to compare); ``held`` (the
          guard holds a build back); ``rollback`` (a rollback holds the slaves on
          an earlier build until ``dnsmaster rollback --release``)
slave     ``ok``; ``pushing``; ``behind`` (has an older build); ``failing`` (its
          pushes fail: the receiver's or the connection's reason); ``stale`` (DNS
          answers another serial than the one installed); ``dns-failed`` (its
          tinydns did not answer); ``verifying`` (installed, not yet asked over DNS);
          ``unknown`` (the daemon has not heard from it yet)
config    shown only when not ok: ``reload-failed`` (the last SIGHUP could not load
          the file: the daemon runs on what it loaded before); ``changed`` (the
          file differs from what the daemon loaded: SIGHUP applies it);
          ``restart-needed`` (the file changes settings a reload cannot,
          :data:`dnsmaster.daemon.reload.RESTART_NEEDED`: the daemon keeps the old ones)
========= ===========================================================================

The judging functions (:func:`judge_daemon`, :func:`judge_build`, :func:`judge_slave`,
:func:`judge`) are pure: the clock, the pid check and the zones comparison are
passed in. :func:`report` does that I/O; :func:`main` is the command.

Exit statuses of the plain command (``--json`` too), the highest that applies:
0 all ok; 1 the daemon does not run on the configuration file as it is (config
above); 3 a slave is not ok; 4 the build is not current (none, failed, unbuilt,
unreadable); 5 the daemon is not running (or, ``unsure``, whether it runs cannot be
told); 2 usage or configuration error; 111 the state file cannot be read or is not
a state file (a field of the wrong type). ``--nagios`` uses Nagios' own (0 OK, 1 WARNING, 2
CRITICAL, 3 UNKNOWN); ``--live`` exits 0 when every slave has and serves the
master's data, 3 when one does not, 111 when the master's data cannot be read.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dnsmaster.master import state as statefile
from dnsmaster.master.handoff import SIGHUP_HOW
from dnsmaster.master.state import HEARTBEAT_MISSES, SlaveState, State

if TYPE_CHECKING:
    from dnsmaster.config import Config, Slave
    from dnsmaster.daemon.reload import FileStamp
    from dnsmaster.protocol import SlaveVersion
    from dnsmaster.transport.dns import SoaCheck

__all__ = [
    "EXIT_BUILD",
    "EXIT_CONFIG",
    "EXIT_DAEMON",
    "EXIT_OK",
    "EXIT_SLAVES",
    "EXIT_SYSTEM",
    "EXIT_USAGE",
    "Finding",
    "Report",
    "ZonesCheck",
    "judge",
    "judge_build",
    "judge_config",
    "judge_daemon",
    "judge_slave",
    "main",
    "nagios",
    "pid_alive",
    "render",
    "report",
]

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_SLAVES = 3
EXIT_BUILD = 4
EXIT_DAEMON = 5
EXIT_SYSTEM = 111

NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
_NAGIOS_WORDS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
#: Which status wins when problems differ: one known to be bad says more than one
#: that cannot be told (the order of the Nagios plugins' ``max_state_alt``).
_NAGIOS_RANK = (NAGIOS_OK, NAGIOS_UNKNOWN, NAGIOS_WARNING, NAGIOS_CRITICAL)
#: Longest plugin text before the perfdata: Nagios keeps 4 KiB of output in all.
_NAGIOS_TEXT_MAX = 1000

#: Defaults of ``--warning``/``--critical``: how long a problem may last. Long
#: enough that a push of a large build over a slow link, or a save still in its
#: quiet period, does not page anyone.
WARNING_SECONDS = 120.0
CRITICAL_SECONDS = 600.0

#: A heartbeat dated this many seconds ahead of the clock is not believed: the
#: clock stepped back since it was written (or another host's clock is ahead), and
#: its age cannot be told from the wall clock. Below it: the two clocks' jitter.
FUTURE_TOLERANCE = 5.0

#: Zones asked for over DNS by ``--live`` (as the daemon asks after a push).
LIVE_ZONES = 20

#: States that count as ok; in the Nagios counts the others are "behind" (not there
#: yet, no error) or "failing".
SLAVE_BEHIND = ("pushing", "behind", "verifying", "unknown")
SLAVE_FAILING = ("failing", "stale", "dns-failed")
SLAVE_STATES = ("ok", *SLAVE_BEHIND, *SLAVE_FAILING)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing judged: the daemon, the build, or a slave."""

    subject: str  # "daemon", "build", or a slave's name
    state: str
    reason: str
    #: What to do about it; None when it is ok.
    action: str | None = None
    #: Since when it has been so (for thresholds); None when it is ok.
    since: float | None = None
    #: CRITICAL at once, whatever its age (a slave's changed host key).
    urgent: bool = False
    #: WARNING at once and never more, whatever its age: a state an operator chose
    #: (a rollback) or left half done (a config the daemon could not reload), to be
    #: seen but not to page anyone.
    chosen: bool = False
    #: Cannot be judged (the heartbeat is dated in the future): UNKNOWN for Nagios.
    unknown: bool = False

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "running")


@dataclass(frozen=True, slots=True)
class ZonesCheck:
    """The zones directory now against the build: measured by :func:`check_zones`."""

    #: True: they differ; False: the same; None: cannot tell (see ``error``, or no
    #: fingerprint to compare with).
    changed: bool | None
    #: The oldest change the build does not have (a file's mtime or ctime).
    since: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """The whole judgement."""

    now: float
    state: State
    daemon: Finding
    build: Finding
    slaves: tuple[Finding, ...] = field(default=())
    #: The configuration, when the daemon does not run on the file as it is.
    config: Finding | None = None
    #: The heartbeat's age, measured (:func:`heartbeat_age`); None: ``now`` minus
    #: the time it was written.
    beat: float | None = None

    @property
    def heartbeat_age(self) -> float:
        return self.now - self.state.updated if self.beat is None else self.beat

    @property
    def problems(self) -> list[Finding]:
        config = () if self.config is None else (self.config,)
        return [f for f in (self.daemon, self.build, *self.slaves, *config) if not f.ok]

    @property
    def exit_status(self) -> int:
        if not self.daemon.ok:
            return EXIT_DAEMON
        if not self.build.ok:
            return EXIT_BUILD
        if any(not s.ok for s in self.slaves):
            return EXIT_SLAVES
        if self.config is not None and not self.config.ok:
            return EXIT_CONFIG
        return EXIT_OK

    def count(self, states: Iterable[str]) -> int:
        wanted = set(states)
        return sum(s.state in wanted for s in self.slaves)


# -- judging (pure) ---------------------------------------------------------------------


def ago(seconds: float) -> str:
    """A duration for people: ``12 s``, ``4 min``, ``3 h``, ``2 d``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def heartbeat_age(
    state: State, *, now: float, boot_id: str | None, monotonic: float
) -> float | None:
    """How old the heartbeat is by the monotonic clock, when the reader is on the
    daemon's boot (``boot_id``, ``monotonic`` the reader's); None: it cannot say,
    the wall clock (``now - state.updated``) has to do.

    The wall clock can be stepped back (NTP, an operator): a hung daemon's last
    heartbeat then looks fresh for as long as the step. The monotonic clock cannot.
    """
    if state.monotonic is None or boot_id is None or state.boot_id != boot_id:
        return None
    return monotonic - state.monotonic


def judge_daemon(
    state: State, *, now: float, alive: bool | None, beat: float | None = None
) -> Finding:
    """Whether the daemon that wrote ``state`` still runs.

    ``alive`` is whether its pid runs (a zombie does not), None when that cannot be
    told (the file was written on another host). ``beat`` is the heartbeat's age
    measured on the monotonic clock (:func:`heartbeat_age`); None: by the wall clock.
    """
    pid = state.pid
    beat = now - state.updated if beat is None else beat
    interval = state.heartbeat_interval
    late = interval is not None and beat > HEARTBEAT_MISSES * interval
    restart = (
        "start it again through its supervisor (svc -u, systemctl start) and read its "
        "log for daemon.crash; until then no save is built or pushed"
    )
    if state.stopped is not None:
        return Finding(
            "daemon",
            "stopped",
            f"pid {pid} stopped cleanly {ago(now - state.stopped)} ago",
            f"if that was not meant, {restart}",
            state.stopped,
        )
    if alive is False:
        return Finding(
            "daemon",
            "dead",
            f"pid {pid} is not running (killed or crashed); its last heartbeat was {ago(beat)} ago",
            restart,
            state.updated,
        )
    if beat < -FUTURE_TOLERANCE:
        return _unsure(state, -beat, alive=alive)
    if late:
        promised = f"it promised one every {interval:g} s"
        if alive is None:
            return Finding(
                "daemon",
                "dead",
                f"no heartbeat from pid {pid} on {state.host} for {ago(beat)}; {promised}",
                f"on {state.host}: {restart}",
                state.updated,
            )
        return Finding(
            "daemon",
            "hung",
            f"pid {pid} runs but wrote no heartbeat for {ago(beat)}; {promised}",
            f"see what it is doing (py-spy dump --pid {pid}), then restart it; its log may say why",
            state.updated,
        )
    where = f" on {state.host}" if alive is None and state.host else ""
    every = f" (every {interval:g} s)" if interval is not None else ""
    return Finding("daemon", "running", f"pid {pid}{where}, heartbeat {ago(beat)} ago{every}")


def _unsure(state: State, ahead: float, *, alive: bool | None) -> Finding:
    """A heartbeat dated in the future: how old it is cannot be told, so neither can
    a hung daemon from a live one (nor, on another host, a dead one)."""
    where = "" if alive is True else f" on {state.host}" if state.host else ""
    return Finding(
        "daemon",
        "unsure",
        f"the heartbeat is {ahead:.0f} s in the future: the clock stepped back? (pid "
        f"{state.pid}{where}; its age cannot be told until it writes the next one)",
        "check the clock (timedatectl, chronyc tracking); a daemon that runs writes a "
        f"new heartbeat within {state.heartbeat_interval or 10:g} s, one that does not "
        "is hung or dead: restart it",
        unknown=True,
    )


def judge_build(state: State, zones: ZonesCheck, *, now: float) -> Finding:
    """Whether the build is the zones there now."""
    build = state.build
    if state.rollback is not None:
        rolled = state.rollback
        saves = (
            f"; saves are built, not pushed (the newest is serial {rolled.held_serial})"
            if rolled.held_serial is not None
            else ""
        )
        return Finding(
            "build",
            "rollback",
            f"a rollback holds every slave on serial {rolled.serial} (kept build "
            f"{rolled.kept_serial}, sha256 {rolled.kept_sha256[:16]}) since "
            f"{_when(rolled.since)}{saves}",
            "when the zones are right again: dnsmaster rollback --release builds and pushes "
            "them (dnsmaster diff shows what that changes)",
            rolled.since,
            chosen=True,
        )
    if state.held is not None:
        held = state.held
        kept = f"; the slaves keep serial {build.serial}" if build is not None else ""
        return Finding(
            "build",
            "held",
            f"the guard holds build {held.serial} back: it {held.reason}{kept}",
            "see what it changes with dnsmaster diff; if it is meant, dnsmaster push --accept; "
            "if not, fix the zones and save",
            held.since,
            urgent=True,
        )
    if build is None:
        return Finding(
            "build",
            "none",
            "nothing built yet" + (f": {state_error(state)}" if state_error(state) else ""),
            "run dnsmaster check to see each error with its file and line; fix and save. "
            "If the check is clean, is the daemon running?",
            zones.since or state.started or state.updated,
        )
    kept = f"; the slaves keep serial {build.serial}"
    if state_error(state):
        return Finding(
            "build",
            "failed",
            f"the last build failed: {state_error(state)}{kept}",
            "run dnsmaster check to see each error with its file and line; fix and save",
            zones.since or build.time,
        )
    if zones.changed:
        since = zones.since or build.time
        return Finding(
            "build",
            "unbuilt",
            f"the zones changed {ago(now - since)} ago and are not built yet{kept}",
            "the daemon builds after its quiet period; if this lasts, is it running? "
            "kill -HUP builds now",
            since,
        )
    if zones.changed is None and zones.error is not None:
        return Finding(
            "build",
            "unreadable",
            f"cannot compare the zones with the build: {zones.error}",
            "run status as the daemon's user, or fix what the error names",
            build.time,
        )
    records = f", {build.records} records" if build.records is not None else ""
    return Finding(
        "build",
        "ok",
        f"serial {build.serial}, sha256 {build.sha256[:16]}{records}, built "
        f"{_when(build.time)} ({ago(now - build.time)} ago)",
    )


def judge_config(
    state: State, *, file: FileStamp | None, load_error: str | None = None
) -> Finding | None:
    """Whether the daemon runs on its configuration file as it is now.

    ``file`` is the file's stamp now (None: unreadable), ``load_error`` why it does
    not load now, if it does not. None: it does, or the daemon does not say.
    """
    running = state.config
    if running is None or running.sha256 is None:
        return None
    since = f"the one loaded {_when(running.loaded)}"
    now_sha = file.sha256 if file is not None else None
    if running.error is not None and (load_error is not None or now_sha == running.file_sha256):
        return Finding(
            "config",
            "reload-failed",
            f"the last SIGHUP ({_when(running.failed_at)}) could not load {running.path}: "
            f"{load_error or running.error}; the daemon runs on {since}",
            f"fix the file (dnsmaster check --config {running.path} says what is wrong), "
            f"then send the daemon SIGHUP ({SIGHUP_HOW})",
            running.failed_at,
            chosen=True,
        )
    if now_sha is not None and now_sha != running.sha256:
        broken = f"; it does not load: {load_error}" if load_error else ""
        return Finding(
            "config",
            "changed",
            f"{running.path} changed since the daemon loaded it{broken}; it runs on {since}",
            ("fix the file, then " if load_error else "")
            + f"send the daemon SIGHUP ({SIGHUP_HOW}) to apply it",
            file.mtime if file is not None else running.loaded,
        )
    if running.restart_needed:
        return Finding(
            "config",
            "restart-needed",
            f"{running.path} changes {', '.join(running.restart_needed)}, which a reload "
            "cannot apply: the daemon keeps the values it started with",
            "restart the daemon (svc -t /service/dnsmaster, sv restart dnsmaster)",
            running.loaded,
            chosen=True,
        )
    return None


def state_error(state: State) -> str | None:
    """The last build attempt's failure, if it failed."""
    if state.build is not None and state.build.error:
        return state.build.error
    return state.build_error


def _serial(value: int | None) -> str:
    return "-" if value is None else str(value)


def judge_slave(
    slave: SlaveState,
    state: State,
    *,
    now: float,
    verifies: bool | None = None,
) -> Finding:
    """One slave against the build.

    ``verifies`` is whether the daemon asks this slave's tinydns after a push (from
    the configuration), for state files that do not say so themselves
    (``verified == "skipped"``); None: assume it does.
    """
    import dns.serial  # noqa: PLC0415 - RFC 1982 comparison, only needed here

    name, build = slave.name, state.build
    if build is None:
        return Finding(
            name, "unknown", "no build to compare with", "see the build's state", state.updated
        )
    has_current = slave.installed_sha256 == build.sha256
    # Since when it has not been ok: a slave without the build since the build was
    # made (or, after a restart, since the daemon started); one with it since its push.
    out_since = (
        (slave.last_push or build.time)
        if has_current
        else max(build.time, state.started or build.time)
    )
    if slave.result == "failed":
        tries = f" ({slave.failures} pushes failed in a row)" if slave.failures > 1 else ""
        retry = (
            f"; next retry {_when(slave.next_retry)}"
            if slave.next_retry is not None and slave.next_retry > now
            else ""
        )
        return Finding(
            name,
            "failing",
            f"{slave.error or 'push failed'}{tries}; installed serial "
            f"{_serial(slave.installed_serial)}, current {build.serial}{retry}",
            f"fix what the error says on {name} (its sshd, host key, login, the receiver's "
            "disk); "
            + (
                "the daemon retries with backoff, kill -ALRM retries now"
                if slave.retryable
                else "retrying cannot help, so the daemon waits: after the fix, kill -HUP"
                + (" (or edit known_hosts)" if slave.phase == "hostkey" else "")
            ),
            out_since,
            urgent=slave.phase == "hostkey",
        )
    if not has_current:
        if slave.result == "pushing":
            started = slave.push_started or out_since
            return Finding(
                name,
                "pushing",
                f"pushing serial {build.serial} for {ago(now - started)}",
                f"wait; if it lasts, read the daemon's push.line events for {name}",
                out_since,
            )
        if slave.installed_sha256 is None and slave.result == "unknown":
            return Finding(
                name,
                "unknown",
                "the daemon has not heard from it yet",
                f"wait; if it stays so, read the daemon's log for {name}",
                max(out_since, state.started or 0.0),
            )
        return Finding(
            name,
            "behind",
            f"has serial {_serial(slave.installed_serial)} "
            f"(sha256 {(slave.installed_sha256 or '-')[:16]}), current is {build.serial}",
            "the daemon pushes it on its own; if it stays behind, kill -ALRM pushes again "
            f"and its log says why (slave={name})",
            out_since,
        )
    served, expected = slave.served_serial, slave.expected_serial
    zone = slave.verify_zone or "the zone asked"
    if (
        served is not None
        and expected is not None
        and slave.verified in ("ok", "stale")
        and served != expected
    ):
        # RFC 1982: a serial "below" the installed one is an older build still served.
        older = dns.serial.Serial(served) < expected
        what = "an older serial" if older else "another serial"
        return Finding(
            name,
            "stale",
            f"installed serial {expected} but its tinydns answers {what}, {served}, for {zone}",
            f"tinydns on {name} does not serve the data.cdb the receiver installs: check "
            "its ROOT, restart it; is another master pushing to it?",
            slave.verified_at or out_since,
        )
    if slave.verified == "stale":
        return Finding(
            name,
            "stale",
            f"its tinydns answers another serial than the installed {_serial(expected)} for {zone}",
            f"check that tinydns on {name} serves the root the receiver writes; restart it",
            slave.verified_at or out_since,
        )
    if slave.verified == "failed":
        return Finding(
            name,
            "dns-failed",
            f"installed serial {_serial(slave.installed_serial)}, but its tinydns did not "
            f"answer for {zone}: {slave.verify_error or 'no answer'}",
            f"start tinydns on {name}, or fix dns/dns_port in the configuration; "
            "dnsmaster status --live asks again now",
            slave.verified_at or out_since,
        )
    if slave.verified == "ok":
        return Finding(name, "ok", f"serves serial {_serial(served or slave.installed_serial)}")
    if slave.verified == "skipped" or verifies is False:
        return Finding(
            name,
            "ok",
            f"has serial {_serial(slave.installed_serial)} (not asked over DNS: verification "
            "is off for it)",
        )
    if slave.result == "pushing":
        return Finding(
            name,
            "pushing",
            f"pushing serial {build.serial} again",
            "wait; it has the build already",
            out_since,
        )
    return Finding(
        name,
        "verifying",
        f"has serial {_serial(slave.installed_serial)}, not yet seen serving it over DNS",
        "wait a moment: the daemon asks its tinydns after each push",
        out_since,
    )


def judge(
    state: State,
    *,
    now: float,
    alive: bool | None,
    zones: ZonesCheck,
    verifies: Mapping[str, bool] | None = None,
    config_file: FileStamp | None = None,
    config_error: str | None = None,
    beat: float | None = None,
) -> Report:
    """The whole report, from measurements made elsewhere (pure).

    ``config_file`` is the configuration file's stamp now, ``config_error`` why it
    does not load now (see :func:`judge_config`); ``beat`` the heartbeat's age on
    the monotonic clock (:func:`heartbeat_age`).
    """
    verifies = verifies or {}
    daemon = judge_daemon(state, now=now, alive=alive, beat=beat)
    return Report(
        now=now,
        state=state,
        beat=beat,
        # Only a running daemon has a configuration to be behind the file.
        config=judge_config(state, file=config_file, load_error=config_error)
        if daemon.ok
        else None,
        daemon=daemon,
        build=judge_build(state, zones, now=now),
        slaves=tuple(
            judge_slave(s, state, now=now, verifies=verifies.get(s.name)) for s in state.slaves
        ),
    )


# -- measuring (I/O) --------------------------------------------------------------------


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
    from dnsmaster.core.sources import is_source  # noqa: PLC0415

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
    from dnsmaster.core.banner import built_from  # noqa: PLC0415
    from dnsmaster.errors import BuildError  # noqa: PLC0415
    from dnsmaster.master.build import Builder  # noqa: PLC0415

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
            zones, cfg.output, max_file_size=cfg.max_file_size, ipv6_int=cfg.ipv6_int
        ).fingerprint()
    except BuildError as exc:
        return ZonesCheck(None, error=f"{exc.path}: {exc.reason}")
    if now == built:
        return ZonesCheck(False)
    return ZonesCheck(True, _oldest_change(zones, after))


def _with_rollback(cfg: Config, state: State) -> State:
    """``state`` with the rollback the output directory holds, which is what counts.

    A rollback made (or released) by hand while no daemon ran is in the output
    directory only; the state file may be an older daemon's.
    """
    from dataclasses import replace  # noqa: PLC0415

    from dnsmaster.errors import ArchiveError  # noqa: PLC0415
    from dnsmaster.master import rollback  # noqa: PLC0415

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
    from dnsmaster.daemon import reload  # noqa: PLC0415

    state = _with_rollback(cfg, state)
    try:
        stamp: FileStamp | None = reload.stamp(cfg.path)
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
    )


# -- rendering --------------------------------------------------------------------------


def render(rep: Report) -> str:
    """The report as a table for people (stdout)."""
    lines = [
        f"{'daemon':8} {rep.daemon.state:10} {rep.daemon.reason}",
        f"{'build':8} {rep.build.state:10} {rep.build.reason}",
    ]
    if rep.config is not None:
        lines.append(f"{'config':8} {rep.config.state:10} {rep.config.reason}")
    rows = [("SLAVE", "STATE", "INSTALLED", "SERVED", "LAST SUCCESS", "FAILURES", "REASON")]
    by_name = {s.name: s for s in rep.state.slaves}
    for finding in rep.slaves:
        s = by_name[finding.subject]
        rows.append(
            (
                s.name,
                finding.state,
                _serial(s.installed_serial),
                _serial(s.served_serial),
                _when(s.last_success),
                str(s.failures),
                finding.reason,
            )
        )
    if rep.slaves:
        lines.append("")
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def render_problems(rep: Report) -> str:
    """Each problem with its reason and what to do (stderr)."""
    out = []
    for f in rep.problems:
        # The daemon's reason dates its last heartbeat already.
        dated = f.since is not None and f.subject != "daemon"
        lasting = f" for {ago(rep.now - f.since)}" if dated and f.since is not None else ""
        out.append(f"dnsmaster: {f.subject}: {f.state}{lasting}: {f.reason}\n")
        if f.action:
            out.append(f"  what to do: {f.action}\n")
    return "".join(out)


def as_json(rep: Report) -> dict[str, Any]:
    """The state file's document with the judgement under ``health``."""
    return {
        "format": statefile.FORMAT,
        **asdict(rep.state),
        "health": {
            "status": "ok" if not rep.problems else "problem",
            "exit": rep.exit_status,
            "daemon": asdict(rep.daemon),
            "build": asdict(rep.build),
            "slaves": [asdict(s) for s in rep.slaves],
            "config": asdict(rep.config) if rep.config is not None else None,
        },
    }


def _perf_label(label: str) -> str:
    # Nagios perfdata: quote a label with anything but word characters; ' doubles.
    if all(c.isalnum() or c in "_-." for c in label):
        return label
    return "'" + label.replace("'", "''") + "'"


def _perf_seconds(label: str, seconds: float | None) -> str:
    value = "U" if seconds is None else f"{max(0.0, seconds):.0f}s"
    return f"{_perf_label(label)}={value};;;0"


def _one_line(text: str) -> str:
    # "|" starts the perfdata; a newline starts the long output.
    return " ".join(text.replace("|", "/").split())


def nagios(rep: Report, *, warning: float, critical: float) -> tuple[int, str]:
    """The Nagios plugin line and exit status: ``DNSMASTER OK - ... | perfdata``.

    CRITICAL: the daemon is not running or nothing was ever built, or any other
    problem has lasted ``critical`` seconds; WARNING: one has lasted ``warning``
    seconds. A configuration the daemon does not run on is never more than WARNING
    (a failed reload or settings that need a restart: at once). Younger problems
    (a push under way, a save in its quiet period) are named but OK.
    """
    code = NAGIOS_OK
    for f in rep.problems:
        age = rep.now - (f.since if f.since is not None else rep.now)
        at_once = f.urgent or f.subject == "daemon" or (f.subject == "build" and f.state == "none")
        if f.unknown:
            level = NAGIOS_UNKNOWN
        elif f.chosen:
            level = NAGIOS_WARNING
        elif f.subject == "config":
            # The daemon works on, on the configuration it loaded: worth a look, no page.
            level = NAGIOS_WARNING if age >= warning else NAGIOS_OK
        elif at_once or age >= critical:
            level = NAGIOS_CRITICAL
        elif age >= warning:
            level = NAGIOS_WARNING
        else:
            level = NAGIOS_OK
        code = max(code, level, key=_NAGIOS_RANK.index)
    build = rep.state.build
    total = len(rep.slaves)
    ok = rep.count(("ok",))
    if not rep.problems:
        text = f"serial {build.serial if build else '-'} served by {ok}/{total} slaves"
    else:
        # One line: each problem's name, state and age; the reason only when there is
        # one problem (plain ``dnsmaster status`` gives every reason and what to do).
        named = [
            f"{f.subject} {f.state}"
            + (f" for {ago(rep.now - f.since)}" if f.since and f.subject != "daemon" else "")
            for f in rep.problems
        ]
        if len(rep.problems) == 1:
            named[0] += f": {rep.problems[0].reason}"
        text = "; ".join(named)
        if len(text) > _NAGIOS_TEXT_MAX:
            text = text[: _NAGIOS_TEXT_MAX - 3] + "..."
    n = f";;;0;{total}"
    perf = [
        f"slaves_ok={ok}{n}",
        f"slaves_behind={rep.count(SLAVE_BEHIND)}{n}",
        f"slaves_failing={rep.count(SLAVE_FAILING)}{n}",
        _perf_seconds("build_age", rep.now - build.time if build else None),
        _perf_seconds("heartbeat_age", rep.heartbeat_age),
    ]
    perf += [
        _perf_seconds(
            f"last_success_{s.name}", rep.now - s.last_success if s.last_success else None
        )
        for s in rep.state.slaves
    ]
    line = f"DNSMASTER {_NAGIOS_WORDS[code]} - {_one_line(text)} | {' '.join(perf)}"
    return code, line


# -- --live: ask every slave now --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Master:
    """The master's data now: what every slave should have and serve."""

    sha256: str
    serial: int | None
    #: zone (wire name) -> SOA serial, the zones asked for
    zones: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class LiveSlave:
    """One slave, asked now."""

    name: str
    verdict: str  # ok, differs, stale, dns-failed, unreachable
    reason: str
    installed_sha256: str | None = None
    installed_serial: int | None = None
    ssh_ms: float | None = None
    ssh_error: str | None = None
    #: (zone, expected, served or None, error or None) per zone asked
    served: tuple[tuple[str, int, int | None, str | None], ...] = ()
    dns_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def read_master(output: Path) -> Master:
    """The master's ``data``; raises OSError."""
    from dnsmaster.core.banner import previous_serial  # noqa: PLC0415
    from dnsmaster.core.soa import zone_serials  # noqa: PLC0415

    data = (output / "data").read_bytes()
    zones = dict(list(zone_serials(data).items())[:LIVE_ZONES])
    return Master(hashlib.sha256(data).hexdigest(), previous_serial(data[:200]), zones)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(reason) or type(exc).__name__


async def _ask_ssh(
    cfg: Config, slave: Slave, timeout: float
) -> tuple[SlaveVersion | None, str | None, float]:
    from dnsmaster.errors import PushError  # noqa: PLC0415
    from dnsmaster.master.pushing import channel_for  # noqa: PLC0415
    from dnsmaster.transport.channel import fetch_status  # noqa: PLC0415
    from dnsmaster.transport.sshlib import asyncssh  # noqa: PLC0415

    started = time.perf_counter()
    channel = channel_for(slave, cfg)
    try:
        version = await fetch_status(channel, timeout, lambda *_: None)
        error = None
    except (OSError, TimeoutError, asyncssh.Error, PushError) as exc:
        version, error = None, _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return version, error, (time.perf_counter() - started) * 1000


async def _ask_dns(
    slave: Slave, zones: Mapping[bytes, int], timeout: float
) -> tuple[list[SoaCheck], float]:
    from dnsmaster.transport.dns import check_serials  # noqa: PLC0415

    started = time.perf_counter()
    checks: list[SoaCheck] = []
    for wire, serial in zones.items():
        found = await check_serials(slave.dns, slave.dns_port, {wire: serial}, timeout)
        checks += found
        if all(c.served is None for c in found):
            break  # a server that did not answer one zone will not answer the next
    return checks, (time.perf_counter() - started) * 1000


async def ask_slave(cfg: Config, slave: Slave, master: Master, timeout: float) -> LiveSlave:
    """What ``slave`` has installed (SSH ``status``) and serves (DNS SOA), now."""
    import asyncio  # noqa: PLC0415

    legacy = slave.protocol == "legacy"
    dns_wanted = bool(slave.dns) and bool(master.zones)

    async def no_dns() -> tuple[list[SoaCheck], float | None]:
        return [], None

    ssh_part = _ask_ssh(cfg, slave, timeout)
    dns_part = _ask_dns(slave, master.zones, timeout) if dns_wanted else no_dns()
    (version, ssh_error, ssh_ms), (checks, dns_ms) = await asyncio.gather(ssh_part, dns_part)
    served = tuple((c.zone, c.expected, c.served, c.error) for c in checks)
    common: dict[str, Any] = {
        "installed_sha256": version.sha256 if version else None,
        "installed_serial": version.serial if version else None,
        "ssh_ms": ssh_ms,
        "ssh_error": ssh_error,
        "served": served,
        "dns_ms": dns_ms,
    }

    def result(verdict: str, reason: str) -> LiveSlave:
        return LiveSlave(slave.name, verdict, reason, **common)

    if ssh_error is not None:
        return result("unreachable", f"status over SSH failed: {ssh_error}")
    if version is None and not legacy:
        return result("differs", "has nothing installed that it vouches for")
    if version is not None and version.sha256 != master.sha256:
        return result(
            "differs",
            f"has serial {_serial(version.serial)} sha256 {version.sha256[:16]}, the master "
            f"serial {_serial(master.serial)} sha256 {master.sha256[:16]}",
        )
    for c in checks:
        if c.served is not None and c.served != c.expected:
            return result("stale", f"{c.zone}: serves serial {c.served}, the master {c.expected}")
    for c in checks:
        if c.served is None:
            return result("dns-failed", f"{c.zone}: {c.error or 'no answer'}")
    if not dns_wanted:
        return result("ok", "installed; not asked over DNS (no dns address or no zone)")
    return result("ok", "has and serves the master's data")


async def ask_all(cfg: Config, master: Master, timeout: float) -> list[LiveSlave]:
    """Every slave in parallel (at most ``[push] parallel`` at once), in config order."""
    import asyncio  # noqa: PLC0415 - cli.py imports this module for every command

    gate = asyncio.Semaphore(cfg.push.parallel)

    async def one(slave: Slave) -> LiveSlave:
        async with gate:
            try:
                async with asyncio.timeout(timeout * 2):
                    return await ask_slave(cfg, slave, master, timeout)
            except TimeoutError:
                return LiveSlave(slave.name, "unreachable", f"no answer in {timeout * 2:g} s")

    return list(await asyncio.gather(*(one(s) for s in cfg.slaves)))


def render_live(master: Master, found: Sequence[LiveSlave]) -> str:
    lines = [
        f"master: serial {_serial(master.serial)} sha256 {master.sha256[:16]}, "
        f"{len(master.zones)} zones asked"
    ]
    for s in found:
        lines.append(f"{s.name}: {s.verdict}: {s.reason}")
        ms = f" ({s.ssh_ms:.0f} ms)" if s.ssh_ms is not None else ""
        if s.installed_sha256 is not None:
            lines.append(
                f"  installed  serial {_serial(s.installed_serial)} "
                f"sha256 {s.installed_sha256[:16]}{ms}"
            )
        elif s.ssh_error is not None:
            lines.append(f"  installed  ? ssh: {s.ssh_error}{ms}")
        else:
            lines.append(f"  installed  ? (nothing it vouches for){ms}")
        if s.served:
            answers = ", ".join(
                f"{zone} {served}" if served is not None else f"{zone} ? ({error})"
                for zone, _expected, served, error in s.served
            )
            dms = f" ({s.dns_ms:.0f} ms)" if s.dns_ms is not None else ""
            lines.append(f"  serves     {answers}{dms}")
    return "\n".join(lines) + "\n"


def _live(cfg: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        master = read_master(cfg.output)
    except OSError as exc:
        from dnsmaster.fsutil import describe  # noqa: PLC0415

        err.write(f"dnsmaster: {cfg.output / 'data'}: cannot read: {describe(exc)}\n")
        return EXIT_SYSTEM
    import asyncio  # noqa: PLC0415

    found = asyncio.run(ask_all(cfg, master, args.timeout))
    if args.json:
        document = {
            "master": asdict(master) | {"zones": _zones_text(master.zones)},
            "slaves": [asdict(s) | {"ok": s.ok} for s in found],
        }
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(render_live(master, found))
    for s in found:
        if not s.ok:
            err.write(f"dnsmaster: {s.name}: {s.verdict}: {s.reason}\n")
    return EXIT_OK if all(s.ok for s in found) else EXIT_SLAVES


def _zones_text(zones: Mapping[bytes, int]) -> dict[str, int]:
    import dns.name  # noqa: PLC0415

    return {
        dns.name.from_wire(wire, 0)[0].to_text(omit_final_dot=True): serial
        for wire, serial in zones.items()
    }


# -- the command ------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``status`` sub-command's options (cli.py calls this)."""
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument(
        "--json", action="store_true", help="print the state file and its judgement as JSON"
    )
    p.add_argument(
        "--nagios",
        action="store_true",
        help="one line for Nagios with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    )
    p.add_argument(
        "--warning",
        type=float,
        default=WARNING_SECONDS,
        metavar="SECONDS",
        help="--nagios: WARNING when a problem has lasted this long (default %(default)g)",
    )
    p.add_argument(
        "--critical",
        type=float,
        default=CRITICAL_SECONDS,
        metavar="SECONDS",
        help="--nagios: CRITICAL when a problem has lasted this long (default %(default)g); "
        "a daemon not running is CRITICAL at once",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="ask every slave now, over SSH and DNS, what it has and serves",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="--live: how long to wait for each slave (default %(default)g)",
    )


def _daemon_config(path: Path) -> Config | None:
    """For a configuration file that does not load: its paths, when they lead to the
    state file of a daemon that records the configuration it runs on (None: not)."""
    from dnsmaster import config  # noqa: PLC0415
    from dnsmaster.errors import ConfigError  # noqa: PLC0415

    try:
        cfg = config.load_paths(path)
        state = statefile.read(cfg.state)
    except (ConfigError, OSError, ValueError):
        return None
    return cfg if state.config is not None and state.stopped is None else None


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``dnsmaster status``; the exit status."""
    from dnsmaster import config  # noqa: PLC0415
    from dnsmaster.errors import ConfigError  # noqa: PLC0415

    out = out or sys.stdout
    err = err or sys.stderr
    mode_nagios = bool(getattr(args, "nagios", False))

    def unknown(message: str, status: int) -> int:
        if mode_nagios:
            out.write(f"DNSMASTER UNKNOWN - {_one_line(message)}\n")
            return NAGIOS_UNKNOWN
        err.write(f"dnsmaster: {message}\n")
        return status

    if mode_nagios and (args.json or args.live):
        return unknown("--nagios goes with neither --json nor --live", EXIT_USAGE)
    if args.warning < 0 or args.critical < args.warning:
        return unknown("--critical must be at least --warning, both 0 or more", EXIT_USAGE)
    if args.timeout <= 0:
        return unknown("--timeout must be more than 0", EXIT_USAGE)
    try:
        path = config.resolve_path(args.config, os.environ)
    except ConfigError as exc:  # no file named: no daemon's state to fall back on
        return unknown(str(exc), EXIT_USAGE)
    try:
        # Only --live opens SSH; the report alone must work before known_hosts exists,
        # and for a monitoring user who may not read the private key.
        cfg, config_error = config.load(path, ssh=args.live), None
    except ConfigError as exc:
        older = None if args.live else _daemon_config(path)
        if older is None:
            return unknown(str(exc), EXIT_USAGE)
        # The daemon runs on what it loaded before the file broke: report on it.
        cfg, config_error = older, str(exc)
    if args.live:
        return _live(cfg, args, out, err)
    try:
        current = statefile.read(cfg.state)
    except (OSError, ValueError) as exc:
        from dnsmaster.fsutil import describe  # noqa: PLC0415

        why = describe(exc) if isinstance(exc, OSError) else str(exc)
        hint = " (has the daemon ever run?)" if isinstance(exc, FileNotFoundError) else ""
        return unknown(f"{cfg.state}: cannot read the daemon's state: {why}{hint}", EXIT_SYSTEM)
    try:
        rep = report(cfg, current, config_error=config_error)
        code, line = nagios(rep, warning=args.warning, critical=args.critical)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # :func:`statefile.read` checks every field; this is for what it cannot
        # know (a path that is no directory's): a plugin's traceback exits 1, which
        # Nagios takes for WARNING, a claim about the daemon nobody measured.
        why = f"{type(exc).__name__}: {exc}"
        return unknown(f"{cfg.state}: cannot judge the daemon's state: {why}", EXIT_SYSTEM)
    if mode_nagios:
        out.write(line + "\n")
        return code
    if args.json:
        out.write(json.dumps(as_json(rep), indent=2) + "\n")
    else:
        out.write(render(rep))
    err.write(render_problems(rep))
    return rep.exit_status
