"""axfrdns' tcp rules: written from the secondaries, read back as tcpserver does,
and (real) obeyed by Debian's axfrdns under tcpserver as the text says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from dnsmaster.core.axfrrules import Grant, allows, grants, normal_zone, parse, rules_text
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.errors import TransferError

if TYPE_CHECKING:
    from tests.lab.axfrdns import Axfrdns


class TestGrants:
    def test_one_line_per_address(self) -> None:
        """Each transfer address gets the zones of its secondary, in order."""
        found = grants([(["192.0.2.7", "192.0.2.8"], ["Example.COM.", "example.net"])])
        assert found == [
            Grant("192.0.2.7", ("example.com", "example.net")),
            Grant("192.0.2.8", ("example.com", "example.net")),
        ]

    def test_every_zone(self) -> None:
        """No zones listed: no AXFR list, so the secondary follows the data."""
        assert grants([(["192.0.2.7"], [])], catalog="catalog.example") == [
            Grant("192.0.2.7", None)
        ]

    def test_catalog_added_to_listed_zones(self) -> None:
        """A secondary with listed zones may also transfer the catalog zone."""
        found = grants([(["192.0.2.7"], ["example.com"])], catalog="catalog.example.")
        assert found == [Grant("192.0.2.7", ("example.com", "catalog.example"))]

    def test_shared_address_merges(self) -> None:
        """Two secondaries behind one address share its line: the union, no repeats."""
        found = grants(
            [(["192.0.2.7"], ["a.example"]), (["192.0.2.7"], ["b.example", "a.example"])]
        )
        assert found == [Grant("192.0.2.7", ("a.example", "b.example"))]

    def test_shared_address_every_zone_wins(self) -> None:
        """If either secondary behind an address carries every zone, the line allows all."""
        found = grants([(["192.0.2.7"], ["a.example"]), (["192.0.2.7"], [])])
        assert found == [Grant("192.0.2.7", None)]

    @pytest.mark.parametrize(
        ("address", "words"),
        [("2001:db8::7", "IPv4 only"), ("ns1.example", "not an IP address")],
    )
    def test_addresses_tcpserver_cannot_match(self, address: str, words: str) -> None:
        """IPv6 and names are refused with the reason, not written into a rule."""
        with pytest.raises(ValueError, match=words):
            grants([([address], [])])

    @pytest.mark.parametrize("zone", ['a"b.example', "a/b.example", "a,b.example", "a b.example"])
    def test_zones_a_rule_cannot_carry(self, zone: str) -> None:
        """A zone that would end the quote or split the list is refused."""
        with pytest.raises(ValueError, match="tcp rules line"):
            normal_zone(zone)


class TestRulesText:
    def test_lines(self) -> None:
        """Allowed addresses, AXFR quoted and slash-separated, then deny for the rest."""
        text = rules_text(
            [Grant("192.0.2.7", ("example.com", "example.net")), Grant("192.0.2.9", None)]
        )
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        assert lines == [
            '192.0.2.7:allow,AXFR="example.com/example.net"',
            "192.0.2.9:allow",
            ":deny",
        ]

    def test_no_secondaries_denies_all(self) -> None:
        assert [ln for ln in rules_text([]).splitlines() if not ln.startswith("#")] == [":deny"]


class TestAllows:
    TEXT = (
        "# a comment\n"
        '192.0.2.7:allow,AXFR="example.com/Example.NET."\n'
        "192.0.2.7:deny\n"
        "192.0.2.9:allow\n"
        "198.51.100.:allow,AXFR=example.org\n"
        "203.0.113.1-3:allow\n"
        ":deny\n"
    )

    @pytest.mark.parametrize(
        ("address", "zone", "allowed", "words"),
        [
            ("192.0.2.7", "example.com", True, "line 2"),
            ("192.0.2.7", "example.net.", True, "line 2"),
            ("192.0.2.7", "example.org", False, "only AXFR="),
            ("192.0.2.9", "anything.example", True, "every zone"),
            ("198.51.100.4", "example.org", True, "198.51.100."),
            ("203.0.113.2", "x.example", True, "203.0.113.2"),
            ("203.0.113.4", "x.example", False, "everyone"),
            ("192.0.2.8", "example.com", False, "denies"),
        ],
    )
    def test_lookup(self, address: str, zone: str, allowed: bool, words: str) -> None:
        """Exact address, then prefixes, then the empty rule; the first line wins."""
        verdict, why = allows(parse(self.TEXT), address, zone)
        assert verdict is allowed, why
        assert words in why

    def test_no_rule(self) -> None:
        """Without a catch-all line, an unknown address matches nothing: refused."""
        verdict, why = allows(parse("192.0.2.7:allow\n"), "192.0.2.8", "example.com")
        assert not verdict
        assert "no rule matches" in why

    def test_written_rules_read_back(self) -> None:
        """What rules_text writes, parse and allows read as meant."""
        rules = parse(rules_text(grants([(["192.0.2.7"], ["example.com"])])))
        assert allows(rules, "192.0.2.7", "example.com")[0]
        assert not allows(rules, "192.0.2.7", "example.net")[0]
        assert not allows(rules, "192.0.2.8", "example.com")[0]


# -- against Debian's axfrdns under tcpserver ----------------------------------------

ALLOWED = "127.0.2.7"  # a secondary's transfer address (loopback: any 127.x is ours)
OTHER = "127.0.2.8"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, axfrdns_bin: str, tcpserver_bin: str
) -> Iterator[Axfrdns]:
    """One axfrdns + tinydns for the module, serving two zones."""
    from tests.lab.axfrdns import Axfrdns  # noqa: PLC0415 - after pytest rewrote tests.lab

    base = tmp_path_factory.mktemp("axfrrules")
    root = base / "root"
    root.mkdir()
    root.chmod(0o755)
    data = assemble(
        [
            compile_source(
                "zones.example.com", b".example.com::ns1.example.com\n+www.example.com:192.0.2.80\n"
            ),
            compile_source("zones.example.net", b".example.net::ns1.example.net\n"),
        ],
        1_700_000_000,
    ).data
    (root / "data.cdb").write_bytes(compile_data(data, 1_700_000_000))
    (root / "data.cdb").chmod(0o644)
    with Axfrdns(root, base / "work") as server:
        yield server


class TestRealAxfrdns:
    def test_allowed_zone_from_allowed_address(self, served: Axfrdns) -> None:
        """The written rule lets its address transfer its zone, records and all."""
        served.set_rules(rules_text(grants([([ALLOWED], ["example.com"])])))
        done = served.transfer("example.com", source=ALLOWED)
        assert (done.serial, done.records) == (1_700_000_000, 3)

    def test_other_address_refused(self, served: Axfrdns) -> None:
        served.set_rules(rules_text(grants([([ALLOWED], ["example.com"])])))
        with pytest.raises(TransferError):
            served.transfer("example.com", source=OTHER)

    def test_other_zone_refused(self, served: Axfrdns) -> None:
        served.set_rules(rules_text(grants([([ALLOWED], ["example.com"])])))
        with pytest.raises(TransferError):
            served.transfer("example.net", source=ALLOWED)

    def test_every_zone_line(self, served: Axfrdns) -> None:
        """A line without AXFR lets the address transfer each zone in data."""
        served.set_rules(rules_text(grants([([ALLOWED], [])])))
        for zone in ("example.com", "example.net"):
            assert served.transfer(zone, source=ALLOWED).serial == 1_700_000_000
