"""Hypothesis strategies for tinydns data files, random and on the edges (spec §2-§5).

Everything is bytes. Fields never contain ``:`` or LF (those split fields and lines),
but anything else goes: NUL, CR, bytes >= 0x80, octal and other backslash escapes,
labels around 63 bytes and names around 255, bad IPs, junk after numbers, uppercase
timestamps, odd locations, wildcards. Lines that make tinydns-data fail (unknown
leading characters, prohibited generic types, over-long names, S without a port) are
drawn rarely, so that most files compile and later lines are exercised too.
"""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st

__all__ = [
    "data_files",
    "dot_lines",
    "fields",
    "hostile_lines",
    "huge_labels",
    "huge_numbers",
    "ips",
    "lines",
    "locations",
    "mtimes",
    "names",
    "numbers",
    "texts",
    "ttds",
]

T = TypeVar("T")
Bytes = st.SearchStrategy[bytes]

# Any byte but the field separator and the line separator.
_FIELD_BYTES = [b for b in range(256) if b not in (0x3A, 0x0A)]
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_HOSTNAME = _LOWER + "0123456789-"


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick one strategy with the given integer weights (the first ones shrink best)."""
    pool: list[st.SearchStrategy[T]] = []
    for weight, strategy in choices:
        pool += [strategy] * weight
    return st.sampled_from(pool).flatmap(lambda s: s)


def raw_bytes(max_size: int = 8) -> Bytes:
    """Arbitrary field bytes (no ``:``, no LF)."""
    return st.lists(st.sampled_from(_FIELD_BYTES), max_size=max_size).map(bytes)


def escapes() -> Bytes:
    """One backslash escape: 1-3 octal digits (up to ``\\777``) or ``\\`` + any byte."""
    octal = st.text("01234567", min_size=1, max_size=3).map(lambda s: b"\\" + s.encode())
    other = st.sampled_from(_FIELD_BYTES).map(lambda b: b"\\" + bytes((b,)))
    fixed = st.sampled_from(
        [b"\\052", b"\\056", b"\\.", b"\\\\", b"\\777", b"\\400", b"\\000", b"\\1234", b"\\9"]
    )
    return st.one_of(fixed, octal, other)


def labels() -> Bytes:
    """One label as written in a name (may contain escapes, may be odd)."""
    return weighted(
        (20, st.text(_HOSTNAME, min_size=1, max_size=8).map(str.encode)),
        (
            4,
            st.sampled_from(
                [b"*", b"**", b"\\052", b"WWW", b"Mixed", b"_sip", b"_tcp", b"in-addr", b"arpa"]
            ),
        ),
        (4, st.lists(st.one_of(escapes(), st.just(b"a")), min_size=1, max_size=4).map(b"".join)),
        (2, raw_bytes(6).filter(lambda b: b"." not in b)),
        (1, st.integers(60, 66).map(lambda n: b"l" * n)),  # around the 63-byte limit
        (1, st.integers(58, 64).map(lambda n: b"\\101" + b"m" * (n - 1))),  # escaped, same
        (1, huge_labels()),
    )


def huge_labels() -> Bytes:
    """Labels far past 63 bytes, where a length no longer fits one byte (256+)."""
    size = st.sampled_from([255, 256, 257, 300, 1000])
    return st.one_of(size.map(lambda n: b"h" * n), size.map(lambda n: b"\\101" * n))


def long_names() -> Bytes:
    """Names whose wire form is around the 255-byte limit."""

    def build(sizes: list[int], escaped: bool, dot: bool) -> bytes:
        parts = [b"n" * n for n in sizes]
        if escaped:
            parts[0] = b"\\156" + parts[0][1:]
        return b".".join(parts) + (b"." if dot else b"")

    def exact(first: list[int], wire: int) -> list[int]:
        # Three labels, then a last one making the wire form ``wire`` bytes long.
        last = wire - 1 - sum(n + 1 for n in first) - 1
        return [*first, last] if 0 < last <= 63 else first

    sizes = st.one_of(
        st.lists(st.integers(50, 63), min_size=3, max_size=5),
        st.builds(
            exact,
            st.lists(st.integers(58, 63), min_size=3, max_size=3),
            st.integers(243, 257),  # 244/245: the hostmaster.<zone> limit; 255: the limit
        ),
    )
    return st.builds(build, sizes, st.booleans(), st.booleans())


def names() -> Bytes:
    """Domain names in tinydns text form, mostly ordinary, sometimes at the limits."""
    dotted = st.tuples(
        st.sampled_from([b"", b"", b"", b".", b".."]),
        st.lists(labels(), max_size=5),
        st.sampled_from([b"", b"", b"", b".", b"..", b"\\"]),
    ).map(lambda t: t[0] + b".".join(t[1]) + t[2])
    return weighted(
        (25, dotted),
        (
            3,
            st.sampled_from(
                [
                    b"example.com",
                    b"Example.COM.",
                    b"*.example.com",
                    b"a.*.example.com",
                    b"*",
                    b"",
                    b".",
                    b"a..b",
                    b"1.2.3.in-addr.arpa",
                ]
            ),
        ),
        (1, long_names()),
    )


def ips() -> Bytes:
    """IPv4 fields: good ones, and every way tinydns-data is lenient about bad ones."""
    octet = st.integers(0, 255).map(lambda n: b"%d" % n)
    good = st.lists(octet, min_size=4, max_size=4).map(b".".join)
    odd_octet = st.one_of(
        octet,
        st.integers(256, 99999).map(lambda n: b"%d" % n),
        st.integers(0, 255).map(lambda n: b"00%d" % n),
    )
    odd = st.lists(odd_octet, min_size=4, max_size=4).map(b".".join)
    return weighted(
        (8, good),
        (2, st.just(b"")),
        (2, odd),
        (1, st.tuples(good, raw_bytes(4)).map(b"".join)),
        (
            2,
            st.sampled_from(
                [
                    b"192.0.2",
                    b"localhost",
                    b" 1.2.3.4",
                    b"1.2.3.4.5",
                    b"1..2.3",
                    b"1.2.3.",
                    b"1.2.3.4 ",
                    b"1.2\x00.3.4",
                    b"1.2.3.4\x005",
                    b"-1.2.3.4",
                    b"::1",
                ]
            ),
        ),
    )


def numbers() -> Bytes:
    """Number fields: plain, huge, with junk after, or not numbers at all."""
    plain = st.integers(0, 2**70).map(lambda n: b"%d" % n)
    return weighted(
        (4, st.just(b"")),
        (4, st.integers(0, 100000).map(lambda n: b"%d" % n)),
        (2, plain),
        (1, st.tuples(plain, raw_bytes(3)).map(b"".join)),
        (1, huge_numbers()),
        (
            2,
            st.sampled_from(
                [
                    b"0",
                    b"300s",
                    b"-1",
                    b"+5",
                    b" 5",
                    b"abc",
                    b"4294967295",
                    b"4294967296",
                    b"4294967297",
                    b"18446744073709551616",
                    b"18446744073709551617",
                    b"65535",
                    b"65536",
                    b"70000",
                    b"1\x002",
                    b"00012",
                ]
            ),
        ),
    )


def huge_numbers() -> Bytes:
    """Digit runs past 2**64, up to thousands of digits (past Python's int() limit)."""
    return st.one_of(
        st.sampled_from([b"%d" % 2**64, b"%d" % 10**30, b"0" * 5000 + b"7"]),
        st.integers(21, 5000).map(lambda n: b"9" * n),
        st.integers(2**64, 10**80).map(lambda n: b"%d" % n),
    )


def ttds() -> Bytes:
    """Timestamp fields: 16 lowercase hex digits, and everything tinydns-data reads as 0s."""
    return weighted(
        (6, st.just(b"")),
        (3, st.text("0123456789abcdef", min_size=16, max_size=16).map(str.encode)),
        (1, st.text("0123456789abcdefABCDEF", min_size=16, max_size=16).map(str.encode)),
        (1, st.text("0123456789abcdef", min_size=1, max_size=20).map(str.encode)),
        (1, raw_bytes(18)),
        (1, st.sampled_from([b"4000000038af1379", b"4000000060ABCDEF", b"40", b"0"])),
    )


def locations() -> Bytes:
    """Location fields: mostly empty or two letters; 0/1/3 bytes and junk sometimes."""
    return weighted(
        (8, st.just(b"")),
        (3, st.text(_LOWER, min_size=2, max_size=2).map(str.encode)),
        (1, st.text(_LOWER + "XY", min_size=1, max_size=3).map(str.encode)),
        (1, raw_bytes(3)),
        (1, st.sampled_from([b"\x00", b"\x00\x00", b"\x00a", b"a\x00"])),
    )


def texts() -> Bytes:
    """TXT and generic rdata: raw bytes, escapes, and long texts for the 127-byte chunks."""
    piece = weighted(
        (4, st.text(_LOWER + " =;,.-_", max_size=12).map(str.encode)),
        (2, escapes()),
        (1, raw_bytes(6)),
    )
    return weighted(
        (8, st.lists(piece, max_size=6).map(b"".join)),
        (1, st.integers(120, 400).map(lambda n: b"t" * n)),
        (1, st.sampled_from([b"", b"\\", b"a\\", b"colon\\072here", b"\\1234"])),
    )


def servers() -> Bytes:
    """The x field of ``. & @ S``: a bare label (gets the suffix), a full name, or empty."""
    return weighted(
        (8, st.text(_HOSTNAME, min_size=1, max_size=6).map(str.encode)),
        (6, st.just(b"")),
        (6, names()),
        (2, st.integers(1, 3).map(lambda n: b".".join([b"ns%d" % n, b"example", b"net"]))),
        (1, st.sampled_from([b"ns1.example.net.", b"a\\056b", b"a\\.b", b"A", b"\\"])),
        (1, st.integers(55, 66).map(lambda n: b"x" * n)),
    )


def generic_types() -> Bytes:
    """Type fields of ``:`` lines, including the prohibited ones (rarely) and wraps."""
    return weighted(
        (6, st.sampled_from([b"16", b"28", b"1", b"99", b"255", b"256", b"65535", b"13", b"33"])),
        (
            2,
            st.integers(1, 70000)
            .filter(lambda n: n % 65536 not in {0, 2, 5, 6, 12, 15, 252})
            .map(lambda n: b"%d" % n),
        ),
        (1, st.sampled_from([b"65552", b"16junk", b"28 ", b"99x"])),
        (
            1,
            st.sampled_from(
                [b"0", b"2", b"5", b"6", b"12", b"15", b"252", b"65536", b"65538", b"", b"abc"]
            ),
        ),
    )


# Per leading character, the strategies of its fields in order (spec §5).
def _shapes() -> dict[bytes, list[Bytes]]:
    name, ip, x, num, ttd, lo = names(), ips(), servers(), numbers(), ttds(), locations()
    return {
        b".": [name, ip, x, num, ttd, lo],
        b"&": [name, ip, x, num, ttd, lo],
        b"=": [name, ip, num, ttd, lo],
        b"+": [name, ip, num, ttd, lo],
        b"@": [name, ip, x, num, num, ttd, lo],
        b"'": [name, texts(), num, ttd, lo],
        b"^": [name, name, num, ttd, lo],
        b"C": [name, name, num, ttd, lo],
        b"Z": [name, name, name, num, num, num, num, num, num, ttd, lo],
        b":": [name, generic_types(), texts(), num, ttd, lo],
        b"%": [
            locations(),
            weighted(
                (4, st.sampled_from([b"", b"192.168", b"10", b"1..2", b"1.2x.3", b"1.2.3.4.5"])),
                (2, ips()),
                (1, numbers()),
                (1, raw_bytes(6)),
            ),
        ],
        b"S": [
            name,
            ip,
            x,
            weighted((12, st.integers(0, 70000).map(lambda n: b"%d" % n)), (1, numbers())),
            num,
            num,
            num,
            ttd,
            lo,
        ],
    }


_SHAPES = _shapes()


def fields(lead: bytes) -> Bytes:
    """A line of type ``lead``: its fields, some dropped at the end, some extra ones."""
    shape = _SHAPES[lead]

    def join(parts: list[bytes], keep: int, extra: list[bytes]) -> bytes:
        return lead + b":".join(parts[: max(keep, 1)] + extra)

    return st.builds(
        join,
        st.tuples(*shape).map(list),
        st.integers(0, len(shape)).map(lambda k: len(shape) - k // 3),
        weighted((8, st.just([])), (1, st.lists(raw_bytes(4), min_size=1, max_size=8))),
    )


def _endings() -> Bytes:
    return weighted(
        (12, st.just(b"")),
        (1, st.sampled_from([b"\r", b" ", b"\t", b" \t ", b"\r ", b":", b"::", b": "])),
    )


def lines() -> Bytes:
    """One data line (without LF), of any type, weighted towards lines that compile."""
    record = st.sampled_from(sorted(_SHAPES)).flatmap(fields)
    ignored = st.sampled_from([b"#", b"-"]).flatmap(lambda c: raw_bytes(12).map(lambda r: c + r))
    bad = st.sampled_from(
        [b" +a:1.2.3.4", b"\tx", b"\r", b"3a:1", b"6a:1", b"z", b"c", b"s", b"X", b"\x00", b"\xff"]
    )
    return weighted(
        (40, st.tuples(record, _endings()).map(b"".join)),
        (3, ignored),
        (2, st.sampled_from([b"", b" ", b"\t", b" \t "])),
        (1, bad),
    )


def data_files() -> Bytes:
    """A whole data file: lines joined by LF, final LF optional, sometimes CRLF."""

    def join(body: list[bytes], final: bool, crlf: bool) -> bytes:
        text = b"\n".join(body) + (b"\n" if final and body else b"")
        return text.replace(b"\n", b"\r\n") if crlf else text

    return st.builds(
        join,
        st.lists(lines(), max_size=12),
        st.booleans(),
        weighted((30, st.just(False)), (1, st.just(True))),
    )


def mtimes() -> st.SearchStrategy[int]:
    """mtimes of the data file: typical, 0, wrapping past 2**32, negative."""
    return st.one_of(
        st.sampled_from([1234567890, 0, 1, 4294967295, 4294967296, 4294967301, -1, 1700000000]),
        st.integers(1, 2**33),
    )


def dot_lines() -> Bytes:
    """``.`` lines make-data must expand exactly: mostly fine, with the lenient corners.

    The IP is empty or parses (a bad one is an error make-data refuses); the TTL may
    have junk after it, the timestamp and location anything tinydns-data accepts.
    """
    octet = st.integers(0, 255).map(lambda n: b"%d" % n)
    ip = weighted(
        (3, st.lists(octet, min_size=4, max_size=4).map(b".".join)),
        (2, st.just(b"")),
        (1, st.sampled_from([b"010.0.0.1", b"1.2.3.4junk", b"1.2.3.4 x"])),
    )
    ttl = weighted(
        (3, st.just(b"")),
        (3, st.integers(0, 2**33).map(lambda n: b"%d" % n)),
        (1, st.sampled_from([b"0", b"300s", b"abc", b"4294967296", b"18446744073709551616"])),
    )
    parts = st.tuples(names(), ip, servers(), ttl, ttds(), locations())
    return st.builds(
        lambda p, keep, end: b"." + b":".join(list(p)[:keep]) + end,
        parts,
        st.integers(1, 6),
        weighted((10, st.just(b"")), (1, st.sampled_from([b"\r", b" ", b":", b"\t"]))),
    )


def hostile_lines() -> Bytes:
    """Lines built to break a parser, not to compile: any leading byte, fields of
    absurd labels and numbers, control bytes, far too many fields."""
    field = weighted(
        (6, raw_bytes(12)),
        (3, huge_labels()),
        (3, huge_numbers()),
        (2, names()),
        (2, st.lists(huge_labels(), min_size=1, max_size=3).map(b".".join)),
        (2, st.sampled_from([b"\x00", b"\x1b[2J", b"\r", b"\x1b]0;pwned\x07", b"\\", b"\\777"])),
        (1, st.integers(1, 3).map(lambda n: b"\\" * n)),
    )
    lead = weighted(
        (8, st.sampled_from(sorted(_SHAPES))),
        (1, st.sampled_from([b"#", b"-", b"\x00", b"\x1b", b"\r", b"\xff", b" ", b"X"])),
    )
    many = st.integers(16, 3000).map(lambda n: b":" * n)
    return weighted(
        (12, st.tuples(lead, st.lists(field, max_size=18).map(b":".join)).map(b"".join)),
        (1, st.tuples(lead, many).map(b"".join)),
        (1, st.sampled_from([b":", b"", b"\r", b"\\", b":" * 100000])),
    )
