"""The build: zones directory in, data and data.cdb out, or nothing changed at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from dnsmaster.core.cdb import CdbReader
from dnsmaster.errors import BuildError, DataErrors
from dnsmaster.master.build import Builder
from tests.conftest import IN_CI
from tests.lab.clock import Clock

GOOD = b".example.com:192.0.2.1:a\n+www.example.com:192.0.2.2\n"


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    (d / "header").write_bytes(b"# shared header\n")
    (d / "zones.example.com").write_bytes(GOOD)
    (d / "zones.example.net").write_bytes(b"=host.example.net:192.0.2.3\n")
    return d


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    d.mkdir()
    return d


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make ``directory`` refuse new files, even for root (chattr +i)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    done = chattr and subprocess.run([chattr, "+i", str(directory)], check=False).returncode == 0
    if not done:
        reason = "cannot make a directory immutable here (chattr +i)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield
    finally:
        subprocess.run([str(chattr), "-i", str(directory)], check=True)


class TestBuild:
    def test_writes_data_and_cdb(self, zones: Path, out: Path) -> None:
        """data holds header then zones files in name order; data.cdb has the records."""
        result = Builder(zones, out, clock=Clock(1_700_000_000)).build()
        data = (out / "data").read_bytes()
        assert data.startswith(b"# dnsmaster serial 1700000000 ")
        assert data.index(b"# header:1") < data.index(b"# zones.example.com:1")
        assert data.index(b"# zones.example.com:1") < data.index(b"# zones.example.net:1")
        assert result.serial == 1_700_000_000
        assert result.sources == ("header", "zones.example.com", "zones.example.net")
        reader = CdbReader((out / "data.cdb").read_bytes())
        assert reader.get(b"\x03www\x07example\x03com\x00") == (
            b"\x00\x01=" + (86400).to_bytes(4, "big") + bytes(8) + bytes([192, 0, 2, 2])
        )
        assert result.records == len(reader)
        assert oct((out / "data.cdb").stat().st_mode & 0o777) == "0o644"

    def test_ipv6_int_changed_between_builds(self, zones: Path, out: Path) -> None:
        """A reload's ipv6_int applies to sources already compiled, in memory and on disk."""
        (zones / "zones.example.org").write_bytes(
            b"6v6.example.org:20010db8000000000000000000000001\n"
        )
        builder = Builder(zones, out, clock=Clock(1_700_000_000))
        builder.build()
        assert b".ip6.int:" in (out / "data").read_bytes()
        builder.use_ipv6_int(False)
        builder.build()
        data = (out / "data").read_bytes()
        assert b".ip6.int:" not in data
        assert b".ip6.arpa:" in data
        builder.use_ipv6_int(True)
        builder.build()
        assert b".ip6.int:" in (out / "data").read_bytes()

    def test_serial_written_into_every_soa(self, zones: Path, out: Path) -> None:
        """Every . line gets the build's serial, whatever the data file's mtime."""
        Builder(zones, out, clock=Clock(1_700_000_123)).build()
        soa = CdbReader((out / "data.cdb").read_bytes()).get_all(b"\x07example\x03com\x00")[0]
        assert soa[:2] == b"\x00\x06"
        assert int.from_bytes(soa[-20:-16], "big") == 1_700_000_123

    def test_serial_always_increases(self, zones: Path, out: Path) -> None:
        """Two builds in one second (or with the clock set back) get different serials."""
        clock = Clock(1_700_000_000)
        first = Builder(zones, out, clock=clock).build()
        second = Builder(zones, out, clock=clock).build()
        clock.now -= 3600
        third = Builder(zones, out, clock=clock).build()
        assert (first.serial, second.serial, third.serial) == (
            1_700_000_000,
            1_700_000_001,
            1_700_000_002,
        )

    def test_matches_real_tinydns_data(self, zones: Path, out: Path, tinydns_data_bin: str) -> None:
        """The data we write, compiled by the real tinydns-data, gives our data.cdb."""
        Builder(zones, out).build()
        ours = (out / "data.cdb").read_bytes()
        (out / "data.cdb").unlink()
        os.utime(out / "data", (12345, 12345))  # the mtime must not matter any more
        subprocess.run([tinydns_data_bin], cwd=out, check=True)
        assert (out / "data.cdb").read_bytes() == ours

    def test_cache_recompiles_only_changed_files(self, zones: Path, tmp_path: Path) -> None:
        """A rebuild compiles only the file that changed, and equals a fresh build."""
        warm_out, fresh_out = tmp_path / "warm", tmp_path / "fresh"
        warm_out.mkdir()
        fresh_out.mkdir()
        clock = Clock(1_700_000_000)
        warm = Builder(zones, warm_out, clock=clock)
        assert warm.build().recompiled == ("header", "zones.example.com", "zones.example.net")
        (zones / "zones.example.net").write_bytes(b"=host.example.net:192.0.2.4\n")
        clock.now += 60
        assert warm.build().recompiled == ("zones.example.net",)
        Builder(zones, fresh_out, clock=clock).build()
        assert snapshot(warm_out) == snapshot(fresh_out)

    def test_changed_names_alone_are_statted(
        self, zones: Path, out: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Told which files changed, a rebuild stats only those (and files it never
        compiled): a change it was not told of is not seen, one it was is."""
        monkeypatch.setattr("dnsmaster.master.compiling.RACY_NS", 0)  # stats trusted
        builder = Builder(zones, out)
        builder.build()
        (zones / "zones.example.net").write_bytes(b"=host.example.net:192.0.2.4\n")
        (zones / "zones.example.org").write_bytes(b"=host.example.org:192.0.2.5\n")
        result = builder.build(changed=())
        assert result.recompiled == ("zones.example.org",)  # new: not in memory
        assert b"192.0.2.4" not in (out / "data").read_bytes()
        result = builder.build(changed={"zones.example.net"})
        assert result.recompiled == ("zones.example.net",)
        assert b"192.0.2.4" in (out / "data").read_bytes()

    def test_deleted_file_leaves_the_build(self, zones: Path, out: Path) -> None:
        """A zones file that was removed is no longer published."""
        builder = Builder(zones, out)
        builder.build()
        (zones / "zones.example.net").unlink()
        result = builder.build()
        assert "zones.example.net" not in result.sources
        assert b"host.example.net" not in (out / "data").read_bytes()

    def test_editor_files_skipped_and_reported(self, zones: Path, out: Path) -> None:
        """Backups and swap files are not published, and the build says so."""
        (zones / "zones.example.com~").write_bytes(b"+old.example.com:192.0.2.9\n")
        (zones / ".zones.example.com.swp").write_bytes(b"\0binary swap")
        (zones / "#zones.example.com#").write_bytes(b"+auto.example.com:192.0.2.9\n")
        result = Builder(zones, out).build()
        assert dict(result.skipped) == {
            "#zones.example.com#": "editor autosave file",
            ".zones.example.com.swp": "hidden file (editor swap or temp file)",
            "zones.example.com~": "editor backup or temp file",
        }
        assert b"192.0.2.9" not in (out / "data").read_bytes()


class TestIsCurrent:
    def test_current_after_build(self, zones: Path, out: Path) -> None:
        """The data just built comes from the sources there now."""
        builder = Builder(zones, out)
        assert not builder.is_current()
        builder.build()
        assert builder.is_current()
        assert Builder(zones, out).is_current()  # a new process sees it too (banner)

    def test_not_current_after_any_source_change(self, zones: Path, out: Path) -> None:
        """An edit, a new file or a deleted file each make the data stale."""
        builder = Builder(zones, out)
        builder.build()
        for change in (
            lambda: (zones / "zones.example.com").write_bytes(b"+x.example.com:1.2.3.4\n"),
            lambda: (zones / "zones.new").write_bytes(b"+y.example.com:1.2.3.5\n"),
            (zones / "zones.new").unlink,
        ):
            change()
            assert not builder.is_current()
            builder.build()
            assert builder.is_current()

    def test_not_current_without_cdb(self, zones: Path, out: Path) -> None:
        """data without its data.cdb needs a build."""
        Builder(zones, out).build()
        (out / "data.cdb").unlink()
        assert not Builder(zones, out).is_current()


class TestPlan:
    def test_plan_is_what_build_writes(self, zones: Path, out: Path) -> None:
        """plan() returns the data a build at the same time would write, and writes nothing."""
        clock = Clock(1_700_000_000)
        planned = Builder(zones, out, clock=clock).plan()
        assert list(out.iterdir()) == []
        Builder(zones, out, clock=clock).build()
        assert (out / "data").read_bytes() == planned

    def test_plan_after_a_build_has_the_next_serial(self, zones: Path, out: Path) -> None:
        """Planned after a build in the same second, the serial still goes up."""
        clock = Clock(1_700_000_000)
        Builder(zones, out, clock=clock).build()
        before = snapshot(out)
        planned = Builder(zones, out, clock=clock).plan()
        assert planned.startswith(b"# dnsmaster serial 1700000001 ")
        assert snapshot(out) == before

    def test_plan_raises_on_errors(self, zones: Path, out: Path) -> None:
        """A line tinydns-data refuses raises DataErrors, as build() does."""
        (zones / "zones.example.net").write_bytes(b"Xbad\n")
        with pytest.raises(DataErrors):
            Builder(zones, out).plan()
        assert list(out.iterdir()) == []


class TestNothingChangesOnError:
    def good_build(self, zones: Path, out: Path) -> dict[str, bytes]:
        Builder(zones, out).build()
        return snapshot(out)

    @pytest.mark.parametrize("where", ["cdb", "data"])
    def test_out_of_memory_leaves_no_temp_file(
        self, zones: Path, out: Path, monkeypatch: pytest.MonkeyPatch, where: str
    ) -> None:
        """Out of memory in either writer: an error, the old pair, and no temp file
        of the other writer left behind (each is the size of the data)."""
        before = self.good_build(zones, out)
        (zones / "zones.example.net").write_bytes(b"+new.example.net:192.0.2.6\n")

        def no_memory(*_: object, **__: object) -> None:
            raise MemoryError

        if where == "cdb":
            monkeypatch.setattr("dnsmaster.core.cdb.write_pieces", no_memory)
        else:  # the data thread hashes data before it stages it
            hashing = SimpleNamespace(sha256=no_memory)
            monkeypatch.setattr("dnsmaster.master.output.hashlib", hashing)
        with pytest.raises(BuildError, match="out of memory"):
            Builder(zones, out).build()
        assert snapshot(out) == before
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".data")) == []

    def test_bad_line(self, zones: Path, out: Path) -> None:
        """A line tinydns-data refuses fails the build with file and line."""
        before = self.good_build(zones, out)
        (zones / "zones.example.net").write_bytes(b"+ok.example.net:192.0.2.5\nXbad\n")
        with pytest.raises(DataErrors) as caught:
            Builder(zones, out).build()
        [error] = caught.value.errors
        assert (error.file, error.line) == ("zones.example.net", 2)
        assert "unrecognized leading character" in error.reason
        assert snapshot(out) == before

    def test_every_error_of_every_file_reported(self, zones: Path, out: Path) -> None:
        """All bad lines are named, not just the first."""
        before = self.good_build(zones, out)
        (zones / "zones.example.com").write_bytes(b"+a.example.com:1.2.3\n:x:2:y\n")
        (zones / "zones.example.net").write_bytes(b"+" + b"a" * 64 + b".example.net:1.2.3.4\n")
        with pytest.raises(DataErrors) as caught:
            Builder(zones, out).build()
        where = [(e.file, e.line) for e in caught.value.errors]
        assert where == [
            ("zones.example.com", 1),
            ("zones.example.com", 2),
            ("zones.example.net", 1),
        ]
        assert "label longer than 63 bytes" in caught.value.errors[2].reason
        assert snapshot(out) == before

    def test_unreadable_file(self, zones: Path, out: Path) -> None:
        """A zones file that cannot be read fails the build and names it."""
        before = self.good_build(zones, out)
        (zones / "zones.broken").symlink_to(zones / "nowhere")
        with pytest.raises(BuildError) as caught:
            Builder(zones, out).build()
        assert caught.value.path == str(zones / "zones.broken")
        assert caught.value.reason == "cannot read: file does not exist"
        assert snapshot(out) == before

    def test_missing_zones_directory(self, tmp_path: Path, out: Path) -> None:
        """A zones directory that is not there fails before anything is written."""
        with pytest.raises(BuildError) as caught:
            Builder(tmp_path / "nope", out).build()
        assert caught.value.reason == "zones directory does not exist"
        assert snapshot(out) == {}

    def test_missing_output_directory(self, zones: Path, tmp_path: Path) -> None:
        """An output directory that is not there is an error, not created silently."""
        with pytest.raises(BuildError) as caught:
            Builder(zones, tmp_path / "nope").build()
        assert caught.value.reason == "output directory does not exist"

    def test_unwritable_output(self, zones: Path, out: Path) -> None:
        """An output directory that refuses writes keeps the old data and data.cdb."""
        before = self.good_build(zones, out)
        (zones / "zones.example.net").write_bytes(b"=host.example.net:192.0.2.77\n")
        with unwritable(out), pytest.raises(BuildError) as caught:
            Builder(zones, out).build()
        assert caught.value.reason in {
            "output directory is not writable",
            "cannot write: permission denied",
            "cannot write: access denied",
        }
        assert snapshot(out) == before
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    def test_warnings_fail_only_when_strict(self, zones: Path, out: Path) -> None:
        """Warnings are published by default and refused with strict."""
        (zones / "zones.example.net").write_bytes(b"+host.example.net:192.0.2.3:300s\n")
        result = Builder(zones, out).build()
        assert [(w.file, w.line) for w in result.warnings] == [("zones.example.net", 1)]
        before = snapshot(out)
        with pytest.raises(DataErrors):
            Builder(zones, out, strict=True).build()
        assert snapshot(out) == before
