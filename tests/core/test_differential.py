"""Differential tests against the real tinydns-data, on generated data files.

Each generated file (tests/lab/strategies.py) is compiled by Debian's tinydns-data and by
our pure compiler (and, for a smaller sample, by the ``dnsmaster tinydns-data``
drop-in); the data.cdb bytes, the exit status and the stderr message must be the
same. A second test checks make-data's expansion of ``.`` lines: the expanded data,
compiled by the real tinydns-data, answers exactly as the original lines do.

CI runs a fixed, modest sample (derandomized, no example database). Hunt for bugs
locally with more, random examples::

    DIFFERENTIAL_EXAMPLES=5000 pytest -q tests/core/test_differential.py
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from dnsmaster.core import cdb
from dnsmaster.core.cdb import CdbReader
from dnsmaster.core.compiler import PackedRecords
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.errors import DataErrors
from tests.conftest import examples
from tests.lab import strategies
from tests.lab.tinydnsdata import DROPIN_HERE, assert_same, pure, run

_ASKED = os.environ.get("DIFFERENTIAL_EXAMPLES")
EXAMPLES = int(_ASKED) if _ASKED else examples(300)

# CI: the same examples every run (the profile in tests/conftest.py), a quarter of
# 300 unless DNSMASTER_FULL_EXAMPLES=1. With DIFFERENTIAL_EXAMPLES set, that many,
# drawn anew at each run.
SETTINGS = settings(max_examples=EXAMPLES, derandomize=_ASKED is None)


@pytest.fixture(scope="module")
def real(tinydns_data_bin: str) -> str:
    return tinydns_data_bin


class TestAgainstRealTinydnsData:
    @SETTINGS
    @given(data=strategies.data_files(), mtime=strategies.mtimes())
    def test_pure_compiler(self, real: str, data: bytes, mtime: int) -> None:
        """compile_data gives tinydns-data's data.cdb, exit status and message."""
        theirs = run([real], data, mtime)
        note(f"tinydns-data: exit {theirs.exit}, {theirs.stderr!r}")
        assert_same(pure(data, mtime), theirs)

    @settings(SETTINGS, max_examples=max(10, EXAMPLES // 15))
    @given(data=strategies.data_files(), mtime=strategies.mtimes())
    def test_dropin(self, real: str, data: bytes, mtime: int) -> None:
        """dnsmaster tinydns-data behaves as tinydns-data does: its main() in this
        process (``python -m dnsmaster`` as a process is tests/core/test_vectors.py's
        TestDropInProcess), with its own reading, writing and messages."""
        theirs = run([real], data, mtime)
        ours = run(DROPIN_HERE, data, mtime)
        assert_same(ours, theirs)

    @SETTINGS
    @given(line=strategies.lines(), mtime=strategies.mtimes())
    def test_single_lines(self, real: str, line: bytes, mtime: int) -> None:
        """One line at a time, so the rarer line shapes are not hidden by earlier errors."""
        data = line + b"\n"
        assert_same(pure(data, mtime), run([real], data, mtime))


def records(cdb: bytes) -> Counter[tuple[bytes, bytes]]:
    """The records of a cdb as a multiset."""
    return Counter(CdbReader(cdb).items())


class TestMakeDataExpansion:
    @settings(SETTINGS, max_examples=max(20, EXAMPLES // 2))
    @given(
        lines=st.lists(strategies.dot_lines(), min_size=1, max_size=4),
        serial=st.integers(1, 2**32 - 1),
        mtime=strategies.mtimes(),
    )
    def test_expansion_answers_like_dot_lines(
        self, real: str, lines: list[bytes], serial: int, mtime: int
    ) -> None:
        """make-data's Z + & + lines give the records of the . lines (serial forced)."""
        source = b"\n".join(lines) + b"\n"
        original = run([real], source, serial)  # mtime = serial: the default serial
        try:
            compiled = compile_source("zones.x", source)
        except DataErrors as exc:
            # make-data refuses only what it must: a zone name too long for
            # hostmaster.<zone>, an over-long name tinydns-data refuses too, or an
            # IP that does not parse (a CR after it, say) and would drop the A.
            note(str(exc.errors))
            for error in exc.errors:
                assert (
                    "hostmaster" in error.reason
                    or "longer than" in error.reason
                    or "does not parse" in error.reason
                ), error.reason
            return
        assert original.exit == 0, original.stderr
        assert original.cdb is not None
        built = assemble([compiled], serial)
        expanded = run([real], built.data, mtime)  # any mtime: the serial is explicit
        note(built.data.decode("utf-8", "backslashreplace"))
        assert expanded.exit == 0, expanded.stderr
        assert expanded.cdb is not None
        assert records(expanded.cdb) == records(original.cdb)
        # Same order too, so (spec §5.2, vectors 17a/17b) the very same bytes.
        assert expanded.cdb == original.cdb

    @settings(SETTINGS, max_examples=max(20, EXAMPLES // 3))
    @given(
        source=strategies.data_files(),
        serial=st.integers(1, 2**32 - 1),
        mtime=strategies.mtimes(),
    )
    def test_any_accepted_source(self, real: str, source: bytes, serial: int, mtime: int) -> None:
        """Whatever make-data accepts, its data and records equal the source's at that serial."""
        try:
            compiled = compile_source("zones.x", source)
        except DataErrors:
            return
        original = run([real], source, serial)
        assert original.exit == 0, original.stderr
        built = assemble([compiled], serial)
        note(built.data.decode("utf-8", "backslashreplace"))
        expanded = run([real], built.data, mtime)
        assert expanded.exit == 0, expanded.stderr
        assert expanded.cdb == original.cdb
        # The cached records the build writes directly are the same bytes again.
        assert cdb.dumps(built.keys, built.values) == original.cdb
        # And so are the records a build packs as it compiles (C writes them there).
        into = PackedRecords()
        compile_source("zones.x", source, packed=into)
        packed = cdb.Packed(bytes(into.blob), tuple(into.serials), into.count)
        with tempfile.TemporaryFile() as out:
            cdb.write_packed(out.fileno(), [packed], serial)
            out.seek(0)
            assert out.read() == original.cdb
