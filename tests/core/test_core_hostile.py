"""The pure core against hostile zones content: only the error tree ever escapes.

Whatever bytes a zones file holds, check_source / compile_source (make-data) and
compile_text / compile_lines (the compiler), with the C accelerator and without it,
either succeed or raise :class:`TinydnsDataError` / :class:`DataErrors`, naming a
line inside the input and saying what is wrong in one line of printable text. Never
IndexError (a label of 256+ bytes once indexed past the length table), ValueError
(int() of more than 4300 digits), OverflowError, UnicodeError or struct.error: in
the daemon those killed the build task with nothing logged.

Where Debian's tinydns-data is installed, the same inputs are compiled by it too,
and what it refuses we refuse (with its message), what it accepts we accept (with
its bytes).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from dnsmaster.core import accel
from dnsmaster.core.compiler import compile_lines, compile_text, split_lines
from dnsmaster.core.linetypes import Records
from dnsmaster.core.makedata import (
    assemble,
    check_source,
    compile_source,
)
from dnsmaster.core.text import has_control
from dnsmaster.errors import DataErrors, TinydnsDataError
from tests.conftest import examples
from tests.lab import strategies
from tests.lab.tinydnsdata import assert_same, pure, run

SERIAL = 1_700_000_000
GOOD = b"+good.example:192.0.2.1\n#comment\n"  # two lines, so the hostile one is line 3

# The rest comes from the Hypothesis profile in tests/conftest.py.
SETTINGS = settings(max_examples=examples(300))

Outcome = tuple[list[bytes], list[bytes], list[int], list[int]] | tuple[str, int, str]


def paths() -> list[ModuleType | None]:
    """The accelerator modules to try inside one hypothesis example (None: pure).

    Pure alone when the ``path`` fixture turned the accelerator off, or when it is not
    built: the tests that do not take ``path`` use ``accelerator_or_pure``, which fails
    under CI=true if it is not built.
    """
    fast = accel.compiler()
    return [None] if fast is None else [fast, None]


def outcome(fn: Callable[[], Records], lines: int) -> Outcome:
    """The records, or the error with its checks done: a line of the input, printable."""
    try:
        recs = fn()
    except TinydnsDataError as exc:
        error = exc
    else:
        return (recs.keys, recs.values, recs.stamped, recs.soa_defaults)
    assert 1 <= error.lineno <= max(lines, 1), (error.lineno, lines)
    assert not has_control(error.message), error.message
    assert not has_control(error.reason), error.reason
    assert error.reason
    return (error.message, error.lineno, error.reason)


def survive(data: bytes, *, make_data_on_each_path: bool = False) -> Outcome:
    """Throw ``data`` at every entry point of the core, on every path; return the outcome.

    Every path must agree, and only the error tree may escape (any other exception
    fails the test with its traceback). Both compile paths are tried here, in one test:
    a test that calls this takes ``accelerator_or_pure``, not the ``path`` fixture,
    whose accelerated run would try both and whose pure run would only repeat the
    second. make-data's entry points run on the default path, or
    (``make_data_on_each_path``, for the explicit cases that once took ``path``) on
    each.
    """
    lines = len(split_lines(data))
    results = []
    for fast in paths():
        with accel.using("compiler", fast):
            results.append(outcome(lambda: compile_text(data, SERIAL), lines))
            results.append(outcome(lambda: compile_lines(split_lines(data), SERIAL), lines))
    assert all(r == results[0] for r in results), "paths disagree"
    compiled = results[0]
    if not make_data_on_each_path:
        check_make_data(data, lines, compiled)
        return compiled
    for fast in paths():
        with accel.using("compiler", fast):
            check_make_data(data, lines, compiled)
    return compiled


def check_make_data(data: bytes, lines: int, compiled: Outcome) -> None:
    """make-data's entry points on ``data``, which the compiler gave ``compiled``."""
    found = check_source("zones.x", data)
    for problem in found.errors + found.warnings:
        assert 1 <= problem.line <= max(lines, 1), (problem.line, lines)
        assert not has_control(problem.reason), problem.reason
        assert not has_control(str(problem)), str(problem)
    if isinstance(compiled[0], str):  # refused by the compiler: never publishable
        assert found.compiled is None
        assert any(e.line == compiled[1] for e in found.errors)
    if found.compiled is not None:
        # What make-data accepts assembles, at the last serial too, and compiles again.
        built = assemble([found.compiled], 2**32 - 1)
        assert compile_text(built.data, 1).values == built.values
    with contextlib.suppress(DataErrors):  # the one error compile_source may raise
        compile_source("zones.x", data, strict=True)


# A label of every awkward size, plain and spelled with escapes: id -> (text, bytes).
LABELS = {
    **{f"{n}": (b"a" * n, n) for n in (63, 64, 255, 256, 257, 1000)},
    **{f"{n}-escaped": (b"\\101" * n, n) for n in (63, 64, 255, 256, 1000)},
    "octal-777": (b"\\777" * 300, 300),
}
# Every name field of every line type; {} is where the label goes.
NAME_FIELDS = {
    "+owner": b"+{}.example:1.2.3.4",
    "=owner": b"={}.example:1.2.3.4",
    "=owner-bare": b"={}:1.2.3.4",
    ".fqdn": b".{}.example:1.2.3.4:a",
    ".x": b".example:1.2.3.4:{}",
    ".x-dotted": b".example:1.2.3.4:{}.ns.example",
    "&fqdn": b"&{}.example::a",
    "&x": b"&example::{}",
    "@fqdn": b"@{}.example:1.2.3.4:mx",
    "@x": b"@example:1.2.3.4:{}",
    "'owner": b"'{}.example:text",
    "^owner": b"^{}.example:target.example",
    "^target": b"^4.3.2.1.in-addr.arpa:{}",
    "Cowner": b"C{}.example:target.example",
    "Ctarget": b"Cwww.example:{}.example",
    "Zfqdn": b"Z{}.example:ns.example:hm.example",
    "Zmname": b"Zexample:{}:hm.example",
    "Zrname": b"Zexample:ns.example:{}",
    ":owner": b":{}.example:16:text",
    "Sfqdn": b"S{}.example:1.2.3.4:sip:5060",
    "Sx": b"Sexample:1.2.3.4:{}:5060",
}


NAME_CASES = {
    f"{field_id}-{label_id}": (template.replace(b"{}", label), size)
    for field_id, template in NAME_FIELDS.items()
    for label_id, (label, size) in LABELS.items()
}


@pytest.mark.usefixtures("accelerator_or_pure")
@pytest.mark.parametrize(("line", "size"), NAME_CASES.values(), ids=NAME_CASES.keys())
def test_long_labels(line: bytes, size: int) -> None:
    """A label over 63 bytes (even 256+, even escaped) is a data error on its line."""
    result = survive(GOOD + line + b"\n", make_data_on_each_path=True)
    if size <= 63:
        assert not isinstance(result[0], str), result
    else:
        assert result[:2] == ("protocol error", 3), result  # tinydns-data's words (§7.2)
        assert "label longer than 63 bytes" in str(result[2]), result


@pytest.mark.usefixtures("accelerator_or_pure")
@pytest.mark.parametrize(
    "line",
    [
        b"+" + b".".join([b"a" * 63] * 5) + b":1.2.3.4",  # wire 321 bytes
        b"+" + b"a." * 200 + b":1.2.3.4",
        b"+" + b"\\141." * 200 + b":1.2.3.4",
        b"Cx:" + b".".join([b"b" * 50] * 6),
        b"@x::" + b".".join([b"m" * 60] * 5),  # x has dots: used as it is
        b"@" + b".".join([b"m" * 63] * 3 + [b"m" * 61]) + b"::mx",  # mx.mx.<255 bytes>
        b"." + b".".join([b"z" * 63] * 3 + [b"z" * 58]) + b":1.2.3.4:a",  # a.ns.<252 bytes>
    ],
)
def test_long_names(line: bytes) -> None:
    """A name over 255 bytes in wire form is a data error on its line."""
    result = survive(GOOD + line + b"\n", make_data_on_each_path=True)
    assert result[:2] == ("protocol error", 3), result
    assert "longer than 255 bytes" in str(result[2])


HUGE = [b"%d" % 2**64, b"%d" % (2**64 + 5), b"%d" % 10**30, b"9" * 5000, b"0" * 5000 + b"12"]
NUMBER_FIELDS = {
    "+ttl": b"+a:1.2.3.4:{}",
    "+ip": b"+a:{}.{}.{}.{}",
    "=ip": b"=a:1.2.3.{}",
    ".ttl": b".a:1.2.3.4:x:{}",
    "&ttl": b"&a:1.2.3.4:x:{}",
    "@dist": b"@a:1.2.3.4:x:{}:{}",
    "'ttl": b"'a:t:{}",
    "^ttl": b"^a:b:{}",
    "Cttl": b"Ca:b:{}",
    "Znumbers": b"Za:b:c:{}:{}:{}:{}:{}:{}",
    "Zserial": b"Za:b:c:{}",
    ":type": b":a:{}:x",
    ":ttl": b":a:16:x:{}",
    "%prefix": b"%ab:{}.{}",
    "Snumbers": b"Sa:1.2.3.4:x:{}:{}:{}:{}",
}
NUMBER_CASES = {
    f"{field_id}-{i}": template.replace(b"{}", number)
    for field_id, template in NUMBER_FIELDS.items()
    for i, number in enumerate(HUGE)
}


@pytest.mark.usefixtures("accelerator_or_pure")
@pytest.mark.parametrize("line", NUMBER_CASES.values(), ids=NUMBER_CASES.keys())
def test_huge_numbers(line: bytes) -> None:
    """Numbers past 2**64 (and past int()'s 4300 digits) wrap as tinydns-data's do."""
    survive(GOOD + line + b"\n", make_data_on_each_path=True)


def test_huge_numbers_wrap_mod_2_64(path: str) -> None:
    """The last 64 digits decide the value mod 2**64: a 5000-digit TTL still wraps right."""
    value = (pow(10, 5000, 2**32) - 1) % 2**32  # 99...9 is 10**5000 - 1
    recs = compile_text(b"+a:1.2.3.4:" + b"9" * 5000 + b"\n", 1)
    assert recs.values[0][3:7] == value.to_bytes(4, "big")
    recs = compile_text(b"+a:1.2.3.4:%d\n" % (2**64 + 7), 1)
    assert recs.values[0][3:7] == (7).to_bytes(4, "big")


ODD_FILES = {
    "lone-colon": b":",
    "lone-colon-lf": b":\n",
    "nul": b"\x00\n",
    "esc": b"\x1b[31m\n",
    "cr": b"\r\n",
    "crlf-record": b"+a:1.2.3.4\r\n",
    "backslashes": b"+\\\\\\:1.2.3.4\n'\\:\\\n",
    "many-fields": b"+a:1.2.3.4" + b":x" * 100_000 + b"\n",
    "only-colons": b":" * 100_000 + b"\n",
    "many-colons-each-type": b"".join(bytes((c,)) + b":" * 5000 + b"\n" for c in b".&=+@'^CZ%S"),
    "long-txt": b"'a:" + b"t" * 1_000_000 + b"\n",
    "nul-in-names": b"+a\x00b:1.2.3.4\nCa:\x00\n",
    "control-in-every-field": b"Z\x1b:\r:\x00:\x1b:\x07:\x08:\x7f:\x9b:\x1b:\x1b:\x1b\n",
    "prohibited-with-esc": b":a:0\x1b[2J:x\n",
    "empty-lines": b"\n\n\n",
    "no-final-lf": b"+a:1.2.3.4",
    "many-errors": b"X\n" * 5000,
}


@pytest.mark.usefixtures("accelerator_or_pure")
@pytest.mark.parametrize("data", ODD_FILES.values(), ids=ODD_FILES.keys())
def test_odd_files(data: bytes) -> None:
    """Files of odd bytes and shapes: records or a data error, nothing else."""
    survive(data, make_data_on_each_path=True)


def test_many_errors_are_all_reported() -> None:
    """Every refused line is reported, in one pass (this was quadratic)."""
    found = check_source("zones.x", (b"+a:1.2.3.4\n" * 50 + b"X\n") * 400)
    assert [e.line for e in found.errors] == [51 * k for k in range(1, 401)]


class TestControlBytesInMessages:
    """Zone content quoted in a message has its control bytes escaped (text.printable)."""

    def test_long_label(self) -> None:
        data = b"+\x1b[2J\r\x00" + b"a" * 70 + b":1.2.3.4\n"
        with pytest.raises(TinydnsDataError) as caught:
            compile_text(data, 1)
        assert "\\x1b[2J\\r\\x00aaa" in caught.value.reason
        assert not has_control(caught.value.reason)

    def test_unrecognized_leading_character(self) -> None:
        for lead, shown in [
            (b"\x1b", "\\x1b"),
            (b"\r", "\\r"),
            (b"\x00", "\\x00"),
            (b"\xff", "\\xff"),
        ]:
            with pytest.raises(TinydnsDataError) as caught:
                compile_text(lead + b"x\n", 1)
            assert caught.value.reason == f"unrecognized leading character '{shown}'"

    def test_prohibited_type(self) -> None:
        with pytest.raises(TinydnsDataError) as caught:
            compile_text(b":a:0\x1b]0;x\x07:x\n", 1)
        assert caught.value.reason.startswith("type 0\\x1b]0;x\\x07 is 0")

    @pytest.mark.parametrize(
        "line",
        [
            b"+a:1.2.3.4:\x1b[2J",  # TTL not a number
            b"+a:1.2.3.4:300\x1b[2J",  # junk after TTL
            b"+a:1.2.3\x1b",  # IP does not parse
            b"+a:1.2.3.4\r",  # junk after IP, CR at the end
            b"+a:1.2.3.4::\x1b\x1b",  # timestamp
            b"+a:1.2.3.4:::\x1b",  # location
            b"%ab:1\x1b",  # prefix
        ],
    )
    def test_linter(self, line: bytes) -> None:
        found = check_source("zones.x", line + b"\n")
        problems = found.errors + found.warnings
        assert problems
        for problem in problems:
            assert not has_control(problem.reason), problem.reason
        assert any("\\x1b" in p.reason or "\\r" in p.reason for p in problems)

    def test_linter_cuts_long_fields(self) -> None:
        found = check_source("zones.x", b"+a:1.2.3.4:" + b"x" * 10_000 + b"\n")
        assert found.warnings
        assert all(len(w.reason) < 200 for w in found.warnings)

    def test_linter_huge_number(self) -> None:
        found = check_source("zones.x", b"+a:1.2.3.4:" + b"9" * 5000 + b"\n")
        (warning,) = found.warnings
        assert "(5000 digits)" in warning.reason
        assert f"wraps to {(pow(10, 5000, 2**32) - 1) % 2**32}" in warning.reason


#: The unit lane's sample of the two properties below; their long runs, of SETTINGS'
#: count (a quarter of 300 unless DNSMASTER_FULL_EXAMPLES=1), are in the real (CI) lane.
SAMPLE = settings(max_examples=50)


@pytest.mark.usefixtures("accelerator_or_pure")
@SAMPLE
@given(lines=st.lists(strategies.hostile_lines(), min_size=1, max_size=6))
def test_hostile_lines(lines: list[bytes]) -> None:
    """Random hostile lines, accelerated and pure, all entry points: only data errors."""
    survive(b"\n".join(lines) + b"\n")


@pytest.mark.usefixtures("accelerator_or_pure", "thorough")
@SETTINGS
@given(lines=st.lists(strategies.hostile_lines(), min_size=1, max_size=6))
def test_hostile_lines_thorough(lines: list[bytes]) -> None:
    survive(b"\n".join(lines) + b"\n")


@pytest.mark.usefixtures("accelerator_or_pure")
@SAMPLE
@given(data=strategies.data_files())
def test_data_files(data: bytes) -> None:
    """The ordinary generated files (now with huge labels and numbers) as well."""
    survive(data)


@pytest.mark.usefixtures("accelerator_or_pure", "thorough")
@SETTINGS
@given(data=strategies.data_files())
def test_data_files_thorough(data: bytes) -> None:
    survive(data)


def test_env_pure_python() -> None:
    """With DNSMASTER_PURE_PYTHON=1 the explicit cases give the same outcomes."""
    cases = [
        *(line for line, _ in NAME_CASES.values()),
        *NUMBER_CASES.values(),
        *ODD_FILES.values(),
    ]
    code = (
        "import json, sys\n"
        "from dnsmaster.core import accel, compiler\n"
        "from dnsmaster.errors import TinydnsDataError\n"
        "assert accel.compiler() is None\n"
        "out = []\n"
        "for data in json.load(sys.stdin):\n"
        "    try:\n"
        "        compiler.compile_text(data.encode('latin-1') + b'\\n', 1)\n"
        "        out.append(None)\n"
        "    except TinydnsDataError as exc:\n"
        "        out.append([exc.lineno, exc.reason])\n"
        "print(json.dumps(out))\n"
    )
    env = {"DNSMASTER_PURE_PYTHON": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([c.decode("latin-1") for c in cases]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    expected: list[list[int | str] | None] = []
    for data in cases:
        try:
            compile_text(data + b"\n", 1)
            expected.append(None)
        except TinydnsDataError as exc:
            expected.append([exc.lineno, exc.reason])
    assert json.loads(proc.stdout) == expected


@pytest.fixture(scope="module")
def real(tinydns_data_bin: str) -> str:
    return tinydns_data_bin


class TestAgainstRealTinydnsData:
    """What tinydns-data refuses we refuse with its message; what it accepts, byte for byte."""

    @pytest.mark.parametrize(
        "line",
        [*(line for line, _ in NAME_CASES.values()), *NUMBER_CASES.values()],
        ids=[*NAME_CASES.keys(), *NUMBER_CASES.keys()],
    )
    def test_explicit(self, real: str, line: bytes) -> None:
        data = GOOD + line + b"\n"
        assert_same(pure(data, SERIAL), run([real], data, SERIAL))

    @pytest.mark.parametrize("data", ODD_FILES.values(), ids=ODD_FILES.keys())
    def test_odd_files(self, real: str, data: bytes) -> None:
        assert_same(pure(data, SERIAL), run([real], data, SERIAL))

    @settings(SETTINGS, max_examples=examples(150))
    @given(lines=st.lists(strategies.hostile_lines(), min_size=1, max_size=4))
    def test_hostile_lines(self, real: str, lines: list[bytes]) -> None:
        data = b"\n".join(lines) + b"\n"
        theirs = run([real], data, SERIAL)
        note(f"tinydns-data: exit {theirs.exit}, {theirs.stderr!r}")
        assert_same(pure(data, SERIAL), theirs)


# -- address fields: any byte, and never Python's exception text ------------------------

#: Pieces of the texts of Python's exceptions (codecs, ipaddress, int()) that once
#: reached messages: "'ascii' codec can't decode byte 0xb8 in position 4: ordinal not
#: in range(128)", "At most one '::' permitted in ...". A message says what is wrong
#: in dnsmaster's words, with the file and line, or it is a bug.
PYTHON_TEXTS = (
    "codec",
    "can't decode",
    "ordinal not in range",
    "in position",
    "Traceback",
    "Error",
    "permitted in",
    "Expected ",
    "Exactly ",
    "At most ",
    "Only hex digits",
    "Octet ",
    "invalid literal",
    "Unexpected",
)

# Every line type with an address field (§5): the field goes right after the owner.
ADDRESS_LINES = (b"3a.test:", b"6a.test:", b"+a.test:", b"=a.test:", b"@a.test:")
ADDRESS_LINES += (b".a.test:", b"&a.test:", b"Sa.test:", b"%ab:")


def _escaped(codes: list[int]) -> bytes:
    return b"".join(b"\\%03o" % c for c in codes)


address_fields = st.one_of(
    st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"")),
    st.lists(
        st.one_of(
            st.sampled_from([b"2001", b"db8", b"0", b"1", b":", b"::", b".", b"192.0.2.1"]),
            st.sampled_from([b"\\072", b"\\056", b"\\270", b"\\377", b"\\000", b"\\"]),
            st.lists(st.integers(0, 255), min_size=1, max_size=3).map(_escaped),
            st.binary(min_size=1, max_size=2).map(lambda b: b.replace(b"\n", b"")),
        ),
        max_size=10,
    ).map(b"".join),
)


@pytest.mark.usefixtures("accelerator_or_pure")
@SETTINGS
@given(
    field=address_fields,
    lead=st.sampled_from(ADDRESS_LINES),
    tail=st.sampled_from([b"", b":300", b":a::"]),
)
def test_address_messages_are_ours(field: bytes, lead: bytes, tail: bytes) -> None:
    """Any bytes in an address field, escaped or not, in every line type that has one:
    the checker and the compiler (both paths) say what is wrong in their own words."""
    data = GOOD + lead + field + tail + b"\n"
    compiled = survive(data)
    found = check_source("zones.x", data)
    messages = [str(p) for p in found.errors + found.warnings]
    if isinstance(compiled[0], str):
        messages.append(compiled[0])
        messages.append(str(compiled[2]))
    for message in messages:
        assert not any(text in message for text in PYTHON_TEXTS), message
    for problem in found.errors + found.warnings:
        assert problem.file == "zones.x"
        assert problem.line == 3
