"""``status --live`` on a slave that serves several masters: what its status reports
is this master's own section, and the master is named; the DNS part asks only this
master's zones (tests/slave/test_secondary_service.py asks a real one)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dnsmaster.commands.status import render_live
from dnsmaster.config import Config
from dnsmaster.master import probe
from dnsmaster.protocol import SlaveVersion
from dnsmaster.transport.channel import Receiver
from tests.lab.daemonrun import in_process_config

OURS = "a" * 64


def _config(tmp_path: Path) -> Config:
    zones = tmp_path / "zones"
    zones.mkdir()
    local = {"name": "l", "transport": "local", "root": str(tmp_path / "root")}
    return in_process_config(tmp_path, zones, tmp_path, local)


def answering(receiver: Receiver) -> Any:
    async def fetch(channel: Any, timeout: float, on_line: Any) -> Receiver:
        return receiver

    return fetch


@pytest.mark.parametrize(
    ("installed", "verdict", "shown"),
    [
        (SlaveVersion(OURS, 7), "ok", f"  installed  serial 7 sha256 {OURS[:16]} as master a ("),
        (SlaveVersion("b" * 64, 6), "differs", "  installed  serial 6 sha256 bbbbbbbbbbbbbbbb"),
        (None, "differs", "  installed  ? (nothing it vouches for as master a) ("),
    ],
    ids=["own-section-current", "own-section-older", "no-section-yet"],
)
def test_live_judges_the_own_section(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    installed: SlaveVersion | None,
    verdict: str,
    shown: str,
) -> None:
    """The verdict comes from this master's section (its sha256), whatever else the
    slave serves; the master's name is shown beside what is installed."""
    cfg = _config(tmp_path)
    monkeypatch.setattr(probe, "fetch_receiver", answering(Receiver(3, "9", installed, "a")))
    master = probe.Master(OURS, 7, {})
    found = asyncio.run(probe.ask_slave(cfg, cfg.slaves[0], master, 5))
    assert (found.verdict, found.master) == (verdict, "a")
    assert shown in render_live(master, [found])


def test_live_on_a_plain_slave_names_no_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path)
    monkeypatch.setattr(probe, "fetch_receiver", answering(Receiver(2, "9", None)))
    found = asyncio.run(probe.ask_slave(cfg, cfg.slaves[0], probe.Master(OURS, 7, {}), 5))
    assert found.master is None
    assert "as master" not in render_live(probe.Master(OURS, 7, {}), [found])
