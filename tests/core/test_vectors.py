"""The spec's tinydns-data vectors: our compiler, our drop-in and the real binary agree.

Every vector in ``tests/vectors`` (see its README) is checked three ways against the
expectations in ``SUMS.tsv``: the pure compiler, ``python -m dnsmaster tinydns-data``
run as tinydns-data would be, and the real tinydns-data on this machine (which proves
SUMS.tsv itself describes the binary we compare against elsewhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsmaster.core.compiler import compile_data
from dnsmaster.errors import TinydnsDataError
from tests.conftest import VECTORS, dnsmaster_here
from tests.lab.vectors import ALL, Vector

FATAL = "tinydns-data: fatal: "
SENTINEL = b"an older data.cdb that a failed run must leave alone\n"


def _id(vector: Vector) -> str:
    return vector.file.removesuffix(".data")


IDS = [_id(v) for v in ALL]


@dataclass(frozen=True, slots=True)
class Run:
    """What one tinydns-data run left behind."""

    exit: int
    stdout: bytes
    stderr: str
    cdb: bytes | None
    tmp_exists: bool


#: ``dnsmaster tinydns-data`` run in this process (:func:`tests.conftest.dnsmaster_here`),
#: in place of a command's argv: the same main() ``python -m dnsmaster`` runs.
HERE = None


def run_in(directory: Path, command: list[str] | None, data: bytes, mtime: int) -> Run:
    """Compile ``data`` with ``command`` (or :data:`HERE`) in ``directory`` as
    tinydns-data runs."""
    path = directory / "data"
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    if command is HERE:
        with contextlib.chdir(directory):
            here = dnsmaster_here("tinydns-data")
        status, stdout, stderr = here.returncode, here.stdout.encode(), here.stderr
    else:
        proc = subprocess.run(command, cwd=directory, capture_output=True, check=False, timeout=120)
        status, stdout = proc.returncode, proc.stdout
        stderr = proc.stderr.decode("utf-8", "backslashreplace")
    out = directory / "data.cdb"
    return Run(
        exit=status,
        stdout=stdout,
        stderr=stderr,
        cdb=out.read_bytes() if out.exists() else None,
        tmp_exists=(directory / "data.tmp").exists(),
    )


def dropin() -> list[str]:
    return [sys.executable, "-m", "dnsmaster", "tinydns-data"]


def check_run(vector: Vector, directory: Path, command: list[str] | None) -> None:
    """One run in an empty directory, and for failures a second one over an old data.cdb."""
    got = run_in(directory, command, vector.data, vector.mtime)
    assert got.stdout == b""
    assert got.exit == vector.exit
    if vector.exit == 0:
        assert got.stderr == ""
        assert got.cdb is not None
        assert len(got.cdb) == vector.cdb_size
        assert hashlib.sha256(got.cdb).hexdigest() == vector.cdb_sha256
        assert not got.tmp_exists, "data.tmp must be renamed to data.cdb"
        assert (directory / "data.cdb").stat().st_mode & 0o777 == 0o644
        return
    assert got.exit == 111
    assert got.stderr == f"{vector.stderr}\n"
    assert got.cdb is None, "a failed run must not create data.cdb"
    assert got.tmp_exists, "tinydns-data leaves data.tmp behind on failure"
    # Again over an existing data.cdb (and the stale data.tmp): both runs fail alike
    # and the old data.cdb is untouched.
    (directory / "data.cdb").write_bytes(SENTINEL)
    again = run_in(directory, command, vector.data, vector.mtime)
    assert (again.exit, again.stderr) == (got.exit, got.stderr)
    assert again.cdb == SENTINEL
    assert again.tmp_exists


class TestPure:
    @pytest.mark.parametrize("vector", ALL, ids=IDS)
    def test_compile_data(self, vector: Vector) -> None:
        """compile_data gives the vector's cdb, or the error tinydns-data prints."""
        if vector.exit == 0:
            out = compile_data(vector.data, vector.mtime)
            assert len(out) == vector.cdb_size
            assert hashlib.sha256(out).hexdigest() == vector.cdb_sha256
        else:
            with pytest.raises(TinydnsDataError) as caught:
                compile_data(vector.data, vector.mtime)
            assert FATAL + caught.value.message == vector.stderr
            assert caught.value.reason

    @pytest.mark.parametrize("vector", [v for v in ALL if v.mtime_matters], ids=_id)
    def test_mtime_matters(self, vector: Vector) -> None:
        """Vectors marked mtime_matters change with the mtime; the others do not."""
        # +12345, not +1: mtime 0 and 1 both give serial 1 (spec §3.8).
        other = vector.mtime + 12345
        assert compile_data(vector.data, other) != compile_data(vector.data, vector.mtime)

    @pytest.mark.parametrize(
        "vector", [v for v in ALL if not v.mtime_matters and v.exit == 0], ids=_id
    )
    def test_mtime_does_not_matter(self, vector: Vector) -> None:
        """Vectors without . lines or serial-less Z lines ignore the mtime."""
        assert compile_data(vector.data, 7) == compile_data(vector.data, vector.mtime)

    def test_every_vector_listed(self) -> None:
        """SUMS.tsv covers every .data file, and there are 35 of them."""
        assert sorted(v.file for v in ALL) == sorted(p.name for p in VECTORS.glob("*.data"))
        assert len(ALL) == 35

    def test_17a_equals_17b(self) -> None:
        """. lines and their Z + & expansion give identical cdbs (spec §5.2)."""
        by_name = {v.file: v for v in ALL}
        a, b = by_name["17a-dot-lines.data"], by_name["17b-same-as-z-and-amp.data"]
        assert a.cdb_sha256 == b.cdb_sha256
        assert compile_data(a.data, a.mtime) == compile_data(b.data, b.mtime)


# 500 records (about 15 KiB, more than tinydns-data's 8 KiB output buffer), then a
# line it refuses: tinydns-data has flushed part of the records when it dies.
LATE_FAILURE = b"".join(b"+h%d.example.com:192.0.2.1\n" % i for i in range(500)) + b"Xbad\n"
LATE_FAILURE_STDERR = (
    "tinydns-data: fatal: unable to parse data line 501: unrecognized leading character\n"
)


class TestDropIn:
    @pytest.mark.parametrize("vector", ALL, ids=IDS)
    def test_dropin(self, vector: Vector, tmp_path: Path) -> None:
        """dnsmaster tinydns-data: same data.cdb, stderr, exit status, data.tmp. Run by
        its main() in this process; TestDropInProcess runs ``python -m dnsmaster``."""
        check_run(vector, tmp_path, HERE)


@pytest.mark.usefixtures("dnsmaster_cli")
class TestDropInProcess:
    """``python -m dnsmaster tinydns-data`` as a process, as tinydns-data is run: its
    exit status, its empty stdout, its stderr, for a vector that compiles and (below)
    for one refused after records were written."""

    def test_dropin(self, tmp_path: Path) -> None:
        (vector,) = [v for v in ALL if v.file == "06-wildcards.data"]
        assert vector.exit == 0
        check_run(vector, tmp_path, dropin())

    def test_failure_leaves_data_tmp_empty(self, tmp_path: Path) -> None:
        """What the docstring and --help promise: after a refused line data.tmp is
        there but empty (an old one truncated), and data.cdb is untouched."""
        (tmp_path / "data.cdb").write_bytes(SENTINEL)
        (tmp_path / "data.tmp").write_bytes(b"stale" * 1000)
        got = run_in(tmp_path, dropin(), LATE_FAILURE, 1)
        assert (got.exit, got.stderr) == (111, LATE_FAILURE_STDERR)
        assert got.cdb == SENTINEL
        assert (tmp_path / "data.tmp").read_bytes() == b""


class TestReal:
    @pytest.mark.parametrize("vector", ALL, ids=IDS)
    def test_real(self, vector: Vector, tmp_path: Path, tinydns_data_bin: str) -> None:
        """This machine's tinydns-data produces exactly what SUMS.tsv records."""
        check_run(vector, tmp_path, [tinydns_data_bin])

    def test_real_failure_leaves_partial_data_tmp(
        self, tmp_path: Path, tinydns_data_bin: str
    ) -> None:
        """Why the drop-in's data.tmp differs: tinydns-data's is partly written, and no
        cdb (2048 zero bytes where the header goes, then flushed 8 KiB blocks)."""
        got = run_in(tmp_path, [tinydns_data_bin], LATE_FAILURE, 1)
        assert (got.exit, got.stderr) == (111, LATE_FAILURE_STDERR)
        left = (tmp_path / "data.tmp").read_bytes()
        assert len(left) > 2048
        assert (len(left) - 2048) % 8192 == 0
        assert left[:2048] == bytes(2048)
