"""The build cache: a new process reads back what an earlier one compiled, or
compiles again; it never trusts an entry it cannot verify.

The corruption tests damage a real entry written by a real build (truncation, a
bit flipped in each region, a foreign header, an entry under another source's
name) and judge the next build by what it logs, what it compiles, and the bytes
of data and data.cdb, which must equal a build without any cache. The crash tests
SIGKILL a real ``dnsmaster build`` process in the middle of writing an entry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb
from dnsmaster.core.makedata import assemble, compile_source, previous_serial
from dnsmaster.core.sources import is_source, source_order
from dnsmaster.errors import DataError, DataErrors
from dnsmaster.master import buildcache
from dnsmaster.master.build import Builder, BuildResult
from dnsmaster.master.buildcache import BuildCache, Ready, Rejected, decode, encode, entry_name
from dnsmaster.master.zones import ZonesDir
from tests.conftest import IN_CI, require_root
from tests.lab.daemonrun import PROJECT

NOW = 1_700_000_000
ENV = dict(os.environ, PYTHONPATH=str(PROJECT))

#: Every kind of line whose compile keeps more than records: a ``.`` line (text
#: stamped with the serial), a ``Z`` line without a serial (an SOA record stamped),
#: IPv6 lines (expanded, traced back), a warning, escapes and bytes that are not UTF-8.
RICH = (
    b"# caf\xc3\xa9 \xff comment\n"
    b".example.com:192.0.2.1:a:300\n"
    b"Zexample.org:ns.example.org:hm.example.org.\n"
    b"+www.example.com:192.0.2.2:99999999999\n"
    b"6v6.example.com:20010db80000000000000000000000ab:600\n"
    b"3h.example.com:20010db8000000000000000000000001\n"
    b"'t.example.com:a\\072b\\300\n"
    b"@example.com::mx.example.net:10\n"
    b"+last.example.com:192.0.2.3"  # no newline at the end
)


#: What structlog.testing.capture_logs collects.
Logs = list[MutableMapping[str, Any]]


def clock() -> float:
    return NOW


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    (d / "header").write_bytes(b"# header\n")
    (d / "zones.example.com").write_bytes(RICH)
    (d / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n=h.example.net:192.0.2.8\n")
    (d / "zones.caf\u00e9").write_bytes(b"+x.example.net:192.0.2.7\n")
    (d / "zones.empty").write_bytes(b"")
    return d


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def reference(zones: Path, tmp_path: Path, out: Path) -> dict[str, bytes]:
    """data and data.cdb as a build without any cache writes them, with the serial
    of the build in ``out``; and the same again without the Builder or packed
    records at all: make-data's assemble and the reference cdb writer."""
    serial = previous_serial((out / "data").read_bytes()[:200])
    assert serial is not None
    ref = Path(tempfile.mkdtemp(dir=tmp_path, prefix="reference"))
    Builder(zones, ref, clock=lambda: serial, cache=False).build()
    names = source_order([n for n in os.listdir(zones) if is_source(n)])
    built = assemble([compile_source(n, (zones / n).read_bytes()) for n in names], serial)
    assert pair(ref) == {"data": built.data, "data.cdb": cdb.dumps(built.keys, built.values)}
    return pair(ref)


def uncached(zones: Path, out: Path, tmp_path: Path) -> bool:
    """Whether data and data.cdb in ``out`` are byte for byte those of a build
    without cache."""
    return pair(out) == reference(zones, tmp_path, out)


def pair(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("data", "data.cdb")}


def build(zones: Path, out: Path, **kwargs: Any) -> tuple[BuildResult, Logs]:
    """One build by a new Builder (a new process, as far as caching goes), and its log."""
    with capture_logs() as logs:
        result = Builder(zones, out, clock=clock, **kwargs).build()
    return result, logs


def cache_files(out: Path) -> list[str]:
    """The entries (and files not ours); not the stat index, which a slow run writes."""
    return sorted(n for n in os.listdir(out / buildcache.DIRECTORY) if n != buildcache.INDEX)


def entry_of(out: Path, zones: Path, name: str) -> Path:
    digest = compile_source(name, (zones / name).read_bytes()).digest
    return out / buildcache.DIRECTORY / entry_name(name, digest)


def facts(errors: tuple[DataError, ...]) -> list[tuple[str, int, str]]:
    """What a DataError says (exceptions compare by identity, not by content)."""
    return [(e.file, e.line, e.reason) for e in errors]


def ignored(logs: Logs) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in logs if e["event"] == "cache.ignored"}


class TestFormat:
    @pytest.mark.parametrize(
        "content",
        [RICH, b"", b"+a.example:1.2.3.4", b"\n\n#\n", b".a.example:1.2.3.4:a\n" * 3],
    )
    def test_round_trip(self, content: bytes) -> None:
        """An entry decodes to exactly the compiled source it was made of."""
        src = Ready.of(compile_source("zones.x", content))
        code = buildcache.code_digest()
        back = decode(b"".join(encode(src, code)), "zones.x", src.digest, code)
        assert facts(back.warnings) == facts(src.warnings)
        assert (back.name, back.digest, back.pieces, back.records, back.lines) == (
            src.name,
            src.digest,
            src.pieces,
            src.records,
            src.lines,
        )

    def test_warnings_kept(self) -> None:
        """Warnings come back with their file, line and words."""
        src = Ready.of(compile_source("zones.x", RICH))
        assert src.warnings
        code = buildcache.code_digest()
        back = decode(b"".join(encode(src, code)), "zones.x", src.digest, code)
        assert facts(back.warnings) == facts(src.warnings)

    def test_string_table_may_hold_only_lengths(self) -> None:
        """A struct format with another code than ``s`` is refused before use:
        it would make struct return integers where bytes are expected."""
        src = Ready.of(compile_source("zones.x", RICH))
        assert src.warnings  # the reasons' table is there to forge
        code = buildcache.code_digest()
        pieces = encode(src, code)
        reasons_fmt = pieces[REASONS]
        assert reasons_fmt.startswith(b"<")
        assert reasons_fmt.endswith(b"s")
        forged = reasons_fmt[:-1] + b"p"
        entry = reseal([*pieces[:REASONS], forged, *pieces[REASONS + 1 :]])
        with pytest.raises(ValueError, match="more than lengths"):
            decode(entry, "zones.x", src.digest, code)


# Where encode() puts the sections (after the header and the table of lengths).
COUNTS, LENGTHS, TEXT, RECORDS, SERIALS, REASONS = 3, 4, 5, 6, 7, 9


def reseal(pieces: list[bytes]) -> bytes:
    """An entry with a valid header and checksum around sections someone edited:
    what only a deliberate forger could write."""
    import hashlib  # noqa: PLC0415
    import struct  # noqa: PLC0415

    sections = pieces[2:]
    table = struct.pack(f"<{len(sections)}Q", *map(len, sections))
    payload = table + b"".join(sections)
    fields = list(struct.unpack("<16sI16s32s32sQ32s", pieces[0]))
    fields[5] = len(payload)
    fields[6] = hashlib.sha256(payload).digest()
    return struct.pack("<16sI16s32s32sQ32s", *fields) + payload


@pytest.fixture(params=["c", "python"])
def records_writer(request: pytest.FixtureRequest) -> Iterator[str]:
    """The packed records written by ``_cdbblob`` (C), then by cdb.py's pure Python."""
    if request.param == "c" and accel.records() is None:
        if IN_CI:
            pytest.fail("dnsmaster/core/_cdbblob.c is not built (gcc and python3-dev?)")
        pytest.skip("dnsmaster/core/_cdbblob.c is not built")
    with accel.using("records", None if request.param == "python" else accel.records()):
        yield str(request.param)


@pytest.mark.usefixtures("records_writer")
class TestNewProcess:
    def test_second_build_reads_every_source_from_the_cache(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """Nothing is compiled again, and data and data.cdb are those of a build
        without cache, byte for byte."""
        first, _ = build(zones, out)
        assert first.cached == ()
        assert len(cache_files(out)) == len(first.sources)
        second, logs = build(zones, out)
        assert second.recompiled == ()
        assert second.cached == first.sources
        assert uncached(zones, out, tmp_path)
        assert not ignored(logs)

    def test_matches_real_tinydns_data(self, zones: Path, out: Path, tinydns_data_bin: str) -> None:
        """The data.cdb of a build from the cache is what the real tinydns-data makes
        of the data beside it."""
        build(zones, out)
        build(zones, out)
        ours = (out / "data.cdb").read_bytes()
        (out / "data.cdb").unlink()
        subprocess.run([tinydns_data_bin], cwd=out, check=True)
        assert (out / "data.cdb").read_bytes() == ours

    def test_one_changed_file_is_compiled_and_its_old_entry_pruned(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """After a one-line change, only that file compiles; its old entry goes, so
        the cache holds one entry per source and stays bounded."""
        build(zones, out)
        old = entry_of(out, zones, "zones.example.net")
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.net",)
        assert set(result.cached) == set(result.sources) - {"zones.example.net"}
        assert not old.exists()
        assert entry_of(out, zones, "zones.example.net").exists()
        assert len(cache_files(out)) == len(result.sources)
        assert uncached(zones, out, tmp_path)

    def test_removed_source_loses_its_entry(self, zones: Path, out: Path) -> None:
        """An entry no source uses any more is removed; files not ours are left."""
        build(zones, out)
        (out / buildcache.DIRECTORY / "README").write_text("not ours")
        gone = entry_of(out, zones, "zones.example.net")
        (zones / "zones.example.net").unlink()
        result, _ = build(zones, out)
        assert not gone.exists()
        assert len(cache_files(out)) == len(result.sources) + 1
        assert (out / buildcache.DIRECTORY / "README").exists()

    def test_renamed_file_is_compiled_for_its_new_name(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """The same bytes under another name are another entry: the name is in the
        text's comments and the warnings."""
        build(zones, out)
        os.rename(zones / "zones.example.net", zones / "zones.example.nu")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.nu",)
        assert b"# zones.example.nu:1" in (out / "data").read_bytes()
        assert uncached(zones, out, tmp_path)

    def test_strict_refuses_cached_warnings(self, zones: Path, out: Path) -> None:
        """A source whose entry holds warnings fails a strict build, as when compiled."""
        build(zones, out)
        before = pair(out)
        with pytest.raises(DataErrors) as caught:
            Builder(zones, out, clock=clock, strict=True).build()
        assert {e.file for e in caught.value.errors} == {"zones.example.com"}
        assert pair(out) == before

    def test_unchanged_build_still_fills_the_cache(self, zones: Path, out: Path) -> None:
        """A build that writes nothing (data is current) still leaves the cache
        whole, so the next process need not compile."""
        build(zones, out, cache=False)
        assert not (out / buildcache.DIRECTORY).exists()
        with capture_logs():
            assert Builder(zones, out, clock=clock).build(force=False) is None
        assert len(cache_files(out)) == 5

    def test_without_cache_nothing_is_written(self, zones: Path, out: Path) -> None:
        build(zones, out, cache=False)
        assert not (out / buildcache.DIRECTORY).exists()

    def test_sweep_litter_leaves_the_cache(self, zones: Path, out: Path) -> None:
        """The sweep of a killed build's temp files does not touch the cache."""
        build(zones, out)
        before = cache_files(out)
        assert buildcache.DIRECTORY not in fsutil.sweep_litter(out)
        assert cache_files(out) == before


class TestStatIndex:
    """A new process takes the sha256 of an unchanged file from the index, without
    reading the file, only when the file's stat is exactly the one recorded."""

    @pytest.fixture(autouse=True)
    def no_racy_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The build trusts only stats older than two seconds; these files are new.
        monkeypatch.setattr("dnsmaster.master.compiling.RACY_NS", 0)

    @pytest.fixture
    def reads(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        read: list[str] = []
        real = ZonesDir.read

        def spy(self: ZonesDir, name: str) -> bytes:
            read.append(name)
            return real(self, name)

        monkeypatch.setattr(ZonesDir, "read", spy)
        return read

    def test_only_the_changed_file_is_read(
        self, zones: Path, out: Path, tmp_path: Path, reads: list[str]
    ) -> None:
        build(zones, out)
        assert (out / buildcache.DIRECTORY / buildcache.INDEX).is_file()
        reads.clear()
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.10:a\n")
        result, logs = build(zones, out)
        assert reads == ["zones.example.net"]
        assert result.recompiled == ("zones.example.net",)
        assert not ignored(logs)
        assert uncached(zones, out, tmp_path)

    def test_a_trusted_source_caps_its_entry_by_its_stat(
        self, zones: Path, out: Path, tmp_path: Path, reads: list[str]
    ) -> None:
        """The entry of a source the index trusts (not read) is capped by the size in
        its stat: a sparse gigabyte there is refused unread, and the source compiled."""
        build(zones, out)
        name = "zones.example.net"
        entry = entry_of(out, zones, name)
        entry.write_bytes(b"")
        os.truncate(entry, 1 << 30)
        reads.clear()
        result, logs = build(zones, out)
        assert ignored(logs)[name].startswith("larger than the cap of "), ignored(logs)
        assert reads == [name]  # read only to compile it again
        assert result.recompiled == (name,)
        assert uncached(zones, out, tmp_path)

    def test_fingerprint_reads_nothing_unchanged(
        self, zones: Path, out: Path, reads: list[str]
    ) -> None:
        """``push`` asks whether the build is current: that reads no unchanged file."""
        build(zones, out)
        reads.clear()
        assert Builder(zones, out).is_current()
        assert reads == []

    def test_other_stat_is_read(self, zones: Path, out: Path, reads: list[str]) -> None:
        """Same bytes, new mtime: read and hashed again (and found in the cache)."""
        build(zones, out)
        reads.clear()
        os.utime(zones / "zones.example.net", ns=(NOW * 10**9, NOW * 10**9))
        result, _ = build(zones, out)
        assert reads == ["zones.example.net"]
        assert result.recompiled == ()

    @pytest.mark.parametrize("damage", ["flip", "truncate", "symlink"])
    def test_damaged_index_is_ignored(
        self, zones: Path, out: Path, tmp_path: Path, reads: list[str], damage: str
    ) -> None:
        """Every file is read again; the build is still exact."""
        build(zones, out)
        index = out / buildcache.DIRECTORY / buildcache.INDEX
        text = index.read_bytes()
        assert buildcache.BuildCache(index.parent, 1 << 20).load_stats()
        if damage == "flip":
            at = text.index(b"zones.example.net") - 3  # a digit of its stat
            index.write_bytes(text[:at] + bytes([text[at] ^ 1]) + text[at + 1 :])
        elif damage == "truncate":
            index.write_bytes(text[:-10])
        else:
            (tmp_path / "elsewhere").write_bytes(text)
            index.unlink()
            index.symlink_to(tmp_path / "elsewhere")
        assert buildcache.BuildCache(index.parent, 1 << 20).load_stats() == {}
        reads.clear()
        build(zones, out)
        assert sorted(reads) == sorted(n for n in os.listdir(zones) if is_source(n))
        assert uncached(zones, out, tmp_path)

    def test_missing_entry_falls_back_to_reading(
        self, zones: Path, out: Path, tmp_path: Path, reads: list[str]
    ) -> None:
        """The index says which content; without its entry the file is read and compiled."""
        build(zones, out)
        entry_of(out, zones, "zones.example.net").unlink()
        reads.clear()
        result, _ = build(zones, out)
        assert reads == ["zones.example.net"]
        assert result.recompiled == ("zones.example.net",)
        assert uncached(zones, out, tmp_path)


@pytest.mark.usefixtures("dnsmaster_cli")
class TestCommands:
    @pytest.mark.parametrize("pure", ["", "1"])
    def test_build_command_in_a_new_process(
        self, zones: Path, out: Path, tmp_path: Path, pure: str
    ) -> None:
        """``dnsmaster build`` twice: the second process compiles nothing and says so;
        with the C accelerators, and in pure Python (DNSMASTER_PURE_PYTHON=1)."""
        argv = [
            sys.executable,
            "-m",
            "dnsmaster",
            "build",
            "--zones",
            str(zones),
            "--out",
            str(out),
        ]
        env = dict(ENV, DNSMASTER_PURE_PYTHON=pure)
        runs = [
            subprocess.run(argv, capture_output=True, text=True, env=env, check=False) for _ in "ab"
        ]
        assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
        assert "cached=0 " in runs[0].stderr
        assert "cached=5 " in runs[1].stderr
        assert "cache.ignored" not in runs[1].stderr
        assert uncached(zones, out, tmp_path)


class TestDiagnose:
    def test_check_reads_the_cache_and_writes_nothing(self, zones: Path, out: Path) -> None:
        """check reports a cached source's warnings without compiling it, and never
        writes a cache (it runs with the zones directory as its output)."""
        build(zones, out)
        cold = Builder(zones, zones, cache=False).diagnose()
        warm = Builder(zones, out).diagnose()
        assert facts(warm.warnings) == facts(cold.warnings)
        assert (warm.errors, warm.lines) == ((), cold.lines)
        Builder(zones, zones).diagnose()
        assert not (zones / buildcache.DIRECTORY).exists()

    def test_check_command_uses_the_configured_output(
        self,
        zones: Path,
        out: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``dnsmaster check`` with a configuration checks only the files the
        output's cache does not hold, and reports the same as a full check."""
        from dnsmaster.commands.main import main  # noqa: PLC0415
        from dnsmaster.core.makedata import check_source  # noqa: PLC0415
        from tests.lab.daemonrun import config_text  # noqa: PLC0415

        build(zones, out)
        (zones / "zones.example.net").write_bytes(b"+h.example.net:192.0.2.8:300s\n")
        config = tmp_path / "dnsmaster.toml"
        (tmp_path / "known_hosts").touch()
        config.write_text(
            config_text(
                zones=zones,
                output=out,
                state=tmp_path,
                slaves=[{"name": "ns2", "host": "127.0.0.1"}],
                top={"known_hosts": tmp_path / "known_hosts"},
            )
        )
        checked: list[str] = []

        def spy(name: str, content: bytes, **kwargs: Any) -> Any:
            checked.append(name)
            return check_source(name, content, **kwargs)

        monkeypatch.setattr("dnsmaster.master.build.check_source", spy)
        monkeypatch.delenv("DNSMASTER_CONFIG", raising=False)
        assert main(["check", "--config", str(config)]) == 0
        warm = capsys.readouterr()
        assert checked == ["zones.example.net"]
        checked.clear()
        assert main(["check", "--zones", str(zones)]) == 0
        cold = capsys.readouterr()
        assert len(checked) == 5
        assert (warm.out, warm.err) == (cold.out, cold.err)
        assert "zones.example.com:4: warning" in warm.err
        assert "zones.example.net:1: warning" in warm.err

    def test_check_finds_errors_in_a_changed_file(self, zones: Path, out: Path) -> None:
        build(zones, out)
        (zones / "zones.example.net").write_bytes(b"+x.example.net:999.1.2.3\n")
        found = Builder(zones, out).diagnose()
        assert [e.file for e in found.errors] == ["zones.example.net"]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


#: A build in a new process, its address space capped 1 GiB above where it starts:
#: prints the growth of its peak RSS (KiB) and why it ignored the cache entries.
SPARSE = """
import resource, sys
from pathlib import Path
from structlog.testing import capture_logs
from dnsmaster.master.build import Builder

with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) << 10
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with capture_logs() as logs:
    Builder(Path(sys.argv[1]), Path(sys.argv[2])).build()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown, [e["reason"] for e in logs if e["event"] == "cache.ignored"])
"""


class TestDamagedEntries:
    """Each way an entry can be wrong: ignored with a reason, compiled, rewritten."""

    VICTIM = "zones.example.com"

    def check_recovered(
        self, zones: Path, out: Path, tmp_path: Path, reason: str
    ) -> dict[str, str]:
        result, logs = build(zones, out)
        why = ignored(logs)
        assert set(why) == {self.VICTIM}, logs
        assert reason in why[self.VICTIM]
        assert self.VICTIM in result.recompiled
        assert self.VICTIM not in result.cached
        assert uncached(zones, out, tmp_path)
        # Rewritten: the next process reads it back.
        again, logs = build(zones, out)
        assert not ignored(logs)
        assert self.VICTIM in again.cached
        return why

    @pytest.mark.parametrize("keep", [0, 10, 100, 139, 140, 300, -1])
    def test_truncated(self, zones: Path, out: Path, tmp_path: Path, keep: int) -> None:
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        data = entry.read_bytes()
        entry.write_bytes(data[:keep] if keep >= 0 else data[:-1])
        expected = "shorter than its header" if 0 <= keep < 140 else "payload of"
        self.check_recovered(zones, out, tmp_path, expected)

    @pytest.mark.parametrize(
        ("region", "where"),
        [
            ("magic", 3),
            ("format", 16),
            ("version", 21),
            ("code", 40),
            ("content", 70),
            ("length", 105),
            ("checksum", 120),
            ("table", 141),
            ("name", 140 + 9 * 8 + 2),
            ("body", None),
        ],
    )
    def test_bit_flipped(
        self, zones: Path, out: Path, tmp_path: Path, region: str, where: int | None
    ) -> None:
        """One bit flipped in any region of the entry is caught by the check that
        guards it (the payload sha256 for all of the payload)."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        flip(entry, where if where is not None else entry.stat().st_size * 2 // 3)
        reasons = {
            "magic": "not a dnsmaster cache entry",
            "format": "cache format",
            "version": "another version of dnsmaster",
            "code": "another version of dnsmaster",
            "content": "another content",
            "length": "header says",
        }
        self.check_recovered(zones, out, tmp_path, reasons.get(region, "payload sha256"))

    def test_foreign_version(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """An entry written by another dnsmaster (another compiler code) is not used."""
        build(zones, out)
        src = Ready.of(compile_source(self.VICTIM, (zones / self.VICTIM).read_bytes()))
        entry_of(out, zones, self.VICTIM).write_bytes(b"".join(encode(src, b"\x01" * 32)))
        self.check_recovered(zones, out, tmp_path, "another version of dnsmaster")

    def test_foreign_file(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """Anything else under an entry's name (a pickle, say) is never run or used."""
        build(zones, out)
        pickled = b"\x80\x04\x95\x1a\x00cos\nsystem\n(S'touch /tmp/pwned'\ntR."
        entry_of(out, zones, self.VICTIM).write_bytes(pickled)
        self.check_recovered(zones, out, tmp_path, "shorter than its header")

    def test_entry_of_other_content(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A valid entry under a name whose content hash is not its own is refused
        (the name promises one content, the header says another)."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        other = Ready.of(compile_source(self.VICTIM, b"+evil.example.com:203.0.113.66\n"))
        entry.write_bytes(b"".join(encode(other, buildcache.code_digest())))
        self.check_recovered(zones, out, tmp_path, "another content")
        assert b"203.0.113.66" not in (out / "data").read_bytes()

    def test_entry_of_another_source(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A valid entry for the same bytes under another file name is refused."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        src = Ready.of(compile_source("zones.other", (zones / self.VICTIM).read_bytes()))
        entry.write_bytes(b"".join(encode(src, buildcache.code_digest())))
        self.check_recovered(zones, out, tmp_path, "another source file")

    def test_forged_index_out_of_range(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """Even with a valid checksum, a serial offset past the records is refused
        rather than crashing the build."""
        build(zones, out)
        bad = self.sections(zones)
        bad[SERIALS] = (10**6).to_bytes(8, "little") * (len(bad[SERIALS]) // 8)
        entry_of(out, zones, self.VICTIM).write_bytes(reseal(bad))
        self.check_recovered(zones, out, tmp_path, "an index of 1000000")

    def sections(self, zones: Path) -> list[bytes]:
        src = Ready.of(compile_source(self.VICTIM, (zones / self.VICTIM).read_bytes()))
        assert src.records.serials  # the . and Z lines: SOA records the build stamps
        return encode(src, buildcache.code_digest())

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            ("cut", "records: a record runs past the end"),
            ("longer", "records: a record runs past the end"),
            ("serial", "records: a serial offset is not the serial of an SOA record"),
            ("count", "records where"),
            ("lengths", "the text's pieces do not add up"),
            ("text", "the text's pieces do not add up"),
        ],
    )
    def test_forged_records(
        self, zones: Path, out: Path, tmp_path: Path, damage: str, reason: str
    ) -> None:
        """A records blob that is not whole records, a serial offset that is not an
        SOA's serial, a count that is not the blob's, a text that is not its pieces:
        refused, even resealed."""
        build(zones, out)
        bad = self.sections(zones)
        blob, serials = bad[RECORDS], bad[SERIALS]
        if damage == "cut":
            bad[RECORDS] = blob[:-1]
        elif damage == "longer":
            bad[RECORDS] = blob + b"\1\0\0\0"
        elif damage == "lengths":
            first = int.from_bytes(bad[LENGTHS][:8], "little")
            bad[LENGTHS] = (first - 1).to_bytes(8, "little") + bad[LENGTHS][8:]
        elif damage == "text":
            bad[TEXT] += b"+evil.example.com:203.0.113.66\n"
        elif damage == "serial":
            first = int.from_bytes(serials[:8], "little")
            bad[SERIALS] = (first + 1).to_bytes(8, "little") + serials[8:]
        else:
            counts = bytearray(bad[COUNTS])
            counts[16] += 1  # lines, pieces, then records
            bad[COUNTS] = bytes(counts)
        entry_of(out, zones, self.VICTIM).write_bytes(reseal(bad))
        self.check_recovered(zones, out, tmp_path, reason)

    def test_symlink_and_fifo_are_not_followed(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """An entry name that is a symlink (even to a good entry) or a FIFO is refused
        without blocking."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        good = tmp_path / "good-entry"
        os.rename(entry, good)
        entry.symlink_to(good)
        self.check_recovered(zones, out, tmp_path, "is a symbolic link")
        entry.unlink()
        os.mkfifo(entry)
        self.check_recovered(zones, out, tmp_path, "not a regular file")

    def test_oversized_entry_is_not_read(self, zones: Path, out: Path, tmp_path: Path) -> None:
        build(zones, out)
        # The cap is 16 zones files and a MiB: far above any real entry.
        entry_of(out, zones, self.VICTIM).write_bytes(b"\0" * (16 * 1000 + (1 << 20) + 1))
        result, logs = build(zones, out, max_file_size=1000)
        assert "larger than the cap" in ignored(logs)[self.VICTIM]
        assert self.VICTIM in result.recompiled

    def test_zeros_within_the_cap_are_read_no_further_than_the_header(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """A sparse file the cap allows is refused by its header, before its payload."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        entry.write_bytes(b"")
        os.truncate(entry, 1 << 20)
        self.check_recovered(zones, out, tmp_path, "not a dnsmaster cache entry")

    def test_sparse_gigabytes_are_not_read(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A 3 GiB sparse file under an entry's name, well inside the cap of 16 zones
        files (the old cap read it whole: 6.3 GB and 24 s), is refused by its size
        alone: the cap follows from the source's own length. Measured in a new
        process whose address space may grow by 1 GiB only, so a read of it fails
        there rather than taking the machine's memory."""
        build(zones, out)
        entry = entry_of(out, zones, self.VICTIM)
        os.truncate(entry, 3 << 30)
        done = subprocess.run(
            [sys.executable, "-c", SPARSE, str(zones), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        grown, reason = done.stdout.split(" ", 1)
        assert "larger than the cap" in reason, reason
        assert "(3221225472 bytes)" in reason, reason
        assert int(grown) < 100 << 10, grown  # KiB
        assert entry.stat().st_size < 1 << 20  # written again, whole


class TestCacheCannotBeWritten:
    def test_not_a_directory(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A file where the cache directory goes: the build succeeds and says why
        the cache was not written."""
        (out / buildcache.DIRECTORY).write_bytes(b"something else")
        result, logs = build(zones, out)
        assert result.serial == NOW
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["cache.failed"]
        assert uncached(zones, out, tmp_path)
        assert (out / buildcache.DIRECTORY).read_bytes() == b"something else"

    def test_symlinked_directory_is_not_written_through(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (out / buildcache.DIRECTORY).symlink_to(elsewhere)
        _, logs = build(zones, out)
        assert "cache.failed" in [e["event"] for e in logs]
        assert list(elsewhere.iterdir()) == []

    def test_full_disk(self, zones: Path, tmp_path: Path) -> None:
        """On a file system with room for data and data.cdb but not for the cache,
        the build is installed and the cache failure only logged. (Measured: data
        5 pages, data.cdb 11, the kept build 6, the cache entry 13; 96k is 24.)"""
        require_root("mounting a tmpfs")
        out = tmp_path / "small"
        out.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(out)], check=True)
        try:
            (zones / "zones.big").write_text(
                "".join(f"+h{i}.example.com:192.0.2.{i % 250}\n" for i in range(700))
            )
            result, logs = build(zones, out)
            failed = [e for e in logs if e["event"] == "cache.failed"]
            assert failed, logs
            assert "out of disk space" in failed[0]["error"]
            assert uncached(zones, out, tmp_path)
            assert result.serial == NOW
            # No temp file left behind to eat the space the next build needs.
            assert not [n for n in cache_files(out) if n.endswith(".tmp")]
        finally:
            subprocess.run(["umount", str(out)], check=True)


#: A build in a child process that SIGKILLs itself inside the cache's writer: after
#: writing ``{cut}`` bytes of the {which} entry, or just before renaming it.
KILLER = """
import os, signal, sys, types
from pathlib import Path
from dnsmaster import fsutil
from dnsmaster.master import buildcache
from dnsmaster.master.build import Builder

which, cut = {which}, {cut}
seen = []
real_write = fsutil.write_all

def write_all(fd, data):
    # >=, not ==: with two writer threads, the other may rename one more entry
    # between this thread's writes, and an == would then never come (no kill).
    if cut >= 0 and len(seen) >= which:
        real_write(fd, bytes(data)[:cut])
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(fd, data)

real_replace = os.replace

def replace(src, dst):
    if "{cache}" in str(dst):
        if cut < 0 and len(seen) == which:
            os.kill(os.getpid(), signal.SIGKILL)
        seen.append(dst)
    real_replace(src, dst)

buildcache.fsutil = types.SimpleNamespace(
    write_all=write_all, describe=fsutil.describe, stage=fsutil.stage
)
buildcache.os.replace = replace
Builder(Path(sys.argv[1]), Path(sys.argv[2]), clock=lambda: {now}).build()
"""


class TestKilledWhileWriting:
    @pytest.mark.parametrize(("which", "cut"), [(0, 70), (1, 2), (2, 200), (1, -1), (3, -1)])
    def test_next_build_trusts_nothing_half_written(
        self, zones: Path, out: Path, tmp_path: Path, which: int, cut: int
    ) -> None:
        """SIGKILL inside the cache's writer (mid-entry, or before its rename): the
        build was installed, the next one ignores what is half written, compiles
        what has no entry, sweeps the temp files and completes the cache."""
        script = KILLER.format(which=which, cut=cut, cache=buildcache.DIRECTORY, now=NOW)
        killed = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), str(zones), str(out)],
            capture_output=True,
            env=ENV,
            timeout=60,
            check=False,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert uncached(zones, out, tmp_path)  # installed before the cache
        names = cache_files(out)
        # Two threads write entries: the other one may have had one in flight too,
        # or finished one since the count.
        assert len([n for n in names if n.endswith(".tmp")]) in {1, 2}
        whole = len([n for n in names if not n.endswith(".tmp")])
        assert whole in {which, which + 1}
        result, logs = build(zones, out)
        assert not ignored(logs)  # a temp file is never read as an entry
        assert len(result.cached) == whole
        assert len(result.recompiled) == len(result.sources) - whole
        assert uncached(zones, out, tmp_path)
        assert len(cache_files(out)) == len(result.sources)
        assert not [n for n in cache_files(out) if n.endswith(".tmp")]


class TestLoad:
    def test_absent_directory_is_a_miss(self, tmp_path: Path) -> None:
        cache = BuildCache(tmp_path / "none", 1 << 20)
        assert cache.load("zones.x", b"\0" * 32) is None

    def test_rejected_carries_a_reason(self, tmp_path: Path) -> None:
        cache = BuildCache(tmp_path, 1 << 20)
        (tmp_path / entry_name("zones.x", b"\0" * 32)).write_bytes(b"junk")
        found = cache.load("zones.x", b"\0" * 32)
        assert isinstance(found, Rejected)
        assert found.reason == "shorter than its header"

    def test_the_source_size_caps_its_entry(self, tmp_path: Path) -> None:
        """The cap follows the source's length, on every path (a source the index
        trusts is not read, its size comes from the stat); a real entry is in it."""
        cache = BuildCache(tmp_path / "c", 1 << 40)
        src = Ready.of(compile_source("zones.0", b".\n" * 100))  # the costliest lines known
        cache.sync([src])
        assert isinstance(cache.load("zones.0", src.digest, size=200), Ready)
        entry = tmp_path / "c" / entry_name("zones.0", src.digest)
        os.truncate(entry, 256 * 200 + (1 << 20) + 1)
        found = cache.load("zones.0", src.digest, size=200)
        assert isinstance(found, Rejected)
        assert found.reason.startswith("larger than the cap of 1099776 bytes for this entry")
        assert isinstance(cache.load("zones.0", src.digest), Rejected)  # the header's length

    def test_sync_writes_only_what_is_missing(self, tmp_path: Path) -> None:
        cache = BuildCache(tmp_path / "c", 1 << 20)
        sources = [
            Ready.of(compile_source(f"zones.{i}", b"+a%d.example:1.2.3.4\n" % i)) for i in range(3)
        ]
        first = cache.sync(sources)
        assert len(first.written) == 3
        assert first.error is None
        again = cache.sync(sources)
        assert (again.written, again.removed) == ((), ())
        fresh = cache.sync(sources[:2], fresh={"zones.1"})
        assert fresh.written == (entry_name("zones.1", sources[1].digest),)
        assert fresh.removed == (entry_name("zones.2", sources[2].digest),)
        loaded = cache.load("zones.0", sources[0].digest)
        assert isinstance(loaded, Ready)
        assert loaded == sources[0]
