"""``dnsmaster wait``: until every slave's tinydns serves a serial.

Each slave's tinydns (its ``dns`` address) is asked for the SOA of every zone of the
build on disk that has the serial (or of the zones ``--zone`` names) until it serves
that serial or a newer one; with ``--secondaries``, each standard secondary too, for
the zones it carries. ``push --wait`` ends with the same wait (:func:`wait_for_build`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dnsmaster.commands.common import config_log_slaves, usage_error
from dnsmaster.commands.handing import daemon_runs
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.fields import name_to_wire
from dnsmaster.exits import EXIT_OK, EXIT_SLAVES, EXIT_SYSTEM, EXIT_USAGE
from dnsmaster.fsutil import describe
from dnsmaster.master import wait
from dnsmaster.master.secondaries import carried

if TYPE_CHECKING:
    from dnsmaster.config import Config, Secondary, Slave

__all__ = ["main", "wait_for_build"]


def main(args: argparse.Namespace) -> int:
    """``dnsmaster wait [SERIAL] [--zone ZONE]... [--slave NAME]...``; the exit status."""
    return asyncio.run(_wait(args))


async def _wait(args: argparse.Namespace) -> int:
    setup = config_log_slaves(args)
    if setup is None:
        return EXIT_USAGE
    cfg, logger, slaves = setup
    if args.zone and args.serial is None:
        return usage_error("--zone needs the SERIAL to wait for")
    try:
        zones = {name_to_wire(z.encode()).lower(): args.serial for z in args.zone} or None
    except ValueError as exc:
        return usage_error(f"--zone: {exc}")
    # A slave the daemon does not run gets no build: waiting for it would time out.
    status = daemon_runs(cfg, [s.name for s in slaves], logger)
    if status != EXIT_OK:
        return status
    return await wait_for_build(
        cfg,
        slaves,
        zones,
        args.timeout,
        logger,
        serial=args.serial,
        secondaries=cfg.secondaries if args.secondaries else (),
    )


async def wait_for_build(
    cfg: Config,
    slaves: Sequence[Slave],
    zones: dict[bytes, int] | None,
    timeout: float,
    logger: Any,
    *,
    serial: int | None = None,
    secondaries: Sequence[Secondary] = (),
) -> int:
    """Wait until ``slaves`` (and ``secondaries``, for the zones each carries) serve
    ``zones`` (default: the build's on disk); the exit status."""
    if zones is None:
        path = cfg.output / "data"
        try:
            data = path.read_bytes()
        except OSError as exc:
            logger.error("wait.failed", path=str(path), error=describe(exc))
            return EXIT_SYSTEM
        built = previous_serial(data[:200])
        if serial is None:
            serial = built
        if serial is None:
            logger.error("wait.failed", path=str(path), error="no dnsmaster banner: no serial")
            return EXIT_USAGE
        zones = wait.build_zones(data, serial)
        if not zones:
            return usage_error(
                f"no zone in {path} has serial {serial} (the build on disk is {built}): "
                "name the zones with --zone"
            )
    logger.info(
        "wait.start",
        serial=serial,
        zones=len(zones),
        slaves=len(slaves),
        secondaries=len(secondaries) if secondaries else None,
        timeout=timeout,
    )
    start = time.monotonic()
    results = await wait.wait_live(
        slaves,
        zones,
        timeout=timeout,
        logger=logger,
        query_timeout=min(cfg.daemon.verify_timeout, 1.0),
        secondaries=[(s, carried(s, zones)) for s in secondaries],
    )
    live = wait.report(results, logger, seconds=time.monotonic() - start)
    return EXIT_OK if live else EXIT_SLAVES
