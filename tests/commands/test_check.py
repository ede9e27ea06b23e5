"""``dnsmaster check --zones DIR [--strict]``: every error and warning, with file and line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dnsmaster.commands.main import main
from dnsmaster.exits import EXIT_DATA, EXIT_OK, EXIT_SYSTEM, EXIT_USAGE

GOOD = b".example.com:192.0.2.1:a\n+www.example.com:192.0.2.2\n"
LONG_ZONE = b".".join([b"a" * 60] * 4)  # 245 bytes in wire form: no room for hostmaster.


@dataclass(frozen=True, slots=True)
class Result:
    """Exit status and output of one ``dnsmaster check``."""

    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.splitlines()


Check = Callable[..., Result]


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    return d


@pytest.fixture
def check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Check:
    """Run ``dnsmaster check`` in-process; no configuration file is consulted."""
    monkeypatch.delenv("DNSMASTER_CONFIG", raising=False)

    def run(*args: str | Path) -> Result:
        status = main(["check", *map(str, args)])
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return run


# (line, message fragment): lines the checker calls errors (and never publishes).
ERRORS = [
    (b"+b.example.com", "no IP address: tinydns-data publishes nothing"),
    (b"=b.example.com:", "no IP address: tinydns-data publishes nothing"),
    (b"+b.example.com:192.0.2", "IP address '192.0.2' does not parse"),
    (b".b.example.com:localhost:a", "IP address 'localhost' does not parse"),
    (b"@b.example.com: 1.2.3.4:mx", "IP address ' 1.2.3.4' does not parse"),
    (b"+b.example.com:1.2.3.256", "IP address '1.2.3.256' has an octet over 255"),
    (b"Xb.example.com", "unrecognized leading character 'X'"),
    (b" +b.example.com:1.2.3.4", "unrecognized leading character ' '"),
    (b"\r", "unrecognized leading character"),
    (b":b.example.com:252:x", "type 252 is AXFR, which a generic line may not define"),
    (b":b.example.com:0:x", "type 0 is 0"),
    (b":b.example.com:6:x", "type 6 is SOA"),
    (b":b.example.com:2:x", "type 2 is NS"),
    (b":b.example.com:65538:x", "type 65538 is NS"),
    (b":b.example.com:5:x", "type 5 is CNAME"),
    (b":b.example.com:12:x", "type 12 is PTR"),
    (b":b.example.com:15:x", "type 15 is MX"),
    (b"+" + b"a" * 64 + b".example.com:1.2.3.4", "name: label longer than 63 bytes"),
    (b"+" + b".".join([b"a" * 63] * 4) + b":1.2.3.4", "name: name longer than 255 bytes"),
    (b"Cb.example.com:" + b"t" * 64, "target: label longer than 63 bytes"),
    (b"&b.example.com:1.2.3.4:" + b"n" * 64, "name server: label longer than 63 bytes"),
    (b"@b.example.com::" + b"m" * 64, "mail exchanger: label longer than 63 bytes"),
    (b"Zb.example.com:" + b"p" * 64 + b":hm.example.com", "primary name server: label longer"),
    (b"Zb.example.com:ns.example.com:" + b"h" * 64, "contact address: label longer"),
    (b"Sb.example.com:1.2.3.4:sip", "SRV line without a port"),
    (b"." + LONG_ZONE + b":1.2.3.4:a.b", "too long for its SOA contact hostmaster.<zone>"),
    (b"'b.example.com:\0dnsmaster-serial\0", "contains dnsmaster's serial placeholder"),
    # Labels whose length no longer fits a byte were once an uncaught IndexError.
    (b"+" + b"a" * 256 + b".example.com:1.2.3.4", "name: label longer than 63 bytes"),
    (b"+" + b"a" * 1000 + b":1.2.3.4", "name: label longer than 63 bytes"),
    (b"+" + b"\\101" * 300 + b":1.2.3.4", "name: label longer than 63 bytes"),
    (b"Cb.example.com:" + b"t" * 300, "target: label longer than 63 bytes"),
    (b"'" + b"t" * 300 + b":text", "name: label longer than 63 bytes"),
    (b"+\x1b[2J" + b"e" * 300 + b":1.2.3.4", "label longer than 63 bytes (\\x1b[2Jeee"),
    (b"\x1b[2J", "unrecognized leading character '\\x1b'"),
    (b":b.example.com:0\x1b:x", "type 0\\x1b is 0"),
]

# (line, message fragment): lines that compile as written but probably are not meant so.
WARNINGS = [
    (b"+b.example.com:1.2.3.4\r", "line ends with a carriage return"),
    (b"+b.example.com:1.2.3.4:300:::extra", "1 field(s) after the last one"),
    (b"+b.example.com:1.2.3.4x", "junk after IP address '1.2.3.4x' is ignored"),
    (b"+b.example.com:010.0.0.1", "IP address '010.0.0.1' has leading zeros"),
    (b"+b.example.com:1.2.3.4:abc", "TTL 'abc' is not a number; the default is used"),
    (b"+b.example.com:1.2.3.4:300s", "junk after TTL '300s' is ignored (read as 300)"),
    (b"+b.example.com:1.2.3.4:4294967296", "TTL 4294967296 is too large and wraps to 0"),
    (b"@b.example.com::mx:70000", "distance 70000 is too large and wraps to 4464"),
    (b"Zb.example.com:ns:hm:12x", "junk after serial '12x' is ignored (read as 12)"),
    (b"Zb.example.com:ns:hm::x", "refresh 'x' is not a number"),
    (b"Sb.example.com:1.2.3.4:sip:70000", "port 70000 is too large and wraps to 4464"),
    (b":b.example.com:65552:x", "type 65552 is too large and wraps to 16"),
    (b"+b.example.com:1.2.3.4::4000000060ABCDEF", "has uppercase hex digits"),
    (b"+b.example.com:1.2.3.4::40", "timestamp '40' is not 16 lowercase hex digits"),
    (b"+b.example.com:1.2.3.4:::abc", "location 'abc' is not one or two letters"),
    (b"%ab:1.2x.3", "IP prefix '1.2x.3' is not up to four dotted numbers"),
    (b"%a1", "location 'a1' is not one or two letters"),
    (b"+b.example.com:1.2.3.4:" + b"9" * 5000, "TTL 999999999999... (5000 digits) is too large"),
    (b"+b.example.com:1.2.3.4:%d" % 10**30, "wraps to 1073741824"),
    (b"+b.example.com:1.2.3.4:\x1b[2J", "TTL '\\x1b[2J' is not a number"),
]


def _id(case: tuple[bytes, str]) -> str:
    return case[1][:40]


class TestClean:
    def test_ok(self, check: Check, zones: Path) -> None:
        """A clean directory: exit 0, a summary on stdout, nothing on stderr."""
        (zones / "header").write_bytes(b"# header\n")
        (zones / "zones.example.com").write_bytes(GOOD)
        got = check("--zones", zones)
        assert got.status == EXIT_OK
        assert got.err == ""
        assert got.out == "ok: 2 files, 3 lines, 0 errors, 0 warnings\n"

    def test_strict_clean(self, check: Check, zones: Path) -> None:
        """--strict passes a directory without warnings."""
        (zones / "zones.example.com").write_bytes(GOOD)
        assert check("--zones", zones, "--strict").status == EXIT_OK

    def test_empty_directory(self, check: Check, zones: Path) -> None:
        """An empty zones directory is clean (and publishes an empty database)."""
        got = check("--zones", zones)
        assert (got.status, got.out) == (EXIT_OK, "ok: 0 files, 0 lines, 0 errors, 0 warnings\n")

    def test_writes_nothing(self, check: Check, zones: Path) -> None:
        """check leaves the zones directory as it was, good or bad."""
        (zones / "zones.a").write_bytes(GOOD)
        (zones / "zones.b").write_bytes(b"+bad\n")
        check("--zones", zones)
        assert sorted(p.name for p in zones.iterdir()) == ["zones.a", "zones.b"]


class TestErrors:
    @pytest.mark.parametrize(("line", "message"), ERRORS, ids=map(_id, ERRORS))
    def test_error(self, check: Check, zones: Path, line: bytes, message: str) -> None:
        """Each kind of error is reported as zones.X:LINE: error: ... and fails the check."""
        (zones / "zones.example.com").write_bytes(GOOD + line + b"\n")
        got = check("--zones", zones)
        assert got.status == EXIT_DATA
        prefix = f"{zones / 'zones.example.com'}:3: error: "
        errors = [e for e in got.lines if e.startswith(prefix)]
        assert errors, got.err
        assert any(message in e for e in errors), got.err
        assert got.out.startswith("FAILED: 1 files, 3 lines, ")

    def test_no_control_bytes_reach_the_terminal(self, check: Check, zones: Path) -> None:
        """ESC, CR and NUL from zone content are escaped in every line check prints."""
        (zones / "zones.a").write_bytes(
            b"+\x1b]0;owned\x07" + b"a" * 300 + b":1.2.3.4\n"
            b"\x1b[2J\n"
            b"+b:1.2.3.4:\r\x00\x1b\n"
            b"+c:1.2.3\x1b[31m\n"
            b":d:0\x1b:x\n"
        )
        got = check("--zones", zones, "--strict")
        assert got.status == EXIT_DATA
        assert len(got.lines) >= 5, got.err
        for text in (got.out, got.err):
            assert not any(c in text for c in "\x1b\x00\r\x07"), text

    def test_all_reported(self, check: Check, zones: Path) -> None:
        """Every bad line is reported, not just the first one tinydns-data would stop at."""
        (zones / "zones.a").write_bytes(b"Xone\n+ok:1.2.3.4\nYtwo\n:t:2:x\n+b\n")
        got = check("--zones", zones)
        assert got.status == EXIT_DATA
        assert [line.split(": ")[0].rsplit(":", 1)[1] for line in got.lines] == [
            "1",
            "3",
            "4",
            "5",
        ]
        assert got.out == "FAILED: 1 files, 5 lines, 4 errors, 0 warnings\n"

    def test_order_and_files(self, check: Check, zones: Path) -> None:
        """Problems come in source order (header, then zones.* by name), then line order."""
        (zones / "zones.b").write_bytes(b"+b:1.2.3.4:1s\n+b\n")
        (zones / "zones.a").write_bytes(b"+a\n+a:1.2.3.4:1s\n")
        (zones / "header").write_bytes(b"+h:1.2.3.4:x\n")
        got = check("--zones", zones)
        where = [line.split(": ")[0] for line in got.lines]
        assert where == [
            f"{zones / 'header'}:1",
            f"{zones / 'zones.a'}:1",
            f"{zones / 'zones.a'}:2",
            f"{zones / 'zones.b'}:1",
            f"{zones / 'zones.b'}:2",
        ]
        assert got.out == "FAILED: 3 files, 5 lines, 2 errors, 3 warnings\n"

    def test_error_and_warning_on_one_line(self, check: Check, zones: Path) -> None:
        """A line can carry an error and warnings; each is its own line."""
        (zones / "zones.a").write_bytes(b"+a:1.2.3.999:30s\r\n")
        got = check("--zones", zones)
        kinds = sorted(line.split(": ")[1] for line in got.lines)
        assert kinds == ["error", "warning", "warning"]


class TestWarnings:
    @pytest.mark.parametrize(("line", "message"), WARNINGS, ids=map(_id, WARNINGS))
    def test_warning(self, check: Check, zones: Path, line: bytes, message: str) -> None:
        """Each kind of warning is reported as zones.X:LINE: warning: ... and passes."""
        (zones / "zones.example.com").write_bytes(GOOD + line + b"\n")
        got = check("--zones", zones)
        prefix = f"{zones / 'zones.example.com'}:3: warning: "
        assert [e for e in got.lines if not e.startswith(prefix)] == [], got.err
        assert any(message in e for e in got.lines), got.err
        assert got.status == EXIT_OK
        assert got.out.startswith("ok: 1 files, 3 lines, 0 errors, ")

    @pytest.mark.parametrize(("line", "message"), WARNINGS, ids=map(_id, WARNINGS))
    def test_strict(self, check: Check, zones: Path, line: bytes, message: str) -> None:
        """--strict turns the same warning into an error and fails."""
        (zones / "zones.example.com").write_bytes(GOOD + line + b"\n")
        got = check("--zones", zones, "--strict")
        prefix = f"{zones / 'zones.example.com'}:3: error (strict): "
        assert any(e.startswith(prefix) and message in e for e in got.lines), got.err
        assert not any(": warning: " in e for e in got.lines)
        assert got.status == EXIT_DATA
        assert got.out.startswith("FAILED: 1 files, 3 lines, 0 errors, ")

    def test_crlf_file(self, check: Check, zones: Path) -> None:
        """A CRLF file warns once per line: the CR would end up in the data."""
        (zones / "zones.a").write_bytes(GOOD.replace(b"\n", b"\r\n"))
        got = check("--zones", zones)
        assert got.status == EXIT_OK
        assert len([e for e in got.lines if "carriage return" in e]) == 2


class TestSkipped:
    @pytest.mark.parametrize(
        "name", ["zones.a~", ".zones.a.swp", "#zones.a#", "zones.a.bak", "zones.a.tmp"]
    )
    def test_backup_files(self, check: Check, zones: Path, name: str) -> None:
        """Editor leftovers are reported as skipped and never checked."""
        (zones / "zones.a").write_bytes(GOOD)
        (zones / name).write_bytes(b"Xbroken\n")
        got = check("--zones", zones)
        assert got.status == EXIT_OK
        assert len(got.lines) == 1
        assert got.lines[0].startswith(f"{zones / name}: skipped: ")
        assert got.out.startswith("ok: 1 files, ")

    def test_unrelated_files_ignored(self, check: Check, zones: Path) -> None:
        """Files that are not header or zones.* are silently not data."""
        (zones / "zones.a").write_bytes(GOOD)
        (zones / "README").write_bytes(b"Xnot data\n")
        (zones / "sub").mkdir()
        got = check("--zones", zones)
        assert (got.status, got.err) == (EXIT_OK, "")


class TestSystemErrors:
    def test_missing_directory(self, check: Check, tmp_path: Path) -> None:
        """A missing zones directory: exit 111 and a message naming it."""
        missing = tmp_path / "nowhere"
        got = check("--zones", missing)
        assert got.status == EXIT_SYSTEM
        assert got.err == f"dnsmaster: {missing}: zones directory does not exist\n"
        assert got.out == ""

    def test_not_a_directory(self, check: Check, tmp_path: Path) -> None:
        """--zones naming a file: exit 111."""
        (tmp_path / "file").write_bytes(GOOD)
        got = check("--zones", tmp_path / "file")
        assert got.status == EXIT_SYSTEM
        assert "is not a directory" in got.err

    def test_no_zones_no_config(self, check: Check) -> None:
        """Neither --zones nor a configuration: a usage error (exit 2)."""
        got = check()
        assert got.status == EXIT_USAGE
        assert "no configuration" in got.err


def test_config_file_size_cap(check: Check, zones: Path, tmp_path: Path) -> None:
    """With the configuration's zones, its max_file_size applies, as in the build."""
    from tests.lab.daemonrun import config_text  # noqa: PLC0415

    (zones / "zones.big").write_bytes(GOOD * 20)
    config = tmp_path / "dnsmaster.toml"
    (tmp_path / "known_hosts").touch()
    slave = {"name": "ns2", "host": "127.0.0.1"}
    config.write_text(
        config_text(
            zones=zones,
            output=tmp_path,
            state=tmp_path,
            slaves=[slave],
            top={"max_file_size": 100, "known_hosts": tmp_path / "known_hosts"},
        )
    )
    got = check("--config", config)
    assert got.status == EXIT_SYSTEM, got
    assert "larger than the cap of 100 bytes" in got.err
    # the same file passes under the default cap
    assert check("--zones", zones).status == EXIT_OK
