"""Which zones, with which serials, a build's data serves."""

from __future__ import annotations

from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.soa import zone_serials

COM_ZONES = b".Example.COM:192.0.2.1:a\n+www.example.com:1.2.3.4\n"
COM = b"\x07example\x03com\x00"
NET = b"\x07example\x03net\x00"


def _data(serial: int = 1700000000) -> bytes:
    sources = [
        compile_source(
            "zones.example.com", b".Example.COM:192.0.2.1:a\n+www.example.com:1.2.3.4\n"
        ),
        compile_source("zones.example.net", b"Zexample.net:ns:host:42\n.example.org::ns.x\n"),
    ]
    return assemble(sources, serial).data


class TestZoneSerials:
    def test_every_zone(self) -> None:
        """Dot lines get the build's serial; an explicit Z serial is kept."""
        found = zone_serials(_data())
        assert found == {COM: 1700000000, NET: 42, b"\x07example\x03org\x00": 1700000000}

    def test_names_are_lower_case(self) -> None:
        """DNS names compare without case; the key is the lower-case wire name."""
        assert COM in zone_serials(_data())

    def test_only_some_sources(self) -> None:
        """Restricting to changed sources leaves the others out."""
        assert set(zone_serials(_data(), frozenset({"zones.example.com"}))) == {COM}

    def test_no_zones(self) -> None:
        """Data without Z lines serves no SOA."""
        assert zone_serials(b"+a.example.com:1.2.3.4\n") == {}

    def test_few_sources_found_as_a_scan_of_every_marker_does(self) -> None:
        """A few changed sources are found by their markers alone; what they give is
        what the scan of every marker gives (the one for many sources), marker
        look-alikes inside another section included."""
        lookalike = b"Zfake.example:ns:host:7\n"
        sources = [
            compile_source(f"zones.s{i:02d}", b"Zs%d.example:ns:host:%d\n" % (i, 100 + i))
            for i in range(40)
        ]
        data = assemble(sources, 1700000000).data
        # a comment line in zones.s03 that looks like zones.s05's marker
        data = data.replace(b"Zs3.example", b"# zones.s05:1\n" + lookalike + b"Zs3.example")
        many = frozenset(f"zones.s{i:02d}" for i in range(0, 40, 1))
        everything = zone_serials(data, many)
        assert len(everything) == 41
        few = zone_serials(data, frozenset({"zones.s05", "zones.s01"}))
        assert few == {k: v for k, v in everything.items() if k in few}
        # zones.s03's lines after the look-alike count as zones.s05's, both ways
        assert set(few) == {
            b"\x02s1\x07example\x00",
            b"\x02s5\x07example\x00",
            b"\x04fake\x07example\x00",
            b"\x02s3\x07example\x00",
        }
