"""``dnsmaster tinydns-data`` in process, chunk by chunk, against the real tinydns-data.

The drop-in compiles ``data`` a chunk at a time straight into ``data.tmp``; a small
``chunk_size`` makes every kind of line (those C compiles, those it leaves to
Python, errors) meet a chunk's edge, and the bytes must still be tinydns-data's.
(tests/core/test_vectors.py runs the drop-in as a process on the spec's vectors.)
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from dnsmaster.commands.tinydnsdata import main
from dnsmaster.core import accel
from dnsmaster.core.compiler import CHUNK_SIZE
from tests.lab.tinydnsdata import Outcome, assert_same, run

MTIME = 1_700_000_123
OLD = b"an older data.cdb that a failed run leaves alone\n"

# One of each kind of line: those C compiles, and those it hands to Python (any
# backslash; a generic record; blanks and comments, which add nothing).
KINDS = [
    b"Z%(n)s.example:ns1.%(n)s.example.:hostmaster.%(n)s.example.::::::\n",
    b".%(n)s.test:192.0.2.1:a:259200\n",
    b"&sub.%(n)s.test:192.0.2.2:b\n",
    b"+www.%(n)s.test:192.0.2.3:300\n",
    b"=host.%(n)s.test:192.0.2.4\n",
    b"@%(n)s.test:192.0.2.5:mx:10\n",
    b"Calias.%(n)s.test:www.%(n)s.test\n",
    b"'txt.%(n)s.test:esc\\072aped\\040text:60\n",
    b"+a\\056b.%(n)s.test:192.0.2.6\n",
    b":gen.%(n)s.test:99:\\001\\002\\377\n",
    b"^7.2.0.192.in-addr.arpa:ptr.%(n)s.test\n",
    b"#a comment:with:colons\n",
    b"-disabled.%(n)s.test:192.0.2.8\n",
    b"\n",
    b"+trailing.%(n)s.test:192.0.2.9 \t\n",
]
DATA = b"".join(kind % {b"n": b"n%d" % i} for i in range(12) for kind in KINDS)


def ours(directory: Path, data: bytes, chunk_size: int) -> Outcome:
    """main() in ``directory`` (the current one while it runs) on ``data``."""
    path = directory / "data"
    path.write_bytes(data)
    os.utime(path, (MTIME, MTIME))
    err = io.StringIO()
    cwd = Path.cwd()
    os.chdir(directory)
    try:
        status = main(stderr=err, chunk_size=chunk_size)
    finally:
        os.chdir(cwd)
    out = directory / "data.cdb"
    return Outcome(status, err.getvalue(), out.read_bytes() if out.exists() else None)


@pytest.fixture(scope="module")
def theirs(tinydns_data_bin: str) -> Outcome:
    return run([tinydns_data_bin], DATA, MTIME)


@pytest.mark.usefixtures("accelerator")
class TestStreaming:
    @pytest.mark.parametrize("chunk_size", [1, 7, 100, 4096, CHUNK_SIZE])
    def test_every_kind_of_line(self, chunk_size: int, theirs: Outcome, tmp_path: Path) -> None:
        """C's lines and Python's, in any chunking, give tinydns-data's bytes."""
        assert theirs.exit == 0
        assert len(DATA) > 4096  # the data crosses chunk edges at 4096 too
        assert_same(ours(tmp_path, DATA, chunk_size), theirs)
        assert not (tmp_path / "data.tmp").exists()

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\n\n",
            b"+last.test:192.0.2.1",  # a last line without its LF
            b"+a.test:192.0.2.1\n'long.test:" + b"x\\072" * 300 + b"\n+b.test:192.0.2.2",
        ],
        ids=["empty", "blank", "no-final-lf", "line-longer-than-chunks"],
    )
    def test_edges(self, data: bytes, tinydns_data_bin: str, tmp_path: Path) -> None:
        """The ends of the data, and a line that spans many chunks."""
        assert_same(ours(tmp_path, data, 64), run([tinydns_data_bin], data, MTIME))

    @pytest.mark.parametrize(
        "bad",
        [b"Xunknown\n", b"+" + b"a" * 64 + b".test:192.0.2.1\n", b":gen.test:6:x\n"],
        ids=["unknown-type", "label-too-long", "prohibited-generic"],
    )
    def test_error_after_chunks(self, bad: bytes, tinydns_data_bin: str, tmp_path: Path) -> None:
        """A refused line past several chunks: tinydns-data's message and line number,
        data.tmp left empty although records were written, data.cdb untouched."""
        data = DATA + bad + DATA
        theirs = run([tinydns_data_bin], data, MTIME)
        assert theirs.exit == 111
        (tmp_path / "data.cdb").write_bytes(OLD)
        got = ours(tmp_path, data, 1000)
        assert (got.exit, got.stderr, got.cdb) == (111, theirs.stderr, OLD)
        assert (tmp_path / "data.tmp").read_bytes() == b""

    @pytest.mark.parametrize("copies", [1, 200], ids=["at-the-end", "while-compiling"])
    def test_disk_full(self, copies: int, tinydns_data_bin: str, tmp_path: Path) -> None:
        """A write that fails (data.tmp is /dev/full) at the last flush, or past the
        writer's 1 MiB buffer mid-compile: tinydns-data's message, data.cdb untouched."""
        data = DATA * copies
        for who in ("ours", "theirs"):
            (tmp_path / who).mkdir()
            (tmp_path / who / "data.tmp").symlink_to("/dev/full")
            (tmp_path / who / "data.cdb").write_bytes(OLD)
        (tmp_path / "theirs" / "data").write_bytes(data)
        real = subprocess.run(
            [tinydns_data_bin], cwd=tmp_path / "theirs", capture_output=True, check=False
        )
        got = ours(tmp_path / "ours", data, 4096)
        assert real.returncode == 111
        assert (got.exit, got.stderr, got.cdb) == (111, real.stderr.decode(), OLD)


def test_pure_python(theirs: Outcome, tmp_path: Path) -> None:
    """Without the accelerator the data is read whole: the same bytes."""
    with accel.using("compiler", None):
        assert_same(ours(tmp_path, DATA, 100), theirs)
