"""``dnsmaster receive``: the slave's forced command, handed straight to the receiver.

It runs once per push on every slave, so it must not pay for the rest of the
command line: :func:`dnsmaster.commands.main.main` sends its arguments here before
any parsing, and the receiver (:mod:`dnsmaster.slave.receive`) parses its own
options. Nothing here may import asyncssh, structlog or dnspython
(``tests/slave/test_receive.py`` checks it).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main", "run"]


def main(argv: Sequence[str]) -> int:
    """Run the receiver on ``argv`` (what follows the ``receive`` word); the exit status."""
    # A run is one short process that makes few reference cycles: the collector's
    # passes over every object the imports make (each dataclass, each compiled
    # pattern) cost more than the garbage they would find. Its imports come after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from dnsmaster.slave.receive import main as receive  # noqa: PLC0415

        return receive(argv)
    finally:
        if collecting:
            gc.enable()


def run(argv: Sequence[str]) -> NoReturn:
    """:func:`main` as the whole process: its status, and no interpreter teardown
    (:func:`dnsmaster.slave.receive.end`). What the forced command starts; never
    where the process must go on (tests run :func:`main`)."""
    status = main(argv)
    from dnsmaster.slave.receive import end  # noqa: PLC0415 - imported by main already

    end(status)
