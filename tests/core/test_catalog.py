"""The catalog zone's tinydns lines (RFC 9432)."""

from __future__ import annotations

import hashlib

import pytest

from dnsmaster.core.catalog import (
    CATALOG_SOURCE,
    catalog_lines,
    catalog_wire,
    catalog_zone,
    inside,
    member_label,
    member_name,
    name_text,
    zones_in,
)
from dnsmaster.core.cdb import CdbReader
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.fields import name_to_wire
from dnsmaster.core.makedata import assemble, compile_source, fingerprint
from dnsmaster.core.soa import zone_serials
from dnsmaster.errors import NameTooLong

CATALOG = b"\x07catalog\x07example\x00"
COM = b"\x07example\x03com\x00"
SERIAL = 1700000000


def _label(name: bytes) -> bytes:
    return hashlib.sha256(name).hexdigest()[:32].encode()


def _records(data: bytes) -> set[tuple[bytes, bytes]]:
    return set(CdbReader(compile_data(data, 0)).items())


class TestCatalogLines:
    def test_rfc_9432_shape(self) -> None:
        """SOA without a serial, NS invalid., version "2", one PTR per member, TTL 0."""
        assert catalog_lines(CATALOG, [b"example.net.", b"example.com."]).splitlines() == [
            b"Zcatalog.example.:invalid.:invalid.::3600:600:2147483646:0:0",
            b"&catalog.example.::invalid.:0",
            b"'version.catalog.example.:2:0",
            b"^%s.zones.catalog.example.:example.com.:0" % _label(b"example.com."),
            b"^%s.zones.catalog.example.:example.net.:0" % _label(b"example.net."),
        ]

    def test_members_once_catalog_never(self) -> None:
        """A zone found twice is one member; the catalog does not list itself."""
        members = [b"example.com.", b"example.com.", b"catalog.example."]
        lines = catalog_lines(CATALOG, members).splitlines()
        assert [line for line in lines if line.startswith(b"^")] == [
            b"^%s.zones.catalog.example.:example.com.:0" % _label(b"example.com.")
        ]

    def test_no_members(self) -> None:
        """An empty catalog is still a zone a consumer can transfer."""
        assert len(catalog_lines(CATALOG, []).splitlines()) == 3

    def test_compiles_to_the_records_it_means(self) -> None:
        """The lines are valid data, giving exactly the RFC's records."""
        text = catalog_lines(CATALOG, [b"example.com."])
        source = compile_source(CATALOG_SOURCE, text)
        assert source.warnings == ()
        data = assemble([source], SERIAL).data
        assert zone_serials(data) == {CATALOG: SERIAL}
        # a tinydns record: key the owner, value the type, "=", TTL, TTD, rdata (spec §4)
        found = {(key, value[:2], value[3:7], value[15:]) for key, value in _records(data)}
        ttl0 = bytes(4)
        ptr_owner = b"\x20" + _label(b"example.com.") + b"\x05zones" + CATALOG
        assert (CATALOG, b"\0\x02", ttl0, b"\x07invalid\0") in found
        assert (b"\x07version" + CATALOG, b"\0\x10", ttl0, b"\x012") in found
        assert (ptr_owner, b"\0\x0c", ttl0, COM) in found
        assert [r[1] for r in found].count(b"\0\x06") == 1  # the SOA
        assert len(found) == 4


class TestMemberName:
    @pytest.mark.parametrize(
        ("field", "name"),
        [
            (b"example.com", b"example.com."),
            (b"Example.COM.", b"example.com."),
            (b".example..com", b"example.com."),
            (b"\\105xample.com", b"example.com."),
            (b"", b"."),
        ],
    )
    def test_one_form_per_zone(self, field: bytes, name: bytes) -> None:
        """Every way data may write a zone's name gives the one name tinydns serves."""
        assert member_name(field) == name

    def test_odd_names_survive(self) -> None:
        """A label with a dot, a colon or a capital is escaped, never split or cut."""
        name = member_name(b"a\\056B\\072.Example")
        assert name == b"a\\056b\\072.example."
        assert name_to_wire(name) == b"\x04a.b:\x07example\x00"

    def test_refuses_what_tinydns_data_refuses(self) -> None:
        """A label of 64 bytes is no name."""
        with pytest.raises(NameTooLong):
            member_name(b"x" * 64 + b".example")


class TestMemberLabel:
    def test_stable(self) -> None:
        """The label depends on the member's name only."""
        assert member_label(b"example.com.") == _label(b"example.com.")
        assert member_label(b"example.com.") != member_label(b"example.net.")

    def test_is_one_label(self) -> None:
        """32 hex digits: a single DNS label, well under 63 bytes."""
        assert len(member_label(b"example.com.")) == 32
        assert member_label(b"example.com.").isalnum()


class TestInside:
    def test_the_catalog_and_below(self) -> None:
        """The catalog's name and names under it are inside; a sibling is not."""
        assert inside(b"catalog.example.", CATALOG)
        assert inside(b"x.catalog.example.", CATALOG)
        assert not inside(b"xcatalog.example.", CATALOG)
        assert not inside(b"example.", CATALOG)


class TestNameText:
    def test_plain_and_root(self) -> None:
        """Wire names become dotted text with a final dot; the root is a lone dot."""
        assert name_text(COM) == b"example.com."
        assert name_text(b"\x00") == b"."

    def test_escapes_round_trip(self) -> None:
        """Every byte a label may hold comes back from tinydns-data's name rule."""
        wire = b"\x08\x00\x01\\ :.\xff\x07\x03com\x00"
        assert name_to_wire(name_text(wire)) == wire


class TestCatalogWire:
    def test_takes_a_host_name(self) -> None:
        """A plain name, with or without a final dot, in lower case."""
        assert catalog_wire("Catalog.Example.") == CATALOG
        assert catalog_wire("catalog.example") == CATALOG

    @pytest.mark.parametrize(
        "name", ["", ".", "catalog", "catalog..example", "cat alog.example", "a:b.example"]
    )
    def test_refuses_what_data_cannot_hold(self, name: str) -> None:
        """One label, empty labels, blanks and colons are mistakes, said as such."""
        with pytest.raises(ValueError, match=r"catalog|domain name"):
            catalog_wire(name)

    def test_refuses_a_long_label(self) -> None:
        """A label of 64 bytes cannot be in a name."""
        with pytest.raises(ValueError, match="63"):
            catalog_wire("x" * 64 + ".example")


class TestZonesIn:
    def test_zones_of_a_compiled_source(self) -> None:
        """Z lines, stamped or not, and dot lines give the source's zones, once each."""
        source = compile_source(
            "zones.x",
            b".Example.COM:192.0.2.1:a\nZexample.net:ns:host:42\n"
            b"+www.example.com:1.2.3.4\n.example.com::b\n",
        )
        assert zones_in(source.pieces) == [b"example.com.", b"example.net."]

    def test_pieces_as_the_cache_gives_them(self) -> None:
        """Memoryviews, a Z line at the very start, a cut inside a Z line."""
        pieces = [b"Zexample.com:ns:h:", memoryview(b":1\nZExample.NET:ns"), b"\n+x.y:1.2.3.4\n"]
        assert zones_in(pieces) == [b"example.com.", b"example.net."]
        assert zones_in([b"# x:1\n", b"Zafter.cut.example\n"]) == []

    def test_comments_are_not_zones(self) -> None:
        """A dot line's traced copy in a comment is no Z line."""
        source = compile_source("zones.x", b"# Zexample.org\n.example.com\n")
        assert zones_in(source.pieces) == [b"example.com."]


class TestFingerprint:
    def test_catalog_counts_and_its_section_does_not(self) -> None:
        """Turning the catalog on changes the fingerprint; the catalog's digest never does."""
        pairs = [("zones.a", b"1" * 32)]
        plain = fingerprint(pairs)
        with_catalog = fingerprint(pairs, catalog="catalog.example")
        assert plain != with_catalog
        assert fingerprint([*pairs, (CATALOG_SOURCE, b"2" * 32)]) == plain
        assert fingerprint(pairs, catalog="Catalog.Example.") == with_catalog


class TestSections:
    def test_the_catalog_is_a_section_of_its_own(self) -> None:
        """zone_serials of the last zones file does not take the catalog's zone."""
        com = compile_source("zones.com", b".example.com:192.0.2.1:a\n")
        catalog = compile_source(CATALOG_SOURCE, catalog_lines(CATALOG, [b"example.com."]))
        data = assemble([com, catalog], SERIAL, catalog="catalog.example").data
        assert b"\n# catalog:1\n" in data
        assert zone_serials(data, frozenset({"zones.com"})) == {COM: SERIAL}
        assert zone_serials(data, frozenset({CATALOG_SOURCE})) == {CATALOG: SERIAL}


class TestCatalogZone:
    def test_found_in_a_build(self) -> None:
        """The catalog's name comes from its section, the last one of data."""
        com = compile_source("zones.com", b".example.com:192.0.2.1:a\n")
        catalog = compile_source(CATALOG_SOURCE, catalog_lines(CATALOG, [b"example.com."]))
        assert catalog_zone(assemble([com, catalog], SERIAL, catalog="c").data) == CATALOG

    def test_none_without_one(self) -> None:
        """Data without a catalog section has no catalog, whatever its zones are called."""
        com = compile_source("zones.com", b".catalog.example:192.0.2.1:a\n")
        assert catalog_zone(assemble([com], SERIAL).data) is None
        assert catalog_zone(b"") is None
