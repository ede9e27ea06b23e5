"""The output directory as a build writes it: the streamed cold build, and the
chunked copy of the last build's text (dnsmaster.master.output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsmaster.core.cdb import CdbReader
from dnsmaster.errors import BuildError, DataErrors
from dnsmaster.master import compiling, output
from dnsmaster.master.build import Builder
from tests.lab.clock import Clock

# Several zones per file, so a kept run of data is cut at many serials.
FILES = {
    "zones.a": b"".join(
        b".a%d.example:192.0.2.%d:a\n+www.a%d.example:192.0.2.9\n" % (i, i, i) for i in range(1, 9)
    ),
    "zones.b": b".b.example:192.0.2.20:a\n+host.b.example:192.0.2.21\n",
    "zones.c": b"".join(b".c%d.example:192.0.2.%d:a\n" % (i, 30 + i) for i in range(8)),
}


def write(zones: Path, files: dict[str, bytes]) -> None:
    zones.mkdir(exist_ok=True)
    for name, text in files.items():
        (zones / name).write_bytes(text)


def pair(directory: Path) -> tuple[bytes, bytes]:
    return (directory / "data").read_bytes(), (directory / "data.cdb").read_bytes()


@pytest.mark.parametrize("first", [1_700_000_000, 999_999_990], ids=["same-width", "wider"])
def test_chunked_restamp_equals_a_fresh_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: int
) -> None:
    """A rebuild that copies the kept sources' text in chunks far smaller than a
    serial's spacing (so chunks end right before serials, and the new serial may be
    one digit longer) writes what a build from scratch writes."""
    zones, warm, fresh = tmp_path / "zones", tmp_path / "warm", tmp_path / "fresh"
    write(zones, FILES)
    warm.mkdir()
    fresh.mkdir()
    clock = Clock(first)
    Builder(zones, warm, clock=clock).build()
    monkeypatch.setattr(output, "_CHUNK", 7)
    (zones / "zones.b").write_bytes(b".b.example:192.0.2.20:a\n+host.b.example:192.0.2.22\n")
    clock.now = first + 100
    result = Builder(zones, warm, clock=clock).build()
    assert result.recompiled == ("zones.b",)
    Builder(zones, fresh, clock=Clock(first + 100), cache=False).build()
    assert pair(warm) == pair(fresh)
    assert result.data == (warm / "data").read_bytes()
    assert bytes(result.text) == result.data


def test_streamed_build_describes_its_pair(tmp_path: Path) -> None:
    """A cold build streams every source; the next one copies them all from that
    pair (its index's record hashes included), byte for byte."""
    zones, out = tmp_path / "zones", tmp_path / "out"
    write(zones, FILES)
    out.mkdir()
    clock = Clock(1_700_000_000)
    first = Builder(zones, out, clock=clock).build()
    assert first.recompiled == first.sources
    assert first.records == len(CdbReader((out / "data.cdb").read_bytes()))
    clock.now += 10
    again = Builder(zones, out, clock=clock).build()
    assert again.recompiled == ()
    assert again.cached == first.sources
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    Builder(zones, fresh, clock=Clock(1_700_000_010), cache=False).build()
    assert pair(out) == pair(fresh)


def test_streamed_build_with_an_error_leaves_nothing(tmp_path: Path) -> None:
    """A bad line in a streamed build: every error, and no file written or left."""
    zones, out = tmp_path / "zones", tmp_path / "out"
    write(zones, {**FILES, "zones.b": b"Xbad\n", "zones.c": b"Ybad\n"})
    out.mkdir()
    with pytest.raises(DataErrors) as caught:
        Builder(zones, out).build()
    assert [e.file for e in caught.value.errors] == ["zones.b", "zones.c"]
    assert list(out.iterdir()) == []


def test_file_changed_between_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the memory budget a file is read again to compile; if it changed since
    its first read (whose sha256 is in the banner), the build stops, writing nothing."""
    zones, out = tmp_path / "zones", tmp_path / "out"
    write(zones, FILES)
    out.mkdir()
    monkeypatch.setattr(compiling, "KEEP_READ", 0)
    real = compiling.CompiledSources.look

    def look_then_edit(self: compiling.CompiledSources, *args: object) -> object:
        found = real(self, *args)  # type: ignore[arg-type]
        (zones / "zones.c").write_bytes(b".c.example:192.0.2.99:a\n")
        return found

    monkeypatch.setattr(compiling.CompiledSources, "look", look_then_edit)
    with pytest.raises(BuildError, match="changed while it was being built"):
        Builder(zones, out).build()
    assert list(out.iterdir()) == []
