"""How a receiver run ends and what it says on the way: the refusals (each with its
exit status), the confined roots' failures (here, so that the command can name them
without importing the confined machinery for an unconfined push) and the progress
lines, shared by the command (:mod:`dnsmaster.slave.receive`) and what it does to
the root (:mod:`dnsmaster.slave.root`)."""

from __future__ import annotations

import contextlib
from typing import TextIO

from dnsmaster.errors import DnsmasterError, ReceiveError
from dnsmaster.protocol import EXIT_DELTA, EXIT_REFUSED, EXIT_USAGE

__all__ = ["DeltaRefused", "OutsideAllowlist", "Refused", "SectionBroken", "Usage", "say"]


class Refused(ReceiveError):
    """The data was refused; the installed data is unchanged."""

    status = EXIT_REFUSED


class Usage(ReceiveError):
    """The command was refused."""

    status = EXIT_USAGE


class DeltaRefused(ReceiveError):
    """The delta was refused; the installed data is unchanged, a full push is needed."""

    status = EXIT_DELTA


class OutsideAllowlist(Refused):
    """The push makes records outside the master's allowlist; ``lines`` names each
    offending line (at most :data:`dnsmaster.slave.confined.SHOWN`, then how many more)."""

    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines


class SectionBroken(DnsmasterError):
    """A master's section cannot be merged (its data does not compile, is not a
    regular file...); the message names the master and what is wrong."""


def say(out: TextIO, line: str) -> None:
    # A master that went away (SIGPIPE is ignored, so EPIPE) must not stop an install
    # of data already verified: it will see the result with its next status.
    with contextlib.suppress(OSError):
        out.write(line + "\n")
        out.flush()
