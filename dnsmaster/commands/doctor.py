"""``dnsmaster doctor``: check now everything a push needs, one line per check.

``status`` judges what the daemon did; ``doctor`` tries each step of a push itself,
before the daemon runs or when it fails, and says for each what is wrong and how to
fix it::

    OK   config: /etc/dnsmaster/dnsmaster.toml: 2 slaves (2 ssh, 0 local)
    FAIL config: permissions: key: /etc/dnsmaster/key: the private key has mode 0644, ...;
         fix: chmod 600 /etc/dnsmaster/key
    OK   output: directory /var/lib/dnsmaster writable by dnsmaster
    OK   slave ns2: host key ssh-ed25519 SHA256:... known (/etc/dnsmaster/known_hosts:2)
    FAIL slave ns3: tinydns on 192.0.2.3 port 53: example.com: no answer (timeout); fix: ...
    doctor: 2 FAILED, 0 warnings, 14 OK

(each check is one line; the FAIL above is wrapped here only).

The master's own checks come first (configuration and key permissions, zones,
output and state directories, the C accelerator: :mod:`dnsmaster.master.checkup`),
then each slave's (:mod:`dnsmaster.master.slavecheckup`), in the config's order; the
slaves are checked in parallel (``[push] parallel`` at once), each within a
deadline. A slave's checks follow the push's path (name, TCP, host key, login,
receiver, DNS) and stop at the first failure, since every later step would fail for
the same reason. Then each standard secondary's (``[[secondary]]``, in parallel:
:mod:`dnsmaster.master.secondarycheckup`): its SOA answers, the master's axfrdns
giving it each zone, and the rules of ``[axfrdns] service``.

Exit statuses: 0 every check OK (warnings allowed), 1 a check failed, 2 usage or
configuration error (the configuration cannot be loaded at all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable
from typing import TextIO

from dnsmaster.config import Config, Slave
from dnsmaster.errors import ConfigError
from dnsmaster.exits import EXIT_FAILED, EXIT_OK
from dnsmaster.master.checkup import Check, master_checks
from dnsmaster.master.secondarycheckup import check_secondary
from dnsmaster.master.slavecheckup import check_slave

__all__ = [
    "SLAVE_TIMEOUT",
    "check_all",
    "main",
    "summary",
]


#: The default deadline for all of one slave's checks, in seconds (main.py's help says it too).
SLAVE_TIMEOUT = 60.0


async def check_all(cfg: Config, *, timeout: float = SLAVE_TIMEOUT) -> list[Check]:
    """Every check, master first, then each slave (checked in parallel), in config order."""
    checks, build = master_checks(cfg)
    gate = asyncio.Semaphore(cfg.push.parallel)

    async def one(slave: Slave) -> list[Check]:
        async with gate:
            return await check_slave(cfg, slave, build, timeout)

    for found in await asyncio.gather(*(one(s) for s in cfg.slaves)):
        checks += found
    # What axfrdns serves them: the slaves' build, not one the guard holds.
    fed = build.served if build is not None and build.served is not None else build
    for found in await asyncio.gather(
        *(check_secondary(cfg, s, fed, timeout) for s in cfg.secondaries)
    ):
        checks += found
    return checks


def summary(checks: Iterable[Check]) -> str:
    """The last line: how many checks failed, warned and passed."""
    counts = {"OK": 0, "WARN": 0, "FAIL": 0}
    for check in checks:
        counts[check.status] += 1
    head = f"doctor: {counts['FAIL']} FAILED" if counts["FAIL"] else "doctor: all good"
    plural = "" if counts["WARN"] == 1 else "s"
    return f"{head}, {counts['WARN']} warning{plural}, {counts['OK']} OK"


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``dnsmaster doctor``; the exit status."""
    from dnsmaster import config  # noqa: PLC0415

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        cfg = config.load(config.resolve_path(args.config, os.environ))
    except ConfigError as exc:
        return exc.report(err)
    timeout = args.timeout if args.timeout is not None else SLAVE_TIMEOUT
    checks = asyncio.run(check_all(cfg, timeout=timeout))
    for check in checks:
        out.write(check.line() + "\n")
    out.write(summary(checks) + "\n")
    return EXIT_FAILED if any(c.failed for c in checks) else EXIT_OK
