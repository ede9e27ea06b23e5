"""The zones directory as a build reads it: the listing kept while the directory's
own stat is unchanged, and the stats of many files at once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dnsmaster.master import zones as zones_module
from dnsmaster.master.zones import ZonesDir


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each directory actually listed; no racy window (the files here are new)."""
    monkeypatch.setattr(zones_module, "_RACY_NS", -(10**12))
    monkeypatch.setattr(zones_module, "_LISTED", {})
    listed: list[Path] = []
    real = zones_module._listing

    def spy(path: Path) -> tuple[list[str], list[tuple[str, str]], bool]:
        listed.append(path)
        return real(path)

    monkeypatch.setattr(zones_module, "_listing", spy)
    return listed


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    for name in ("header", "zones.a", "zones.b", "zones.b~"):
        (d / name).write_bytes(b"+a.example:192.0.2.1\n")
    return d


def test_an_unchanged_directory_is_not_listed_again(zones: Path, listings: list[Path]) -> None:
    first = ZonesDir(zones).scan()
    (zones / "zones.a").write_bytes(b"+b.example:192.0.2.2\n")  # in place: no name changes
    assert ZonesDir(zones).scan() == first == (["header", "zones.a", "zones.b"], first[1])
    assert first[1] == [("zones.b~", first[1][0][1])]
    assert listings == [zones]


@pytest.mark.parametrize("how", ["create", "remove", "rename", "directory"])
def test_a_name_that_changes_is_seen(zones: Path, listings: list[Path], how: str) -> None:
    before = os.stat(zones)
    ZonesDir(zones).scan()
    if how == "create":
        (zones / "zones.c").write_bytes(b"")
    elif how == "remove":
        (zones / "zones.b").unlink()
    elif how == "rename":
        (zones / "zones.b").rename(zones / "zones.c")
    else:
        (zones / "zones.b").unlink()
        (zones / "zones.b").mkdir()
    # the same mtime would hide the change: the clock tick is finer than the test
    assert os.stat(zones).st_mtime_ns != before.st_mtime_ns
    names, _ = ZonesDir(zones).scan()
    want = {
        "create": ["header", "zones.a", "zones.b", "zones.c"],
        "remove": ["header", "zones.a"],
        "rename": ["header", "zones.a", "zones.c"],
        "directory": ["header", "zones.a"],
    }
    assert names == want[how]
    assert len(listings) == 2


def test_a_recent_directory_is_listed_again(
    zones: Path, listings: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed in the last two seconds: a change in the same clock tick could leave
    the directory's stat as it was, so its listing is not kept."""
    monkeypatch.setattr(zones_module, "_RACY_NS", 10**18)
    ZonesDir(zones).scan()
    ZonesDir(zones).scan()
    assert len(listings) == 2


def test_a_listing_with_a_symlink_is_not_kept(
    zones: Path, listings: list[Path], tmp_path: Path
) -> None:
    """What a symlink points to may become a directory while the zones directory
    stays as it was."""
    target = tmp_path / "target"
    target.write_bytes(b"")
    (zones / "zones.link").symlink_to(target)
    assert "zones.link" in ZonesDir(zones).scan()[0]
    target.unlink()
    target.mkdir()
    assert "zones.link" not in ZonesDir(zones).scan()[0]
    assert len(listings) == 2


def test_stats_of_many_and_of_one_gone(zones: Path) -> None:
    found = ZonesDir(zones).stats(["zones.a", "zones.gone", "zones.b"])
    assert list(found) == ["zones.a", "zones.gone", "zones.b"]
    assert found["zones.gone"] is None
    st = os.stat(zones / "zones.a")
    assert found["zones.a"] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    assert ZonesDir(zones).stats(["zones.a"]) == {"zones.a": found["zones.a"]}
