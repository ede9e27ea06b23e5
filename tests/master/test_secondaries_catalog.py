"""Feeding a catalog consumer: the catalog's NOTIFY brings the new members."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsmaster.config import Secondary
from dnsmaster.master.build import Builder
from dnsmaster.master.secondaries import plan
from tests.lab.clock import Clock

CATALOG = b"\x07catalog\x07example\x00"
COM = b"\x07example\x03com\x00"
NET = b"\x07example\x03net\x00"
ORG = b"\x07example\x03org\x00"
SECONDARY = Secondary("knot1", "192.0.2.7")


@pytest.fixture
def builder(tmp_path: Path) -> Builder:
    zones, out = tmp_path / "zones", tmp_path / "out"
    zones.mkdir()
    out.mkdir()
    (zones / "zones.example.com").write_bytes(b".example.com:192.0.2.1:a\n")
    (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.2:a\n")
    return Builder(zones, out, clock=Clock(1_700_000_000), catalog="catalog.example")


def test_the_catalog_is_notified_never_asked(builder: Builder) -> None:
    """The catalog gets a NOTIFY; only its members are asked for their SOA."""
    first = builder.build()
    p = plan(SECONDARY, first.data, first.serial, None)
    assert set(p.notify) == {COM, NET, CATALOG}
    assert set(p.zones) == {COM, NET}


def test_a_new_member_comes_from_the_catalog(builder: Builder) -> None:
    """A zone new in the build is not notified (the consumer does not have it yet),
    but it is confirmed: served, it shows the catalog came through."""
    first = builder.build()
    (builder.zones / "zones.example.org").write_bytes(b".example.org:192.0.2.4:a\n")
    (builder.zones / "zones.example.net").unlink()
    second = builder.build()
    p = plan(SECONDARY, second.data, second.serial, first.data)
    assert set(p.notify) == {COM, CATALOG}
    assert set(p.zones) == {COM, ORG}


def test_a_secondary_naming_its_zones_is_fed_as_before(builder: Builder) -> None:
    """Without the catalog among its zones, a secondary's plan is the plain one."""
    first = builder.build()
    (builder.zones / "zones.example.org").write_bytes(b".example.org:192.0.2.4:a\n")
    second = builder.build()
    named = Secondary("nsd1", "192.0.2.8", zones=("example.com", "example.org"))
    p = plan(named, second.data, second.serial, first.data)
    assert set(p.notify) == set(p.zones) == {COM, ORG}
