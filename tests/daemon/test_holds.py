"""The holds on their own, with a stand-in for the daemon (:class:`Keeper`): accepting
a held build, hand-off files that are not this daemon's, a save during a rollback.

The same paths end to end, against a running daemon, are in tests/master/test_handoff.py
and tests/commands/test_rollback.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from dnsmaster.config import Config
from dnsmaster.daemon.holds import Holds
from dnsmaster.daemon.hooks import Hooks
from dnsmaster.daemon.worker import Current
from dnsmaster.master import handoff, rollback
from dnsmaster.master.build import Builder
from dnsmaster.master.handoff import ACCEPT_FILE, HANDOFF_FILES, ROLLBACK_FILE
from tests.lab.daemonrun import in_process_config
from tests.lab.recorder import Recorder

INSTANCE = "0123456789abcdef"


class Keeper:
    """The daemon as the holds see it: its current build, and counts of what they asked."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.current: Current | None = None
        self.build_error: str | None = None
        self.saved = 0
        self.woken = 0

    def save_state(self, *, now: bool = False) -> None:
        self.saved += 1

    def wake_workers(self) -> None:
        self.woken += 1

    def installed_serials(self) -> Iterable[int | None]:
        return ()


def build(serial: int) -> Current:
    data = f"Zexample.com:a::::{serial}\n".encode()
    return Current(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        serial=serial,
        records=1,
        time=0.0,
        verify={},
    )


def make_parts(tmp_path: Path) -> tuple[Holds, Keeper, Recorder]:
    """Holds on empty zones and output directories, the stand-in, and the log."""
    zones, output = tmp_path / "zones", tmp_path / "out"
    zones.mkdir()
    output.mkdir()
    config = in_process_config(tmp_path, zones, output, {"name": "ns2", "host": "127.0.0.1"})
    keeper, log = Keeper(config), Recorder()
    holds = Holds(
        keeper,
        builder=Builder(zones, output, locking=False),
        hooks=Hooks(config.hooks, log),
        writer=asyncio.Lock(),
        instance=INSTANCE,
        log=log,
    )
    return holds, keeper, log


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Holds, Keeper, Recorder]:
    return make_parts(tmp_path)


def request(path: Path, daemon: str = INSTANCE, **words: str) -> None:
    handoff.write_request(path, daemon=daemon, timeout=60.0, **words)


class TestAccept:
    def test_the_held_build_goes_out(self, parts: tuple[Holds, Keeper, Recorder]) -> None:
        """Accepting the held build by its sha256 makes it current and wakes the slaves."""
        holds, keeper, log = parts
        held = build(2)
        holds.held = (held, "removes too much", 1.0)
        holds.accept({"sha256": held.sha256})
        assert keeper.current is held
        assert holds.held is None
        assert (keeper.saved, keeper.woken) == (1, 1)
        assert log.find("guard.accepted")

    def test_another_build_is_not_accepted(self, parts: tuple[Holds, Keeper, Recorder]) -> None:
        """A sha256 that is not the held build's changes nothing."""
        holds, keeper, log = parts
        holds.held = (build(2), "removes too much", 1.0)
        holds.accept({"sha256": build(3).sha256})
        assert keeper.current is None
        assert holds.held is not None
        assert keeper.woken == 0
        assert log.find("guard.not_accepted")


class TestHandoff:
    def test_not_the_owner_leaves_the_files(self, parts: tuple[Holds, Keeper, Recorder]) -> None:
        """A daemon still waiting for the lock does not touch the running one's files."""
        holds, keeper, _ = parts
        flag = keeper.config.output / ROLLBACK_FILE
        request(flag, request="release", id="x")
        assert holds.handoff() is None
        assert flag.exists()

    def test_another_daemons_request_is_discarded(
        self, parts: tuple[Holds, Keeper, Recorder]
    ) -> None:
        """A request naming another instance is removed, not carried out."""
        holds, keeper, log = parts
        holds.owner = True
        holds.held = (build(2), "removes too much", 1.0)
        flag = keeper.config.output / ACCEPT_FILE
        request(flag, daemon="fedcba9876543210", sha256=build(2).sha256)
        assert holds.handoff() is None
        assert not flag.exists()
        assert holds.held is not None
        assert log.find("handoff.discarded")[0]["file"] == ACCEPT_FILE

    async def test_a_rollback_request_is_returned_to_run(
        self, parts: tuple[Holds, Keeper, Recorder]
    ) -> None:
        """A rollback request is for the caller to run; its answer goes to the state file."""
        holds, keeper, log = parts
        holds.owner = True
        request(keeper.config.output / ROLLBACK_FILE, request="release", id="r1")
        rolling = holds.handoff()
        assert rolling is not None
        await rolling
        assert holds.request is not None
        assert holds.request.id == "r1"
        assert holds.request.error  # no rollback holds a build: nothing to release
        assert log.find("rollback.failed")

    def test_files_left_at_start_are_removed(self, parts: tuple[Holds, Keeper, Recorder]) -> None:
        """Whatever an earlier daemon left is nobody's request now."""
        holds, keeper, log = parts
        for name in HANDOFF_FILES:
            request(keeper.config.output / name, request="release", id="old")
        holds.discard_handoffs()
        assert not any((keeper.config.output / name).exists() for name in HANDOFF_FILES)
        assert len(log.find("handoff.discarded")) == len(HANDOFF_FILES)


class TestAdmit:
    async def test_no_hold_lets_a_build_through(
        self, parts: tuple[Holds, Keeper, Recorder]
    ) -> None:
        """With nothing current to judge against, a build goes out."""
        holds, _, _ = parts
        assert await holds.admit(build(2))

    async def test_a_rollback_holds_every_save(self, parts: tuple[Holds, Keeper, Recorder]) -> None:
        """During a rollback a new build is kept for the release, not pushed."""
        holds, keeper, log = parts
        holds.rollback = rollback.Hold(5, "b" * 64, 1, "c" * 64, 1.0)
        new = build(6)
        assert not await holds.admit(new)
        assert holds.rollback_held is new
        assert keeper.current is None
        assert log.find("build.held")[0]["reason"] == "rollback"
