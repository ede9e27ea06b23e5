"""``dnsmaster push``: build if the zones changed, then push to every slave in parallel.

The output directory's lock decides who pushes: with a daemon running (it holds
the lock), the request is handed to it and its outcome reported; without one, this
command builds, lets the guard judge the build (:mod:`dnsmaster.master.guarded`)
and pushes it itself. ``push --dry-run`` is a plan, made by
:mod:`dnsmaster.commands.diff`; ``push --wait`` ends as ``dnsmaster wait`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dnsmaster.commands.common import builder_for, config_log_slaves, one_writer, run_build
from dnsmaster.commands.handing import daemon_runs, hand_off, names_held
from dnsmaster.core.makedata import previous_serial
from dnsmaster.errors import ArchiveError, BuildError, TinydnsDataError
from dnsmaster.exits import (
    EXIT_DATA,
    EXIT_HELD,
    EXIT_OK,
    EXIT_SLAVES,
    EXIT_SYSTEM,
    EXIT_USAGE,
)
from dnsmaster.fsutil import describe
from dnsmaster.master import ahead, guarded, pushing, rollback, served
from dnsmaster.master.payload import Data, DataFile, whole

if TYPE_CHECKING:
    from dnsmaster.config import Config, Slave
    from dnsmaster.transport.channel import SlaveChannel

__all__ = ["main", "push_to_slaves"]


def main(args: argparse.Namespace) -> int:
    """``dnsmaster push [--slave NAME]... [--no-build] [--accept [BUILD]] [--wait]``."""
    return asyncio.run(_push_and_wait(args))


async def push_to_slaves(
    cfg: Config,
    slaves: Sequence[Slave],
    logger: Any,
    data: Data | None = None,
    channels: Sequence[SlaveChannel] | None = None,
) -> int:
    """Push ``data`` (default: the data on disk) to ``slaves`` without a daemon
    (:func:`dnsmaster.master.pushing.push_build`, over ``channels`` when they are
    given); the exit status (a rollback's push too)."""
    found = _data_on_disk(cfg, logger) if data is None else data
    if isinstance(found, int):
        return found
    results, _ = await asyncio.gather(
        pushing.push_build(cfg, slaves, found, logger, channels),
        _serve_and_announce(cfg, found, logger),
    )
    return EXIT_OK if all(r.ok for r in results) else EXIT_SLAVES


async def _serve_and_announce(cfg: Config, found: Data, logger: Any) -> None:
    """The build goes: it is what the master's axfrdns serves from now on, and only
    then are the standard secondaries told, beside the push (which never waits for
    them)."""
    if not served.wanted(cfg):
        return
    data = await asyncio.to_thread(whole, found)
    # What axfrdns served until now: a zone already served at its serial needs no
    # NOTIFY, and a catalog consumer refuses one for a member it has not added yet.
    before = await asyncio.to_thread(served.served_zones, cfg, data) if cfg.secondaries else None
    if await _serve(cfg, data, logger) and cfg.secondaries:
        # Only with secondaries: NOTIFY loads dnspython, a tenth of a second.
        from dnsmaster.master import secondaries  # noqa: PLC0415

        await secondaries.announce(
            cfg.secondaries, cfg.notify, data, logger, source=cfg.axfrdns.ip, before=before
        )


async def _serve(cfg: Config, data: bytes, logger: Any) -> bool:
    """Put ``data``'s build in the served root; whether it is there."""
    root = served.root_of(cfg)
    sha256 = hashlib.sha256(data).hexdigest()
    serial = previous_serial(data[:200])
    try:
        done = await asyncio.to_thread(served.serve, cfg.output, root, sha256, data, serial)
    except (OSError, BuildError) as exc:
        error = describe(exc) if isinstance(exc, OSError) else str(exc)
        logger.error("served.failed", root=str(root), serial=serial, error=error)
        return False
    logger.info(
        "served.replaced", root=str(done.root), serial=serial, sha256=sha256[:16], how=done.how
    )
    return True


async def _push_and_wait(args: argparse.Namespace) -> int:
    setup = config_log_slaves(args)
    if setup is None:
        return EXIT_USAGE
    cfg, logger, slaves = setup
    with one_writer(cfg.output, cfg.state, logger) as daemon:
        if _rollback_holds(cfg, logger):
            # Neither built nor handed to the daemon: it would push nothing new, and
            # without a daemon the push would undo the rollback.
            status = EXIT_DATA
        elif daemon is not None:
            names = [s.name for s in slaves]
            status = daemon_runs(cfg, names, logger) or hand_off(
                cfg,
                daemon,
                builder_for(cfg),
                names,
                logger,
                repush=args.no_build,
                accept=args.accept,
            )
        else:
            status = await _push_by_hand(cfg, slaves, args, logger)
    if status != EXIT_OK or not args.wait:
        return status
    # Only with --wait: the DNS queries load dnspython, a tenth of a second.
    from dnsmaster.commands.wait import wait_for_build  # noqa: PLC0415

    also = cfg.secondaries if args.secondaries else ()
    return await wait_for_build(cfg, slaves, None, args.timeout, logger, secondaries=also)


async def _push_by_hand(
    cfg: Config, slaves: list[Slave], args: argparse.Namespace, logger: Any
) -> int:
    """Without a daemon: build if the zones changed, let the guard judge, push.

    The slaves are reached meanwhile (:mod:`dnsmaster.master.ahead`): the build and
    the guard run in a thread while their handshakes go on in the event loop.
    """
    channels = ahead.reach_ahead(cfg, slaves)
    try:
        data = await asyncio.to_thread(_judged, cfg, args, logger)
        if isinstance(data, int):
            return data
        return await push_to_slaves(cfg, slaves, logger, data, channels)
    finally:
        await ahead.close_all(channels)


def _judged(cfg: Config, args: argparse.Namespace, logger: Any) -> DataFile | int:
    """The data to push, built if the zones changed and judged by the guard; or the
    exit status when nothing is to be pushed.

    ``--accept`` pushes the data on disk only when it is the build the guard holds
    (and the one it names, if it names one): never a build nobody looked at.
    """
    if args.accept is None:
        status = EXIT_OK if args.no_build else _build_if_needed(cfg, logger)
        if status != EXIT_OK:
            return status
    data = _data_on_disk(cfg, logger)
    if isinstance(data, int):
        return data
    if args.accept is not None:
        refused = _accepted(cfg, data, args.accept, logger)
    else:
        refused = _guard_judges(cfg, data, logger)
    return data if refused is None else refused


def _build_if_needed(cfg: Config, logger: Any) -> int:
    """Build unless data and data.cdb already come from the zones there now."""
    builder = builder_for(cfg)
    try:
        for name in builder.tidy():
            logger.info("build.swept", file=name)
        if builder.is_current():
            logger.info("build.current", output=str(cfg.output))
            return EXIT_OK
    except BuildError as exc:
        logger.error("build.failed", path=exc.path, error=exc.reason, changed=False)
        return EXIT_SYSTEM
    return run_build(builder, logger)


def _accepted(cfg: Config, data: DataFile, spec: str, logger: Any) -> int | None:
    """``push --accept [BUILD]`` without a daemon: None when ``data`` is the held build
    (and BUILD names it), else the exit status (nothing is pushed)."""
    held = guarded.held(cfg, data.sha256)
    if held is None:
        logger.info("guard.nothing_held", output=str(cfg.output), hint="dnsmaster push")
        return EXIT_OK
    if not names_held(spec, held, logger):
        return EXIT_HELD
    logger.warning(
        "guard.accepted", serial=held.serial, sha256=held.sha256[:16], reason=held.reason
    )
    return None


def _guard_judges(cfg: Config, data: DataFile, logger: Any) -> int | None:
    """The guard on a push by hand: None when ``data`` may go, else the exit status.

    It judges ``data`` against the build the last push installed, as the daemon
    judges each build against what it gave the slaves (:mod:`dnsmaster.master.guarded`).
    """
    base = guarded.given(cfg.output, cfg.daemon.keep)
    if base is None:
        logger.info("guard.no_base", reason="no build recorded as pushed is kept here")
        return None
    try:
        verdict = guarded.judge(cfg, base, data)
    except TinydnsDataError as exc:
        logger.error("push.failed", path=str(cfg.output / "data"), error=f"not valid data: {exc}")
        return EXIT_DATA
    if verdict is None:
        with contextlib.suppress(OSError):
            guarded.clear(cfg.output)
        return None
    sha256 = data.sha256
    serial = previous_serial(data.read(0, 200))
    before = guarded.held(cfg, sha256)
    since = before.since if before is not None else time.time()
    try:
        guarded.write(cfg.output, guarded.Held(serial, sha256, verdict.reason, since, base.sha256))
    except OSError as exc:
        # Still refused: the next push judges the build again.
        logger.warning("guard.record_failed", path=str(cfg.output), error=describe(exc))
    logger.critical(
        "guard.held",
        serial=serial,
        sha256=sha256[:16],
        records=verdict.new_records,
        was=verdict.old_records,
        zones=",".join(verdict.removed_zones) or None,
        reason=verdict.reason,
        pushed_serial=base.serial,
        error="the guard holds this build: nothing pushed",
        hint=f"dnsmaster diff shows what it changes; dnsmaster push --accept {serial} pushes it",
    )
    return EXIT_HELD


def _rollback_holds(cfg: Config, logger: Any) -> bool:
    """Whether a rollback holds the slaves on an earlier build (logged if so).

    A push by hand would undo it without a word; ``rollback --release`` ends it.
    """
    try:
        hold = rollback.read(cfg.output)
    except ArchiveError as exc:
        logger.error("rollback.damaged", path=exc.path, error=exc.reason)
        return True
    if hold is None:
        return False
    logger.error(
        "rollback.held",
        serial=hold.serial,
        kept_serial=hold.kept_serial,
        error="a rollback holds every slave on an earlier build; nothing pushed",
        hint="dnsmaster rollback --release ends it and pushes the zones",
    )
    return True


# -- the push itself -------------------------------------------------------------------


def _data_on_disk(cfg: Config, logger: Any) -> DataFile | int:
    """The data in the output directory (its file, read as it is pushed), or the exit
    status when it cannot be pushed."""
    try:
        data = DataFile(cfg.output / "data")
        ends = data.read(data.size - 1, 1) if data.size else b"\n"
    except OSError as exc:
        logger.error("push.failed", path=str(cfg.output / "data"), error=describe(exc))
        return EXIT_SYSTEM
    if ends != b"\n":
        # A hand-edited data file (--no-build): the trailer could not follow it.
        logger.error(
            "push.failed", path=str(cfg.output / "data"), error="data does not end with a newline"
        )
        return EXIT_DATA
    return data
