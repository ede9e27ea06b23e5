"""The build with a catalog zone: made from the build's zones, served like them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dnsmaster.core import delta
from dnsmaster.core.catalog import member_label
from dnsmaster.core.guard import judge_data
from dnsmaster.core.soa import zone_serials
from dnsmaster.errors import BuildError
from dnsmaster.master.build import Builder
from tests.lab.clock import Clock

CATALOG = b"\x07catalog\x07example\x00"
COM = b"example.com."
NET = b"example.net."
ORG = b"example.org."


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    (d / "header").write_bytes(b"# shared header\n")
    (d / "zones.example.com").write_bytes(b".example.com:192.0.2.1:a\n+www.example.com:192.0.2.2\n")
    (d / "zones.example.net").write_bytes(
        b"Zexample.net:ns.example.com:h::\n=h.example.net:192.0.2.3\n"
    )
    return d


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    d.mkdir()
    return d


def members(data: bytes) -> set[bytes]:
    """The member names the catalog section of ``data`` lists."""
    section = data[data.index(b"\n# catalog:1\n") :]
    return {line.split(b":")[1] for line in section.splitlines() if line.startswith(b"^")}


class TestCatalogBuild:
    def test_lists_every_zone_with_the_builds_serial(self, zones: Path, out: Path) -> None:
        """Each zone is a member; the catalog's SOA has the build's serial like the rest."""
        result = Builder(zones, out, clock=Clock(1_700_000_000), catalog="catalog.example").build()
        assert members(result.data) == {b"example.com.", b"example.net."}
        assert zone_serials(result.data)[CATALOG] == result.serial
        assert b"^%s.zones.catalog.example.:example.com.:0" % member_label(COM) in result.data
        assert (out / "data").read_bytes() == result.data

    def test_off_by_default(self, zones: Path, out: Path) -> None:
        """Without ``catalog`` the data is what it always was."""
        result = Builder(zones, out).build()
        assert b"# catalog:1" not in result.data
        assert CATALOG not in zone_serials(result.data)

    def test_matches_real_tinydns_data(self, zones: Path, out: Path, tinydns_data_bin: str) -> None:
        """The data with its catalog, compiled by Debian's tinydns-data, gives our data.cdb."""
        (zones / "zones.odd").write_bytes(b".Odd\\072Name.example.org\n.example.org:192.0.2.9\n")
        Builder(zones, out, catalog="catalog.example").build()
        ours = (out / "data.cdb").read_bytes()
        (out / "data.cdb").unlink()
        os.utime(out / "data", (12345, 12345))
        subprocess.run([tinydns_data_bin], cwd=out, check=True)
        assert (out / "data.cdb").read_bytes() == ours

    def test_follows_zones_added_and_removed(self, zones: Path, out: Path) -> None:
        """A rebuild lists a new zone and forgets a removed one, labels unchanged."""
        builder = Builder(zones, out, clock=Clock(1_700_000_000), catalog="catalog.example")
        first = builder.build().data
        (zones / "zones.example.org").write_bytes(b".example.org:192.0.2.4:a\n")
        (zones / "zones.example.net").unlink()
        second = builder.build().data
        assert members(second) == {b"example.com.", b"example.org."}
        com_line = b"^%s.zones.catalog.example.:example.com.:0" % member_label(COM)
        assert com_line in first
        assert com_line in second
        fresh = Builder(zones, out, clock=Clock(1_800_000_000), catalog="catalog.example")
        assert members(fresh.build().data) == members(second)

    def test_turning_it_on_is_a_change(self, zones: Path, out: Path) -> None:
        """Sources unchanged but catalog set: the data on disk is not current any more."""
        Builder(zones, out).build()
        builder = Builder(zones, out, catalog="catalog.example")
        assert not builder.is_current()
        assert builder.build(force=False) is not None
        assert builder.is_current()
        assert builder.build(force=False) is None
        assert not Builder(zones, out).is_current()

    def test_plan_has_it(self, zones: Path, out: Path) -> None:
        """What diff and the dry runs compare has the catalog too."""
        assert b"\n# catalog:1\n" in Builder(zones, out, catalog="catalog.example").plan()

    def test_record_count_includes_the_catalog(self, zones: Path, out: Path) -> None:
        """records counts what data.cdb holds: the guard compares it with the old data."""
        plain = Builder(zones, out).build().records
        with_catalog = Builder(zones, out, catalog="catalog.example").build().records
        assert with_catalog == plain + 3 + 2  # SOA, NS, TXT and a PTR per zone

    def test_guard_sees_a_dropped_zone_not_the_catalog(self, zones: Path, out: Path) -> None:
        """Removing a zone is held as before; the catalog's own change is no removal."""
        builder = Builder(zones, out, clock=Clock(1_700_000_000), catalog="catalog.example")
        old = builder.build().data
        (zones / "zones.example.net").unlink()
        new = builder.build().data
        verdict = judge_data(old, new, max_removed=1.0, zones=True)
        assert verdict is not None
        assert verdict.removed_zones == ("example.net",)

    @pytest.mark.parametrize("zone", ["catalog.example", "members.catalog.example"])
    def test_refuses_a_zone_inside_the_catalog(self, zones: Path, out: Path, zone: str) -> None:
        """A zones file serving the catalog's name would mix records into it."""
        (zones / "zones.bad").write_bytes(b".%s:192.0.2.5\n" % zone.encode())
        with pytest.raises(BuildError, match=r"zones\.bad: has the zone .*catalog") as caught:
            Builder(zones, out, catalog="catalog.example").build()
        assert caught.value.path == str(zones / "zones.bad")
        assert not (out / "data").exists()

    def test_a_zone_beside_the_catalog_is_a_member(self, zones: Path, out: Path) -> None:
        """Only the catalog's name and below are refused; a sibling name is fine."""
        (zones / "zones.x").write_bytes(b".xcatalog.example:192.0.2.5\n")
        data = Builder(zones, out, catalog="catalog.example").build().data
        assert b"xcatalog.example." in members(data)

    def test_refuses_a_bad_catalog_name(self, zones: Path, out: Path) -> None:
        """A name data cannot hold is a BuildError naming it."""
        with pytest.raises(BuildError, match="catalog"):
            Builder(zones, out, catalog="not a name").build()


class TestCatalogDelta:
    def test_a_delta_carries_only_what_changed(self, zones: Path, out: Path) -> None:
        """The catalog's serial is restamped like the zones': a new member is one line."""
        builder = Builder(zones, out, clock=Clock(1_700_000_000), catalog="catalog.example")
        old = builder.build().data
        (zones / "zones.example.org").write_bytes(b".example.org:192.0.2.4:a\n")
        new = builder.build().data
        found = delta.parse(delta.make(old, new))
        assert delta.apply(found, old) == new
        inserted = b"".join(op.text for op in found.ops if isinstance(op, delta.Insert))
        assert b"^%s.zones.catalog.example.:example.org.:0" % member_label(ORG) in inserted
        # the catalog's SOA was restamped, its other members copied: none sent again
        assert b"Zcatalog.example." not in inserted
        assert member_label(COM) not in inserted
        assert member_label(NET) not in inserted


class TestCatalogCache:
    def test_a_new_process_builds_the_same_catalog_from_the_cache(
        self, zones: Path, out: Path
    ) -> None:
        """The catalog is made again from cached sources; it is never cached itself."""
        clock = Clock(1_700_000_000)
        warm = Builder(zones, out, clock=clock, catalog="catalog.example")
        warm.build()
        sources = ["header", "zones.example.com", "zones.example.net"]
        # one index, which describes the pair: the catalog is taken from there never
        assert [p.name for p in (out / ".dnsmaster-cache").iterdir()] == ["index"]
        fresh = Builder(zones, out, clock=clock, catalog="catalog.example")
        assert fresh.is_current()
        assert fresh.plan() == warm.plan()
        assert sorted(fresh.sources.loaded) == sources
