"""``dnsmaster run``: the daemon, in the foreground until SIGTERM.

The daemon itself is :class:`dnsmaster.daemon.loop.Daemon`; this module only loads
the configuration, sets up logging, and runs it.
"""

from __future__ import annotations

import argparse
import asyncio

from dnsmaster import log
from dnsmaster.commands.common import config_and_log
from dnsmaster.daemon.loop import Daemon
from dnsmaster.exits import EXIT_USAGE

__all__ = ["main"]


def main(args: argparse.Namespace) -> int:
    """``dnsmaster run [--config FILE] [--log-format FORMAT]``; the exit status."""
    cfg = config_and_log(args)
    if cfg is None:
        return EXIT_USAGE

    async def run() -> int:
        return await Daemon(cfg, log.get_logger()).run()

    return asyncio.run(run())
