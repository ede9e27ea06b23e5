"""The master's own checkup, in process: the lines doctor prints for the config,
the zones, the output directory and the built data, without any slave."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dnsmaster import config
from dnsmaster.config import Config
from dnsmaster.master.checkup import Check, Findings, master_checks, writable
from tests.lab.daemonrun import config_text


def _config(tmp_path: Path, zones: Path) -> Config:
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=zones,
            output=tmp_path / "out",
            state=tmp_path / "out" / "state.json",
            slaves=[{"name": "l", "transport": "local", "root": str(tmp_path / "l")}],
        )
    )
    (tmp_path / "out").mkdir(exist_ok=True)
    return config.load(path)


def _lines(checks: list[Check], group: str) -> list[str]:
    return [c.line() for c in checks if c.group == group]


class TestCheck:
    def test_line_carries_why_and_fix(self) -> None:
        """A failure reads ``FAIL group: what: why; fix: how``, an OK only its what."""
        assert Check("output", "OK", "fine").line() == "OK   output: fine"
        failed = Check("zones", "FAIL", "/z", "cannot read", "mkdir -p /z")
        assert failed.line() == "FAIL zones: /z: cannot read; fix: mkdir -p /z"
        assert failed.failed
        assert not Check("a", "WARN", "b").failed


class TestMasterChecks:
    def test_missing_zones_fail_with_mkdir(self, tmp_path: Path) -> None:
        """A zones directory that is not there: a failure whose fix creates it."""
        zones = tmp_path / "zones"
        zones.mkdir()
        cfg = _config(tmp_path, zones)
        zones.rmdir()
        checks, _ = master_checks(cfg)
        (line,) = _lines(checks, "zones")
        assert line.startswith(f"FAIL zones: {zones}: cannot read: "), line
        assert line.endswith(f"; fix: mkdir -p {zones}, or set zones in {cfg.path}"), line

    def test_empty_zones_warn(self, tmp_path: Path) -> None:
        """No header and no zones.* file: a warning, the build would publish nothing."""
        zones = tmp_path / "zones"
        zones.mkdir()
        checks, build = master_checks(_config(tmp_path, zones))
        (line,) = _lines(checks, "zones")
        assert line.startswith(f"WARN zones: {zones}: no header or zones.* files"), line
        assert build is None
        assert "WARN output: data: " in "\n".join(_lines(checks, "output"))

    def test_built_data_is_read(self, tmp_path: Path) -> None:
        """The data in the output directory is the build every slave is judged by."""
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "zones.a").write_text("+a.example.com:192.0.2.1\n")
        cfg = _config(tmp_path, zones)
        data = b"+a.example.com:192.0.2.1:86400\n"
        (cfg.output / "data").write_bytes(data)
        checks, build = master_checks(cfg)
        assert build is not None
        assert build.sha256 == hashlib.sha256(data).hexdigest()
        assert build.serial is None
        assert _lines(checks, "output")[-1] == (
            f"OK   output: data built: no dnsmaster banner, 0 zones, sha256 {build.sha256[:16]}"
        )


class TestWritable:
    def test_a_file_is_no_directory(self, tmp_path: Path) -> None:
        """A file where a directory should be: one failure, pointing at the config."""
        found = Findings("output")
        (tmp_path / "f").write_text("")
        assert not writable(found, "directory", tmp_path / "f")
        (check,) = found.checks
        assert check.line() == (
            f"FAIL output: directory: {tmp_path / 'f'} is not a directory; "
            "fix: point the config at a directory"
        )

    def test_missing_directory_says_mkdir(self, tmp_path: Path) -> None:
        """A missing directory: the fix creates it."""
        found = Findings("output")
        assert not writable(found, "directory", tmp_path / "nope")
        assert found.checks[0].fix == f"mkdir -p {tmp_path / 'nope'}"
