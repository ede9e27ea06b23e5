"""``dnsmaster rollback``: an earlier kept build on every slave, held until released.

``--list`` shows the kept builds; ``--to SPEC`` (default ``-1``) rolls back;
``--release`` ends the hold and pushes the zones as they are then. With a daemon
running (it holds the output directory's lock) the request is handed to it — a flag
file and SIGUSR2, as ``push --accept`` does — and each slave's outcome is printed as
the daemon reports it; without one, this command does the work itself under the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

from dnsmaster.commands.common import builder_for, config_log_slaves, one_writer, run_build
from dnsmaster.commands.handing import daemon_runs, handed_off, slave_reporter
from dnsmaster.commands.push import push_to_slaves
from dnsmaster.errors import ArchiveError, BuildError, DataErrors
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM, EXIT_USAGE
from dnsmaster.master import handoff, rollback
from dnsmaster.master import state as statefile
from dnsmaster.master.archive import Archive, Kept
from dnsmaster.master.handoff import ROLLBACK_FILE

if TYPE_CHECKING:
    from dnsmaster.config import Config

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    """``dnsmaster rollback [--to SPEC | --list | --release]``; the exit status."""
    return asyncio.run(_rollback(args))


async def _rollback(args: argparse.Namespace) -> int:
    setup = config_log_slaves(args)
    if setup is None:
        return EXIT_USAGE
    cfg, logger, _ = setup
    archive = Archive(cfg.output, cfg.daemon.keep)
    try:
        if args.list:
            return _list(cfg, archive)
        kept = None if args.release else archive.select(args.to)
    except ArchiveError as exc:
        logger.error("rollback.failed", path=exc.path, error=exc.reason)
        return EXIT_USAGE
    with one_writer(cfg.output, cfg.state, logger) as daemon:
        if daemon is not None:
            # It rolls back the slaves it runs: one it does not would be waited for.
            status = daemon_runs(cfg, [s.name for s in cfg.slaves], logger)
            return status or _hand_off(cfg, daemon, kept, logger)
        try:
            if kept is None:
                return await _release(cfg, logger)
            return await _roll_back(cfg, archive, kept, logger)
        except (ArchiveError, BuildError) as exc:
            logger.error("rollback.failed", path=exc.path, error=exc.reason)
            return EXIT_SYSTEM


async def _roll_back(cfg: Config, archive: Archive, kept: Kept, logger: Any) -> int:
    """Without a daemon: install the rollback here, then push it to every slave."""
    builder = builder_for(cfg)
    for name in builder.tidy():
        logger.info("build.swept", file=name)
    hold = rollback.read(cfg.output)
    # Above what the master built last (what the slaves were given) and the newest
    # kept build: each receiver refuses an older serial than the one it has.
    floor = rollback.newest(
        builder.previous_serial(),
        hold.serial if hold else None,
        *(k.serial for k in archive.entries()[:1]),
    )
    rolled = rollback.prepare(archive, kept, floor)
    rollback.install(cfg.output, rolled)
    logger.warning(
        "rollback.done",
        serial=rolled.hold.serial,
        kept_serial=kept.serial,
        kept_sha256=kept.sha256[:16],
        built=kept.stamp,
        hint="held until dnsmaster rollback --release",
    )
    return await push_to_slaves(cfg, list(cfg.slaves), logger)


async def _release(cfg: Config, logger: Any) -> int:
    """Without a daemon: end the hold, build the zones with a new serial, push them."""
    hold = rollback.read(cfg.output)
    if hold is None:
        logger.info("rollback.nothing_held")
        return EXIT_OK
    # A build even when the zones are those of the last build: the slaves serve the
    # rolled-back serial, and only a newer one replaces it. The hold ends only once
    # that build exists: a zones file that does not compile keeps the rollback.
    status = run_build(builder_for(cfg), logger)
    if status != EXIT_OK:
        logger.error(
            "rollback.still_held",
            serial=hold.serial,
            hint="fix the zones, then dnsmaster rollback --release again",
        )
        return status
    rollback.clear(cfg.output)
    logger.info("rollback.released", serial=hold.serial, kept_serial=hold.kept_serial)
    return await push_to_slaves(cfg, list(cfg.slaves), logger)


def _hand_off(cfg: Config, daemon: int, kept: Kept | None, logger: Any) -> int:
    """Have the running daemon roll back (or release), and report what it did."""

    ident = secrets.token_hex(8)
    fingerprint = None
    if kept is None:
        try:
            held = statefile.read(cfg.state).rollback
        except (OSError, ValueError) as exc:
            logger.error("rollback.failed", path=str(cfg.state), error=str(exc))
            return EXIT_SYSTEM
        if held is None:
            logger.info("rollback.nothing_held", daemon=daemon)
            return EXIT_OK
        try:
            fingerprint = builder_for(cfg).fingerprint()
        except (BuildError, DataErrors) as exc:
            logger.error("build.failed", error=str(exc), changed=False)
            return EXIT_SYSTEM
        words = {"request": "release", "id": ident}
    else:
        words = {"request": "to", "kept": kept.sha256, "id": ident}
    name = handoff.instance(cfg.state, daemon)
    if name is None:
        logger.error("handoff.failed", daemon=daemon, error=handoff.NO_INSTANCE)
        return EXIT_SYSTEM
    flag = cfg.output / ROLLBACK_FILE
    timeout = cfg.push.timeout + cfg.daemon.max_delay + handoff.GRACE
    text = handoff.request_text(daemon=name, timeout=timeout, **words)
    with handoff.interruptible():  # ^C from here withdraws the request
        try:
            # In the try: a ^C while the file is put in place (the directory's fsync,
            # after the rename) withdraws it too.
            handoff.put_request(flag, text)
            logger.info(
                "handoff.start",
                daemon=daemon,
                request="release the rollback" if kept is None else f"roll back to {kept.serial}",
                slaves=len(cfg.slaves),
            )

            def built(build: Any) -> None:
                event = "build.done" if kept is None else "rollback.done"
                logger.info(event, serial=build.serial, sha256=build.sha256[:16], by="daemon")

            names = [s.name for s in cfg.slaves]
            outcome = handoff.follow_request(
                cfg.state,
                daemon,
                ident,
                fingerprint=fingerprint,
                slaves=names,
                timeout=timeout,
                on_slave=slave_reporter(logger),
                on_build=built,
            )
        finally:
            # Unanswered (the daemon stopped, or this command was interrupted): no
            # daemon may carry it out later, when nobody waits for it.
            if handoff.withdraw(flag, text):
                logger.warning("handoff.withdrawn", daemon=daemon, file=ROLLBACK_FILE)
    if outcome.error is not None:
        logger.error("rollback.failed", error=outcome.error, by="daemon")
        return EXIT_SYSTEM
    return handed_off(outcome, daemon, names, logger, late="the daemon did not act in time")


def _list(cfg: Config, archive: Archive) -> int:
    """The kept builds, newest first, and which one the slaves are given."""
    kept = archive.entries()
    hold = rollback.read(cfg.output)
    try:
        on_disk = hashlib.sha256((cfg.output / "data").read_bytes()).hexdigest()
    except OSError:
        on_disk = None
    # What the slaves are given: the rollback's build, else the daemon's current
    # build (the master's data may be one the guard holds back), else the data.
    live = hold.kept_sha256 if hold is not None else _daemon_build(cfg) or on_disk
    out = sys.stdout
    if not kept:
        out.write(f"no builds kept yet in {archive.directory}\n")
    else:
        out.write(f"{'':2}{'SERIAL':>10}  {'BUILT (UTC)':20}  {'SHA256':16}  {'LINES':>8}\n")
    for i, entry in enumerate(kept):
        mark = "*" if entry.sha256 == live else " "
        note = f"  -{i}" if i else "  newest"
        if entry.sha256 == live:
            note += (
                f", live as serial {hold.serial} (rolled back {_when(hold.since)})"
                if hold is not None
                else ", live"
            )
        out.write(
            f"{mark} {entry.serial:>10}  {entry.stamp:20}  {entry.sha256[:16]}  "
            f"{entry.lines:>8}{note}\n"
        )
    if hold is not None:
        out.write(
            f"a rollback holds serial {hold.serial} (kept build {hold.kept_serial}) since "
            f"{_when(hold.since)}: release with dnsmaster rollback --release\n"
        )
    return EXIT_OK


def _daemon_build(cfg: Config) -> str | None:
    """The sha256 of the build a running daemon gives the slaves, if one runs."""
    if handoff.daemon_pid(cfg.state) is None:
        return None
    try:
        build = statefile.read(cfg.state).build
    except (OSError, ValueError):
        return None
    return build.sha256 if build is not None else None


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
