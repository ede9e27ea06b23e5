"""The delta format (dnsmaster.core.delta): restamp, diff, encode, parse, apply.

Random edits of random data must round-trip exactly; every malformed or cut delta
must be refused with a reason; a delta applies only to its exact base.
"""

from __future__ import annotations

import hashlib
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import delta
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.errors import DataErrors, DeltaError


def zones(n: int, www: int = 1) -> bytes:
    """A zones file of ``n`` zones (each a ``.`` line and two hosts)."""
    return b"".join(
        b".z%d.example:127.0.0.1:a\n+www.z%d.example:192.0.2.%d\n+ftp.z%d.example:192.0.2.9\n"
        % (i, i, www if i == n // 2 else 1, i)
        for i in range(n)
    )


def build(serial: int, *sources: tuple[str, bytes]) -> bytes:
    return assemble([compile_source(name, text) for name, text in sources], serial).data


def roundtrip(base: bytes, new: bytes) -> bytes:
    stream = delta.make(base, new)
    assert delta.apply(delta.parse(stream), base) == new
    return stream


# --------------------------------------------------------------------------- restamp


class TestRestamp:
    def test_two_builds_differ_by_the_serial_only(self) -> None:
        """Two builds of the same sources are equal once the old one is restamped."""
        source = ("zones.a", zones(20))
        old, new = build(1_700_000_000, source), build(1_700_000_007, source)
        assert old != new
        assert delta.restamp(old, 1_700_000_000, 1_700_000_007) == new

    @settings(max_examples=50)
    @given(
        st.lists(st.integers(0, 40), min_size=1, max_size=3),
        # make-data's serials are Unix times; a serial of a few digits would equal
        # the line numbers in its comments too (test_a_field_equal_to_the_serial)
        st.integers(1_000_000_000, 4294967295),
        st.integers(0, 4294967295),
    )
    def test_any_serials(self, sizes: list[int], old: int, new: int) -> None:
        """Whatever the two serials (other digit counts, wrapped around), and with
        Z lines written in the sources too (whose fields are not the old serial)."""
        sources = [
            (f"zones.{i}", zones(n) + b"Zz.example:ns:h::100:200:300:400:500\n")
            for i, n in enumerate(sizes)
        ]
        assert delta.restamp(build(old, *sources), old, new) == build(new, *sources)

    def test_whole_fields_only(self) -> None:
        """The serial as a whole field between colons, and in the banner; a longer
        number, a field at the end of a line or of the data, the banner of another
        serial stay."""
        data = b"# dnsmaster serial 5 sources=x\nZa:b:c:5:5:5\nZa:b:c:55:5\n+5:1.2.3.4:5\nZa:b:c:5"
        assert delta.restamp(data, 5, 6) == (
            b"# dnsmaster serial 6 sources=x\nZa:b:c:6:5:5\nZa:b:c:55:5\n+5:1.2.3.4:5\nZa:b:c:5"
        )
        assert delta.restamp(b"# dnsmaster serial 55\n", 5, 6) == b"# dnsmaster serial 55\n"

    def test_a_field_equal_to_the_serial(self) -> None:
        """A field elsewhere equal to the old serial is restamped too: the delta then
        carries that line, and the result is still exact."""
        text = zones(20) + b"+x.example:192.0.2.1:1700000000::\n"
        base, new = build(1_700_000_000, ("zones.a", text)), build(1_700_000_001, ("zones.a", text))
        assert delta.restamp(base, 1_700_000_000, 1_700_000_001) != new
        assert roundtrip(base, new).count(b"\n+ ") == 1  # that line alone

    def test_same_serial_is_identity(self) -> None:
        data = b"Za:b:c:1:2\n"
        assert delta.restamp(data, 1, 1) is data


# --------------------------------------------------------------------------- round trips


class TestRoundTrip:
    def test_one_line_of_many_is_small(self) -> None:
        """One changed host in 3000 zones: a few hundred bytes, whatever the serial did."""
        base = build(1_700_000_000, ("zones.a", zones(1500)), ("zones.b", zones(1500)))
        new = build(1_700_000_100, ("zones.a", zones(1500)), ("zones.b", zones(1500, www=7)))
        stream = roundtrip(base, new)
        assert len(stream) < 600 < len(new) // 100
        assert stream.count(b"\n+ ") == 2  # the banner, and the one host

    @pytest.mark.parametrize("edit", ["insert", "remove"])
    def test_one_line_added_or_removed_is_small(self, edit: str) -> None:
        """A host added to a zones file, or removed from it: the one line only."""
        text = zones(1500)
        added = text + b"+marker.example:10.255.0.1\n"
        before, after = (text, added) if edit == "insert" else (added, text)
        base = build(1_700_000_000, ("zones.a", before), ("zones.b", zones(1500)))
        new = build(1_700_000_100, ("zones.a", after), ("zones.b", zones(1500)))
        stream = roundtrip(base, new)
        assert len(stream) < 600 < len(new) // 100

    def test_a_rollback_is_a_restamp(self) -> None:
        """An older build given a new serial (a rollback): the changed lines only."""
        old = build(1_700_000_000, ("zones.a", zones(50, www=3)))
        newer = build(1_700_000_001, ("zones.a", zones(50, www=4)))
        rolled = build(1_700_000_002, ("zones.a", zones(50, www=3)))
        assert len(roundtrip(newer, rolled)) < 600
        assert len(roundtrip(old, rolled)) < 400

    def test_not_a_dnsmaster_build(self) -> None:
        """No banner: no restamp, and still exact."""
        stream = roundtrip(b"+a:1.2.3.4\n+b:1.2.3.4\n", b"+a:1.2.3.4\n+c:1.2.3.4\n")
        assert b"restamp=none" in stream

    @pytest.mark.parametrize(
        ("base", "new"),
        [
            (b"", b""),
            (b"", b"a\n"),
            (b"a\n", b""),
            (b"a", b"a\n"),
            (b"a\r\nb\rc\n", b"a\r\nb\nc\r"),
            (b"\0\xff\n\x80\n", b"\x80\n\0\xff\n"),
            (b"x\n" * 50, b"x\n" * 49 + b"y\n" + b"x\n" * 3),
        ],
    )
    def test_edges(self, base: bytes, new: bytes) -> None:
        roundtrip(base, new)

    @settings(max_examples=400)
    @given(
        st.lists(st.binary(max_size=12), max_size=40),
        st.lists(
            st.tuples(
                st.sampled_from(["insert", "delete", "replace", "move"]),
                st.integers(0, 60),
                st.binary(max_size=12),
            ),
            max_size=8,
        ),
        st.sampled_from([b"\n", b"\r\n", b"\r", b""]),
    )
    def test_random_edits_of_random_data(
        self, lines: list[bytes], edits: list[tuple[str, int, bytes]], end: bytes
    ) -> None:
        """Random lines (any bytes, any line ends), randomly edited: exact both ways."""
        base_lines = list(lines)
        new_lines = list(lines)
        for kind, at, text in edits:
            at = at % (len(new_lines) + 1)
            if kind == "insert":
                new_lines.insert(at, text)
            elif new_lines and at < len(new_lines):
                if kind == "delete":
                    del new_lines[at]
                elif kind == "replace":
                    new_lines[at] = text
                else:
                    new_lines.append(new_lines.pop(at))
        base = b"\n".join(base_lines) + end
        new = b"\n".join(new_lines) + end
        roundtrip(base, new)
        roundtrip(new, base)

    @settings(max_examples=100)
    @given(
        st.lists(st.integers(0, 2000), min_size=1, max_size=4),
        st.integers(1, 4294967295),
        st.integers(1, 4294967295),
    )
    def test_random_edits_of_builds(self, changed: list[int], old: int, new: int) -> None:
        """Real builds, serials anywhere: a few changed zones cost a few operations."""
        base = build(old, ("zones.a", zones(40)))
        text = bytearray(zones(40))
        for at in changed:
            at %= len(text)
            text[at : at + 1] = b"9" if text[at : at + 1] == b"1" else text[at : at + 1]
        try:
            after = build(new, ("zones.a", bytes(text)))
        except DataErrors:  # an edit that does not compile is no build
            return
        stream = roundtrip(base, after)
        assert stream.count(b"\n= ") + stream.count(b"\n+ ") <= 4 * len(changed) + 4


# --------------------------------------------------------------------------- refusals

BASE = build(1_700_000_000, ("zones.a", zones(30)))
NEW = build(1_700_000_001, ("zones.a", zones(30, www=5)))
STREAM = delta.make(BASE, NEW)


class TestRefusals:
    def test_another_base(self) -> None:
        """A base of another length or another sha256 is named, not applied."""
        parsed = delta.parse(STREAM)
        with pytest.raises(DeltaError, match=r"^base mismatch: the installed data is \d+ bytes"):
            delta.apply(parsed, BASE + b"+x:1.2.3.4\n")
        edited = BASE.replace(b"192.0.2.1", b"192.0.2.3", 1)
        assert len(edited) == len(BASE)
        with pytest.raises(DeltaError, match=r"^base mismatch: the installed data has sha256 "):
            delta.apply(parsed, edited)

    def test_wrong_result(self) -> None:
        """A result that is not the trailer's (a restamp the sides disagree on, say)."""
        bad = STREAM.replace(b"192.0.2.5", b"192.0.2.6")
        with pytest.raises(DeltaError, match=r"^result mismatch: sha256 "):
            delta.apply(delta.parse(bad), BASE)

    def test_copy_outside_the_base(self) -> None:
        stream = _stream(b"= 0 100000\n", b"x" * 99_999 + b"\n")
        with pytest.raises(DeltaError, match=r"^operation 1: copies bytes 0 to 100000, "):
            delta.apply(delta.parse(stream), BASE)

    def test_result_grows_past_the_trailer(self) -> None:
        """Copies of copies cannot build more than the trailer states."""
        stream = _stream(b"= 0 1\n" * 10, b"x\n")
        with pytest.raises(DeltaError, match="passes the 2 bytes the trailer states"):
            delta.apply(delta.parse(stream), BASE)

    def test_cap(self) -> None:
        with pytest.raises(DeltaError, match="over the cap of 100"):
            delta.parse(STREAM, max_size=100)

    def test_every_cut_is_refused(self) -> None:
        """The stream cut at any byte: refused by parse, or (never) applied whole."""
        for cut in range(len(STREAM)):
            with pytest.raises(DeltaError):
                delta.apply(delta.parse(STREAM[:cut]), BASE)

    @pytest.mark.parametrize(
        ("stream", "reason"),
        [
            (b"", "byte 0: not a delta"),
            (b"+x\n", "byte 0: not a delta"),
            (b"#dnsmaster-delta 2 base=", "byte 0: malformed delta header"),
            (b"#dnsmaster-delta 1 base=" + b"A" * 64, "byte 0: malformed delta header"),
        ],
    )
    def test_bad_headers(self, stream: bytes, reason: str) -> None:
        with pytest.raises(DeltaError, match=f"^{re.escape(reason)}"):
            delta.parse(stream)

    @pytest.mark.parametrize(
        ("ops", "reason"),
        [
            (b"= 01 1\n", "malformed copy"),
            (b"= 0 0\n", "malformed copy"),
            (b"= -1 1\n", "malformed copy"),
            (b"= 0 1 \n", "malformed copy"),
            (b"+ 0\n", "malformed insert"),
            (b"+ 500\nab", "an insert of 500 bytes with 2 left before the trailer (cut?)"),
            (b"* 1\n", "expected '= START COUNT', '+ BYTES' or the trailer"),
            (b"\xff", "expected '= START COUNT'"),
        ],
    )
    def test_bad_operations(self, ops: bytes, reason: str) -> None:
        header = STREAM[: STREAM.index(b"\n") + 1]
        with pytest.raises(DeltaError, match=re.escape(reason)):
            delta.parse(header + ops + seal(b""))

    def test_bytes_after_the_trailer(self) -> None:
        with pytest.raises(DeltaError, match="the trailer is not the last line"):
            delta.parse(STREAM + b"= 0 1\n")
        with pytest.raises(DeltaError, match="the trailer is not the last line"):
            delta.parse(STREAM + STREAM[STREAM.index(b"#dnsmaster-end") :])

    def test_bad_restamp_serial(self) -> None:
        stream = STREAM.replace(b"restamp=1700000000,", b"restamp=4294967296,")
        with pytest.raises(DeltaError, match="over 4294967295"):
            delta.parse(stream)


def _stream(ops: bytes, result: bytes) -> bytes:
    digest = hashlib.sha256(BASE).hexdigest().encode()
    header = b"#dnsmaster-delta 1 base=%s bytes=%d restamp=none\n" % (digest, len(BASE))
    return header + ops + seal(result)


class TestHostileCounts:
    """Operations cost memory and time bounded by the result, whatever their count."""

    def test_parse_keeps_no_object_per_operation(self) -> None:
        """50,000 one-byte copies: the old parse kept a Copy each (56 bytes or more
        apiece, so 2.8 MB or more, well over the bound of 1 MB below). Under
        tracemalloc, which slows every allocation, 200,000 took 25 s for the same
        verdict."""
        n = 50_000
        stream = _stream(b"= 0 1\n" * n, b"x" * (n - 1) + b"\n")
        tracemalloc.start()
        try:
            parsed = delta.parse(stream, max_size=n)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(parsed.ops) == n
        assert peak < 1_000_000, peak
        # and applied, it writes into the result alone: the trailer's sha256 is the
        # check that fails here, after every operation ran
        tracemalloc.start()
        try:
            with pytest.raises(DeltaError, match=r"^result mismatch"):
                delta.apply(parsed, BASE)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * n + len(BASE) + 1_000_000, peak

    def test_more_operations_than_result_bytes_stop_at_once(self) -> None:
        """Every operation makes a byte or more: the count stops where the result ends."""
        stream = _stream(b"= 0 1\n" * 1000, b"x\n")
        with pytest.raises(DeltaError, match=r"^operation 3: the result passes the 2 bytes"):
            delta.parse(stream)

    def test_a_result_over_the_cap_is_refused_before_any_operation(self) -> None:
        stream = _stream(b"* garbage\n" * 1000, b"x" * 99 + b"\n")
        with pytest.raises(DeltaError, match="over the cap of 50"):
            delta.parse(stream, max_size=50)

    def test_too_few_bytes_for_the_trailer(self) -> None:
        with pytest.raises(DeltaError, match="the operations make 1 bytes, the trailer states 2"):
            delta.parse(_stream(b"= 0 1\n", b"x\n"))

    def test_operations_round_trip_as_objects(self) -> None:
        parsed = delta.parse(STREAM)
        ops = list(parsed.ops)
        assert len(ops) == len(parsed.ops) > 1
        assert b"".join(delta.encode(parsed.base_sha256, len(BASE), parsed.serials, ops, NEW)) == (
            STREAM
        )
