"""``dnsmaster tinydns-data``: a drop-in for djbdns' tinydns-data.

Same steps, same files, same messages and exit status (spec §1): read ``data`` in
the current directory, write ``data.tmp``, rename it to ``data.cdb``. On failure it
prints ``tinydns-data: fatal: ...`` and exits 111, leaving ``data.tmp`` behind and
``data.cdb`` untouched, as the original does.

It works as tinydns-data does, too: ``data`` is read a chunk at a time and each
line's records go to ``data.tmp`` as they are compiled, so memory stays a few MB
plus 8 bytes a record however big the data (spec §8: only each record's hash and
position wait for the tables at the end, which take as much again while they are
laid out: about 220 MB at 10M lines).

What ``data.tmp`` holds after a failure differs, on purpose. A line tinydns-data
refuses, a name too long, or a read error truncates ``data.tmp`` to nothing, though
the records of the lines before it were written already. tinydns-data dies without
flushing its buffer: it leaves 2048 zero bytes (the header it never wrote) and
whatever records it had flushed in 8 KiB blocks. That file is no cdb (every table
position is zero), so no tool can use it; an empty one says as much at a glance,
costs no disk (a failed run over a 1M-line file would leave about 100 MB), and
``data.tmp`` still exists, for scripts that look for it. Only a failure while
writing (a full disk) leaves a partly written ``data.tmp``, as tinydns-data's
would be.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TextIO

from dnsmaster.core.compiler import CHUNK_SIZE, compile_stream, default_serial
from dnsmaster.errors import CdbTooLarge, DnsmasterError, TinydnsDataError
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM
from dnsmaster.fsutil import describe

__all__ = ["main"]


class _Fatal(DnsmasterError):
    pass


def main(
    args: argparse.Namespace | None = None,
    *,
    stderr: TextIO | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """``dnsmaster tinydns-data`` (it takes no options): run in the current directory;
    return the exit status. ``data`` is read ``chunk_size`` bytes at a time."""
    err = stderr if stderr is not None else sys.stderr
    try:
        _run(chunk_size)
    except _Fatal as exc:
        err.write(f"tinydns-data: fatal: {exc}\n")
        err.flush()
        return EXIT_SYSTEM  # 111 on any failure, as tinydns-data
    return EXIT_OK


def _run(chunk_size: int) -> None:
    os.umask(0o022)
    try:
        fd = os.open("data", os.O_RDONLY)
    except OSError as exc:
        raise _Fatal(f"unable to open data: {describe(exc)}") from None
    try:
        try:
            mtime = os.fstat(fd).st_mtime_ns // 10**9
        except OSError as exc:
            raise _Fatal(f"unable to stat data: {describe(exc)}") from None
        try:
            out = os.open("data.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise _Fatal(f"unable to create data.tmp: {describe(exc)}") from None
        try:
            _compile(fd, out, default_serial(mtime), chunk_size)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    try:
        os.rename("data.tmp", "data.cdb")
    except OSError as exc:
        raise _Fatal(f"unable to move data.tmp to data.cdb: {describe(exc)}") from None


def _compile(fd: int, out: int, serial: int, chunk_size: int) -> None:
    def read(size: int) -> bytes:
        try:
            return os.read(fd, size)
        except OSError as exc:
            raise _Fatal(f"unable to read line: {describe(exc)}") from None

    try:
        compile_stream(read, out, serial, chunk_size=chunk_size)
        os.fsync(out)
    except _Fatal:
        _empty(out)
        raise
    except TinydnsDataError as exc:
        _empty(out)
        raise _Fatal(exc.message) from None
    except CdbTooLarge:
        _empty(out)
        raise _Fatal("unable to create data.tmp: out of memory") from None
    except OSError as exc:
        raise _Fatal(f"unable to create data.tmp: {describe(exc)}") from None


def _empty(out: int) -> None:
    """What was written before a failure goes: see the module's docstring."""
    with contextlib.suppress(OSError):  # data.tmp is thrown away either way
        os.ftruncate(out, 0)
