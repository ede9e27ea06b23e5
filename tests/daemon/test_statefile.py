"""The daemon's state file on its own: what a snapshot says of the holds, and updates
made close together written once.

What ``status`` makes of the file is in tests/commands/test_status.py; the file's
format in tests/master/test_state.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnsmaster import config as configuration
from dnsmaster.config import Config
from dnsmaster.daemon import statefile as daemon_statefile
from dnsmaster.daemon.statefile import STATE_DELAY, StateFile
from dnsmaster.daemon.worker import Current
from dnsmaster.master import rollback
from dnsmaster.master import state as statefile
from tests.lab.daemonrun import config_text


class Holds:
    """What the state file reads of the holds."""

    def __init__(self) -> None:
        self.held: tuple[Current, str, float] | None = None
        self.kept_build: statefile.BuildState | None = None
        self.rollback: rollback.Hold | None = None
        self.rollback_held: Current | None = None
        self.request: statefile.RequestAnswer | None = None


class Published:
    """The daemon as the state file sees it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.holds = Holds()
        self.current: Current | None = None
        self.build_error: str | None = None

    def slave_states(self) -> Sequence[statefile.SlaveState]:
        return (statefile.SlaveState("ns2"),)

    def secondary_states(self) -> Sequence[statefile.SecondaryState]:
        return (statefile.SecondaryState("nsd1", serial=7, result="waiting"),)


def build(serial: int) -> Current:
    data = f"Zexample.com:a::::{serial}\n".encode()
    return Current(data, hashlib.sha256(data).hexdigest(), serial, 1, 0.0, {})


@pytest.fixture
def written(tmp_path: Path) -> tuple[StateFile, Published]:
    (tmp_path / "zones").mkdir()
    (tmp_path / "out").mkdir()
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=tmp_path / "zones",
            output=tmp_path / "out",
            state=tmp_path / "state.json",
            slaves=[{"name": "ns2", "transport": "local", "root": tmp_path / "ns2"}],
        )
    )
    daemon = Published(configuration.load(path))
    config = statefile.ConfigState(str(path), None, None, 0.0)
    return StateFile(daemon, config, log=None), daemon


class TestSnapshot:
    def test_the_current_build(self, written: tuple[StateFile, Published]) -> None:
        """The current build, its last failure, the slaves and who wrote it."""
        state_file, daemon = written
        daemon.current, daemon.build_error = build(7), "zones.x:3: bad"
        snap = state_file.snapshot()
        assert snap.build is not None
        assert (snap.build.serial, snap.build.error) == (7, "zones.x:3: bad")
        assert [s.name for s in snap.slaves] == ["ns2"]
        assert [(s.name, s.result) for s in snap.secondaries] == [("nsd1", "waiting")]
        assert (snap.instance, snap.boot_id) == (state_file.instance, state_file.boot_id)
        assert snap.held is None
        assert snap.rollback is None

    def test_a_held_build(self, written: tuple[StateFile, Published]) -> None:
        """Held by the guard after a restart: the build the slaves keep, and the held one."""
        state_file, daemon = written
        daemon.holds.held = (build(8), "removes too much", 5.0)
        daemon.holds.kept_build = statefile.BuildState(7, "k" * 64, None, 1.0)
        snap = state_file.snapshot()
        assert snap.build == daemon.holds.kept_build
        assert snap.held is not None
        assert (snap.held.serial, snap.held.reason, snap.held.since) == (
            8,
            "removes too much",
            5.0,
        )

    def test_a_rollback(self, written: tuple[StateFile, Published]) -> None:
        """A rollback in force, with the save it holds back."""
        state_file, daemon = written
        daemon.holds.rollback = rollback.Hold(9, "r" * 64, 3, "c" * 64, 2.0)
        daemon.holds.rollback_held = build(10)
        snap = state_file.snapshot()
        assert snap.rollback is not None
        assert (snap.rollback.serial, snap.rollback.kept_serial) == (9, 3)
        assert snap.rollback.held_serial == 10


class TestSave:
    async def test_updates_close_together_are_one_write(
        self, written: tuple[StateFile, Published], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ten updates within STATE_DELAY are one fsynced write; ``now`` writes at once."""
        state_file, _ = written
        writes: list[Path] = []
        monkeypatch.setattr(
            daemon_statefile.statefile, "write", lambda path, state: writes.append(path)
        )
        for _ in range(10):
            state_file.save()
        assert writes == []
        assert state_file.pending
        async with asyncio.timeout(5):
            while state_file.pending:
                await asyncio.sleep(STATE_DELAY / 4)
        assert len(writes) == 1  # and nothing is pending: no second write follows
        state_file.save(now=True)
        assert len(writes) == 2
