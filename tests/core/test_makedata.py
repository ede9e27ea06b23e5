"""make-data: sources to data text, serial stamping, and exact equivalence."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dnsmaster.core import accel, cdb
from dnsmaster.core.compiler import compile_data, compile_lines, split_lines
from dnsmaster.core.makedata import (
    SERIAL_MARK,
    _scan,
    assemble,
    check_source,
    compile_source,
    next_serial,
    previous_serial,
)
from dnsmaster.core.sources import is_source, source_order, why_skipped
from dnsmaster.errors import DataErrors

ZONE = b"""# a comment
.example.com:192.0.2.1:a:300
.example.com:192.0.2.2:ns2.example.net.
.2.0.192.in-addr.arpa::a
Zexample.org:ns.example.org:hm.example.org.
Zexample.net:ns.example.net:hm.example.net.:77
&sub.example.com:192.0.2.9:b::4000000038af1379:in
.loc.example.com:192.0.2.3:x:0::ab
.sp.example.com:192.0.2.4:y:::a :ignored
+www.example.com:192.0.2.10
.last.example:192.0.2.3"""


def cdb_of(text: bytes, mtime: int) -> bytes:
    return compile_data(text, mtime)


class TestSerial:
    def test_now_when_ahead(self) -> None:
        """The serial is the Unix time when it is past the previous one."""
        assert next_serial(1000, 999) == 1000
        assert next_serial(1000, None) == 1000

    def test_previous_plus_one(self) -> None:
        """Two builds in one second, or a clock set back, still increase."""
        assert next_serial(1000, 1000) == 1001
        assert next_serial(1000, 5000) == 5001

    def test_read_back_from_banner(self) -> None:
        """The serial of an earlier build is read from the first line of its data."""
        data = assemble([compile_source("zones.x", b"+a:1.2.3.4\n")], 1234).data
        assert previous_serial(data) == 1234
        assert previous_serial(b"+a:1.2.3.4\n") is None

    def test_wraps_per_rfc_1982(self) -> None:
        """After 4294967295 comes 0 (RFC 1982), never 4294967296: the SOA field is 32 bits."""
        assert next_serial(1000, 4294967295) == 1000  # a time past the wrap is newer
        assert next_serial(4294967000, 4294967295) == 0
        assert next_serial(4294967295, 4294967295) == 0
        assert next_serial(0, 0) == 1
        # Half the circle ahead or more is not newer: count on from the previous one.
        assert next_serial(2**31, 0) == 1
        assert next_serial(2**31 - 1, 0) == 2**31 - 1
        # A clock past 2106 still gives a 32-bit serial.
        assert next_serial(2**32 + 5, None) == 5

    def test_serials_stay_in_32_bits(self) -> None:
        """Every serial next_serial gives fits the SOA field and is newer than the last."""
        previous = 4294967290
        for now in [4294967290, 4294967291, 1, 4294967295, 10**9, 0]:
            serial = next_serial(now, previous)
            assert 0 <= serial < 2**32
            assert serial != previous
            previous = serial

    @pytest.mark.parametrize(
        "banner",
        [
            b"# dnsmaster serial 4294967296 - x\n",
            b"# dnsmaster serial 99999999999999999999999999 - x\n",
            b"# dnsmaster serial " + b"9" * 5000 + b"\n",
            b"# dnsmaster serial " + b"0" * 5000 + b"1\n",
        ],
    )
    def test_banner_out_of_range(self, banner: bytes) -> None:
        """A banner serial no 32-bit SOA can hold is no previous serial, and no exception."""
        assert previous_serial(banner) is None
        assert next_serial(1000, previous_serial(banner)) == 1000

    def test_banner_at_the_limit(self) -> None:
        assert previous_serial(b"# dnsmaster serial 4294967295 x\n") == 4294967295
        assert previous_serial(b"# dnsmaster serial 0004294967295 x\n") == 4294967295

    def test_assemble_at_the_limit(self) -> None:
        """The last serial assembles (text and records agree); one past it wraps to 0."""
        src = compile_source("zones.x", b".example.com:1.2.3.4:a\n")
        for serial, stamp in [(4294967295, 4294967295), (2**32, 0)]:
            built = assemble([src], serial)
            assert built.serial == stamp
            assert compile_data(built.data, 1) == cdb.dumps(built.keys, built.values)
            assert b":%d:16384:" % stamp in built.data


class TestExpansion:
    def test_same_records_as_the_dot_lines(self) -> None:
        """data compiled at any mtime equals the zones compiled with the serial as mtime."""
        built = assemble([compile_source("zones.example", ZONE)], 1_700_000_000)
        expected = cdb_of(ZONE, 1_700_000_000)
        assert cdb.dumps(built.keys, built.values) == expected
        assert cdb_of(built.data, 5) == expected
        assert cdb_of(built.data, 2**33) == expected

    def test_real_tinydns_data_agrees(self, tmp_path: Path, tinydns_data_bin: str) -> None:
        """The real tinydns-data compiles our data into our data.cdb, at any mtime."""
        built = assemble([compile_source("zones.example", ZONE)], 1_700_000_000)
        (tmp_path / "data").write_bytes(built.data)
        os.utime(tmp_path / "data", (1, 1))
        subprocess.run([tinydns_data_bin], cwd=tmp_path, check=True)
        assert (tmp_path / "data.cdb").read_bytes() == cdb.dumps(built.keys, built.values)

    def test_every_soa_carries_the_serial(self) -> None:
        """No line of data leaves the serial to the mtime: every Z line has one."""
        built = assemble([compile_source("zones.example", ZONE)], 1_700_000_000)
        for line in built.data.split(b"\n"):
            assert not line.startswith(b".")
            if line.startswith(b"Z"):
                assert line.split(b":")[3] in (b"1700000000", b"77")

    def test_dot_line_becomes_z_amp_plus(self) -> None:
        """A . line with an IP becomes Z, & and + lines, traced to its source line."""
        text = compile_source("zones.x", b".example.com:192.0.2.1:a:300\n").text
        lines = text.replace(b"\0dnsmaster-serial\0", b"SERIAL").split(b"\n")
        assert lines[:5] == [
            b"# zones.x:1",
            b"# zones.x:1: .example.com:192.0.2.1:a:300",
            b"Zexample.com:a.ns.example.com:hostmaster.example.com:SERIAL:16384:2048:1048576"
            b":2560:2560",
            b"&example.com::a:300",
            b"+a.ns.example.com:192.0.2.1:300",
        ]

    def test_trailing_space_in_last_field_kept(self) -> None:
        """A field ending in a space keeps it: tinydns-data would strip it at line end."""
        built = assemble([compile_source("zones.x", b".a.example:1.2.3.4:y:::b :x\n")], 7)
        assert cdb_of(built.data, 1) == cdb_of(b".a.example:1.2.3.4:y:::b :x\n", 7)
        assert b"&a.example::y:::b :\n" in built.data

    def test_lines_traced_back(self) -> None:
        """Every data line can be traced to its zones file and line number."""
        built = assemble([compile_source("zones.example", ZONE)], 1)
        lines = built.data.split(b"\n")
        www = next(i for i, line in enumerate(lines) if line.startswith(b"+www."))
        marker = next(i for i in range(www, -1, -1) if lines[i].startswith(b"# zones.example:"))
        origin = int(lines[marker].split(b":")[1]) + (www - marker - 1)
        assert ZONE.split(b"\n")[origin - 1] == b"+www.example.com:192.0.2.10"

    def test_z_with_serial_kept_verbatim(self) -> None:
        """A Z line that has a serial is copied byte for byte."""
        text = compile_source("zones.x", b"Zexample.net:ns:hm:77:1:2:3:4:5\n").text
        assert b"Zexample.net:ns:hm:77:1:2:3:4:5\n" in text

    def test_no_final_newline(self) -> None:
        """A file without a final newline does not run into the next file."""
        a = compile_source("zones.a", b"+a.example:1.2.3.4")
        b = compile_source("zones.b", b"+b.example:1.2.3.5\n")
        data = assemble([a, b], 9).data
        assert b"+a.example:1.2.3.4\n# zones.b:1\n" in data


SCANNED = [
    b"",
    b"\n",
    b"+a:1.2.3.4",
    b"3a:x\n",
    b"6a:x",
    b"+a:1.2.3.4\n3a:x",
    b"+a:1.2.3.4\n 6a\n\n",
    b"+a:1.2.3.4\n+b:1\n6",
    b"+a:" + SERIAL_MARK + b"\n" + SERIAL_MARK,
    b"+a:" + SERIAL_MARK[:-1] + b"\n",
]


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("content", SCANNED)
def test_scan_in_c(content: bytes) -> None:
    """The C scan of a source (mark, 3/6 lines, line count) against the Python one."""
    fast = accel.compiler()
    assert fast is not None
    assert fast.scan(content, SERIAL_MARK) == _scan(content)


class TestOriginComments:
    """The ``# name:LINE`` comments can never carry a line break into data."""

    @pytest.mark.parametrize(
        "name",
        ["zones.a\n+evil.example:6.6.6.6", "zones.a\r\x1b[2J", "zones.\x00", "zones.\x85x"],
    )
    def test_control_characters_escaped(self, name: str) -> None:
        src = compile_source(name, b".example.com:1.2.3.4:a\n+www.example.com:1.2.3.5\n")
        data = assemble([src], 7).data
        comments = [line for line in data.split(b"\n") if line.startswith(b"# zones.")]
        assert comments
        for line in comments:
            assert not any(c < 0x20 or c == 0x7F for c in line), line
        assert b"evil" not in b"".join(
            line for line in data.split(b"\n") if not line.startswith(b"#")
        )
        # Nothing but the two lines written reaches tinydns-data.
        keys = {k for k, _ in cdb.CdbReader(compile_data(data, 1)).items()}
        assert b"\x04evil\x07example\x00" not in keys

    def test_ordinary_names_kept(self) -> None:
        """A name without control characters is written as it is, backslash and all."""
        for name in ["zones.example.com", "zones.a\\b", "zones.\u00e9t\u00e9"]:
            data = compile_source(name, b"+a:1.2.3.4\n").text
            assert data.startswith(b"# " + name.encode() + b":1\n")


class TestErrors:
    def test_fatal_and_lint_errors_all_reported(self) -> None:
        """Every refused line and every certain mistake, with its line number."""
        found = check_source("zones.x", b"+a:1.2.3\nXbad\n+" + b"a" * 64 + b".x:1.2.3.4\n:b:2:c\n")
        assert [(e.line, e.reason[:28]) for e in found.errors] == [
            (1, "IP address '1.2.3' does not "),
            (2, "unrecognized leading charact"),
            (3, "name: label longer than 63 b"),
            (4, "type 2 is NS, which a generi"),
        ]
        assert found.compiled is None

    def test_name_too_long_for_soa_contact(self) -> None:
        """A zone name that fits a . line but not hostmaster.<zone> is refused."""
        name = b".".join([b"a" * 60] * 4)  # 245 bytes in wire form
        with pytest.raises(DataErrors) as caught:
            compile_source("zones.x", b"." + name + b":1.2.3.4:a\n")
        assert "hostmaster" in caught.value.errors[0].reason

    def test_strict_turns_warnings_into_errors(self) -> None:
        """Warnings pass by default and fail with strict."""
        assert compile_source("zones.x", b"+a:1.2.3.4:300s\n").warnings
        with pytest.raises(DataErrors):
            compile_source("zones.x", b"+a:1.2.3.4:300s\n", strict=True)

    def test_placeholder_refused(self) -> None:
        """The internal serial placeholder cannot be smuggled in by a source."""
        with pytest.raises(DataErrors):
            compile_source("zones.x", b"'a:\0dnsmaster-serial\0\n")


class TestSources:
    @pytest.mark.parametrize(
        "name",
        [
            "zones.a~",
            ".zones.a.swp",
            "#zones.a#",
            "zones.a.tmp",
            "zones.a.bak",
            "zones.a.orig",
            "zones.a.rej",
            ".hidden",
            "data",
            "zones.",
        ],
    )
    def test_not_sources(self, name: str) -> None:
        """Editor leftovers and other files are never data."""
        assert not is_source(name)
        assert why_skipped(name)

    def test_order(self) -> None:
        """header first, then zones.* in byte order of name."""
        assert source_order(["zones.b", "zones.B", "header", "zones.a", "x"]) == [
            "header",
            "zones.B",
            "zones.a",
            "zones.b",
        ]


class TestRecordsCache:
    def test_restamp_equals_fresh_compile(self) -> None:
        """Re-stamping cached records with a new serial equals compiling with it."""
        recs = compile_lines(split_lines(ZONE), 0)
        fresh = compile_lines(split_lines(ZONE), 42)
        assert recs.with_serial(42) == fresh.values
