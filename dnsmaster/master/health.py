"""Health: the daemon's state file judged, with no I/O (the clock, the pid check
and the zones comparison come in as values).

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
secondary see :mod:`dnsmaster.master.secondaryhealth` (``ok``, ``notifying``,
          ``waiting``, ``behind``, ``late``, ``failed``, ``unknown``)
config    shown only when not ok: ``reload-failed`` (the last SIGHUP could not load
          the file: the daemon runs on what it loaded before); ``changed`` (the
          file differs from what the daemon loaded: SIGHUP applies it);
          ``restart-needed`` (the file changes settings a reload cannot,
          :data:`dnsmaster.daemon.reload.RESTART_NEEDED`: the daemon keeps the old ones)

:func:`judge_daemon`, :func:`judge_build`, :func:`judge_slave`, :func:`judge_config`
and :func:`judge` give :class:`Finding` s and a :class:`Report`;
:mod:`dnsmaster.master.measure` takes the measurements they need,
:mod:`dnsmaster.commands.status` renders them and :mod:`dnsmaster.daemon.metrics`
exports each slave's state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dnsmaster.exits import EXIT_BUILD, EXIT_DAEMON, EXIT_OK, EXIT_SLAVES, EXIT_STALE_CONFIG
from dnsmaster.master.handoff import SIGHUP_HOW
from dnsmaster.master.state import HEARTBEAT_MISSES, FileStamp, SlaveState, State

__all__ = [
    "CRITICAL_SECONDS",
    "FUTURE_TOLERANCE",
    "SLAVE_BEHIND",
    "SLAVE_FAILING",
    "SLAVE_STATES",
    "WARNING_SECONDS",
    "Finding",
    "Report",
    "ZonesCheck",
    "ago",
    "heartbeat_age",
    "judge",
    "judge_build",
    "judge_config",
    "judge_daemon",
    "judge_slave",
    "serial_text",
    "state_error",
    "when",
]


#: Defaults of ``--warning``/``--critical``: how long a problem may last. Long
#: enough that a push of a large build over a slow link, or a save still in its
#: quiet period, does not page anyone.
WARNING_SECONDS = 120.0
CRITICAL_SECONDS = 600.0

#: A heartbeat dated this many seconds ahead of the clock is not believed: the
#: clock stepped back since it was written (or another host's clock is ahead), and
#: its age cannot be told from the wall clock. Below it: the two clocks' jitter.
FUTURE_TOLERANCE = 5.0

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
    """The zones directory now against the build (measured by
    :func:`dnsmaster.master.measure.check_zones`)."""

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
    #: The standard secondaries (:mod:`dnsmaster.master.secondaryhealth`).
    secondaries: tuple[Finding, ...] = field(default=())
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
        every = (self.daemon, self.build, *self.slaves, *self.secondaries, *config)
        return [f for f in every if not f.ok]

    @property
    def exit_status(self) -> int:
        if not self.daemon.ok:
            return EXIT_DAEMON
        if not self.build.ok:
            return EXIT_BUILD
        if any(not s.ok for s in (*self.slaves, *self.secondaries)):
            return EXIT_SLAVES
        if self.config is not None and not self.config.ok:
            return EXIT_STALE_CONFIG
        return EXIT_OK

    def count(self, states: Iterable[str]) -> int:
        wanted = set(states)
        return sum(s.state in wanted for s in self.slaves)


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


def when(stamp: float | None) -> str:
    """A moment for people, in local time; ``-`` for none."""
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
            f"{when(rolled.since)}{saves}",
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
        f"{when(build.time)} ({ago(now - build.time)} ago)",
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
    since = f"the one loaded {when(running.loaded)}"
    now_sha = file.sha256 if file is not None else None
    if running.error is not None and (load_error is not None or now_sha == running.file_sha256):
        return Finding(
            "config",
            "reload-failed",
            f"the last SIGHUP ({when(running.failed_at)}) could not load {running.path}: "
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


def serial_text(value: int | None) -> str:
    """A serial for people; ``-`` for none."""
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
            f"; next retry {when(slave.next_retry)}"
            if slave.next_retry is not None and slave.next_retry > now
            else ""
        )
        return Finding(
            name,
            "failing",
            f"{slave.error or 'push failed'}{tries}; installed serial "
            f"{serial_text(slave.installed_serial)}, current {build.serial}{retry}",
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
            f"has serial {serial_text(slave.installed_serial)} "
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
            f"its tinydns answers another serial than the installed {serial_text(expected)} "
            f"for {zone}",
            f"check that tinydns on {name} serves the root the receiver writes; restart it",
            slave.verified_at or out_since,
        )
    if slave.verified == "failed":
        return Finding(
            name,
            "dns-failed",
            f"installed serial {serial_text(slave.installed_serial)}, but its tinydns did not "
            f"answer for {zone}: {slave.verify_error or 'no answer'}",
            f"start tinydns on {name}, or fix dns/dns_port in the configuration; "
            "dnsmaster status --live asks again now",
            slave.verified_at or out_since,
        )
    if slave.verified == "ok":
        return Finding(name, "ok", f"serves serial {serial_text(served or slave.installed_serial)}")
    if slave.verified == "skipped" or verifies is False:
        return Finding(
            name,
            "ok",
            f"has serial {serial_text(slave.installed_serial)} (not asked over DNS: verification "
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
        f"has serial {serial_text(slave.installed_serial)}, not yet seen serving it over DNS",
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
    secondaries: tuple[Finding, ...] = (),
) -> Report:
    """The whole report, from measurements made elsewhere (pure).

    ``config_file`` is the configuration file's stamp now, ``config_error`` why it
    does not load now (see :func:`judge_config`); ``beat`` the heartbeat's age on
    the monotonic clock (:func:`heartbeat_age`); ``secondaries`` the standard
    secondaries judged (:func:`dnsmaster.master.secondaryhealth.judge_secondaries`).
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
        secondaries=secondaries,
    )
