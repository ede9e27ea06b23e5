"""The master's delta from line hashes read in chunks (dnsmaster.master.linediff).

It must write the very stream :func:`dnsmaster.core.delta.make` writes from whole
texts, whatever the lines, their ends, the serials and where the chunks are cut.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import delta
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.master import linediff, linescan
from dnsmaster.master.linediff import InMemory, chunks, line_hashes, make


def zones(n: int, www: int = 1) -> bytes:
    return b"".join(
        b".z%d.example:127.0.0.1:a\n+www.z%d.example:192.0.2.%d\n"
        % (i, i, www if i == n // 2 else 1)
        for i in range(n)
    )


def build(serial: int, text: bytes) -> bytes:
    return assemble([compile_source("zones.a", text)], serial).data


def same(base: bytes, new: bytes, chunk: int) -> None:
    expected = delta.make(base, new)
    assert make(InMemory(base), InMemory(new), chunk=chunk) == expected
    sha256 = hashlib.sha256(base).hexdigest()
    assert make(InMemory(base), InMemory(new), base_sha256=sha256, chunk=chunk) == expected


class TestChunks:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
    def test_pieces_end_at_a_newline_and_join_to_the_text(self, size: int) -> None:
        """Each piece but the last ends with a newline; together they are the text."""
        text = b"a\r\nbb\rccc\n\ndddd\n" * 5 + b"no end"
        pieces = list(chunks(InMemory(text), size))
        assert b"".join(pieces) == text
        assert all(p.endswith(b"\n") for p in pieces[:-1])

    def test_lines_and_sha256(self) -> None:
        """Offsets start each line as splitlines cuts them; the sha256 is the text's."""
        text = b"a\nbb\r\nccc\rd"
        lines = line_hashes(InMemory(text), chunk=2)
        assert list(lines.offsets) == [0, 2, 6, 10, 11]
        assert list(lines.hashes) == [hash(x) for x in text.splitlines(keepends=True)]
        assert lines.sha256 == hashlib.sha256(text).hexdigest()


class TestSameStream:
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
        for chunk in (1, 3, 1 << 20):
            same(base, new, chunk)

    @settings(max_examples=150)
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
        st.integers(1, 40),
    )
    def test_random_edits_of_random_data(
        self, lines: list[bytes], edits: list[tuple[str, int, bytes]], end: bytes, chunk: int
    ) -> None:
        """Random lines randomly edited, random chunk sizes: the same operations."""
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
        base = b"\n".join(lines) + end
        new = b"\n".join(new_lines) + end
        same(base, new, chunk)
        same(new, base, chunk)

    @settings(max_examples=30)
    @given(st.integers(1, 4294967295), st.integers(1, 4294967295), st.integers(1, 200))
    def test_builds_restamped(self, old: int, new: int, chunk: int) -> None:
        """Real builds with any two serials: the restamp holds across chunks too."""
        same(build(old, zones(30)), build(new, zones(30, www=5)), chunk)


class TestRefusals:
    def test_a_damaged_base_gives_no_delta(self) -> None:
        """A base whose bytes are not the sha256 it is known by: no delta."""
        base = build(1, zones(10))
        wrong = hashlib.sha256(b"other").hexdigest()
        assert make(InMemory(base), InMemory(base), base_sha256=wrong) is None

    def test_no_delta_at_the_limit(self) -> None:
        """A delta as large as the full data is not made."""
        base, new = build(1, zones(10)), build(2, zones(10, www=7))
        stream = delta.make(base, new)
        assert make(InMemory(base), InMemory(new), limit=len(stream) + 1) == stream
        assert make(InMemory(base), InMemory(new), limit=len(stream)) is None
        assert make(InMemory(b"a\n"), InMemory(b"b" * 100 + b"\n"), limit=50) is None


class TestWindow:
    """Only the lines around a change are hashed; the walk's other needs go to every line."""

    def test_a_line_added_hashes_only_the_lines_around_it(self) -> None:
        old, serial = 1796684876, 1796684999  # a small serial is found in other fields too
        base, new = build(old, zones(2000)), build(serial, zones(2000, www=9))
        window = linescan.window(InMemory(base), InMemory(new), (old, serial), None, 64)
        assert window is not None
        ops = linediff.diff(window.old, window.new)
        assert len(window.old.hashes.middle) == len(window.new.hashes.middle) == 1
        assert len(window.new.hashes.tail.hashes) < 50  # the tail read a line or two on
        # The banner (its sources differ), the head, the line, the tail.
        kinds = [linediff.Span, delta.Copy, linediff.Span, delta.Copy]
        assert [type(op) for op in ops] == kinds
        same(base, new, 64)

    def test_lines_added_in_a_row_index_the_base(self) -> None:
        """Three new lines in a row: the walk indexes every line of the base, which
        the window does not hold; the stream is the same all the same."""
        base = b"".join(b"+h%d.example:10.0.0.1\n" % n for n in range(300))
        new = base[:3000] + b"+x.example:1.2.3.4\n+y.example:1.2.3.4\n+z.example:1.2.3.4\n"
        new += base[3000:]
        window = linescan.window(InMemory(base), InMemory(new), None, None, 128)
        assert window is not None
        with pytest.raises(linescan.Outside):
            linediff.diff(window.old, window.new)
        same(base, new, 128)

    def test_a_serial_gaining_a_digit_hashes_every_line(self) -> None:
        base, new = build(99999, zones(20)), build(100000, zones(20, www=3))
        assert linescan.window(InMemory(base), InMemory(new), (99999, 100000), None, 64) is None
        same(base, new, 64)

    def test_the_new_sha256_given_is_used(self) -> None:
        base, new = build(1, zones(30)), build(2, zones(30, www=4))
        given = "0" * 64
        stream = make(InMemory(base), InMemory(new), new_sha256=given)
        assert stream is not None
        assert stream.endswith(b"sha256=%s\n" % given.encode())
