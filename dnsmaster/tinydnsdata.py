"""``dnsmaster tinydns-data``: a drop-in for djbdns' tinydns-data.

Same steps, same files, same messages and exit status (spec §1): read ``data`` in
the current directory, write ``data.tmp``, rename it to ``data.cdb``. On failure it
prints ``tinydns-data: fatal: ...`` and exits 111, leaving ``data.tmp`` behind and
``data.cdb`` untouched, as the original does.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from dnsmaster.core import cdb
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import TinydnsDataError
from dnsmaster.fsutil import describe

__all__ = ["main"]

EXIT_FATAL = 111


class _Fatal(Exception):
    pass


def main(stderr: TextIO | None = None) -> int:
    """Run in the current directory; return the exit status."""
    err = stderr if stderr is not None else sys.stderr
    try:
        _run()
    except _Fatal as exc:
        err.write(f"tinydns-data: fatal: {exc}\n")
        err.flush()
        return EXIT_FATAL
    return 0


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
            except cdb.CdbTooLarge:
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
