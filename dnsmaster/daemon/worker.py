"""One slave's worker in the daemon: push what is current, retry, verify, park.

Each slave has one :class:`SlaveWorker` task. It pushes whatever its
:class:`Runner`'s ``current`` is when it gets to run, retries with exponential
backoff, asks tinydns over DNS that the new serial is served, and parks on what
retrying cannot help (a host key mismatch, a build refused) until something
changes. How a push is made (asking the receiver, choosing the delta's base,
recording what was pushed) is :mod:`dnsmaster.master.pushing`'s, as for a push by
hand: the worker only schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from dnsmaster.config import Config, Slave
from dnsmaster.core.makedata import built_from, previous_serial
from dnsmaster.core.soa import zone_serials
from dnsmaster.daemon import memory
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.errors import HostKeyError, SlaveError
from dnsmaster.fsutil import file_signature
from dnsmaster.master import state as statefile
from dnsmaster.master.payload import Data, DataFile, Offer, pieces, whole
from dnsmaster.master.pushing import (
    Bases,
    PushLog,
    PushResult,
    ask_receiver,
    channel_for,
    push_one,
    record_results,
)
from dnsmaster.transport.channel import Receiver, SlaveChannel
from dnsmaster.transport.dns import SoaCheck, check_serials

__all__ = ["Current", "Runner", "SlaveWorker", "current_from_disk", "current_of"]

#: Zones asked for over DNS after a push; a file of thousands of zones needs no more.
VERIFY_ZONES = 20

#: A slave parked on a host key error looks at known_hosts this often.
HOLD_POLL = 1.0


@dataclass(frozen=True, slots=True)
class Current:
    """The build every slave should serve.

    ``data`` is its text: a build of this daemon's, and the data found on disk at
    start, is its file (:class:`~dnsmaster.master.payload.DataFile`, open on the
    build's own inode), so the daemon holds no copy of it between builds.
    """

    data: Data
    sha256: str
    serial: int | None
    records: int | None
    time: float
    #: zone (wire name) -> SOA serial, for the zones this build changed
    verify: dict[bytes, int]
    #: the sources fingerprint in ``data``'s banner (None for data from elsewhere)
    fingerprint: str | None = None
    #: how long the build took (None: kept from disk at start)
    seconds: float | None = None

    def text(self) -> bytes:
        """The data as bytes, read whole if it is a file: for what needs it whole."""
        return whole(self.data)


def current_from_disk(output: Path) -> Current | None:
    try:
        data = DataFile(output / "data")
        if not (output / "data.cdb").is_file():
            return None
        head = data.read(0, 300)
        mtime = os.fstat(data.fileno()).st_mtime
    except OSError:
        return None
    found: dict[bytes, int] = {}
    for piece in pieces(data):
        if len(found) >= VERIFY_ZONES:
            break
        for zone, serial in zone_serials(piece).items():
            found.setdefault(zone, serial)
    return Current(
        data=data,
        sha256=data.sha256,
        serial=previous_serial(head[:200]),
        records=None,
        time=mtime,
        verify=dict(list(found.items())[:VERIFY_ZONES]),
        fingerprint=built_from(head),
    )


def current_of(
    data: bytes, sha256: str, *, records: int | None = None, time_: float | None = None
) -> Current:
    """Data not built here (a rollback's) as the current build."""
    return Current(
        data=data,
        sha256=sha256,
        serial=previous_serial(data[:200]),
        records=records,
        time=time.time() if time_ is None else time_,
        verify=dict(list(zone_serials(data).items())[:VERIFY_ZONES]),
        fingerprint=built_from(data[:300]),
    )


HoldKind = Literal["hostkey", "receiver", "build"]

#: known_hosts's :func:`file_signature` and the worker's count of SIGHUPs, as they
#: were before a contact: what a hold from its failure is judged against. A contact
#: that fails takes seconds (the key exchange, then a look at the presented key); an
#: edit or a SIGHUP meanwhile came too late for it, and must not be taken as seen.
Since = tuple[object, int]


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a slave is parked: a failure that retrying with backoff cannot help.

    ``hostkey``: its host key changed or is unknown; lifted when known_hosts changes
    (``known_hosts`` is its stamp from before the contact that failed).
    ``receiver``: its receiver is too old for this master, or is no receiver; asked
    again at ``until`` (every ``retry_max``). ``build``: it refused build ``build``;
    a new build is tried. SIGHUP lifts any hold.
    """

    kind: HoldKind
    build: str
    known_hosts: object
    until: float


#: What an operator can do about each kind of :class:`Hold`.
_HOLD_HINTS: dict[HoldKind, str] = {
    "hostkey": "check the slave's new key and update known_hosts (or SIGHUP)",
    "receiver": "upgrade the slave's receiver; asked again every retry_max, or SIGHUP",
    "build": "this build is refused; a new build or SIGHUP tries again",
}


class Runner(Protocol):
    """What a worker needs from whoever runs it (the daemon): the build to serve,
    the shared bounds, and where to report."""

    config: Config
    #: The build every slave should serve (None: none yet).
    current: Current | None
    stopping: bool
    #: Bounds the pushes and status requests made at once.
    gate: asyncio.Semaphore
    log: Any
    hooks: Hooks

    def save_state(self, *, now: bool = False) -> None:
        """A worker's state changed: write the state file (soon)."""

    def push_log(self, current: Current) -> PushLog:
        """The log of pushes of ``current``, shared by every worker."""

    def idle_changed(self) -> None:
        """A worker's push started or ended, or the worker went to sleep."""

    def pushed(self, current: Current) -> None:
        """A worker's push of ``current`` ended, well or not."""


class SlaveWorker:
    """Keeps one slave on the current build: push, retry with backoff, verify."""

    def __init__(self, daemon: Runner, slave: Slave) -> None:
        self.daemon = daemon
        self.slave = slave
        self.channel: SlaveChannel = channel_for(slave, daemon.config)
        self.state = statefile.SlaveState(slave.name)
        self.busy = False
        self._resting = False  # asleep, and no retry due (see :attr:`resting`)
        #: Removed or changed by a reload: the push under way ends the worker.
        self.retired = False
        self._wake = asyncio.Event()
        self._force = False
        self._retry_at: float | None = None
        self._delay = daemon.config.daemon.retry_initial
        self._asked = False
        self._reverify = False
        #: The verdict of the failed verifications in a row, and when the first was.
        self._problem: tuple[str, float] | None = None
        self._hold: Hold | None = None
        self._releases = 0  # SIGHUPs so far (see :meth:`_park`)
        self._tried: str | None = None  # the sha256 of the last build pushed here
        #: What the receiver speaks, from its last status (None: not asked yet).
        self._protocol: int | None = None
        #: The data this slave holds, when known here: what was last pushed to it
        #: (or found current at start). A delta goes against it.
        self._holds: Current | None = None

    def wake(self, *, force: bool = False) -> None:
        """A new build (or SIGALRM, with ``force``): push now, whatever the backoff."""
        self._force = self._force or force
        self._wake.set()

    def _update(self, **changes: Any) -> None:
        fields = {f: getattr(self.state, f) for f in self.state.__slots__}
        self.state = statefile.SlaveState(**(fields | changes))
        self.daemon.save_state()

    def release(self) -> None:
        """SIGHUP: try again whatever retrying could not help, and ask the slave anew."""
        self._hold = None
        self._asked = False
        self._releases += 1
        self._wake.set()

    def reverify(self) -> None:
        """Ask the slave's tinydns again (a stopped tinydns shows between edits too)."""
        if self.daemon.config.daemon.verify and self.slave.dns:
            self._reverify = True
            self._wake.set()

    async def run(self) -> None:
        if not self._asked:
            await self.ask_status()
        current = self.daemon.current
        if current is not None and self.state.installed_sha256 == current.sha256:
            self._reverify = True  # up to date at start: see it served, too
        self._wake.set()
        while not (self.daemon.stopping or self.retired):
            await self._sleep()
            current = self.daemon.current
            if self.daemon.stopping or self.retired or current is None:
                continue
            if await self._serve(current):
                self._schedule_retry()

    @property
    def resting(self) -> bool:
        """Asleep with no push or retry due: up to date, or parked (see :class:`Hold`)."""
        return self._resting and not self._wake.is_set()

    async def _sleep(self) -> None:
        """Until woken (a build, a signal, a release), or until the retry is due."""
        self._resting = self._retry_at is None or self._hold is not None
        self.daemon.idle_changed()
        if self._retry_at is None:
            await self._wake.wait()
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self._retry_at):
                    await self._wake.wait()
        self._wake.clear()
        self._resting = False

    async def _serve(self, current: Current) -> bool:
        """Bring the slave to ``current``: push, verify. Whether to retry later."""
        if self._hold is not None and not self._force and self._still_held(current):
            return False
        if not self._asked and not await self.ask_status():
            # Not reachable, or parked by what it answered: no push meanwhile.
            return self._hold is None
        if not self._force and self.state.installed_sha256 == current.sha256:
            self._retry_at = None
            if not self._reverify:
                return False
            self._reverify = False
            verdict = await self._verify(current)
            if verdict == "failed" and await self._lost_install(current):
                self._force = True  # data.cdb deleted or broken by hand: install it again
                return True
            if verdict != "stale":
                return False
            self._force = True  # installed, yet served stale: push it again
            return True
        self._force = False
        self._reverify = False
        since = (file_signature(self.daemon.config.known_hosts), self._releases)
        result = await self._push(current)
        if result.ok:
            self._hold = None  # forced through a hold (SIGALRM), and its key passed
            if await self._verify(current) != "stale":
                self._delay = self.daemon.config.daemon.retry_initial
                return False
            # Installed, yet tinydns answers an older serial: push it again.
            self._force = True
            return True
        if not result.retryable:
            kind: HoldKind = "hostkey" if result.phase == "hostkey" else "build"
            self._park(kind, result.phase, result.error, since, build=current.sha256)
            return False
        return True

    async def _lost_install(self, current: Current) -> bool:
        """Whether a slave whose tinydns does not answer no longer holds ``current``.

        tinydns answers nothing without data.cdb: a pair deleted or damaged by hand
        looks like a stopped tinydns, and only the receiver can tell them apart. A
        stopped tinydns is not ours to fix; a lost pair is, without waiting for a save.
        """
        if self.slave.protocol == "legacy" or not await self.ask_status():
            return False
        return self.state.installed_sha256 != current.sha256

    def _schedule_retry(self) -> None:
        wait = self._delay
        self._retry_at = loop_time() + wait
        self._delay = min(wait * 2, self.daemon.config.daemon.retry_max)
        self._update(next_retry=time.time() + wait)
        self.daemon.log.info("retry.scheduled", slave=self.slave.name, seconds=wait)

    def _still_held(self, current: Current) -> bool:
        """Whether a parked slave stays parked now; lifts the hold when it should go."""
        hold = self._hold
        assert hold is not None
        now = loop_time()
        if hold.kind == "hostkey":
            # Only an operator who checks the key and edits known_hosts can fix it.
            if hold.known_hosts == file_signature(self.daemon.config.known_hosts):
                self._retry_at = now + HOLD_POLL
                return True
        elif hold.kind == "receiver":
            # An upgrade of the slave's receiver shows when it is asked again.
            if now < hold.until:
                self._retry_at = hold.until
                return True
            self._asked = False
        elif hold.build == current.sha256:
            return True  # this build was refused; a new build is tried
        self._hold = None
        return False

    def _park(
        self, kind: HoldKind, phase: str | None, error: str | None, since: Since, *, build: str = ""
    ) -> None:
        """Stop retrying what retrying cannot help (see :class:`Hold`, :data:`Since`)."""
        self._update(result="failed", error=error, phase=phase, retryable=False, next_retry=None)
        if since[1] != self._releases:
            return  # released meanwhile: woken, it tries again now
        wait = HOLD_POLL if kind == "hostkey" else self.daemon.config.daemon.retry_max
        until = loop_time() + wait
        self._hold = Hold(kind, build, since[0], until)
        self._retry_at = until if kind != "build" else None
        hint = _HOLD_HINTS[kind]
        self.daemon.log.warning("retry.held", slave=self.slave.name, phase=phase, hint=hint)

    async def ask_status(self) -> bool:
        """What the slave has installed, so a restart pushes only to slaves behind, and
        whether its receiver speaks our protocol. False when it could not be asked, or
        must not be pushed to (then it is parked)."""
        log = self.daemon.log
        if self.slave.protocol == "legacy":
            self._asked = True
            return True  # update-dns cannot tell; it gets a push
        since = (file_signature(self.daemon.config.known_hosts), self._releases)
        try:
            async with self.daemon.gate:
                receiver = await ask_receiver(
                    self.channel, self.daemon.config.push.connect_timeout * 2, PushLog(log)
                )
        except SlaveError as exc:
            await self.channel.close()
            say = log.warning if exc.retryable else log.error
            say("status.failed", slave=self.slave.name, error=exc.reason, phase=exc.phase)
            if exc.retryable:
                self._update(result="failed", error=exc.reason, phase=exc.phase)
                return False
            # Pushing would fail the same way (a host key), or must not happen (a
            # receiver too old for this master, or no receiver at all).
            kind: HoldKind = "hostkey" if isinstance(exc, HostKeyError) else "receiver"
            self._park(kind, exc.phase, exc.reason, since)
            return False
        self._asked = True
        self._protocol = receiver.protocol
        version = receiver.installed
        if self._holds is not None and (version is None or version.sha256 != self._holds.sha256):
            self._holds = None  # it has something else now: the archive may know it
        if version is None:
            _log_status(log, self.slave.name, receiver, None)
            # It vouches for nothing now (a pair lost by hand, say): push it again.
            self._update(installed_sha256=None, installed_serial=None)
            return True
        current = self.daemon.current
        is_current = current is not None and current.sha256 == version.sha256
        if is_current:
            self._holds = current
        _log_status(log, self.slave.name, receiver, is_current)
        self._update(
            installed_sha256=version.sha256,
            installed_serial=version.serial,
            result="ok" if is_current else "unknown",
            error=None,
            phase=None,
            retryable=True,
        )
        return True

    async def _push(self, current: Current) -> PushResult:
        daemon = self.daemon
        async with daemon.gate:
            if daemon.stopping:
                return PushResult(self.slave.name, False, current.sha256, 0, 0.0, error="stopping")
            self.busy = True
            self._update(result="pushing", push_started=time.time())
            try:
                log = daemon.push_log(current)
                result = await push_one(
                    self.channel,
                    current.data,
                    current.sha256,
                    daemon.config.push.timeout,
                    log.line,
                    offer=await self._offer(),
                    on_delta_refused=log.delta_refused,
                )
            finally:
                self.busy = False
                # What the push needed (a delta's line hashes, its buffers) is freed:
                # the daemon rests with the memory of its builds alone.
                memory.release()
                daemon.idle_changed()
        daemon.push_log(current).result(result)
        self._tried = current.sha256
        # The record `dnsmaster push` reads: a push by hand after this one then sends
        # its delta against what the slave holds, not against a stale base. Written
        # here on the loop, not in a thread: workers' read-modify-writes never interleave.
        record_results(
            daemon.config.output, [result], {self.slave.name: self._protocol}, daemon.log
        )
        facts = {"slave": self.slave.name, "serial": current.serial, "sha256": current.sha256}
        daemon.hooks.fire(
            "push", **facts, result="ok" if result.ok else "failed", error=result.error
        )
        if not result.ok:
            daemon.hooks.fire("failure", **facts, result="push failed", error=result.error)
        if result.ok:
            self._holds = current
        self._update(**_after_push(current, result, self.state.failures, time.time()))
        daemon.pushed(current)
        return result

    async def _offer(self) -> Offer:
        """What the push may use: a delta against the build the slave holds, from
        memory when it is the one pushed here, else from the archive."""
        known = {self._holds.sha256: self._holds.data} if self._holds is not None else None
        config = self.daemon.config
        bases = Bases(config.output, config.daemon.keep, self.daemon.log, known)
        return await bases.offer(self.slave, self._protocol, self.state.installed_sha256)

    def outcome(self, sha256: str) -> str | None:
        """For the ``done`` hook: ok, failed, or None while this build is pending here."""
        if self.state.installed_sha256 == sha256 and self.state.result == "ok":
            return "ok"
        if self._hold is not None or (self._tried == sha256 and self.state.result == "failed"):
            return "failed"
        return None

    async def _verify(self, current: Current) -> str | None:
        """Ask the slave's tinydns; the verdict: ok, stale, ahead, failed (None: not asked).

        Only a DNS answer with the serial proves the slave serves the build, so only
        then (or when this slave is not verified at all) is it a success.
        """
        cfg = self.daemon.config.daemon
        if not cfg.verify or not self.slave.dns or not current.verify:
            self._update(verified="skipped", last_success=time.time())
            return None
        checks = await check_serials(
            self.slave.dns, self.slave.dns_port, current.verify, cfg.verify_timeout
        )
        verdict = _verdict(checks, self.daemon.log, self.slave.name)
        # The zone to show: the first that did not answer as expected, else the first.
        shown = next((c for c in checks if not c.ok), checks[0])
        now = time.time()
        verified = "stale" if verdict == "ahead" else verdict
        # A problem seen again (each rescan asks again; a stale slave is pushed and
        # asked again) keeps the time it was first seen: status judges how long it
        # has lasted by it, and Nagios would otherwise never get past OK.
        if verified == "ok" or self._problem is None or self._problem[0] != verified:
            self._problem = None if verified == "ok" else (verified, now)
        self._update(
            verified=verified,
            verify_zone=shown.zone,
            expected_serial=shown.expected,
            served_serial=shown.served,
            verify_error=shown.error,
            verified_at=now if self._problem is None else self._problem[1],
            **({"last_success": now} if verdict == "ok" else {}),
        )
        return verdict


def _log_status(log: Any, slave: str, receiver: Receiver, current: bool | None) -> None:
    """``status.none`` or ``status.installed`` (``current``: whether it is this build)."""
    # A shared slave reports this master's own part there, under the name it gives it.
    named = {"master": receiver.master} if receiver.master is not None else {}
    version = receiver.installed
    if version is None:
        log.info("status.none", slave=slave, **named)
        return
    log.info(
        "status.installed",
        slave=slave,
        serial=version.serial,
        sha256=version.sha256[:16],
        current=current,
        receiver=version.version,
        **named,
    )


def _after_push(current: Current, result: PushResult, failures: int, now: float) -> dict[str, Any]:
    """A slave's state fields after a push of ``current`` (``failures`` in a row before)."""
    ended = {"last_push": now, "push_started": None, "push_seconds": result.seconds}
    if result.ok:
        return ended | {
            "installed_sha256": current.sha256,
            "installed_serial": current.serial,
            "result": "ok",
            "error": None,
            "next_retry": None,
            "verified": None,
            "failures": 0,
            "phase": None,
            "retryable": True,
        }
    return ended | {
        "result": "failed",
        "error": result.error,
        "failures": failures + 1,
        "phase": result.phase,
        "retryable": result.retryable,
    }


def _verdict(checks: Sequence[SoaCheck], log: Any, slave: str) -> str:
    """The verdict on a slave's answers, each logged: ok, stale (some zone is behind),
    ahead (newer than ours, none behind) or failed (no answer, none behind)."""
    verdict = "ok"
    for check in checks:
        context = {"slave": slave, "zone": check.zone, "serial": check.expected}
        if check.ok:
            log.info("verify.ok", **context)
        elif check.behind:
            verdict = "stale"
            log.warning("verify.stale", **context, served=check.served)
        elif check.served is not None:
            # A newer serial than ours: another master pushed. Pushing ours again
            # would be refused as older; say it, do not loop on it.
            verdict = "stale" if verdict == "stale" else "ahead"
            log.warning("verify.ahead", **context, served=check.served)
        else:
            verdict = "stale" if verdict == "stale" else "failed"
            log.warning("verify.failed", **context, error=check.error)
    return verdict


def loop_time() -> float:
    return asyncio.get_running_loop().time()
