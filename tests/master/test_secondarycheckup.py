"""doctor's checks of a standard secondary, against Debian's tinydns and axfrdns.

One master side for the module (:class:`tests.lab.axfrdns.Axfrdns`: tinydns and
axfrdns under tcpserver on one 127.0.1.N, serving the build, with rules written as
``service-conf --axfrdns`` writes them into the ``[axfrdns] service`` directory). The
secondary that answers the SOA is that same tinydns: it serves the master's serial,
which is what a secondary that has caught up does, at the cost of no extra server.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster import config
from dnsmaster.core.axfrrules import rules_text
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.soa import zone_serials
from dnsmaster.master.checkup import Build, Check
from dnsmaster.master.secondarycheckup import (
    SecondaryCheckup,
    check_secondary,
    secondary_grants,
)

if TYPE_CHECKING:
    from tests.lab.axfrdns import Axfrdns

SERIAL = 1_700_000_000
TRANSFER = "127.0.2.7"  # the secondary's transfer address (this machine holds all of 127/8)
SILENT = "127.0.2.99"  # nothing answers DNS here


@dataclass
class Master:
    server: Axfrdns
    build: Build
    base: Path


@pytest.fixture(scope="module")
def master(
    tmp_path_factory: pytest.TempPathFactory, axfrdns_bin: str, tcpserver_bin: str
) -> Iterator[Master]:
    from tests.lab.axfrdns import Axfrdns  # noqa: PLC0415 - after pytest rewrote tests.lab

    base = tmp_path_factory.mktemp("secondarycheckup")
    out = base / "out"
    out.mkdir()
    out.chmod(0o755)
    data = assemble(
        [
            compile_source(
                "zones.example.com", b".example.com::ns1.example.com\n+www.example.com:192.0.2.80\n"
            ),
            compile_source("zones.example.net", b".example.net::ns1.example.net\n"),
        ],
        SERIAL,
    ).data
    (out / "data").write_bytes(data)
    (out / "data.cdb").write_bytes(compile_data(data, SERIAL))
    (out / "data.cdb").chmod(0o644)
    build = Build(hashlib.sha256(data).hexdigest(), SERIAL, zone_serials(data))
    with Axfrdns(out, base / "axfrdns") as server:
        yield Master(server, build, base)


def load(m: Master, name: str, secondary: str) -> config.Config:
    path = m.base / f"{name}.toml"
    path.write_text(
        'zones = "zones"\noutput = "out"\n[daemon]\nverify_timeout = 0.5\n'
        f'[axfrdns]\nip = "{m.server.address}"\nservice = "{m.server.workdir}"\n'
        f'[[secondary]]\nname = "sec"\n{secondary}'
    )
    return config.load(path)


def checks(m: Master, cfg: config.Config) -> list[Check]:
    return asyncio.run(check_secondary(cfg, cfg.secondaries[0], m.build, timeout=30))


def failed(found: list[Check]) -> list[str]:
    return [c.line() for c in found if c.status != "OK"]


GOOD = f'address = "{{ip}}"\nzones = ["example.com"]\ntransfer_from = ["{TRANSFER}"]\n'


def test_good_setup_passes(master: Master) -> None:
    """SOA with the master's serial, the transfer as the secondary, the rules: all OK."""
    cfg = load(master, "good", GOOD.format(ip=master.server.address))
    master.server.set_rules(rules_text(secondary_grants(cfg)))
    found = checks(master, cfg)
    assert failed(found) == []
    lines = "\n".join(c.line() for c in found)
    assert f"example.com serial {SERIAL} (the master's)" in lines
    assert f"as {TRANSFER}: example.com serial {SERIAL}, 3 records" in lines
    assert f"allow {TRANSFER}" in lines


def test_address_not_in_rules(master: Master) -> None:
    """A transfer address added to the config but not to the rules: the transfer as
    it and the rules check both fail, naming the address and the fix."""
    written = load(master, "written", GOOD.format(ip=master.server.address))
    master.server.set_rules(rules_text(secondary_grants(written)))
    cfg = load(
        master,
        "new-address",
        f'address = "{master.server.address}"\nzones = ["example.com"]\n'
        f'transfer_from = ["127.0.2.9", "{TRANSFER}"]\n',
    )
    bad = failed(checks(master, cfg))
    assert any("AXFR" in line and "as 127.0.2.9" in line and "refused" in line for line in bad), bad
    rules = [line for line in bad if "rules" in line and "127.0.2.9" in line]
    assert rules, bad
    assert "service-conf --axfrdns again" in rules[0]


def test_secondary_not_answering(master: Master) -> None:
    """A secondary that does not answer the SOA fails, named, with what to check."""
    cfg = load(master, "silent", GOOD.format(ip=SILENT))
    master.server.set_rules(rules_text(secondary_grants(cfg)))
    bad = failed(checks(master, cfg))
    soa = [line for line in bad if f"SOA from {SILENT}" in line]
    assert soa, bad
    assert soa[0].startswith("FAIL")
    assert "example.com: no answer (timeout)" in soa[0]


# -- without servers -------------------------------------------------------------------


def unit_config(tmp_path: Path, secondary: str, service: Path | None = None) -> config.Config:
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        'zones = "zones"\noutput = "out"\n[axfrdns]\nip = "192.0.2.53"\n'
        + (f'service = "{service}"\n' if service else "")
        + f'[[secondary]]\nname = "sec"\naddress = "192.0.2.7"\n{secondary}'
    )
    return config.load(path)


def unit_build() -> Build:
    data = assemble(
        [compile_source("zones.example.com", b".example.com::ns1.example.com\n")], SERIAL
    ).data
    return Build(hashlib.sha256(data).hexdigest(), SERIAL, zone_serials(data))


class TestWithoutServers:
    def test_zone_not_in_data(self, tmp_path: Path) -> None:
        """A configured zone the data lacks fails before anything is asked."""
        cfg = unit_config(tmp_path, 'zones = ["example.com", "example.org"]\n')
        check = SecondaryCheckup(cfg, cfg.secondaries[0], unit_build())
        assert check._zones()
        assert check.zones == {"example.com": SERIAL, "example.org": None}
        (line,) = failed(check.group.checks)
        assert "example.org: not in the master's data" in line

    def test_every_zone_of_the_build(self, tmp_path: Path) -> None:
        cfg = unit_config(tmp_path, "")
        check = SecondaryCheckup(cfg, cfg.secondaries[0], unit_build())
        assert check._zones()
        assert check.zones == {"example.com": SERIAL}

    def test_no_build(self, tmp_path: Path) -> None:
        """Nothing built: a warning, and nothing asked."""
        cfg = unit_config(tmp_path, "")
        found = asyncio.run(check_secondary(cfg, cfg.secondaries[0], None, timeout=5))
        assert [c.status for c in found] == ["WARN"]

    def test_stale_rules_cdb(self, tmp_path: Path) -> None:
        """tcp edited after tcp.cdb was compiled: tcpserver does not use it; fail."""
        service = tmp_path / "axfrdns"
        service.mkdir()
        (service / "tcp.cdb").write_bytes(b"")
        os.utime(service / "tcp.cdb", (1, 1))
        cfg = unit_config(tmp_path, "", service)
        (service / "tcp").write_text(rules_text(secondary_grants(cfg)))
        check = SecondaryCheckup(cfg, cfg.secondaries[0], unit_build())
        assert check._zones()
        check._rules(service)
        (line,) = failed(check.group.checks)
        assert "tcp.cdb is older than tcp" in line

    def test_rules_missing(self, tmp_path: Path) -> None:
        cfg = unit_config(tmp_path, "", tmp_path / "nowhere")
        check = SecondaryCheckup(cfg, cfg.secondaries[0], unit_build())
        assert check._zones()
        check._rules(tmp_path / "nowhere")
        (line,) = failed(check.group.checks)
        assert "cannot read" in line
        assert "service-conf --axfrdns" in line
