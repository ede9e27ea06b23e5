"""``dnsmaster tinydns-data``: a drop-in for djbdns' tinydns-data.

Same steps, same files, same messages and exit status (spec §1): read ``data`` in
the current directory, write ``data.tmp``, rename it to ``data.cdb``. On failure it
prints ``tinydns-data: fatal: ...`` and exits 111, leaving ``data.tmp`` behind and
``data.cdb`` untouched, as the original does.

What ``data.tmp`` holds after a failure differs, on purpose. The whole of ``data``
is compiled before a byte is written, so a line tinydns-data refuses, a name too
long, or a read error leaves ``data.tmp`` empty (truncated, when an old one was
there). tinydns-data writes as it parses and dies without flushing its buffer: it
leaves 2048 zero bytes (the header it never wrote) and whatever records it had
flushed in 8 KiB blocks. That file is no cdb (every table position is zero), so
no tool can use it; an empty one says as much at a glance, costs no disk (a
failed run over a 1M-line file would leave about 100 MB), and ``data.tmp``
still exists, for scripts that look for it. Only a failure while writing (a
full disk) leaves a partly written ``data.tmp``, as tinydns-data's would be.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from dnsmaster.core import cdb
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import CdbTooLarge, DnsmasterError, TinydnsDataError
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM
from dnsmaster.fsutil import describe

__all__ = ["main"]


class _Fatal(DnsmasterError):
    pass


def main(args: argparse.Namespace | None = None, *, stderr: TextIO | None = None) -> int:
    """``dnsmaster tinydns-data`` (it takes no options): run in the current directory;
    return the exit status."""
    err = stderr if stderr is not None else sys.stderr
    try:
        _run()
    except _Fatal as exc:
        err.write(f"tinydns-data: fatal: {exc}\n")
        err.flush()
        return EXIT_SYSTEM  # 111 on any failure, as tinydns-data
    return EXIT_OK


def _run() -> None:
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
            data = _read_all(fd)
            try:
                recs = compile_text(data, default_serial(mtime))
            except TinydnsDataError as exc:
                raise _Fatal(exc.message) from None
            try:
                cdb.write_fd(out, recs.keys, recs.values)
                os.fsync(out)
            except CdbTooLarge:
                raise _Fatal("unable to create data.tmp: out of memory") from None
            except OSError as exc:
                raise _Fatal(f"unable to create data.tmp: {describe(exc)}") from None
        finally:
            os.close(out)
    finally:
        os.close(fd)
    try:
        os.rename("data.tmp", "data.cdb")
    except OSError as exc:
        raise _Fatal(f"unable to move data.tmp to data.cdb: {describe(exc)}") from None


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError as exc:
        raise _Fatal(f"unable to read line: {describe(exc)}") from None
    return b"".join(chunks)
