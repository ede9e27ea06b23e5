"""Field parsers, on the examples of spec §3."""

from __future__ import annotations

import pytest

from dnsmaster.core import fields
from dnsmaster.errors import NameTooLong


class TestNumber:
    @pytest.mark.parametrize(
        ("raw", "value"),
        [
            (b"300", 300),
            (b"300s", 300),
            (b"12abc", 12),
            (b"-1", None),
            (b"+5", None),
            (b"abc", None),
            (b" 5", None),
            (b"", None),
            (b"1\x002", 1),
            (b"18446744073709551617", 2**64 + 1),
        ],
    )
    def test_leading_digits(self, raw: bytes, value: int | None) -> None:
        """Only the leading digits count; no sign, no whitespace."""
        assert fields.number(raw) == value


class TestIp:
    @pytest.mark.parametrize(
        ("raw", "ip"),
        [
            (b"1.2.3.4junk", b"\x01\x02\x03\x04"),
            (b"010.0001.2.3", b"\x0a\x01\x02\x03"),
            (b"300.256.1.999", bytes([44, 0, 1, 231])),
            (b"192.0.2", None),
            (b"localhost", None),
            (b" 1.2.3.4", None),
            (b"", None),
            (b"1.2.3.4\x00", b"\x01\x02\x03\x04"),
        ],
    )
    def test_examples(self, raw: bytes, ip: bytes | None) -> None:
        """Spec §3.2 examples: octets mod 256, junk after the fourth ignored."""
        assert fields.ip4(raw) == ip


class TestTtd:
    @pytest.mark.parametrize(
        ("raw", "out"),
        [
            (b"", bytes(8)),
            (b"40", bytes.fromhex("4000000000000000")),
            (b"4000000060ABCDEF", bytes.fromhex("4000000060000000")),
            (b"4000000038af1379ffff", bytes.fromhex("4000000038af1379")),
        ],
    )
    def test_nibbles(self, raw: bytes, out: bytes) -> None:
        """Lowercase hex only; other bytes read as 0; 16 nibbles at most."""
        assert fields.ttd(raw) == out


class TestNames:
    @pytest.mark.parametrize(
        ("raw", "wire"),
        [
            (b"www.Example.com", b"\x03www\x07Example\x03com\x00"),
            (b"..a..b.", b"\x01a\x01b\x00"),
            (b"", b"\x00"),
            (b"...", b"\x00"),
            (b"a\\.b.c", b"\x03a.b\x01c\x00"),
            (b"a\\056b", b"\x03a.b\x00"),
            (b"\\9", b"\x019\x00"),
            (b"\\777", b"\x01\xff\x00"),
            (b"\\400", b"\x01\x00\x00"),
            (b"ab\\", b"\x02ab\x00"),
            (b"\\1234", b"\x02S4\x00"),
        ],
    )
    def test_wire_form(self, raw: bytes, wire: bytes) -> None:
        """Spec §3.5: empty labels drop, escapes decode mod 256, case is kept."""
        assert fields.name_to_wire(raw) == wire

    def test_exact_limits(self) -> None:
        """Three 63-byte labels and a 61-byte one fit (255); a 62-byte last label does not."""
        fits = b".".join([b"a" * 63] * 3 + [b"b" * 61])
        assert len(fields.name_to_wire(fits)) == 255
        with pytest.raises(NameTooLong, match="255"):
            fields.name_to_wire(fits + b"b")
        with pytest.raises(NameTooLong, match="63"):
            fields.name_to_wire(b"a" * 64)
        with pytest.raises(NameTooLong, match="63"):
            fields.name_to_wire(b"a" * 63 + b"\\065")


class TestText:
    def test_escapes(self) -> None:
        """Spec §3.6: octal escapes, other escaped bytes, a lone backslash dropped."""
        assert fields.text(b"colon\\072here") == b"colon:here"
        assert fields.text(b"\\1234") == b"S4"
        assert fields.text(b"a\\") == b"a"
        assert fields.text(b"\\\\x") == b"\\x"


class TestMisc:
    def test_location(self) -> None:
        """Two raw bytes, NUL padded."""
        assert [fields.location(x) for x in (b"", b"a", b"abc")] == [b"\0\0", b"a\0", b"ab"]

    def test_prefix(self) -> None:
        """Spec §3.7 examples."""
        assert fields.prefix(b"192.168") == b"\xc0\xa8"
        assert fields.prefix(b"") == b""
        assert fields.prefix(b"1..2") == b"\x01\x02"
        assert fields.prefix(b"1.2x.3") == b"\x01\x02"
        assert fields.prefix(b"1.2.3.4.5") == b"\x01\x02\x03\x04\x05"

    def test_split_fields(self) -> None:
        """At least 15 fields; a colon always separates."""
        f = fields.split_fields(b"+a\\:b:1.2.3.4")
        assert f[:3] == [b"a\\", b"b", b"1.2.3.4"]
        assert len(f) >= 15
        assert not any(f[3:])


class TestHostile:
    """Fields no real zone has: every parser answers, or raises NameTooLong for names."""

    @pytest.mark.parametrize(
        ("digits", "mod_2_64"),
        [
            (b"9" * 5000, (pow(10, 5000, 2**64) - 1) % 2**64),
            (b"0" * 5000 + b"7", 7),
            (b"%d" % 10**30, 10**30 % 2**64),
        ],
    )
    def test_number_of_thousands_of_digits(self, digits: bytes, mod_2_64: int) -> None:
        """Past int()'s 4300-digit limit, the value is still right mod 2**64."""
        for raw in (digits, digits + b"s"):
            value = fields.number(raw)
            assert value is not None
            assert value % 2**64 == mod_2_64

    def test_ip_and_prefix_of_thousands_of_digits(self) -> None:
        huge = b"9" * 5000  # 10**5000 - 1, which is 255 mod 256
        assert fields.ip4(huge + b".1.2." + huge) == b"\xff\x01\x02\xff"
        assert fields.prefix(huge + b"." + huge) == b"\xff\xff"

    @pytest.mark.parametrize("size", [63, 64, 255, 256, 257, 1000])
    @pytest.mark.parametrize("escaped", [False, True])
    def test_label_sizes(self, size: int, escaped: bool) -> None:
        """A label of 256+ bytes is a NameTooLong like one of 64 (it was an IndexError)."""
        label = b"\\101" * size if escaped else b"a" * size
        if size <= 63:
            written = (b"A" if escaped else b"a") * size
            assert fields.name_to_wire(label + b".x") == bytes((size,)) + written + b"\x01x\x00"
            return
        with pytest.raises(NameTooLong, match="label longer than 63 bytes"):
            fields.name_to_wire(label + b".x")
        with pytest.raises(NameTooLong, match="label longer than 63 bytes"):
            fields.name_to_wire(b"x." + label)

    def test_label_shown_without_control_bytes(self) -> None:
        """The label quoted in the reason has ESC, CR and NUL escaped."""
        with pytest.raises(NameTooLong) as caught:
            fields.name_to_wire(b"\x1b[2J\r\x00" + b"a" * 300)
        assert "\\x1b[2J\\r\\x00" in str(caught.value)
        assert not any(ord(c) < 0x20 for c in str(caught.value))
        with pytest.raises(NameTooLong) as caught:
            fields.name_to_wire(b"\\033\r" + b"a" * 300)
        assert "\\x1b\\r" in str(caught.value)
