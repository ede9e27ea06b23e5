"""Knot as a catalog consumer of the master's axfrdns: zones come and go by themselves.

The master builds with ``catalog`` set into the directory a real axfrdns (and
tinydns) serve; Debian's Knot 3.2 has only the catalog zone in its configuration
(``catalog-role: interpret``) and a template for its members. After a build, the
master feeds Knot as the daemon feeds every ``[[secondary]]``
(:func:`dnsmaster.master.secondaries.plan` and ``feed``: NOTIFY, then the SOA of
each zone until it serves the build): a zone added to the zones directory is
served by Knot, a zone removed is dropped, and Knot's configuration is never
touched. Knot's refresh is an hour (:data:`tests.lab.knot.REFRESH`), so only the
NOTIFY explains it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster import config
from dnsmaster.config import NotifyOptions, Secondary
from dnsmaster.core.axfrrules import grants, rules_text
from dnsmaster.core.soa import zone_serials
from dnsmaster.master.build import Builder, BuildResult
from dnsmaster.master.checkup import Build
from dnsmaster.master.secondaries import feed, plan
from dnsmaster.master.secondarycheckup import check_secondary
from dnsmaster.master.state import SecondaryState
from tests.lab.axfrdns import Axfrdns
from tests.lab.knot import Knot
from tests.lab.recorder import Recorder

CATALOG = "catalog.example"


@pytest.fixture
def master(tmp_path: Path, axfrdns_bin: str, tcpserver_bin: str) -> Iterator[Axfrdns]:
    """tinydns and axfrdns serving an empty output directory (filled by the test)."""
    output = tmp_path / "output"
    output.mkdir()
    with Axfrdns(output, tmp_path / "axfrdns") as server:
        yield server


@pytest.fixture
def knot(tmp_path: Path, master: Axfrdns, knotd_bin: str) -> Iterator[Knot]:
    """Knot consuming the master's catalog, allowed to transfer every zone."""
    consumer = Knot(tmp_path / "knot", master=master.address, catalog=CATALOG)
    try:
        master.set_rules(rules_text(grants([([consumer.address], [])])))
        yield consumer
    finally:
        consumer.close()


def fed(knot: Knot, old: BuildResult, new: BuildResult) -> tuple[SecondaryState, Recorder]:
    """Feed ``new`` to Knot as the daemon does after ``old``; how it ended, and the log."""
    secondary = Secondary("knot1", knot.address, 53)
    options = NotifyOptions(timeout=0.5, retries=3, confirm_timeout=10.0)
    logger = Recorder()
    p = plan(secondary, new.data, new.serial, old.data)
    return asyncio.run(feed(p, options, logger, update=lambda _: None)), logger


def built(builder: Builder) -> BuildResult:
    result = builder.build()
    assert result is not None
    return result


def test_members_follow_the_catalog(tmp_path: Path, master: Axfrdns, knot: Knot) -> None:
    """Knot serves the zones the catalog lists, takes a new one and drops a removed one."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "zones.example.com").write_bytes(b".example.com:192.0.2.1:a\n")
    (zones / "zones.example.net").write_bytes(b".example.net:192.0.2.2:a\n")
    builder = Builder(zones, master.root, catalog=CATALOG)
    first = built(builder)
    config = knot.config.read_bytes()

    knot.start()  # its first transfer of the catalog: no NOTIFY needed
    # Knot does not answer for the catalog zone itself: only its members are checked.
    start = dict.fromkeys(["example.com", "example.net"], first.serial)
    knot.wait_serials(start | {"example.org": None})

    (zones / "zones.example.org").write_bytes(b".example.org:192.0.2.3:a\n")
    (zones / "zones.example.net").unlink()
    second = built(builder)
    state, log = fed(knot, first, second)
    assert (state.result, state.serving, state.zones) == ("serving", second.serial, 2), log
    assert {e["zone"] for e in log.find("notify.acked")} == {"example.com", CATALOG}
    assert not log.find("notify.failed")
    now = dict.fromkeys(["example.com", "example.org"], second.serial)
    knot.wait_serials(now | {"example.net": None})
    assert knot.config.read_bytes() == config
    assert doctor(tmp_path, master, knot, second) == []


def doctor(tmp_path: Path, master: Axfrdns, knot: Knot, build: BuildResult) -> list[str]:
    """What ``dnsmaster doctor`` finds wrong with Knot as a ``[[secondary]]``."""
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        f'zones = "zones"\noutput = "{master.root}"\ncatalog = "{CATALOG}"\n'
        f'[axfrdns]\nip = "{master.address}"\n'
        f'[[secondary]]\nname = "knot1"\naddress = "{knot.address}"\n'
    )
    cfg = config.load(path)
    now = Build(build.sha256, build.serial, zone_serials(build.data))
    found = asyncio.run(check_secondary(cfg, cfg.secondaries[0], now, timeout=30))
    return [c.line() for c in found if c.status != "OK"]
