"""``dnsmaster receive``: the slave's forced command, handed straight to the receiver.

It runs once per push on every slave, so it must not pay for the rest of the
command line: :func:`dnsmaster.commands.main.main` sends its arguments here before
any parsing, and the receiver (:mod:`dnsmaster.slave.receive`) parses its own
options. Nothing here may import asyncssh, structlog or dnspython
(``tests/slave/test_receive.py`` checks it).
"""

from __future__ import annotations

import gc
import os
import sys
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
    """:func:`main` as the whole process: its status, and no interpreter teardown.

    What the forced command starts: once the receiver has said its last line, the
    process ends at once (os._exit) instead of collecting and freeing every object
    and module the run made, a tenth of what the imports cost. Nothing is lost: every
    file is fsynced or closed by then, the root's lock goes with the process, and
    the output is flushed here. Never call it where the process must go on (tests
    run :func:`main`).
    """
    status = main(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            # The master hung up, or the stream is closed: as the interpreter's own
            # exit would say, the output did not all go out.
            status = status or 120
    os._exit(status)
