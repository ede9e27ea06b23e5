"""Running tinydns-data and the pure-Python compiler on the same data, and comparing them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dnsmaster.core.cdb import CdbReader
from dnsmaster.core.compiler import compile_data
from dnsmaster.errors import TinydnsDataError


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a tinydns-data run gives: exit status, stderr text, data.cdb (or None)."""

    exit: int
    stderr: str
    cdb: bytes | None


#: In place of run()'s command: ``dnsmaster tinydns-data`` by its main() in this
#: process (:func:`tests.conftest.dnsmaster_here`), as ``python -m dnsmaster`` runs it.
DROPIN_HERE: list[str] = []


def run(command: list[str], data: bytes, mtime: int) -> Outcome:
    """Run ``command`` (or :data:`DROPIN_HERE`) as tinydns-data in a fresh directory
    holding ``data``."""
    with tempfile.TemporaryDirectory(prefix="differential-") as tmp:
        path = Path(tmp) / "data"
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        if command is DROPIN_HERE:
            from tests.conftest import dnsmaster_here  # noqa: PLC0415 - conftest imports tests.lab

            with contextlib.chdir(tmp):
                here = dnsmaster_here("tinydns-data")
            status, stderr = here.returncode, here.stderr
        else:
            proc = subprocess.run(command, cwd=tmp, capture_output=True, check=False, timeout=60)
            status, stderr = proc.returncode, proc.stderr.decode("utf-8", "backslashreplace")
        out = Path(tmp) / "data.cdb"
        made = out.read_bytes() if out.exists() else None
        if status != 0:
            assert (Path(tmp) / "data.tmp").exists(), "data.tmp is left behind on failure"
        return Outcome(status, stderr, made)


def pure(data: bytes, mtime: int) -> Outcome:
    """The pure compiler's answer in the same terms."""
    try:
        return Outcome(0, "", compile_data(data, mtime))
    except TinydnsDataError as exc:
        return Outcome(111, f"tinydns-data: fatal: {exc.message}\n", None)


def assert_same(ours: Outcome, theirs: Outcome) -> None:
    assert (ours.exit, ours.stderr) == (theirs.exit, theirs.stderr)
    if ours.cdb != theirs.cdb:
        # Say which records differ before the bytes do.
        assert ours.cdb is not None
        assert theirs.cdb is not None
        mine = list(CdbReader(ours.cdb).items())
        real = list(CdbReader(theirs.cdb).items())
        assert mine == real
        assert ours.cdb == theirs.cdb
