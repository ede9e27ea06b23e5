"""The IPv6 patch's ``3`` (AAAA) and ``6`` (AAAA + PTR) lines: expanded by make-data
into lines Debian's tinydns-data accepts, checked, and served by a real tinydns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster.core import cdb
from dnsmaster.core.cdb import CdbReader
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.ipv6 import parse_address, ptr_name
from dnsmaster.core.makedata import assemble, check_source, compile_source
from dnsmaster.errors import DataErrors
from dnsmaster.master.build import Builder

SERIAL = 1_700_000_000

ZONE = b"""# IPv6 hosts, as the patch writes them
.example.com:192.0.2.1:a:300
.8.b.d.0.1.0.0.2.ip6.arpa:192.0.2.1:a
.8.b.d.0.1.0.0.2.ip6.int:192.0.2.1:a
3host.example.com:20010db8000000000000000000000001
6v6.example.com:20010DB80000000000000000000000AB:600
6esc.example.com:2001\\072db8\\072\\0721\\0722\\0723
3*.wild.example.com:2001\\072db8\\072\\07210.0.0.1
+www.example.com:192.0.2.10
.last.example:192.0.2.3"""

REVERSE_AB = b"b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
REVERSE_AB_INT = REVERSE_AB.removesuffix(b"arpa") + b"int"


def built_data(zone: bytes = ZONE) -> tuple[bytes, bytes]:
    """The data text and the data.cdb dnsmaster builds from one zones file."""
    built = assemble([compile_source("zones.example", zone)], SERIAL)
    return built.data, cdb.dumps(built.keys, built.values)


def reasons(zone: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    found = check_source("zones.x", zone)
    return (
        [(e.line, e.reason) for e in found.errors],
        [(w.line, w.reason) for w in found.warnings],
    )


class TestAddress:
    def test_flat_form(self) -> None:
        ip, why = parse_address(b"20010db8000000000000000000000001")
        assert ip == bytes.fromhex("20010db8000000000000000000000001")
        assert not why

    def test_flat_form_uppercase(self) -> None:
        assert parse_address(b"20010DB8" + b"0" * 24)[0] == bytes.fromhex("20010db8" + "0" * 24)

    @pytest.mark.parametrize(
        ("raw", "hexed"),
        [
            (b"2001\\072db8\\072\\0721", "20010db8000000000000000000000001"),
            (b"\\072\\0721", "00000000000000000000000000000001"),
            (
                b"2001\\0720db8\\0720\\0720\\0720\\0720\\0720\\0721",
                "20010db8000000000000000000000001",
            ),
            (b"2001\\072db8\\072\\072192.0.2.1", "20010db8" + "0" * 16 + "c0000201"),
        ],
    )
    def test_escaped_colon_form(self, raw: bytes, hexed: str) -> None:
        """Full, ::-compressed, and dotted-tail forms, each colon written \\072."""
        assert parse_address(raw) == (bytes.fromhex(hexed), "")

    @pytest.mark.parametrize(
        ("raw", "why"),
        [
            (b"", "no IPv6 address"),
            (b"2001db8", "is 7 hex digits, not 32"),
            (b"20010db8" + b"0" * 25, "is 33 hex digits, not 32"),
            (b"20010db8" + b"0" * 23 + b"g", "is not 32 hex digits"),
            (b"20010db8" + b"0" * 24 + b"/64", "junk after its 32 hex digits"),
            (b"2001\\072db8\\072\\072\\072", "does not parse: it has three colons in a row"),
            (b"2001\\270db8", "does not parse: it holds the byte \\270;"),
            (b"\\072\\072\\377", "does not parse: it holds the byte \\377;"),
            (b"1\\0722\\072\\0723\\072\\0724", "it has '::' more than once"),
            (b"1\\0722\\0723\\0724\\0725\\0726\\0727", "it has 7 groups, not 8"),
            (b"\\072\\072g", "it holds the byte 'g'"),
            (b"\\072\\07212345", "its group '12345' has more than 4 hex digits"),
            (b"\\072\\072192.0.2.256", "its IPv4 tail '192.0.2.256' is not four dotted"),
            (b"fe80\\072\\0721%eth0", "zone index"),
        ],
    )
    def test_refused(self, raw: bytes, why: str) -> None:
        ip, message = parse_address(raw)
        assert ip is None
        assert why in message
        assert "32 hex digits" in message
        assert "\\072 for each colon" in message

    def test_ptr_name(self) -> None:
        ip = bytes.fromhex("20010db80000000000000000000000ab")
        assert ptr_name(ip) == REVERSE_AB
        assert ptr_name(ip, b"ip6.int") == REVERSE_AB_INT


class TestExpansion:
    def test_three_becomes_generic_aaaa(self) -> None:
        """A 3 line: one generic type-28 line, 16 octal-escaped bytes, traced to its line."""
        text = compile_source(
            "zones.x",
            b"+a.example:192.0.2.1\n3h.example:2001\\072db8\\072\\0721:60\n+b.example:192.0.2.2\n",
        ).text
        assert text.split(b"\n") == [
            b"# zones.x:1",
            b"+a.example:192.0.2.1",
            b"# zones.x:2: 3h.example:2001\\072db8\\072\\0721:60",
            b":h.example:28:\\040\\001\\015\\270\\000\\000\\000\\000"
            b"\\000\\000\\000\\000\\000\\000\\000\\001:60",
            b"# zones.x:3",
            b"+b.example:192.0.2.2",
            b"",
        ]

    def test_six_becomes_aaaa_and_ptrs(self) -> None:
        """A 6 line: the AAAA, and ^ lines (a generic line may not be a PTR) for
        ip6.arpa and ip6.int, in the patch's order."""
        line = b"6V6.Example.com:20010db80000000000000000000000ab:600:4000000038af1379:in"
        text = compile_source("zones.x", line + b"\n").text
        assert text.split(b"\n") == [
            b"# zones.x:1",
            b"# zones.x:1: " + line,
            b":V6.Example.com:28:\\040\\001\\015\\270\\000\\000\\000\\000"
            b"\\000\\000\\000\\000\\000\\000\\000\\253:600:4000000038af1379:in",
            b"^" + REVERSE_AB + b":V6.Example.com:600:4000000038af1379:in",
            b"^" + REVERSE_AB_INT + b":V6.Example.com:600:4000000038af1379:in",
            b"",
        ]

    def test_six_without_ip6_int(self) -> None:
        """ipv6_int=False: the ip6.arpa PTR only; everything else as with it."""
        line = b"6V6.Example.com:20010db80000000000000000000000ab:600:4000000038af1379:in\n"
        full = compile_source("zones.x", line).text.split(b"\n")
        text = compile_source("zones.x", line, ipv6_int=False).text.split(b"\n")
        assert text == [x for x in full if b"ip6.int" not in x]
        assert len(text) == len(full) - 1

    def test_same_records_whatever_the_mtime(self) -> None:
        """The records dnsmaster keeps are those its data text compiles to."""
        data, built = built_data()
        assert compile_data(data, 5) == built
        assert b"\n3" not in data
        assert b"\n6" not in data

    def test_flat_and_escaped_forms_agree(self) -> None:
        flat = built_data(b"6h.example:20010db8000000000000000000000001:60\n")[1]
        escaped = built_data(b"6h.example:2001\\072db8\\072\\0721:60\n")[1]
        assert flat == escaped

    def test_dot_lines_after_six_lines_still_stamped(self) -> None:
        """The serial goes into the Z line of a . line that follows 6 lines."""
        data, _ = built_data()
        z = [line for line in data.split(b"\n") if line.startswith(b"Z")]
        assert len(z) == 4
        assert all(line.split(b":")[3] == b"%d" % SERIAL for line in z)

    def test_real_tinydns_data_agrees(self, tmp_path: Path, tinydns_data_bin: str) -> None:
        """Debian's tinydns-data compiles the expanded data into dnsmaster's data.cdb."""
        data, built = built_data()
        (tmp_path / "data").write_bytes(data)
        os.utime(tmp_path / "data", (1, 1))
        subprocess.run([tinydns_data_bin], cwd=tmp_path, check=True)
        assert (tmp_path / "data.cdb").read_bytes() == built

    def test_real_tinydns_data_refuses_the_lines_themselves(
        self, tmp_path: Path, tinydns_data_bin: str
    ) -> None:
        """Why the expansion: the stock tinydns-data refuses 3 and 6 lines."""
        (tmp_path / "data").write_bytes(b"3h.example:20010db8000000000000000000000001\n")
        proc = subprocess.run([tinydns_data_bin], cwd=tmp_path, capture_output=True, check=False)
        assert proc.returncode != 0
        assert b"unrecognized leading character" in proc.stderr


class TestCheck:
    def test_wrong_length(self) -> None:
        errors, _ = reasons(b"+a.example:192.0.2.1\n3h.example:2001db8\n")
        assert len(errors) == 1
        assert errors[0][0] == 2
        assert "is 7 hex digits, not 32" in errors[0][1]

    def test_non_hex(self) -> None:
        errors, _ = reasons(b"6h.example:2001odb8000000000000000000000001\n")
        assert [line for line, _ in errors] == [1]
        assert "is not 32 hex digits" in errors[0][1]

    def test_bare_colons(self) -> None:
        """The usual colon form, unescaped, is split into fields: said so, with the fix."""
        errors, _ = reasons(b"3h.example:2001:db8::1\n")
        assert len(errors) == 1
        line, reason = errors[0]
        assert line == 1
        assert "'2001:db8::1' is split into fields by its colons" in reason
        assert "20010db8000000000000000000000001" in reason
        assert "2001\\072db8\\072\\0721" in reason

    @pytest.mark.parametrize(
        ("written", "tail"),
        [
            (b"2001:db8:0:0:0:0:0:2", b":300::in"),  # 7 colons: 8 fields
            (b"1:2:3:4:5:6:7::", b""),  # 8 colons: 9 fields
            # after a "::" form the TTL could be the last group: no tail, no guess
            (b"2001:db8::1", b""),
            (b"2001:db8::192.0.2.1", b":300::in"),
        ],
    )
    def test_bare_colons_whatever_their_count(self, written: bytes, tail: bytes) -> None:
        """However many fields the colons make, one error says so, naming the address;
        the fields after it are read as the TTL, timestamp and location meant."""
        errors, warnings = reasons(b"+a.example:192.0.2.1\n6h.example:" + written + tail + b"\n")
        assert warnings == []
        assert len(errors) == 1
        line, reason = errors[0]
        assert line == 2
        assert reason.startswith(f"IPv6 address '{written.decode()}' is split into fields")
        assert "write it as 32 hex digits" in reason

    def test_bare_colons_then_too_many_fields(self) -> None:
        errors, _ = reasons(b"3h.example:2001:db8:0:0:0:0:0:2:300::in:extra\n")
        assert [line for line, _ in errors] == [1, 1]
        assert "is split into fields" in errors[0][1]
        assert errors[1][1].endswith("(fqdn:ip6:ttl:timestamp:lo), this one 6")

    def test_escaped_address_error_names_file_and_line(self) -> None:
        """An octal escape that makes no address: file, line, and the byte that is wrong."""
        found = check_source("zones.x", b"# x\n6h.example:2001\\072db8\\072\\072\\270\n")
        (error,) = found.errors
        assert (error.file, error.line) == ("zones.x", 2)
        assert "it holds the byte \\270" in error.reason
        assert "codec" not in error.reason

    def test_escaped_ipv4_said_so(self) -> None:
        """\\056 is a dot in a name, not in an address: tinydns-data drops the record."""
        errors, _ = reasons(b"+a.example:1\\0562.3.4\n")
        assert len(errors) == 1
        assert "escapes are not decoded in addresses" in errors[0][1]

    def test_too_many_fields(self) -> None:
        errors, _ = reasons(b"3h.example:20010db8000000000000000000000001:60::ab:extra\n")
        assert errors == [
            (1, "too many fields: a 3 line has 5 (fqdn:ip6:ttl:timestamp:lo), this one 6")
        ]

    def test_empty_trailing_fields_are_fine(self) -> None:
        assert reasons(b"3h.example:20010db8000000000000000000000001:60:::::\n") == ([], [])

    def test_no_address(self) -> None:
        errors, _ = reasons(b"6h.example::60\n")
        assert [line for line, _ in errors] == [1]
        assert "no IPv6 address" in errors[0][1]

    def test_other_fields_checked_once(self) -> None:
        """TTL, timestamp and location are checked as on every line; once per 6 line."""
        _, warnings = reasons(b"6h.example:20010db8000000000000000000000001:60s:XYZ:abc\n")
        assert [line for line, _ in warnings] == [1, 1, 1]
        text = " ".join(reason for _, reason in warnings)
        assert "TTL '60s'" in text
        assert "timestamp 'XYZ'" in text
        assert "location 'abc'" in text

    def test_bad_name_refused(self) -> None:
        errors, _ = reasons(b"# x\n3" + b"a" * 64 + b".example:20010db8000000000000000000000001\n")
        assert [line for line, _ in errors] == [2]
        assert "label longer than 63 bytes" in errors[0][1]

    @pytest.mark.parametrize(
        ("raw", "what"),
        [
            (b"fe80\\072\\0721", "link-local"),
            (b"\\072\\072", "unspecified"),
            (b"\\072\\0721", "loopback"),
            (b"ff02\\072\\0721", "multicast"),
            (b"\\072\\072ffff\\072192.0.2.1", "IPv4-mapped"),
        ],
    )
    def test_odd_addresses_warned(self, raw: bytes, what: str) -> None:
        errors, warnings = reasons(b"3h.example:" + raw + b"\n")
        assert errors == []
        assert len(warnings) == 1
        assert what in warnings[0][1]

    def test_line_numbers_of_later_lines(self) -> None:
        """A 6 line makes two data lines; errors further down keep their own line numbers."""
        zone = b"6a.example:20010db8000000000000000000000001\n+b.example:\n:c.example:12:x\n"
        errors, _ = reasons(zone)
        assert [line for line, _ in errors] == [2, 3]

    def test_compile_source_refuses(self) -> None:
        with pytest.raises(DataErrors) as caught:
            compile_source("zones.x", b"3h.example:2001:db8::1\n")
        assert [(e.file, e.line) for e in caught.value.errors] == [("zones.x", 1)]

    def test_disabled_lines_stay_comments(self) -> None:
        text = compile_source("zones.x", b"-3h.example:2001:db8::1\n").text
        assert text == b"# zones.x:1\n-3h.example:2001:db8::1\n"


# -- the patched tinydns-data's records, byte for byte -----------------------------------


def wire(name: str) -> bytes:
    return b"".join(bytes((len(x),)) + x.encode() for x in name.split(".") if x) + b"\0"


def nibbles(ip: bytes, zone: str) -> str:
    """dns_name6_domain of the patch: the 32 nibbles, last first, lowercase hex."""
    return ".".join(ip.hex()[::-1]) + "." + zone


def patch_records(
    owner: str, ip: bytes, ttl: int, ttd: bytes, lo: bytes
) -> list[tuple[bytes, bytes]]:
    """What the patch's ``case '6'`` adds to the cdb (its tinydns-data.c, test21 and
    later): rr_start(AAAA) + ip6 at the owner, then rr_start(PTR) + the owner's name
    at the ip6.arpa name, then the same at the ip6.int name. rr_start writes the type,
    ``=`` or ``>`` + lo, the TTL and the ttd (spec §4); rr_finish takes a leading
    ``*`` label off the key and marks the record a wildcard (``=`` - 19 = ``*``)."""
    head = (b">" + lo if lo else b"=") + ttl.to_bytes(4, "big") + ttd
    key = wire(owner.lower())
    aaaa = b"\x00\x1c" + head + ip
    if owner.startswith("*."):
        key = key[2:]
        aaaa = aaaa[:2] + bytes((aaaa[2] - 19,)) + aaaa[3:]
    ptr = b"\x00\x0c" + head + wire(owner)
    return [
        (key, aaaa),
        (wire(nibbles(ip, "ip6.arpa")), ptr),
        (wire(nibbles(ip, "ip6.int")), ptr),
    ]


IP_AB = bytes.fromhex("20010db80000000000000000000000ab")
IP_1 = bytes.fromhex("20010db8000000000000000000000001")
PATCH_CASES = {
    "all fields": (
        b"6V6.Example.com:20010DB80000000000000000000000AB:600:4000000038af1379:in",
        patch_records("V6.Example.com", IP_AB, 600, bytes.fromhex("4000000038af1379"), b"in"),
    ),
    "defaults": (
        b"6a.test:20010db8000000000000000000000001",
        patch_records("a.test", IP_1, 86400, bytes(8), b""),
    ),
    "wildcard": (
        b"6*.w.test:20010db8000000000000000000000001:0",
        patch_records("*.w.test", IP_1, 0, bytes(8), b""),
    ),
}


class TestPatchRecords:
    """A site moving from the patched tinydns-data keeps byte-identical answers.

    Debian's tinydns-data is not the patched one (it refuses 6 lines): the reference
    is the patch's code, written out in :func:`patch_records`.
    """

    @pytest.mark.parametrize("case", list(PATCH_CASES))
    def test_six_line_as_the_patch_writes_it(self, case: str, path: str) -> None:
        line, expected = PATCH_CASES[case]
        built = assemble([compile_source("zones.x", line + b"\n")], SERIAL)
        assert list(zip(built.keys, built.values, strict=True)) == expected
        keys, values = zip(*expected, strict=True)
        assert cdb.dumps(built.keys, built.values) == cdb.dumps(keys, values)

    @pytest.mark.parametrize("case", list(PATCH_CASES))
    def test_without_ip6_int(self, case: str, path: str) -> None:
        line, expected = PATCH_CASES[case]
        src = compile_source("zones.x", line + b"\n", ipv6_int=False)
        built = assemble([src], SERIAL, ipv6_int=False)
        assert list(zip(built.keys, built.values, strict=True)) == expected[:2]

    @pytest.mark.parametrize("ipv6_int", [True, False])
    def test_debian_tinydns_data_compiles_the_same(
        self, tmp_path: Path, tinydns_data_bin: str, ipv6_int: bool
    ) -> None:
        """The data text (what slaves compile) gives the same data.cdb."""
        zone = b"\n".join(line for line, _ in PATCH_CASES.values()) + b"\n"
        built = assemble(
            [compile_source("zones.x", zone, ipv6_int=ipv6_int)], SERIAL, ipv6_int=ipv6_int
        )
        (tmp_path / "data").write_bytes(built.data)
        subprocess.run([tinydns_data_bin], cwd=tmp_path, check=True)
        assert (tmp_path / "data.cdb").read_bytes() == cdb.dumps(built.keys, built.values)
        assert (b"\x03ip6\x03int\x00" in b"".join(built.keys)) is ipv6_int


class TestBuilderOption:
    """The configuration's ipv6_int, through the Builder: the build, its cache, and
    the fingerprint that tells whether data is current."""

    def test_toggling_rebuilds(self, tmp_path: Path) -> None:
        zones, out = tmp_path / "zones", tmp_path / "out"
        zones.mkdir()
        out.mkdir()
        (zones / "zones.x").write_bytes(PATCH_CASES["defaults"][0] + b"\n")
        with_int = Builder(zones, out)
        with_int.build()
        assert b"ip6.int" in (out / "data").read_bytes()
        assert with_int.is_current()
        without = Builder(zones, out, ipv6_int=False)
        assert not without.is_current()  # the same sources build something else
        without.build()
        assert b"ip6.int" not in (out / "data").read_bytes()
        assert without.is_current()
        assert not Builder(zones, out).is_current()
        # A new process reads its own entry from the build cache, never the other's.
        again = Builder(zones, out)
        again.build()
        assert b"ip6.int" in (out / "data").read_bytes()
        keys = [k for k, _ in CdbReader((out / "data.cdb").read_bytes()).items()]
        assert wire(nibbles(IP_1, "ip6.int")) in keys


# -- a real tinydns ---------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, tinydns_data_bin: str) -> Iterator[object]:
    """A real tinydns on its own 127.0.1.N, serving the data.cdb that Debian's
    tinydns-data compiles from dnsmaster's data for ZONE."""
    from tests.lab.realworld import Tinydns, release_dns_address, take_dns_address  # noqa: PLC0415

    data, _ = built_data()
    root = tmp_path / "root"
    root.mkdir()
    (root / "data").write_bytes(data)
    subprocess.run([tinydns_data_bin], cwd=root, check=True)
    (root / "data.cdb").chmod(0o644)
    address = take_dns_address()
    server = Tinydns(root, address=address, log=tmp_path / "tinydns.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        release_dns_address(address)


class TestServed:
    def test_three_line_answers_aaaa(self, served: object) -> None:
        from tests.lab.realworld import Tinydns  # noqa: PLC0415

        assert isinstance(served, Tinydns)
        assert served.answer("host.example.com", "AAAA") == ["2001:db8::1"]
        assert (
            served.answer(
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR"
            )
            == []
        )
        assert served.answer("anything.wild.example.com", "AAAA") == ["2001:db8::a00:1"]

    def test_six_line_answers_aaaa_and_ptr(self, served: object) -> None:
        from tests.lab.realworld import Tinydns  # noqa: PLC0415

        assert isinstance(served, Tinydns)
        assert served.answer("v6.example.com", "AAAA") == ["2001:db8::ab"]
        assert served.answer(REVERSE_AB.decode(), "PTR") == ["v6.example.com."]
        assert served.answer(REVERSE_AB_INT.decode(), "PTR") == ["v6.example.com."]
        response = served.query(REVERSE_AB.decode(), "PTR")
        assert response.answer[0].ttl == 600
        esc = "3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        assert served.answer("esc.example.com", "AAAA") == ["2001:db8::1:2:3"]
        assert served.answer(esc, "PTR") == ["esc.example.com."]
