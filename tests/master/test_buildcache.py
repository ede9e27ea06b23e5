"""The build cache: a new process takes back from the last build's pair what that
build compiled, or compiles again; it never trusts an index it cannot verify.

The corruption tests damage a real index written by a real build (truncation, a
bit flipped in each region, a foreign header, forged contents resealed with a
valid checksum) or the pair it describes, and judge the next build by what it
logs, what it compiles, and the bytes of data and data.cdb, which must equal a
build without any cache. The crash tests SIGKILL a real build in the middle of
writing the index.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dnsmaster import fsutil
from dnsmaster.core import accel, cdb
from dnsmaster.core.makedata import assemble, compile_source, previous_serial
from dnsmaster.core.sources import is_source, source_order
from dnsmaster.errors import DataError, DataErrors
from dnsmaster.log import capture as capture_logs
from dnsmaster.master import buildcache
from dnsmaster.master.build import Builder, BuildResult
from dnsmaster.master.buildcache import (
    BuildCache,
    Index,
    Kept,
    Ready,
    Rejected,
    decode,
    encode,
    kept_of,
)
from dnsmaster.master.zones import ZonesDir
from tests.conftest import IN_CI
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


#: What dnsmaster.log.capture collects.
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
    """What the cache directory holds."""
    return sorted(os.listdir(out / buildcache.DIRECTORY))


def index_of(out: Path) -> Path:
    return out / buildcache.DIRECTORY / buildcache.INDEX


def loaded(out: Path) -> Index:
    """The index of ``out``, read and checked (its descriptors closed at once)."""
    found = BuildCache(out / buildcache.DIRECTORY).load()
    assert isinstance(found, Index), found
    found.close()
    return found


def facts(errors: tuple[DataError, ...]) -> list[tuple[str, int, str]]:
    """What a DataError says (exceptions compare by identity, not by content)."""
    return [(e.file, e.line, e.reason) for e in errors]


def ignored(logs: Logs) -> dict[str, str]:
    return {e["file"]: e["reason"] for e in logs if e["event"] == "cache.ignored"}


def kept(content: bytes, name: str = "zones.x") -> Kept:
    return kept_of(Ready.of(compile_source(name, content)))


PAIR = ((1, 2, 3, 4, 5), (6, 7, 8, 9, 10))


class TestFormat:
    @pytest.mark.parametrize(
        "content",
        [RICH, b"", b"+a.example:1.2.3.4", b"\n\n#\n", b".a.example:1.2.3.4:a\n" * 3],
    )
    def test_round_trip(self, content: bytes) -> None:
        """An index decodes to exactly the sources and stats it was made of."""
        sources = [kept(content, "zones.x"), kept(b"+b.example:1.2.3.4\n", "zones.caf\udcff")]
        stats = {"zones.x": (1, 2, 3, 4, 5)}
        text = encode(sources, stats, serial=NOW, banner=120, pair=PAIR)
        serial, banner, pair, back, seen, pairs = decode(text)
        assert (serial, banner, pair, seen, bytes(pairs)) == (NOW, 120, PAIR, stats, b"")
        assert list(back) == ["zones.x", "zones.caf\udcff"]
        for mine, theirs in zip(sources, back.values(), strict=True):
            assert facts(theirs.warnings) == facts(mine.warnings)
            assert theirs._replace(warnings=()) == mine._replace(warnings=())

    def test_warnings_kept(self) -> None:
        """Warnings come back with their file, line and words."""
        src = kept(RICH)
        assert src.warnings
        back = decode(encode([src], {}, serial=NOW, banner=1, pair=PAIR))[3]
        assert facts(back["zones.x"].warnings) == facts(src.warnings)

    def test_other_options_are_refused(self) -> None:
        text = encode([kept(RICH)], {}, serial=NOW, banner=1, pair=PAIR, options=b"\0x")
        with pytest.raises(ValueError, match="other options"):
            decode(text)
        assert decode(text, b"\0x")[0] == NOW

    def test_a_source_replaced_is_packed_anew(self) -> None:
        """Every row and stat is packed from the sources given, none from an earlier
        call: a source replaced between two calls comes back as the new one."""
        a, b = kept(b"+a.example:1.2.3.4\n", "zones.a"), kept(RICH, "zones.b")
        first = encode([a, b], {}, serial=NOW, banner=1, pair=PAIR)
        c = kept(b"+c.example:1.2.3.4\n", "zones.b")
        stats = {"zones.a": (1, 2, 3, 4, 5)}
        again = encode([a, c], stats, serial=NOW, banner=1, pair=PAIR)
        assert decode(again)[3]["zones.b"] == c
        assert decode(again)[4] == stats
        assert decode(first)[3]["zones.b"]._replace(warnings=()) == b._replace(warnings=())


def reseal(text: bytes) -> bytes:
    """An index with a valid checksum around contents someone edited: what only a
    deliberate forger could write."""
    import hashlib  # noqa: PLC0415

    body = text[:-32]
    return body + hashlib.sha256(body).digest()


#: Where the index's header puts its fields (see buildcache._HEADER).
HEADER = 276


def sections(text: bytes) -> list[bytearray]:
    """The index's sections (names, rows, stats, pieces, serials, warning lines,
    reason sizes, reasons, the records' pairs), to edit and :func:`join` again."""
    import struct  # noqa: PLC0415

    lengths = struct.unpack_from("<9Q", text, HEADER - 72)
    found = []
    at = HEADER
    for length in lengths:
        found.append(bytearray(text[at : at + length]))
        at += length
    return found


def join(text: bytes, parts: list[bytearray]) -> bytes:
    """The index ``text`` with ``parts`` as its sections, resealed."""
    import struct  # noqa: PLC0415

    header = bytearray(text[:HEADER])
    struct.pack_into("<9Q", header, HEADER - 72, *map(len, parts))
    return reseal(bytes(header) + b"".join(parts) + b"\0" * 32)


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
    def test_second_build_reads_every_source_from_the_pair(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """Nothing is compiled again, and data and data.cdb are those of a build
        without cache, byte for byte."""
        first, _ = build(zones, out)
        assert first.cached == ()
        assert cache_files(out) == [buildcache.INDEX]
        assert list(loaded(out).sources) == list(first.sources)
        second, logs = build(zones, out)
        assert second.recompiled == ()
        assert second.cached == first.sources
        assert uncached(zones, out, tmp_path)
        assert not ignored(logs)

    def test_matches_real_tinydns_data(self, zones: Path, out: Path, tinydns_data_bin: str) -> None:
        """The data.cdb of a build from the last pair, after a one-file change, is
        what the real tinydns-data makes of the data beside it."""
        build(zones, out)
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.10:a\n")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.net",)
        ours = (out / "data.cdb").read_bytes()
        (out / "data.cdb").unlink()
        subprocess.run([tinydns_data_bin], cwd=out, check=True)
        assert (out / "data.cdb").read_bytes() == ours

    def test_one_changed_file_is_compiled(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """After a one-line change, only that file compiles; the index describes the
        new pair."""
        build(zones, out)
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.net",)
        assert set(result.cached) == set(result.sources) - {"zones.example.net"}
        assert cache_files(out) == [buildcache.INDEX]
        assert uncached(zones, out, tmp_path)
        again, _ = build(zones, out)
        assert again.cached == again.sources

    def test_the_serial_may_grow_a_digit(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """The old serial's digits are cut out wherever the index says, and the new
        serial, one digit longer, put in their place."""
        Builder(zones, out, clock=lambda: 999_999_999).build()
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        result, _ = build(zones, out)
        assert result.serial == NOW
        assert len(result.cached) == len(result.sources) - 1
        assert uncached(zones, out, tmp_path)

    def test_removed_source_leaves_the_index(self, zones: Path, out: Path) -> None:
        build(zones, out)
        (out / buildcache.DIRECTORY / "README").write_text("not ours")
        (zones / "zones.example.net").unlink()
        result, _ = build(zones, out)
        assert list(loaded(out).sources) == list(result.sources)
        assert cache_files(out) == ["README", buildcache.INDEX]

    def test_entries_of_the_old_format_are_swept(self, zones: Path, out: Path) -> None:
        """One file per source, and the stat index, as dnsmaster 2026.11 wrote them."""
        cache = out / buildcache.DIRECTORY
        cache.mkdir()
        (cache / ("ab" * 32 + "-" + "cd" * 8)).write_bytes(b"old entry")
        (cache / "stats").write_bytes(b"dnsmaster-stats 1\n")
        build(zones, out)
        assert cache_files(out) == [buildcache.INDEX]

    def test_renamed_file_is_compiled_for_its_new_name(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """The same bytes under another name are compiled again: the name is in the
        text's comments and the warnings."""
        build(zones, out)
        os.rename(zones / "zones.example.net", zones / "zones.example.nu")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.nu",)
        assert b"# zones.example.nu:1" in (out / "data").read_bytes()
        assert uncached(zones, out, tmp_path)

    def test_strict_refuses_cached_warnings(self, zones: Path, out: Path) -> None:
        """A source whose kept compile holds warnings fails a strict build, as when
        compiled."""
        build(zones, out)
        before = pair(out)
        with pytest.raises(DataErrors) as caught:
            Builder(zones, out, clock=clock, strict=True).build()
        assert {e.file for e in caught.value.errors} == {"zones.example.com"}
        assert pair(out) == before

    def test_unchanged_build_still_fills_the_cache(self, zones: Path, out: Path) -> None:
        """A build that writes nothing (data is current) still describes the pair,
        so the next process need not compile."""
        build(zones, out, cache=False)
        assert not (out / buildcache.DIRECTORY).exists()
        with capture_logs():
            assert Builder(zones, out, clock=clock).build(force=False) is None
        assert len(loaded(out).sources) == 5
        again, _ = build(zones, out)
        assert again.recompiled == ()

    def test_without_cache_nothing_is_written(self, zones: Path, out: Path) -> None:
        build(zones, out, cache=False)
        assert not (out / buildcache.DIRECTORY).exists()

    def test_sweep_litter_leaves_the_cache(self, zones: Path, out: Path) -> None:
        """The sweep of a killed build's temp files does not touch the cache."""
        build(zones, out)
        before = cache_files(out)
        assert buildcache.DIRECTORY not in fsutil.sweep_litter(out)
        assert cache_files(out) == before


class TestDaemon:
    """A Builder reused (the daemon's) keeps no source's text or records between
    builds: only numbers, the rest is in the pair on disk."""

    def test_nothing_but_numbers_is_kept(self, zones: Path, out: Path, tmp_path: Path) -> None:
        builder = Builder(zones, out, clock=clock)
        builder.build()
        assert all(isinstance(src, Kept) for src in builder.sources.ready.values())
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        result = builder.build()
        assert result.recompiled == ("zones.example.net",)
        assert result.cached == ()  # from memory, not read back
        assert all(isinstance(src, Kept) for src in builder.sources.ready.values())
        assert uncached(zones, out, tmp_path)

    def test_a_file_without_a_stat_is_read(
        self, zones: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stat that fails (a file replaced between the listing and the stat) is
        never taken for unchanged, even for a file memory does not hold: the file is
        read, as a new one would be."""
        monkeypatch.setattr("dnsmaster.master.compiling.RACY_NS", 0)  # stats trusted
        builder = Builder(zones, out, clock=clock)
        builder.build()
        real = ZonesDir.stats

        def flaky(self: ZonesDir, names: list[str]) -> dict[str, tuple[int, ...] | None]:
            return {**real(self, names), "zones.new": None}

        monkeypatch.setattr(ZonesDir, "stats", flaky)
        (zones / "zones.new").write_bytes(b".example.org:192.0.2.9:a\n")
        result = builder.build()
        assert result.recompiled == ("zones.new",)
        assert uncached(zones, out, tmp_path)

    def test_a_pair_replaced_under_the_daemon(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """The kept sources are copied from the pair the Builder wrote, whatever was
        renamed over it since (a rollback): its descriptors are held open."""
        builder = Builder(zones, out, clock=clock)
        builder.build()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "zones.x").write_bytes(b"+evil.example.com:203.0.113.66\n")
        Builder(elsewhere, out, clock=clock, cache=False).build()
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        builder.build()
        assert b"203.0.113.66" not in (out / "data").read_bytes()
        assert uncached(zones, out, tmp_path)


class TestPatchedIndex:
    """The daemon's Builder keeps the index's packed sections and, after a change,
    packs again only the rows of the files that changed (their source or their
    stat): the index it writes must say exactly what one packed whole would, and a
    new process must build from it what a build without cache does."""

    @pytest.fixture(autouse=True)
    def no_racy_window(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("dnsmaster.master.compiling.RACY_NS", 0)  # stats trusted

    def described(self, zones: Path, out: Path) -> None:
        """The index of ``out`` holds each source as a compile of the file there now,
        at its place, with the file's stat now, and a pair where it says."""
        index = loaded(out)
        names = source_order([n for n in os.listdir(zones) if is_source(n)])
        assert list(index.sources) == names
        for name in names:
            want = kept((zones / name).read_bytes(), name)
            got = index.sources[name]
            assert got._replace(warnings=()) == want._replace(warnings=())
            assert facts(got.warnings) == facts(want.warnings)
        stats = ZonesDir(zones).stats(names)
        assert index.stats == stats
        # the index read back packs into the very bytes that were written
        text = index_of(out).read_bytes()
        serial, banner, pair_stats, sources, seen, pairs = decode(text)
        again = encode(
            list(sources.values()), seen, serial=serial, banner=banner, pair=pair_stats, pairs=pairs
        )
        assert again == text

    @pytest.mark.parametrize("told", [True, False])
    def test_each_change_patches_its_rows(
        self, zones: Path, out: Path, tmp_path: Path, told: bool
    ) -> None:
        builder = Builder(zones, out, clock=clock)
        builder.build()
        changes = [
            ("zones.example.net", b".example.net:192.0.2.9:a\n"),  # shorter
            ("zones.example.com", RICH),  # the same bytes, a new stat
            ("zones.example.com", RICH + b"\nZexample.info:ns.example.info:h.example.info.\n"),
            (
                "zones.empty",
                b"Zempty.example:ns.empty.example:h.example.\n+a.empty.example:1.2.3.4\n",
            ),
            ("zones.caf\u00e9", b"+x.example.net:192.0.2.7\n=y.example.net:192.0.2.6\n"),
            ("header", b"# header, longer now\n"),
            ("zones.empty", b""),
        ]
        for name, content in changes:
            os.utime(zones / name, ns=(1, 1))  # a stat that cannot be the one kept
            (zones / name).write_bytes(content)
            result = builder.build(changed={name} if told else None)
            assert result.recompiled == (
                () if name == "zones.example.com" and content == RICH else (name,)
            )
            assert uncached(zones, out, tmp_path)
            self.described(zones, out)
        fresh, logs = build(zones, out)
        assert fresh.recompiled == ()
        assert not ignored(logs)
        assert uncached(zones, out, tmp_path)

    def test_a_new_process_patches_what_it_read(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """A new process patches the index it read: the file changed, and the one
        whose stat alone changed (read, found the same, its new stat recorded)."""
        build(zones, out)
        os.utime(zones / "zones.example.com", ns=(1, 1))
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        result, _ = build(zones, out)
        assert result.recompiled == ("zones.example.net",)
        self.described(zones, out)
        assert uncached(zones, out, tmp_path)

    def test_a_look_without_a_build_counts(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """What a plan (``dnsmaster diff``) compiled between two builds is in the next
        build's list and fingerprint, though that build looks at another file."""
        builder = Builder(zones, out, clock=clock)
        builder.build()
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.9:a\n")
        assert b"192.0.2.9" in builder.plan()
        (zones / "zones.empty").write_bytes(b"+e.example.net:192.0.2.4\n")
        builder.build(changed={"zones.empty"})
        assert uncached(zones, out, tmp_path)
        self.described(zones, out)

    def test_a_file_added_and_removed(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A new name or a name gone: the index is packed whole again."""
        builder = Builder(zones, out, clock=clock)
        builder.build()
        (zones / "zones.new").write_bytes(b"+n.example.net:192.0.2.5\n")
        assert builder.build(changed={"zones.new"}).recompiled == ("zones.new",)
        self.described(zones, out)
        (zones / "zones.example.net").unlink()
        assert builder.build().recompiled == ()
        self.described(zones, out)
        assert uncached(zones, out, tmp_path)


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
        reads.clear()
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.10:a\n")
        result, logs = build(zones, out)
        assert reads == ["zones.example.net"]
        assert result.recompiled == ("zones.example.net",)
        assert not ignored(logs)
        assert uncached(zones, out, tmp_path)

    def test_racy_stats_are_not_trusted(
        self, zones: Path, out: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stat younger than two seconds is not recorded: the file is read and
        hashed next time (and found unchanged)."""
        monkeypatch.setattr("dnsmaster.master.compiling.RACY_NS", 10**18)
        build(zones, out)
        assert loaded(out).stats == {}
        reads.clear()
        result, _ = build(zones, out)
        assert sorted(reads) == sorted(n for n in os.listdir(zones) if is_source(n))
        assert result.recompiled == ()

    def test_fingerprint_reads_nothing_unchanged(
        self, zones: Path, out: Path, reads: list[str]
    ) -> None:
        """``push`` asks whether the build is current: that reads no unchanged file."""
        build(zones, out)
        reads.clear()
        assert Builder(zones, out).is_current()
        assert reads == []

    def test_other_stat_is_read(self, zones: Path, out: Path, reads: list[str]) -> None:
        """Same bytes, new mtime: read and hashed again (and taken from the pair)."""
        build(zones, out)
        reads.clear()
        os.utime(zones / "zones.example.net", ns=(NOW * 10**9, NOW * 10**9))
        result, _ = build(zones, out)
        assert reads == ["zones.example.net"]
        assert result.recompiled == ()


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


class TestDamagedIndex:
    """Each way the index, or the pair it describes, can be wrong: ignored with a
    reason, everything compiled, the index written again."""

    def check_recovered(self, zones: Path, out: Path, tmp_path: Path, reason: str) -> str:
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.10:a\n")
        result, logs = build(zones, out)
        why = ignored(logs)
        assert set(why) == {buildcache.INDEX}, logs
        assert reason in why[buildcache.INDEX]
        assert result.cached == ()
        assert result.recompiled == result.sources
        assert uncached(zones, out, tmp_path)
        # Written again: the next process takes every source from the pair.
        again, logs = build(zones, out)
        assert not ignored(logs)
        assert again.cached == again.sources
        return why[buildcache.INDEX]

    @pytest.mark.parametrize("keep", [0, 10, 307, 308, -1])
    def test_truncated(self, zones: Path, out: Path, tmp_path: Path, keep: int) -> None:
        build(zones, out)
        text = index_of(out).read_bytes()
        index_of(out).write_bytes(text[:keep] if keep >= 0 else text[:-1])
        expected = "shorter than its header" if 0 <= keep < 308 else "its header says"
        self.check_recovered(zones, out, tmp_path, expected)

    @pytest.mark.parametrize(
        ("region", "where"),
        [
            ("magic", 3),
            ("format", 16),
            ("version", 21),
            ("code", 40),
            ("options", 70),
            ("serial", 101),
            ("pair", 130),
            ("length", HEADER - 68),
            ("names", HEADER + 2),
            ("body", None),
            ("checksum", -3),
        ],
    )
    def test_bit_flipped(
        self, zones: Path, out: Path, tmp_path: Path, region: str, where: int | None
    ) -> None:
        """One bit flipped in any region of the index is caught by the check that
        guards it (the sha256 for all of it)."""
        build(zones, out)
        size = index_of(out).stat().st_size
        flip(index_of(out), size * 2 // 3 if where is None else where % size)
        reasons = {
            "magic": "not a dnsmaster cache index",
            "format": "cache format",
            "version": "another version of dnsmaster",
            "code": "another version of dnsmaster",
            "options": "other options",
            "length": "its header says",
        }
        self.check_recovered(zones, out, tmp_path, reasons.get(region, "sha256"))

    def test_foreign_version(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """An index written by another dnsmaster (another compiler code) is not used."""
        build(zones, out)
        index = loaded(out)
        stale = encode(
            list(index.sources.values()),
            index.stats,
            serial=index.serial,
            banner=index.banner,
            pair=decode(index_of(out).read_bytes())[2],
            code=b"\x01" * 32,
        )
        index_of(out).write_bytes(stale)
        self.check_recovered(zones, out, tmp_path, "another version of dnsmaster")

    def test_foreign_file(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """Anything else under the index's name (a pickle, say) is never run or used."""
        build(zones, out)
        pickled = b"\x80\x04\x95\x1a\x00cos\nsystem\n(S'touch /tmp/pwned'\ntR."
        index_of(out).write_bytes(pickled)
        self.check_recovered(zones, out, tmp_path, "shorter than its header")

    def test_pair_touched_since(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """data edited in place (another mtime): not the pair the index describes."""
        build(zones, out)
        os.utime(out / "data", ns=(NOW * 10**9, NOW * 10**9))
        self.check_recovered(zones, out, tmp_path, "data is not the one the index describes")

    def test_pair_gone(self, zones: Path, out: Path, tmp_path: Path) -> None:
        build(zones, out)
        (out / "data.cdb").unlink()
        self.check_recovered(zones, out, tmp_path, "cannot read the pair")

    def test_pair_replaced_by_another_build(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A build without cache (or a rollback) replaced the pair: the index is old."""
        build(zones, out)
        Builder(zones, out, clock=lambda: NOW + 5, cache=False).build()
        self.check_recovered(zones, out, tmp_path, "is not the one the index describes")

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            ("names", "the names are not one per source"),
            ("count", "sources where"),
            ("pieces", "the old serial is not where the index says"),
            ("serial", "a patch is not inside a record's data"),
            ("serial-past", "a serial offset"),
            ("records", "the records' pairs are not 8 bytes a record"),
            ("text", "data has"),
            ("warning", "a warning past its last line"),
        ],
    )
    def test_forged(self, zones: Path, out: Path, tmp_path: Path, damage: str, reason: str) -> None:
        """Contents that lie about the pair, resealed with a valid checksum: refused
        before use, or when the pair is copied (then everything is compiled and
        written anew), never written into data or data.cdb."""
        import struct  # noqa: PLC0415

        build(zones, out)
        text = index_of(out).read_bytes()
        parts = sections(text)
        names, rows, _, pieces, serials, lines = parts[:6]
        order = bytes(names).split(b"\0")
        com = order.index(b"zones.example.com")
        row = struct.Struct("<32sIQIIQI")  # sha256, pieces, records' length and count...
        before = sum(row.unpack_from(rows, row.size * k)[1] for k in range(com))
        if damage == "names":
            parts[0] = bytearray(bytes(names).replace(b"zones.example.net", b"zones.example.com"))
        elif damage == "count":
            text = text[:196] + struct.pack("<Q", len(order) + 1) + text[204:]
        elif damage == "pieces":
            # zones.example.com's first two pieces: one longer, one shorter
            a, b = struct.unpack_from("<2I", pieces, 4 * before)
            parts[3][4 * before : 4 * before + 8] = struct.pack("<2I", a + 1, b - 1)
        elif damage == "serial":  # onto the lengths of the source's first record
            parts[4][:8] = struct.pack("<Q", 0)
        elif damage == "serial-past":
            parts[4][:8] = struct.pack("<Q", struct.unpack_from("<Q", serials)[0] + 10**6)
        elif damage == "records":
            at = row.size * com + 44  # zones.example.com's count of records, one more
            count = struct.unpack_from("<I", rows, at)[0]
            parts[1][at : at + 4] = struct.pack("<I", count + 1)
        elif damage == "text":
            parts[3][:4] = struct.pack("<I", struct.unpack_from("<I", pieces)[0] + 1)
        else:
            parts[5][:8] = struct.pack("<Q", 10**6)
        assert lines  # zones.example.com has warnings
        index_of(out).write_bytes(join(text, parts))
        self.check_recovered(zones, out, tmp_path, reason)

    def test_symlink_and_fifo_are_not_followed(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """An index that is a symlink (even to a good index) or a FIFO is refused
        without blocking."""
        build(zones, out)
        good = tmp_path / "good-index"
        os.rename(index_of(out), good)
        index_of(out).symlink_to(good)
        self.check_recovered(zones, out, tmp_path, "cannot read")
        index_of(out).unlink()
        os.mkfifo(index_of(out))
        self.check_recovered(zones, out, tmp_path, "not a regular file")

    def test_sparse_gigabytes_are_not_read(self, zones: Path, out: Path, tmp_path: Path) -> None:
        """A 3 GiB sparse file under the index's name is refused by its size alone,
        far above what the data beside it could need."""
        build(zones, out)
        os.truncate(index_of(out), 3 << 30)
        why = self.check_recovered(zones, out, tmp_path, "larger than the cap")
        assert "(3221225472 bytes)" in why
        assert index_of(out).stat().st_size < 1 << 20  # written again, whole


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

    def test_full_disk(
        self, zones: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No room left for the index once the pair is installed: the build stands,
        the cache failure is only logged, and no temp file is left behind to eat
        the space the next build needs."""

        def full(path: Path, *_: object, **__: object) -> Path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(
            "dnsmaster.master.buildcache.fsutil",
            SimpleNamespace(stage=full, write_all=fsutil.write_all, describe=fsutil.describe),
        )
        result, logs = build(zones, out)
        failed = [e for e in logs if e["event"] == "cache.failed"]
        assert failed, logs
        assert "out of disk space" in failed[0]["error"]
        assert uncached(zones, out, tmp_path)
        assert result.serial == NOW
        assert cache_files(out) == []


#: A build in a child process that SIGKILLs itself inside the cache's writer: after
#: writing ``{cut}`` bytes of the index, or just before renaming it.
KILLER = """
import os, signal, sys, types
from pathlib import Path
from dnsmaster import fsutil
from dnsmaster.master import buildcache
from dnsmaster.master.build import Builder

cut = {cut}
real_write = fsutil.write_all

def write_all(fd, data):
    if cut >= 0:
        real_write(fd, bytes(data)[:cut])
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(fd, data)

real_replace = os.replace

def replace(src, dst):
    if "{cache}" in str(dst) and cut < 0:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)

buildcache.fsutil = types.SimpleNamespace(
    write_all=write_all, describe=fsutil.describe, stage=fsutil.stage
)
buildcache.os.replace = replace
Builder(Path(sys.argv[1]), Path(sys.argv[2]), clock=lambda: {now}).build()
"""


class TestKilledWhileWriting:
    @pytest.mark.parametrize("cut", [0, 70, 400, -1])
    def test_next_build_trusts_nothing_half_written(
        self, zones: Path, out: Path, tmp_path: Path, cut: int
    ) -> None:
        """SIGKILL inside the index's writer (mid-write, or before its rename), after
        a build whose index is there: the new pair was installed, the old index
        describes the old pair and is ignored, the temp file is swept, and the next
        build compiles everything and writes the index."""
        build(zones, out)
        (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.10:a\n")
        script = KILLER.format(cut=cut, cache=buildcache.DIRECTORY, now=NOW + 1)
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
        assert len([n for n in names if n.endswith(".tmp")]) == 1
        result, logs = build(zones, out)
        assert "is not the one the index describes" in ignored(logs)[buildcache.INDEX]
        assert result.recompiled == result.sources
        assert uncached(zones, out, tmp_path)
        assert cache_files(out) == [buildcache.INDEX]


class TestLoad:
    def test_absent_directory_is_a_miss(self, tmp_path: Path) -> None:
        assert BuildCache(tmp_path / "none").load() is None

    def test_rejected_carries_a_reason(self, tmp_path: Path) -> None:
        (tmp_path / buildcache.INDEX).write_bytes(b"junk")
        found = BuildCache(tmp_path).load()
        assert isinstance(found, Rejected)
        assert found.reason == "shorter than its header"
