"""What keeps a build from the slaves: the guard's hold and a rollback in force.

* the guard (:mod:`dnsmaster.core.guard`) judges each build against what the slaves
  have; a build that removes too much is written on the master and pushed nowhere
  until ``dnsmaster push --accept`` names it;
* a rollback (:mod:`dnsmaster.master.rollback`) makes an earlier build current and
  holds it: saves are built and checked, pushed nowhere, until it is released;
* both are asked for by a command handing a request to the daemon: a flag file in
  the output directory (:data:`~dnsmaster.master.handoff.ACCEPT_FILE`,
  :data:`~dnsmaster.master.handoff.ROLLBACK_FILE`), then SIGUSR2;
* both outlive a restart: the hold is found again from the state file, the
  output directory and the rollback file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from dnsmaster.config import Config
from dnsmaster.core import guard
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.worker import Current, current_from_disk, current_of
from dnsmaster.errors import ArchiveError
from dnsmaster.master import guarded, handoff, rollback
from dnsmaster.master import state as statefile
from dnsmaster.master.archive import Archive
from dnsmaster.master.build import Builder
from dnsmaster.master.handoff import ACCEPT_FILE, HANDOFF_FILES, ROLLBACK_FILE
from dnsmaster.master.payload import pieces

__all__ = ["Holds", "Keeper"]


class Keeper(Protocol):
    """What the holds need from the daemon that keeps the current build."""

    config: Config
    current: Current | None
    build_error: str | None

    def save_state(self, *, now: bool = False) -> None: ...

    def wake_workers(self) -> None: ...

    def installed_serials(self) -> Iterable[int | None]: ...


class Holds:
    """The builds held back from the slaves, and the requests that change that."""

    def __init__(
        self,
        daemon: Keeper,
        *,
        builder: Builder,
        hooks: Hooks,
        writer: asyncio.Lock,
        instance: str,
        log: Any,
    ) -> None:
        self.daemon = daemon
        self.builder = builder
        self.hooks = hooks
        self.log = log
        #: One writer of the output directory at a time: a build or a rollback.
        self.writer = writer
        #: The daemon's ``instance``: a request must name it (see handoff).
        self.instance = instance
        #: A build the guard holds back: (build, why, since).
        self.held: tuple[Current, str, float] | None = None
        #: What the slaves have, when a restart found a held build on disk.
        self.kept_build: statefile.BuildState | None = None
        #: A rollback in force: the daemon's ``current`` is its data, and no build is
        #: pushed until ``rollback --release``; the newest build held meanwhile.
        self.rollback: rollback.Hold | None = None
        self.rollback_held: Current | None = None
        #: The answer to the last request handed over in ROLLBACK_FILE.
        self.request: statefile.RequestAnswer | None = None
        #: This daemon holds the output directory's lock: the hand-off files are its.
        self.owner = False
        #: Set when a rollback ends: the build loop builds the zones as they are.
        self.released = asyncio.Event()

    @property
    def held_build(self) -> Current | None:
        return self.held[0] if self.held is not None else None

    # -- each build ---------------------------------------------------------------

    async def admit(self, new: Current) -> bool:
        """Whether ``new`` may go to the slaves; if not, it is held (logged, saved)."""
        if self.rollback is not None:
            # Built and checked, written on the master, pushed nowhere: a save made
            # during the incident must not silently undo the rollback.
            self.rollback_held = new
            self.log.warning(
                "build.held",
                reason="rollback",
                serial=new.serial,
                sha256=new.sha256[:16],
                live=self.rollback.serial,
                hint="dnsmaster rollback --release pushes the zones as they are then",
            )
            self.daemon.save_state()
            return False
        current = self.daemon.current
        base = current if current is not None else self.held_build
        verdict = await asyncio.to_thread(self._judge, base, new) if base is not None else None
        if verdict is not None:
            self._hold_build(new, verdict)
            return False
        self.held = self.kept_build = None
        return True

    def _judge(self, old: Current, new: Current) -> guard.Verdict | None:
        """The guard's verdict on pushing ``new`` where slaves have ``old``."""
        options = self.daemon.config.guard
        return guard.judge_data(
            functools.partial(pieces, old.data),
            functools.partial(pieces, new.data),
            max_removed=options.max_removed,
            zones=options.zones,
            allow=options.allow,
            old_records=old.records,
            new_records=new.records or 0,
        )

    def _hold_build(self, new: Current, verdict: guard.Verdict) -> None:
        """Built, written on the master, pushed nowhere until ``push --accept``."""
        self.held = (new, verdict.reason, time.time())
        # In the state file before the log says so (not the write a moment later that
        # coalesces others): an operator or a script that answers guard.held with
        # push --accept reads the hold from there.
        self.daemon.save_state(now=True)
        self.log.critical(
            "guard.held",
            serial=new.serial,
            sha256=new.sha256[:16],
            records=new.records,
            was=verdict.old_records,
            zones=",".join(verdict.removed_zones) or None,
            reason=verdict.reason,
            hint="check with dnsmaster diff; release with dnsmaster push --accept",
        )
        self.hooks.fire(
            "failure", result="held", error=verdict.reason, serial=new.serial, sha256=new.sha256
        )

    # -- after a restart ------------------------------------------------------------

    def hold_again(self) -> None:
        """After a restart: the build on disk is one the guard held; hold it still.

        Held by this daemon before (its state file) or refused by ``dnsmaster push``
        meanwhile (:mod:`dnsmaster.master.guarded`): either way nobody accepted it. The
        slaves keep what they had, and the next build is judged against the held one.
        """
        config, current = self.daemon.config, self.daemon.current
        held = guarded.held(config, current.sha256) if current is not None else None
        if current is None or held is None:
            return
        kept = None
        with contextlib.suppress(OSError, ValueError):
            kept = statefile.read(config.state).build
        if held.by == "push" and held.base is not None:
            kept = statefile.BuildState(None, held.base, None, held.since)
        self.held = (current, held.reason, held.since)
        self.daemon.current = None
        self.kept_build = kept
        self.log.critical(
            "guard.held", serial=held.serial, reason=held.reason, since=held.since, by=held.by
        )

    def restore_rollback(self) -> bool:
        """After a restart: a rollback in force is held still; whether there is one.

        Its data, kept with the hold, stays current (what the slaves get); a build on
        disk from other sources is a save made during the hold: held too. The zones
        are not built now: ``rollback --release`` builds them.
        """
        output = self.daemon.config.output
        try:
            found = rollback.load(output)
        except ArchiveError as exc:
            self._hold_damaged(exc)
            return True
        if found is None:
            return False
        hold, data = found
        self.rollback = hold
        self.daemon.current = current_of(data, hold.sha256, time_=hold.since)
        disk = current_from_disk(output)
        if disk is not None and disk.sha256 != hold.sha256:
            self.rollback_held = disk
        self.log.warning(
            "rollback.held",
            serial=hold.serial,
            kept_serial=hold.kept_serial,
            since=hold.since,
            hint="dnsmaster rollback --release pushes the zones as they are then",
        )
        return True

    def _hold_damaged(self, exc: ArchiveError) -> None:
        """A rollback file that cannot be trusted: hold all the same, push nothing.

        The operator asked for the slaves to stay on an earlier build; a damaged
        record of which one is a doubt, and a doubt never pushes. The master's own
        data is pushed only when it is the build the hold names (a rollback
        installs it there); ``rollback --release`` ends the hold.
        """
        output = self.daemon.config.output
        try:
            hold = rollback.read(output)
        except ArchiveError:
            hold = None
        disk = current_from_disk(output)
        if hold is None:
            hold = rollback.Hold(0, "", 0, "", time.time())
        self.rollback = hold
        current = disk if disk is not None and disk.sha256 == hold.sha256 else None
        self.daemon.current = current
        self.log.error(
            "rollback.damaged",
            path=exc.path,
            error=exc.reason,
            serial=hold.serial or None,
            pushing=current is not None,
            hint="the slaves keep what they have; dnsmaster rollback --release ends the hold",
        )

    # -- requests handed over -------------------------------------------------------

    def discard_handoffs(self) -> None:
        """At start: a hand-off file is an earlier daemon's (killed before it answered,
        or its asker killed): nobody waits for it now. Carried out later, on another
        operator's signal, it would roll back or release what nobody asked for."""
        for name in HANDOFF_FILES:
            flag = self.daemon.config.output / name
            with contextlib.suppress(FileNotFoundError):
                flag.unlink()
                self.log.warning("handoff.discarded", file=name, reason="left by an earlier daemon")

    def handoff(self) -> Coroutine[Any, Any, None] | None:
        """SIGUSR2: act on the hand-off files written for this daemon (a rollback, an
        accept, or both at once: signals sent together arrive as one). An accept is
        done now; a rollback is returned, for the caller to run as a task."""
        if not self.owner:
            # Waiting for the lock: the files are the running daemon's, not ours.
            return None
        rolling = self._take(ROLLBACK_FILE)
        accept = self._take(ACCEPT_FILE)
        if accept is not None or rolling is None:
            self.accept(accept)
        return self.requested(rolling) if rolling is not None else None

    def _take(self, name: str) -> dict[str, str] | None:
        """The request in hand-off file ``name``, if it is one for this daemon whose
        asker still waits; the file is removed either way (``handoff.discarded``)."""
        flag = self.daemon.config.output / name
        try:
            text = flag.read_bytes()[:4096].decode("ascii", "replace")
        except OSError:
            return None
        with contextlib.suppress(OSError):
            flag.unlink()
        request = handoff.parse_request(text)
        why = handoff.refusal(request, self.instance)
        if why is not None:
            self.log.warning("handoff.discarded", file=name, reason=why)
            return None
        return request

    def accept(self, request: dict[str, str] | None) -> None:
        """``push --accept``: push the held build, if it is the one accepted."""
        accepted = (request or {}).get("sha256", "")
        held = self.held_build
        if held is None or accepted != held.sha256:
            self.log.warning("guard.not_accepted", accepted=accepted[:16] or None)
            return
        self.daemon.current, self.held, self.kept_build = held, None, None
        self.log.info("guard.accepted", serial=held.serial, sha256=held.sha256[:16])
        self.daemon.save_state()
        self.daemon.wake_workers()

    async def requested(self, request: dict[str, str]) -> None:
        """``dnsmaster rollback``: roll back, or release; answer in the state file."""
        ident = request.get("id", "")
        what = request.get("request")
        try:
            if what == "to" and "kept" in request:
                await self.roll_back(request["kept"])
            elif what == "release":
                await self.release()
            else:
                raise ArchiveError(ROLLBACK_FILE, f"not a request: {what!r:.80}")
        except ArchiveError as exc:
            self.log.error("rollback.failed", path=exc.path, error=exc.reason)
            self.request = statefile.RequestAnswer(ident, str(exc))
        except MemoryError:
            # An operator's request that cannot be done fails alone, not the daemon.
            self.log.error("rollback.failed", path=ROLLBACK_FILE, error="out of memory")
            self.request = statefile.RequestAnswer(ident, "out of memory")
        else:
            self.request = statefile.RequestAnswer(ident)
        self.daemon.save_state(now=True)

    async def roll_back(self, kept_sha256: str) -> None:
        """Put the kept build with ``kept_sha256`` on every slave, with a new serial."""
        daemon = self.daemon
        archive = Archive(daemon.config.output, daemon.config.daemon.keep)
        async with self.writer:
            kept = next((k for k in archive.entries() if k.sha256 == kept_sha256), None)
            if kept is None:
                raise ArchiveError(str(archive.directory), f"no kept build {kept_sha256[:16]}")
            # Above every serial a slave may serve: the receivers refuse an older one.
            builds = (daemon.current, self.held_build, self.rollback_held)
            floor = rollback.newest(
                self.builder.previous_serial(),
                *(c.serial for c in builds if c),
                *daemon.installed_serials(),
                self.kept_build.serial if self.kept_build else None,
            )
            rolled = await asyncio.to_thread(rollback.prepare, archive, kept, floor)
            await asyncio.to_thread(rollback.install, daemon.config.output, rolled)
        if self.held is not None:
            self.log.warning("guard.dropped", serial=self.held[0].serial, reason="rollback")
        self.held = self.kept_build = self.rollback_held = None
        self.rollback = rolled.hold
        daemon.current = current_of(rolled.data, rolled.hold.sha256, records=rolled.records.count)
        daemon.build_error = None
        self.log.warning(
            "rollback.done",
            serial=rolled.hold.serial,
            kept_serial=kept.serial,
            kept_sha256=kept.sha256[:16],
            built=kept.stamp,
            hint="held until dnsmaster rollback --release",
        )
        daemon.save_state(now=True)
        daemon.wake_workers()

    async def release(self) -> None:
        """End the rollback; the build loop then builds the zones and pushes them."""
        hold = self.rollback
        if hold is None:
            raise ArchiveError(str(self.daemon.config.output), "no rollback holds a build")
        async with self.writer:
            await asyncio.to_thread(rollback.clear, self.daemon.config.output)
        self.rollback = self.rollback_held = None
        self.log.info("rollback.released", serial=hold.serial, kept_serial=hold.kept_serial)
        self.released.set()
