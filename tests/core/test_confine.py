"""Confinement: which lines of a master's data fall outside its allowlist."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core.confine import (
    Allowlist,
    Labels,
    Offence,
    _next_unclean,
    _offences_line_by_line,
    check_master_name,
    domain_text,
    name_labels,
    offences,
    overlaps,
)
from dnsmaster.core.fields import name_to_wire
from dnsmaster.errors import AllowlistError

SETTINGS = settings(max_examples=300)
PROJECT = Path(__file__).resolve().parents[2]

A = Allowlist.parse(["a.example"], [], False)


def refused(data: bytes, allow: Allowlist = A) -> list[str]:
    """The names refused in ``data``, one per offence.

    A comment goes first: the first line is judged as it is, the others only where
    the skipping expression stops, which these tests then hold too.
    """
    return [o.name for o in offences(b"# a comment\n" + data, allow)]


# ---- what each line type is judged by


@pytest.mark.parametrize(
    "line",
    [
        b"+www.a.example:1.2.3.4",
        b"-www.a.example:1.2.3.4",
        b"'a.example:v=spf1 -all",
        b"^x.a.example:www.bank.example",
        b"Cwww.a.example:www.bank.example",
        b"Za.example:ns.bank.example:hostmaster.bank.example",
        b":x.a.example:16:abc",
        b"Ssip.a.example:1.2.3.4:sip:5060",
        b"@a.example::mail.bank.example",  # no address: no A for the exchanger
        b"&sub.a.example::ns.bank.example",
        b".a.example:1.2.3.4:ns.a.example",
        b"&a.example:1.2.3.4:b",  # b.ns.a.example
        b"@a.example:1.2.3.4",  # mx.a.example
        b"Ssrv.a.example:1.2.3.4::5060",  # srv.srv.a.example
        b"3x.a.example:20010db8000000000000000000000001",
        b"6x.a.example:20010db8000000000000000000000001",
        b"=a.example",  # no address, no PTR
    ],
)
def test_lines_inside_the_allowlist_pass(line: bytes) -> None:
    assert refused(line + b"\n") == []


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b"+www.bank.example:1.2.3.4", "www.bank.example"),
        (b"-www.bank.example:1.2.3.4", "www.bank.example"),
        (b"=www.bank.example", "www.bank.example"),
        (b"'bank.example:text", "bank.example"),
        (b"^4.3.2.1.in-addr.arpa:www.a.example", "4.3.2.1.in-addr.arpa"),
        (b"Cwww.bank.example:www.a.example", "www.bank.example"),
        (b"Zexample:ns.a.example:hostmaster.a.example", "example"),  # a parent
        (b".example:1.2.3.4:ns.a.example", "example"),
        (b"&bank.example::ns.a.example", "bank.example"),
        (b"@bank.example::mx.a.example", "bank.example"),
        (b":bank.example:16:abc", "bank.example"),
        (b"Sbank.example::x:5060", "bank.example"),
        (b"3bank.example:20010db8000000000000000000000001", "bank.example"),
        (b"6bank.example:20010db8000000000000000000000001", "bank.example"),
        (b"+*.example:1.2.3.4", "*.example"),  # a wildcard over every customer
        (b"+a\\056example:1.2.3.4", "a\\056example"),  # one label with a dot
        (b"+x.a\\056example:1.2.3.4", "x.a\\056example"),
        (b"+www.bank.example", "www.bank.example"),  # no address: judged all the same
        (b"+a.example\r:1.2.3.4", "a.example\\015"),  # CR is a label byte (§2.2)
    ],
)
def test_each_line_type_is_judged_by_its_owner(line: bytes, name: str) -> None:
    assert refused(line + b"\n") == [name]


@pytest.mark.parametrize(
    "line",
    [
        b"+WWW.A.Example:1.2.3.4",
        b"+www.a.example.:1.2.3.4",
        b"+www.a.example..:1.2.3.4",
        b"+.www..a.example:1.2.3.4",
        b"+*.a.example:1.2.3.4",
        b"+*.www.a.example:1.2.3.4",
        b"+\\141.example:1.2.3.4",  # \141 is "a"
        b"+www\\056x.a.example:1.2.3.4",  # one label "www.x" under a.example
        b"+www.a.example  ",  # trailing blanks are stripped (§2.2)
        b"+www.a.example\t",
    ],
)
def test_names_are_read_as_the_compiler_reads_them(line: bytes) -> None:
    assert refused(line + b"\n") == []


def test_an_escaped_dot_is_inside_a_label() -> None:
    b = Allowlist.parse(["b.example"], [], False)
    assert refused(b"+a\\056b.example:1.2.3.4\n", b) == ["a\\056b.example"]
    assert refused(b"+a.b\\056example:1.2.3.4\n", b) == ["a.b\\056example"]
    assert refused(b"+x.a\\.b.example:1.2.3.4\n", b) == ["x.a\\056b.example"]
    assert name_labels(b"x.a\\.b.example") == (b"x", b"a.b", b"example")


def test_a_wildcard_is_confined_to_where_it_stands() -> None:
    www = Allowlist.parse(["www.a.example"], [], False)
    assert refused(b"+*.a.example:1.2.3.4\n", www) == ["*.a.example"]
    assert refused(b"+*.www.a.example:1.2.3.4\n", www) == []


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b".a.example:1.2.3.4:ns.bank.example", "ns.bank.example"),
        (b"&a.example:1.2.3.4:ns.bank.example.", "ns.bank.example"),
        (b"@a.example:1.2.3.4:mail.bank.example", "mail.bank.example"),
        (b"Ssip.a.example:1.2.3.4:sip.bank.example:5060", "sip.bank.example"),
        (b"@a.example:1.2.3.4:mx\\.bank.example", "mx\\056bank.example"),
    ],
)
def test_the_server_named_by_x_is_judged_when_it_gets_an_address(line: bytes, name: str) -> None:
    [offence] = offences(line + b"\n", A)
    assert offence.name == name
    assert offence.reason.startswith(f"the A record's name {name} is not in")


def test_a_dotless_x_is_under_the_owner() -> None:
    # "\056" is no dot for the x rule (§5.1): x becomes a label of a.example's server.
    assert refused(b".a.example:1.2.3.4:ns\\056bank\n") == []
    under = Allowlist.parse(["example"], ["ns.example"], False)
    assert refused(b".example:1.2.3.4:a\n", under) == ["a.ns.example"]


def test_a_dotless_x_that_spells_an_allowed_domain_is_still_dotless() -> None:
    """x = "example" names example.ns.a.example, not the allowed domain example."""
    allow = Allowlist.parse(["example"], ["ns.a.example"], False)
    assert refused(b".a.example:1.2.3.4:EXAMPLE\n", allow) == ["example.ns.a.example"]
    assert refused(b".a.example:1.2.3.4:x.EXAMPLE\n", allow) == []


def test_a_ptr_needs_the_reverse_zone() -> None:
    assert refused(b"=www.bank.example:1.2.3.4\n") == ["www.bank.example", "4.3.2.1.in-addr.arpa"]
    [offence] = offences(b"=www.a.example:1.2.3.4\n", A)
    assert offence.name == "4.3.2.1.in-addr.arpa"
    assert offence.reason.startswith(
        "the PTR name 4.3.2.1.in-addr.arpa is not in this master's allowlist (a.example"
    )
    rev = Allowlist.parse(["a.example", "3.2.1.in-addr.arpa"], [], False)
    # 259 is 3 mod 256, as tinydns-data reads an address (§3.2)
    data = b"=www.a.example:1.2.3.4\n=www.a.example:1.2.259.4\n=www.a.example:1.2.4.4\n"
    assert refused(data, rev) == ["4.4.2.1.in-addr.arpa"]


def test_location_lines_need_allow_locations() -> None:
    [offence] = offences(b"%ex:1.2.3\n", A)
    assert "--allow-locations" in offence.reason
    assert refused(b"%ex:1.2.3\n", Allowlist.parse(["a.example"], [], True)) == []


def test_comments_blank_and_unknown_lines_are_not_judged() -> None:
    assert refused(b"# +www.bank.example:1.2.3.4\n\n   \nxwww.bank.example\n") == []


def test_names_too_long_are_left_to_the_compile() -> None:
    assert refused(b"+" + b"x" * 64 + b".bank.example:1.2.3.4\n") == []


def test_excepted_sub_trees_belong_to_another_master() -> None:
    allow = Allowlist.parse(["example"], ["b.example"], False)
    assert refused(b"+www.b.EXAMPLE:1.2.3.4\n+b.example\n+x.example:1.2.3.4\n", allow) == [
        "www.b.example",
        "b.example",
    ]
    [offence] = offences(b"+b.example\n", allow)
    assert "b.example" in offence.reason
    assert "another master" in offence.reason


# ---- where an offence is shown


def test_source_comes_from_the_nearest_source_comment() -> None:
    data = (
        b"# zones.a:1\n"  # data line 1
        b"+www.a.example:1.2.3.4\n"
        b"# a comment of the zones file\n"
        b"+www.bank.example:1.2.3.4\n"  # zones.a:3
        b"# zones.b:5: .b.example:1.2.3.4:ns\n"
        b"Zb.example:ns.ns.b.example:hostmaster.b.example\n"
        b"&b.example::ns\n"  # all three from zones.b:5
        b"# zones.b:6\n"
        b"+x.b.example:1.2.3.4\n"
        b"'y.b.example:text\n"  # zones.b:7
    )
    assert [(o.source, o.lineno) for o in offences(data, A)] == [
        ("zones.a:3", 4),
        ("zones.b:5", 6),
        ("zones.b:5", 7),
        ("zones.b:6", 9),
        ("zones.b:7", 10),
    ]


def test_data_without_source_comments_shows_its_own_line() -> None:
    [offence] = offences(b"+www.a.example:1.2.3.4\n+www.bank.example:1.2.3.4", A)
    assert offence == Offence(
        None, 2, "+www.bank.example:1.2.3.4", "www.bank.example", offence.reason
    )
    assert offence.where == "line 2"
    assert str(offence).startswith("line 2: +www.bank.example:1.2.3.4: not in")


def test_the_line_is_shown_printable_and_short() -> None:
    [offence] = offences(b"+www.bank.example\x1b[2J:1.2.3.4:" + b"9" * 500 + b"\n", A)
    assert "\x1b" not in offence.line
    assert len(offence.line) <= 120
    assert offence.line.endswith("...")


def test_limit_stops_early() -> None:
    data = b"+www.bank.example:1.2.3.4\n" * 100
    assert len(offences(data, A, limit=5)) == 5
    assert len(offences(data, A)) == 100
    assert offences(data, A, limit=0) == []


# ---- the allowlist itself


def test_parse_decodes_sorts_and_folds() -> None:
    allow = Allowlist.parse(["B.Example.", "a\\056b.example", "b.example"], ["x.b.example"], True)
    assert allow == Allowlist(
        ((b"a.b", b"example"), (b"b", b"example")), ((b"x", b"b", b"example"),), True
    )
    assert allow.describe() == "a\\056b.example, b.example"


@pytest.mark.parametrize(
    ("allow", "excepts", "words"),
    [
        ([], [], "at least one --allow"),
        ([".."], [], "--allow cannot be the root"),
        ([""], [], "printable ASCII"),
        (["a.example:1"], [], "without ':'"),
        (["a example"], [], "blanks"),
        (["x" * 64 + ".example"], [], "--allow takes a domain name"),
        (["a.example"], ["a.example"], "strictly under"),
        (["a.example"], ["b.example"], "strictly under"),
        (["a.example", "x.b.a.example"], ["b.a.example"], "at or under --except"),
    ],
)
def test_parse_refuses_with_a_reason(allow: list[str], excepts: list[str], words: str) -> None:
    with pytest.raises(AllowlistError, match=words):
        Allowlist.parse(allow, excepts, False)


@pytest.mark.parametrize("name", ["a", "A-1", "cust_1.example", "x" * 64, "1"])
def test_master_names(name: str) -> None:
    check_master_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "-a", "_a", ".a", "a/b", "a b", "x" * 65, "é"])
def test_master_names_refused(name: str) -> None:
    with pytest.raises(AllowlistError, match="a master's name"):
        check_master_name(name)


def test_domain_text_reads_back() -> None:
    for labels in [(b"a.b", b"example"), (b"\x00\xff:", b"x"), (b"*", b"a")]:
        assert name_labels(domain_text(labels).encode()) == labels
    assert domain_text(()) == "."


# ---- overlaps between masters


def test_overlaps() -> None:
    example = Allowlist.parse(["example"], [], False)
    a = Allowlist.parse(["a.example"], [], False)
    b = Allowlist.parse(["b.example", "other.test"], [], False)
    assert overlaps("A", a, "B", b) is None
    assert overlaps("A", a, "A2", a) == (
        "masters A and A2 both allow a.example: only one master may serve a domain"
    )
    why = overlaps("E", example, "A", a)
    assert why == overlaps("A", a, "E", example)
    assert why is not None
    assert why == (
        "master A allows a.example, which is under example of master E: "
        "add --except a.example to master E's key line if A owns it"
    )
    ceded = Allowlist.parse(["example"], ["a.example"], False)
    assert overlaps("E", ceded, "A", a) is None
    assert overlaps("A", a, "E", ceded) is None
    # An except deeper than the other's domain leaves the rest of it overlapping.
    partial = Allowlist.parse(["example"], ["x.a.example"], False)
    assert overlaps("E", partial, "A", a) is not None
    # Still overlapping when equal, whatever the excepts.
    assert overlaps("E", ceded, "E2", ceded) is not None


# ---- the property: covers agrees with a plain reading of the labels

LABEL = st.sampled_from([b"a", b"A", b"b", b"example", b"Example", b"x.y", b"*", b"\x00"])
NAMES = st.lists(LABEL, max_size=4).map(tuple)


def _escaped(labels: Labels, dots: list[bytes]) -> bytes:
    """A name's text as a master might write it: dots in labels escaped two ways,
    labels apart by one or more dots (the empty labels vanish)."""
    out = dots[-1][1:]  # leading dots too
    for i, lab in enumerate(labels):
        out += lab.replace(b".", b"\\056") if i % 2 else lab.replace(b".", b"\\.")
        out += dots[i % len(dots)] if i < len(labels) - 1 else b""
    return out


def _reference(labels: Labels, allow: list[Labels], excepts: list[Labels]) -> bool:
    def under(name: Labels, domain: Labels) -> bool:
        return len(name) >= len(domain) and list(reversed(name))[: len(domain)] == list(
            reversed(domain)
        )

    low = tuple(lab.lower() for lab in labels)
    return any(under(low, a) for a in allow) and not any(under(low, e) for e in excepts)


@SETTINGS
@given(
    allow=st.lists(NAMES.filter(bool), min_size=1, max_size=3),
    dots=st.lists(st.sampled_from([b".", b".", b".."]), min_size=1, max_size=3),
    data=st.data(),
)
def test_covers_agrees_with_a_reference(
    allow: list[Labels], dots: list[bytes], data: st.DataObject
) -> None:
    allow_low = sorted({tuple(lab.lower() for lab in a) for a in allow})
    excepts = [
        prefix + data.draw(st.sampled_from(allow_low))
        for prefix in data.draw(st.lists(NAMES.filter(bool), max_size=2))
    ]
    # The name: under an allow or an except, or anywhere.
    under = data.draw(st.sampled_from([(), *allow_low, *excepts]))
    name = data.draw(NAMES) + tuple(data.draw(st.sampled_from([lab, lab.upper()])) for lab in under)
    try:
        al = Allowlist.parse(
            [domain_text(a) for a in allow_low], [domain_text(e) for e in excepts], False
        )
    except AllowlistError:
        return  # an allow under an except: refused, which the tests above hold
    written = _escaped(name, dots) + data.draw(st.sampled_from([b"", b".", b".."]))
    decoded = name_labels(written)
    assert decoded == tuple(lab.lower() for lab in name)
    assert al.covers(decoded) == _reference(name, list(al.allowed), list(al.excepted))
    line = b"+" + written + b":1.2.3.4\n"
    assert (offences(line, al) == []) == al.covers(decoded)


def test_name_labels_agrees_with_the_wire_form() -> None:
    assert name_labels(b"WWW.A.example.") == (b"www", b"a", b"example")
    assert name_to_wire(b"WWW.A.example.")[1:4] == b"WWW"  # the wire keeps case; we fold
    assert name_labels(b"") == ()
    assert name_labels(b"x" * 64) is None


# ---- the skipping expression never changes a verdict

PIECES = [
    b"a", b"A", b"example", b"EXAMPLE", b"b", b"x", b"ns", b"mx", b"srv", b"*", b"1", b"2",
    b"3", b"10", b"259", b"010", b"in-addr", b"arpa", b"\\056", b"\\.", b"\\", b"\\141",
    b".", b".", b".", b":", b":", b" ", b"\t", b"\r", b"1.2.3.4", b"10.2.3.4", b"1.2.259.4",
    b"a.example", b"x.a.example", b"b.example",
]  # fmt: skip
GOOD_LINES = [
    b"+www.a.example:1.2.3.4",
    b"=h.a.example:1.2.3.4:3600",
    b".a.example:1.2.3.4:ns",
    b"@a.example:10.2.3.4:mx1:10",
    b"&a.example::ns.b.example",
    b"Za.example:ns.a.example:h.a.example",
    b"Cx.a.example:www.b.example",
    b"Ssrv.a.example:1.2.3.4::5060",
    b".x.a.example:1.2.259.4:a.ns.a.example",
    b"+*.A.EXAMPLE.:1.2.3.4",
]


@st.composite
def edited(draw: st.DrawFn) -> bytes:
    """A line the expression may skip, with a few pieces put in or cut out."""
    line = bytearray(draw(st.sampled_from(GOOD_LINES)))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(1, len(line)))
        if draw(st.booleans()):
            line[at:at] = draw(st.sampled_from(PIECES))
        else:
            del line[at : at + draw(st.integers(1, 3))]
    return bytes(line)


LINES = st.one_of(
    st.tuples(st.sampled_from(list(b"+-=.&@'^CZ:S36%x #")), st.lists(st.sampled_from(PIECES))).map(
        lambda t: bytes((t[0],)) + b"".join(t[1])
    ),
    edited(),
    st.sampled_from([b"# zones.a:3", b"# zones.b:7: .a.example", b"# zones.c", b""]),
)
ALLOWLISTS = st.sampled_from(
    [
        A,
        Allowlist.parse(["a.example", "3.2.1.in-addr.arpa", "10.in-addr.arpa"], [], False),
        Allowlist.parse(["example"], ["x.a.example", "b.example"], True),
        Allowlist.parse(["example"], ["ns.a.example"], False),
        Allowlist.parse(["a.example", "in-addr.arpa"], ["3.2.1.in-addr.arpa"], False),
        Allowlist.parse(["a.example", "a\\056b.example", "4.3.2.1.in-addr.arpa"], [], False),
        Allowlist.parse(["x", "1"], ["a\\.b.x"], True),
    ]
)


@SETTINGS
@given(lines=st.lists(LINES, max_size=12), allow=ALLOWLISTS, newline=st.booleans())
def test_skipping_agrees_with_judging_each_line(
    lines: list[bytes], allow: Allowlist, newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if newline else b"")
    assert offences(data, allow) == _offences_line_by_line(data, allow)
    assert offences(data, allow, limit=2) == _offences_line_by_line(data, allow, limit=2)


def test_an_empty_label_does_not_hide_an_except() -> None:
    allow = Allowlist.parse(["example"], ["x.a.example"], False)
    assert refused(b"Cx..a.example:www.b.example\n", allow) == ["x.a.example"]
    assert refused(b"+..x.a..example..:1.2.3.4\n", allow) == ["x.a.example"]


def test_the_skipping_expression_skips() -> None:
    """The test above can fail: the expressions do pass over the lines they may."""
    data = b"+www.a.example:1.2.3.4\n.a.example:1.2.3.4:ns\n'A.Example.:x\n+www.bank.example\n"
    found = _next_unclean(A)(data, 0)
    assert found is not None
    assert found.start() + 1 == data.index(b"+www.bank")


CONFINE_IN_DEBIAN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from dnsmaster.core.confine import Allowlist, offences
allow = Allowlist.parse(["a.example"], ["x.a.example"], False)
data = sys.stdin.buffer.read()
print(json.dumps([[o.lineno, o.name] for o in offences(data, allow)]))
"""


def test_debian_python_finds_the_same_offences(debian_python: str) -> None:
    """The receiver bundle runs in Debian 12's python3 (3.11.2), whose re matched
    past a failing line with a possessive repeat: the expressions must not rely on
    what that release gets wrong."""
    data = b"".join(
        [
            b"# zones.x:1\n",
            b"+www.a.example:1.2.3.4\n",
            b"+www.bank.example:1.2.3.4\n",
            b".a.example:1.2.3.4:ns\n",
            b"Zexample:ns.a.example:h.a.example\n",
            b"+y.x.a.example:1.2.3.4\n",
            b"'a.example:text\n",
            b"@a.example:1.2.3.4:mx.bank.example\n",
        ]
    )
    ran = subprocess.run(
        [debian_python, "-I", "-S", "-c", CONFINE_IN_DEBIAN, str(PROJECT)],
        input=data,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert (ran.returncode, ran.stderr) == (0, b"")
    expected = [
        [o.lineno, o.name]
        for o in _offences_line_by_line(
            data, Allowlist.parse(["a.example"], ["x.a.example"], False)
        )
    ]
    assert json.loads(ran.stdout) == expected
    assert [n for _, n in expected] == [
        "www.bank.example",
        "example",
        "y.x.a.example",
        "mx.bank.example",
    ]
