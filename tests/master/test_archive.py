"""The master's kept builds: written whole, pruned to N, read back verified, restamped exactly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dnsmaster import fsutil
from dnsmaster.core.compiler import compile_text
from dnsmaster.core.makedata import Assembled, assemble, compile_source
from dnsmaster.core.soa import zone_serials
from dnsmaster.errors import ArchiveError
from dnsmaster.master.archive import DIRECTORY, Archive
from dnsmaster.master.build import Builder

# The serial's digits also appear in a record's own data, where no restamp may touch them.
ZONE = b".example.com:192.0.2.1:a\n+www.example.com:192.0.2.80\n'txt.example.com:1700000000\n"
DAY = 86400.0


def built(serial: int, zone: bytes = ZONE) -> Assembled:
    return assemble([compile_source("zones.example", zone)], serial)


def keep(archive: Archive, serial: int, when: float, zone: bytes = ZONE) -> str:
    b = built(serial, zone)
    sha256 = hashlib.sha256(b.data).hexdigest()
    archive.add(b.data, b.serial, sha256, b.stamps, when)
    return sha256


def test_stamps_point_at_every_serial() -> None:
    b = built(1_700_000_000, ZONE + b"Zother.example:ns.other.example:h.other.example\n")
    assert len(b.stamps) == 3  # the banner, the . line's Z, the Z line without a serial
    assert all(b.data[at : at + 10] == b"1700000000" for at in b.stamps)
    assert b.data.count(b"1700000000") == 4  # and the TXT record's text


def test_add_entries_prune(tmp_path: Path) -> None:
    archive = Archive(tmp_path, keep=3)
    shas = [
        keep(archive, 1_700_000_000 + i, 1000.0 + i, ZONE + b"+h%d.example.com:192.0.2.9\n" % i)
        for i in range(5)
    ]
    kept = archive.entries()
    assert [k.serial for k in kept] == [1_700_000_004, 1_700_000_003, 1_700_000_002]
    assert [k.sha256 for k in kept] == shas[:1:-1]
    assert len(list((tmp_path / DIRECTORY).iterdir())) == 6  # a .build and a .meta each
    assert kept[0].built == 1004.0
    assert archive.by_sha256(shas[0]) is None  # pruned
    assert (
        archive.by_sha256(shas[4])
        == built(1_700_000_004, ZONE + b"+h4.example.com:192.0.2.9\n").data
    )


def test_render_writes_the_serial_only_where_make_data_did(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    keep(archive, 1_700_000_000, 1000.0)
    kept = archive.entries()[0]
    for serial in (1_800_000_000, 7, 4_294_967_295):
        data = archive.render(kept, serial)
        assert data == built(serial).data  # byte for byte what a build with it writes
        assert zone_serials(data) == {b"\x07example\x03com\x00": serial}
        assert b"1700000000" in data  # the TXT record keeps its text
        compile_text(data, 0)


def test_a_damaged_build_is_never_returned(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    sha = keep(archive, 1_700_000_000, 1000.0)
    (path,) = (tmp_path / DIRECTORY).glob("*.build")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    assert archive.by_sha256(sha) is None
    with pytest.raises(ArchiveError, match="missing or damaged"):
        archive.render(archive.entries()[0], 1_800_000_000)
    (meta,) = (tmp_path / DIRECTORY).glob("*.meta")
    meta.write_bytes(b"garbage\n")
    assert archive.entries() == []


def test_refuses_stamps_that_are_not_the_serial(tmp_path: Path) -> None:
    b = built(1_700_000_000)
    sha = hashlib.sha256(b.data).hexdigest()
    with pytest.raises(ArchiveError, match="no serial at offset 3"):
        Archive(tmp_path).add(b.data, b.serial, sha, [3], 1000.0)
    with pytest.raises(ArchiveError, match="not a sha256"):
        Archive(tmp_path).add(b.data, b.serial, "nonsense", b.stamps, 1000.0)
    # A wrong sha256 is the caller's mistake: the entry then never reads back.
    Archive(tmp_path).add(b.data, b.serial, "0" * 64, b.stamps, 1000.0)
    assert Archive(tmp_path).by_sha256("0" * 64) is None


def test_select(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    # built 2026-11-24T10:00:00Z, 2026-11-25T10:00:00Z, 2026-11-26T10:00:00Z
    base = 1_795_514_400.0
    for i in range(3):
        keep(archive, 1_700_000_000 + i, base + i * DAY, ZONE + b"+h%d.example.com:192.0.2.9\n" % i)
    assert archive.select("-0").serial == 1_700_000_002
    assert archive.select("-1").serial == 1_700_000_001
    assert archive.select("-2").serial == 1_700_000_000
    assert archive.select("1700000001").serial == 1_700_000_001
    assert archive.select("2026-11-25T10:00").serial == 1_700_000_001
    assert archive.select("2026-11-25T09:59").serial == 1_700_000_000
    assert archive.select("2026-11-25T11:00+01:00").serial == 1_700_000_001
    assert archive.select("2026-11-25").serial == 1_700_000_001
    assert archive.select("2026-11-26T10:00:00Z").serial == 1_700_000_002
    with pytest.raises(ArchiveError, match=r"only 3 builds are kept.*1700000000 \(2026-11-24"):
        archive.select("-3")
    with pytest.raises(ArchiveError, match="no kept build has that serial; kept, newest first"):
        archive.select("12345")
    with pytest.raises(ArchiveError, match="no kept build is that old"):
        archive.select("2026-11-24T09:59")
    with pytest.raises(ArchiveError, match="not a serial, a date-time"):
        archive.select("yesterday")
    with pytest.raises(ArchiveError, match="no builds are kept yet"):
        Archive(tmp_path / "elsewhere").select("-1")


def test_builder_keeps_each_build_and_the_sweep_leaves_them(tmp_path: Path) -> None:
    zones, out = tmp_path / "zones", tmp_path / "out"
    zones.mkdir()
    out.mkdir()
    (zones / "zones.example").write_bytes(ZONE)
    builder = Builder(zones, out, keep=2)
    results = [builder.build() for _ in range(3)]
    kept = Archive(out).entries()
    assert [k.sha256 for k in kept] == [r.sha256 for r in results[:0:-1]]
    assert Archive(out).by_sha256(results[-1].sha256) == (out / "data").read_bytes()
    # the newest is the installed data itself, under a second name: no copy
    assert kept[0].path.stat().st_ino == (out / "data").stat().st_ino
    assert kept[0].path.stat().st_nlink == 2
    # the next build renames new data over it: the kept one stays as it was
    newest = builder.build()
    assert Archive(out).by_sha256(results[-1].sha256) == results[-1].data
    assert (out / "data").read_bytes() == newest.data
    # what a killed archive write leaves is swept by the next, under the lock
    litter = out / DIRECTORY / ".x.build.abc.tmp"
    litter.write_bytes(b"half")
    orphan = out / DIRECTORY / "0000000099-1-{}.build".format("f" * 64)
    orphan.write_bytes(b"a body whose .meta never came")
    assert fsutil.sweep_litter(out) == []
    builder.build()
    assert not litter.exists()
    assert not orphan.exists()
    assert len(Archive(out).entries()) == 2


def test_a_failing_archive_never_fails_the_build(tmp_path: Path) -> None:
    zones, out = tmp_path / "zones", tmp_path / "out"
    zones.mkdir()
    out.mkdir()
    (zones / "zones.example").write_bytes(ZONE)
    (out / DIRECTORY).write_bytes(b"a file where the directory goes")
    result = Builder(zones, out).build()
    assert (out / "data").read_bytes() == result.data
    assert os.path.isfile(out / DIRECTORY)
