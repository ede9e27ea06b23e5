"""The C accelerator (``dnsmaster/core/_ccompile.c``) against the pure-Python compiler.

The pure-Python compiler is the reference; with the accelerator built, every compile
goes through C for the lines it is sure of. Both paths must give the same records in
the same order, the same stamped lines and SOA indexes, and the same errors (which
only the Python code raises). With the checker on, C keeps only the lines the checker
would pass in silence, so both paths must also give the same diagnostics, and make-data
the same errors and warnings. The vectors and the differential strategies run through
both; the strategies also run with every backslash removed,
since a line with one always goes the Python way.

``DNSMASTER_PURE_PYTHON=1`` turns the accelerator off for a whole run.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import accel, cdb, compiler, makedata
from dnsmaster.core.compiler import (
    PackedRecords,
    compile_lines,
    compile_text,
    split_lines,
)
from dnsmaster.core.linetypes import Records
from dnsmaster.core.lint import Linter
from dnsmaster.core.makedata import check_source
from dnsmaster.errors import TinydnsDataError
from tests.conftest import VECTORS, examples
from tests.lab import strategies

# Not built: fails under CI=true (CI installs a compiler and the headers), skips elsewhere.
pytestmark = pytest.mark.usefixtures("accelerator")

# The rest comes from the Hypothesis profile in tests/conftest.py.
SETTINGS = settings(max_examples=examples(400))

T = TypeVar("T")
Outcome = tuple[list[bytes], list[bytes], list[int], list[int]] | tuple[str, int, str]


def outcome(fn: Callable[[], Records]) -> Outcome:
    try:
        recs = fn()
    except TinydnsDataError as exc:
        return (exc.message, exc.lineno, exc.reason)
    return (recs.keys, recs.values, recs.stamped, recs.soa_defaults)


def pure(fn: Callable[[], T]) -> T:
    """Run ``fn`` with the accelerator turned off."""
    with accel.using("compiler", None):
        return fn()


def plain(data: bytes, serial: int) -> None:
    """compile_text and compile_lines, C and Python, all agree on ``data``."""
    reference = pure(lambda: outcome(lambda: compile_text(data, serial)))
    assert pure(lambda: outcome(lambda: compile_lines(split_lines(data), serial))) == reference
    assert outcome(lambda: compile_text(data, serial)) == reference
    assert outcome(lambda: compile_lines(split_lines(data), serial)) == reference
    assert outcome(lambda: compile_lines(tuple(split_lines(data)), serial)) == reference


def checked(data: bytes, serial: int) -> tuple[object, ...]:
    """The records, refused lines and diagnostics of a compile with the checker on,
    the same from compile_lines and compile_text."""
    found = []
    for whole in (False, True):
        linter = Linter()
        errors: list[TinydnsDataError] = []
        at: list[int] = []
        if whole:
            recs = compile_text(data, serial, linter=linter, errors=errors, stamped_at=at)
            # stamped_at: where each stamped line starts
            assert [data.count(b"\n", 0, pos) for pos in at] == recs.stamped
            assert all(pos == 0 or data[pos - 1] == 0x0A for pos in at)
        else:
            recs = compile_lines(split_lines(data), serial, linter=linter, errors=errors)
        refused = [(e.message, e.lineno, e.reason) for e in errors]
        found.append(
            (recs.keys, recs.values, recs.stamped, recs.soa_defaults, refused, linter.diagnostics)
        )
    assert found[0] == found[1]
    return found[0]


def check(data: bytes, serial: int = 1_700_000_000) -> None:
    """compile_text and compile_lines, C and Python, all agree on ``data``; with the
    checker on, so do the diagnostics and make-data's whole check of the source."""
    plain(data, serial)
    reference = pure(lambda: checked(data, serial))
    assert checked(data, serial) == reference
    source = pure(lambda: checked_source(data))
    assert checked_source(data) == source


def packed(recs: Records) -> tuple[bytes, list[int], int]:
    """``recs`` in cdb's record layout, the offsets of their default serials, the count."""
    blob = b""
    serials = []
    for i, (key, value) in enumerate(zip(recs.keys, recs.values, strict=True)):
        blob += struct.pack("<II", len(key), len(value)) + key + value
        if i in recs.soa_defaults:
            serials.append(len(blob) - 20)
    return blob, serials, len(recs.keys)


def checked_source(data: bytes) -> tuple[object, ...]:
    """make-data's check of one source: its errors, warnings and compile; packed, the
    same records in cdb's layout."""
    into = PackedRecords()
    in_place = check_source("zones.x", data, packed=into)
    found = check_source("zones.x", data)
    if found.compiled is not None:
        assert in_place.compiled is not None
        assert (bytes(into.blob), into.serials, into.count) == packed(found.compiled.records)
        assert in_place.compiled.records.stamped == found.compiled.records.stamped
        assert in_place.compiled.pieces == found.compiled.pieces
    assert [str(e) for e in in_place.errors + in_place.warnings] == [
        str(e) for e in found.errors + found.warnings
    ]
    errors, warnings = (
        [(e.file, e.line, e.reason) for e in d] for d in (found.errors, found.warnings)
    )
    return (errors, warnings, found.compiled and (found.compiled.pieces, found.compiled.records))


def test_accelerator_is_used() -> None:
    assert accel.compiler() is not None
    recs = compile_text(b"+a.example:1.2.3.4\n", 1)
    assert recs.keys == [b"\x01a\x07example\x00"]


@pytest.mark.parametrize("path", sorted(VECTORS.glob("*.data")), ids=lambda p: p.name)
def test_vectors(path: object) -> None:
    data = path.read_bytes()  # type: ignore[attr-defined]
    check(data)
    check(data.replace(b"\\", b""))


EDGES = [
    b"",
    b"\n\n",
    b"+a.example:1.2.3.4",  # no final LF
    b"+a.example:1.2.3.4 \t \n=b.example:1.2.3.5\t\n",
    b"+a.example:1.2.3.4\r\n",
    b"\r\n",
    b" +a:1.2.3.4\n",
    b"+*.example:1.2.3.4\n=*.example:1.2.3.4\nC*:x\n'*.a:t\n",
    b"+**.example:1.2.3.4\n+a.*.example:1.2.3.4\n",
    b"+A.EXAMPLE:300.256.1.999junk:4294967297:4000000060abcdeF:ab\n",
    b"=a:010.0001.2.3::40:\x00\x00\n+a:1.2.3:\n+a:localhost\n+:1.2.3.4\n+\n",
    b"+a:1.2.3.4:::x\n+a:1.2.3.4:::\x00x\n+a:1.2.3.4::zz:xyz\n",
    b".example:1.2.3.4:a:259200\n.example::b\n.example:1.2.3.4:ns.x.:0\n",
    b".example:1.2.3.4:a:4294967296:40:lo\n&example:1.2.3.4:a\n&example::ns1.x:5:6:7\n",
    b"@example:1.2.3.4:mx1:10\n@example::mx.x.:70000:5\n@example::::\n",
    b"'a:" + b"x" * 127 + b"\n'a:" + b"y" * 128 + b"\n'a:" + b"z" * 254 + b"\n'a:\n",
    b"'a:" + b"w" * 1000 + b":5:40:lo\n",
    b"Cfoo:bar\nCfoo:\n^4.3.2.1.in-addr.arpa:host.x:60\n",
    b"Zexample:ns:host.master:1:2:3:4:5:6:7:lo\nZexample:ns:hm\nZe::\n",
    b":a:28:" + b"q" * 40 + b"\n:a:65551:x\n:a:16junk:t\n",
    b":a:252:x\n",
    b":a::x\n",
    b":a:65538:x\n",
    b"%lo:192.168\n%ex\n%:1..2\n%ab:1.2x.3\n%\x00\x00:1.2.3.4.5\n",
    b"Sx:1.2.3.4:y:80:1:2\nS_sip._tcp.x::sip:5060::::40:lo\n",
    b"Sx:1.2.3.4:y::1:2\n",
    b"Xbad\n",
    b"#comment\n-disabled\n+a:1.2.3.4\n# more\n",
    # Name limits: 63-byte labels are fine, 64 are not; 255 bytes of wire in all.
    b"+" + b"a" * 63 + b".x:1.2.3.4\n",
    b"+" + b"a" * 64 + b".x:1.2.3.4\n",
    b"+" + b".".join([b"a" * 63] * 3 + [b"b" * 61]) + b":1.2.3.4\n",
    b"+" + b".".join([b"a" * 63] * 3 + [b"b" * 62]) + b":1.2.3.4\n",
    b"." + b".".join([b"a" * 63] * 3 + [b"b" * 61]) + b":1.2.3.4\n",
    b"." + b".".join([b"a" * 63] * 3 + [b"b" * 58]) + b":1.2.3.4\n",
    b"@" + b".".join([b"a" * 63] * 3 + [b"b" * 58]) + b":1.2.3.4\n",
    b"S" + b".".join([b"a" * 63] * 3 + [b"b" * 57]) + b":1.2.3.4::1\n",
    b"Cx:" + b"a" * 64 + b"\n",
    b"Cx:" + b".".join([b"a" * 63] * 3 + [b"b" * 62]) + b"\n",
    b"Zx:" + b"a" * 64 + b":y\n",
    b"Zx:y:" + b"a" * 64 + b"\n",
    b"+a\\.b:1.2.3.4\n+a\\101:1.2.3.4\n'a:b\\072c\n",
    b"+a..b...:1.2.3.4\n+...:1.2.3.4\n",
    b"+a:1.2.3.4\n" * 3 + b"+bad" + b"a" * 70 + b":1.2.3.4\n+a:1.2.3.4\n",
    b"+\xff\x80.X:1.2.3.4\n+a\x00b:1.2.3.4\n",
    # make-data's one pass (expand): Z lines whose serial ends the line or follows
    # blanks, a . line's tail of blanks, a last line without LF.
    b"Zx:ns:hm \t\nZy:ns:hm:\nZz:ns: \nZw:ns:hm::1 :\n.a:1.2.3.4:b:::x\t",
    b"Z\n",
    b"# c\n.a:1.2.3.4:b\n\n.b::c:0\n+h.b:1.2.3.4\n.c:1.2.3.4:d.:7:4000000000000000:lo \t",
]


@pytest.mark.parametrize("data", EDGES)
def test_edges(data: bytes) -> None:
    check(data)
    check(data, serial=0)


# Each test of the checker that C runs (clean() in _ccompile.c), on both sides of its line.
CHECKER_EDGES = [
    b"+a:1.2.3.4\r\n+a:1.2.3.4\n+a:1.2.3.4:\r\n",
    b"+a:1.2.3.4::::\n+a:1.2.3.4:::::\n+a:1.2.3.4:::::x\n'a:t:::::\n",
    b".a:1.2.3.4:b:::::\n.a:1.2.3.4:b::::lo:x\nZa:b:c:1:2:3:4:5:6:7:lo:\nZa:b:c::::::::::x\n",
    b"+a:0.0.0.0\n+a:255.255.255.255\n+a:256.1.1.1\n+a:1.2.3.256\n+a:01.2.3.4\n+a:1.2.3.00\n",
    b"+a:1.2.3.4x\n+a:1.2.3.4.\n+a:1.2.3\n+a:1234.1.1.1\n+a:\n+a\n=a:\n+a: 1.2.3.4\n",
    b".a::b\n.a:1.2.3.4:b\n.a:1.2.3.04:b\n&a::b\n@a::mx\n@a:1.2.3.999:mx\nSa::t:1\n",
    b"+a:1.2.3.4:0\n+a:1.2.3.4:4294967295\n+a:1.2.3.4:4294967296\n+a:1.2.3.4:0300\n",
    b"+a:1.2.3.4:99999999999999999999999\n+a:1.2.3.4:3x\n+a:1.2.3.4:x\n+a:1.2.3.4: 3\n",
    b"@a::mx:65535\n@a::mx:65536\n@a::mx:0065535\n:a:65535:x\n:a:65536:x\n:a:28:x:-1\n",
    b"Sa::t:65535:65535:65535:4294967295\nSa::t:65536\nSa::t:1:65536\nSa::t:1:2:65536\n",
    b"Za:b:c:4294967295:4294967295:4294967295:4294967295:4294967295:4294967295\n",
    b"Za:b:c:4294967296\nZa:b:c:1:2:3:4:4294967296\nZa:b:c:1:2:3:4:5:4294967296\n",
    b"+a:1.2.3.4::0123456789abcdef\n+a:1.2.3.4::0123456789ABCDEF\n+a:1.2.3.4::0123456789abcde\n",
    b"+a:1.2.3.4::0123456789abcdef0\n+a:1.2.3.4::0123456789abcdeg\n+a:1.2.3.4::\n",
    b"+a:1.2.3.4:::a\n+a:1.2.3.4:::AZ\n+a:1.2.3.4:::abc\n+a:1.2.3.4:::a1\n+a:1.2.3.4:::@\n",
    b"+a:1.2.3.4:::[\n+a:1.2.3.4:::`\n+a:1.2.3.4:::{z\n+a:1.2.3.4:::\xe1\n",
    b"%lo\n%lo:\n%lo:1\n%lo:1.2.3.4\n%lo:1.2.3.4.5\n%lo:1234\n%lo:123.456\n%lo:1..2\n",
    b"%lo:.1\n%lo:1.\n%lo:1.2.3.\n%:1.2\n%abc:1.2\n%l1:1.2\n",
    b"3a:20010db8000000000000000000000001\n6b:20010db8000000000000000000000001:300\n",
    b"#+a:1.2.3.4:x\n-+a:01.2.3.4\n",
]


@pytest.mark.parametrize("data", CHECKER_EDGES)
def test_checker_edges(data: bytes) -> None:
    check(data)


def test_clean_lines_stay_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the checker on, the common clean lines never reach the Python entries."""
    handed: list[int] = []
    real = compiler.compile_line

    def spy(c: object, index: int, *rest: object) -> None:
        handed.append(index)
        real(c, index, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(compiler, "compile_line", spy)
    clean = (
        b".example:192.0.2.1:a:259200\n&sub.example::ns1.example\n@example:10.0.0.25:mx1:10\n"
        b"'example:v=spf1 mx -all:3600\n=example:10.0.0.1\n+h1.example:10.0.0.2\n"
        b"=h2.example:10.0.0.3:3600\nCwww.example:h1.example\n^1.0.0.10.in-addr.arpa:h\n"
        b"Zexample:ns:hm:1:2:3:4:5:6\n:example:28:abc\n%lo:10.1\nSs.example::t:1:2:3\n#c\n"
    )
    found = check_source("zones.x", clean)
    assert found.errors == found.warnings == ()
    assert handed == []
    check_source("zones.x", clean + b"+h3.example:10.0.0.04\n")
    assert handed == [14]


def test_lines_holding_lf() -> None:
    """compile_lines strips every line (LF included) when one needs it."""
    lines = [b"+a:1.2.3.4\n", b"'b:text \n", b"+c:1.2.3.5"]
    reference = pure(lambda: outcome(lambda: compile_lines(lines, 5, first_lineno=7)))
    assert outcome(lambda: compile_lines(lines, 5, first_lineno=7)) == reference
    bad = [b"+a:1.2.3.4", b"?"]
    reference = pure(lambda: outcome(lambda: compile_lines(bad, 5, first_lineno=7)))
    assert reference[1] == 8
    assert outcome(lambda: compile_lines(bad, 5, first_lineno=7)) == reference


# An eighth in CI, not a quarter: two other long runs of the suite hold the C path on
# more files of the same strategy, drawn apart from these: test_core_hostile's
# test_data_files_thorough to pure Python (both compile entry points, and make-data),
# test_differential's test_pure_compiler to tinydns-data itself.
@settings(SETTINGS, max_examples=examples(400, share=8))
@given(data=strategies.data_files(), serial=st.integers(0, 2**32 - 1))
def test_data_files(data: bytes, serial: int) -> None:
    """Each file as drawn, then without its escapes (which reach the C parser's
    unescaped paths): one draw for both, since drawing a file is most of the cost."""
    check(data, serial)
    check(data.replace(b"\\", b""), serial)


# An eighth in CI too: test_differential's test_single_lines holds the C path to
# tinydns-data on single lines drawn apart, and test_core_hostile's
# test_hostile_lines_thorough to pure Python on hostile ones.
@settings(SETTINGS, max_examples=examples(400, share=8))
@given(line=strategies.lines())
def test_single_lines(line: bytes) -> None:
    check(line + b"\n")
    check(line.replace(b"\\", b"") + b"\n")


DOT_EDGES = [
    b".a",
    b".a:",
    b".a::::::",
    b".a:1.2.3.4:b:300:4000000000000000:lo:extra:more",
    b".a:1.2.3.4:.b.:0",
    b".a:1.2.3.4:...:18446744073709551616",
    b"..a::",
    b"...:1.2.3.4",
    b".a:1.2.3.4:x:junk:: \t",
    b".a :1.2.3.4:x : 3: :",
    b".a:1.2.3.4:b:::x\t",
    b".a:1.2.3.4:b:99999999999999999999999999999",
    b".a\r",
    b".\xff\x00:1.2.3.4:\x1b",
]


@SETTINGS
@given(
    line=st.one_of(strategies.dot_lines(), st.sampled_from(DOT_EDGES)),
    index=st.integers(0, 2**31),
    more=st.booleans(),
    origin=st.sampled_from([b"zones.x", b"zones.\\weird name", b""]),
)
def test_dot_line(line: bytes, index: int, more: bool, origin: bytes) -> None:
    """make-data's expansion of a . line, C against Python (the reference)."""
    fast = accel.compiler()
    assert fast is not None
    expected = makedata.stamped_line(origin, line, index, more)
    assert fast.dot_line(line, origin, index, more, makedata.SERIAL_MARK) == expected


def test_packing_threads() -> None:
    """Packing runs without the GIL: sources compiled on two threads at once come out
    as they do one after another."""
    sources = [
        b"".join(
            b".z%d.example:192.0.2.%d:a\n+h%d.z%d.example:10.0.%d.%d:%d\n=x%d.z%d.example:10.1.0.%d\n"
            % (n, n % 250, i, n, n % 250, i % 250, i, i, n, i % 250)
            # two past 1 MiB of records, which run_text copies out without the GIL
            for i in range(7000 if n < 2 else 2000)
        )
        + b"+odd.example:01.2.3.4\n'a\\072b:c\n"
        for n in range(8)
    ]

    def pack(data: bytes) -> tuple[bytes, list[int], int, list[int], list[int]]:
        into = PackedRecords()
        at: list[int] = []
        recs = compile_text(data, 5, linter=Linter(), errors=[], stamped_at=at, packed=into)
        return bytes(into.blob), into.serials, into.count, recs.stamped, at

    alone = [pack(data) for data in sources]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            assert list(pool.map(pack, sources)) == alone


def cdb_or_error(write: Callable[[int], object]) -> bytes | tuple[str, int]:
    """The file ``write(fd)`` writes, or the line it refuses."""
    with tempfile.TemporaryFile() as out:
        try:
            write(out.fileno())
        except TinydnsDataError as exc:
            return (exc.message, exc.lineno)
        out.seek(0)
        return out.read()


@settings(SETTINGS, max_examples=examples(100))
@given(
    data=strategies.data_files(),
    serial=st.integers(0, 2**32 - 1),
    chunk_size=st.integers(1, 400),
)
def test_stream(data: bytes, serial: int, chunk_size: int) -> None:
    """compile_stream, chunk by chunk into a file, gives the cdb of compile_text's
    records, or its error for the same line."""

    def whole(fd: int) -> None:
        recs = compile_text(data, serial)
        cdb.write_fd(fd, recs.keys, recs.values)

    def streamed(fd: int) -> None:
        compiler.compile_stream(io.BytesIO(data).read, fd, serial, chunk_size=chunk_size)

    assert cdb_or_error(streamed) == cdb_or_error(whole)


def test_stream_is_used_once() -> None:
    """A finished Stream takes nothing more; nor does one whose write failed."""
    fast = accel.compiler()
    assert fast is not None
    soa = bytes(20)
    with tempfile.TemporaryFile() as out:
        stream = fast.Stream(out.fileno())
        assert stream.run_text(b"+a:1.2.3.4\n+b:1.2", 0, 0, False, soa) == (11, 1)
        assert stream.records == 1
        stream.add([b"\1a\0"], [b"value"])
        assert stream.finish() == 2
        with pytest.raises(ValueError, match="finished"):
            stream.add([], [])
        with pytest.raises(ValueError, match="finished"):
            stream.finish()
    with open("/dev/full", "wb") as full:
        stream = fast.Stream(full.fileno())
        with pytest.raises(OSError, match="No space left"):
            stream.finish()
        with pytest.raises(ValueError, match="failed"):
            stream.run_text(b"+a:1.2.3.4\n", 0, 0, True, soa)


def test_env_turns_it_off() -> None:
    """DNSMASTER_PURE_PYTHON=1: neither extension is loaded, and the loader says why."""
    code = (
        "import sys; from dnsmaster.core import accel\n"
        "print(accel.compiler(), accel.records(), accel.found('compiler').why_not)\n"
        "print(sorted(m for m in sys.modules if m.startswith('dnsmaster.core._')))"
    )
    env = {"DNSMASTER_PURE_PYTHON": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == [
        "None None disabled by DNSMASTER_PURE_PYTHON",
        "[]",
    ]


@SETTINGS
@given(
    data=st.binary(max_size=5000) | st.lists(st.sampled_from([b"\n", b"a", b"\n\n"])).map(b"".join),
    start=st.integers(0, 40),
)
def test_newlines(data: bytes, start: int) -> None:
    """The LF count of data as it is written (16 bytes a step, with a tail), against
    bytes.count; from any offset, through a memoryview too."""
    fast = accel.compiler()
    assert fast is not None
    assert fast.newlines(data) == data.count(b"\n")
    assert fast.newlines(memoryview(data)[start:]) == data[start:].count(b"\n")


def test_newlines_long_runs() -> None:
    """More than 255 steps of LFs: every lane's count is summed before it wraps."""
    fast = accel.compiler()
    assert fast is not None
    for size in (16 * 255, 16 * 255 + 1, 16 * 256 + 7, 1 << 20):
        assert fast.newlines(b"\n" * size) == size
        assert fast.newlines(bytearray(b"x\n" * size)) == size
