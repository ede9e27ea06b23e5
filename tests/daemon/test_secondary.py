"""The daemon's feeders in process: one feed per new build, a newer build cancels an
older feed, only changed zones after a feed that ended serving, and a reload's
secondaries added, changed and removed. The secondaries are dnspython responders
on loopback (tests/lab/notifyd.py); the host is a stand-in for the daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from dnsmaster.config import AxfrdnsOptions, Config, NotifyOptions, Secondary
from dnsmaster.daemon.secondary import Secondaries
from dnsmaster.daemon.worker import Current
from dnsmaster.master.state import SecondaryState
from tests.lab.notifyd import NotifyResponder
from tests.lab.recorder import Recorder

FAST = NotifyOptions(timeout=0.05, retries=1, confirm_timeout=5.0)


def build(serials: dict[str, int], serial: int) -> Current:
    text = "".join(f"Z{z}:ns.{z}:hostmaster.{z}:{s}\n" for z, s in serials.items())
    data = text.encode()
    return Current(data, hashlib.sha256(data).hexdigest(), serial, None, 0.0, {})


class Host:
    """What a feeder needs of the daemon: its config, current build, and tasks."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.current: Current | None = None
        self.saves = 0
        self.tasks: list[asyncio.Task[None]] = []

    def save_state(self, *, now: bool = False) -> None:
        self.saves += 1

    def start(
        self, coro: Coroutine[Any, Any, None], name: str, *, forever: bool = True
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        """Until every feed started so far has ended (cancelled ones included)."""
        while pending := [t for t in self.tasks if not t.done()]:
            await asyncio.wait(pending)


def feeds(host: Host) -> list[asyncio.Task[None]]:
    """The feed tasks started (not the served root's replacements)."""
    return [t for t in host.tasks if t.get_name().startswith("secondary ")]


def config(tmp_path: Path, *secondaries: Secondary, notify: NotifyOptions = FAST) -> Config:
    return Config(
        path=tmp_path / "dnsmaster.toml",
        zones=tmp_path,
        output=tmp_path,
        state=tmp_path / "state.json",
        secondaries=secondaries,
        notify=notify,
    )


def of(responder: NotifyResponder, name: str) -> Secondary:
    return Secondary(name, responder.address, responder.port)


def test_each_build_fed_once_and_only_changed_zones_after_serving(tmp_path: Path) -> None:
    with NotifyResponder(soa={"a.example": 7, "b.example": 7}) as good:

        async def run() -> None:
            host = Host(config(tmp_path, of(good, "good")))
            log = Recorder()
            feeders = Secondaries(host, log)
            first = build({"a.example": 7, "b.example": 7}, 7)
            feeders.new_build(first)
            feeders.new_build(first)  # the same build woken again: nothing more
            await host.settle()
            assert len(feeds(host)) == 1
            # Served first (compiled: the output holds no build here), then notified.
            order = [e["event"] for e in log.events]
            assert order.index("served.replaced") < order.index("notify.sent")
            assert log.find("served.replaced")[0]["how"] == "compiled"
            assert (tmp_path / "served" / "data.cdb").is_file()
            assert sorted(good.zones()) == ["a.example", "b.example"]
            (state,) = feeders.states()
            assert (state.result, state.serial) == ("serving", 7)
            good.soa["a.example"] = 8
            feeders.new_build(build({"a.example": 8, "b.example": 7}, 8))
            await host.settle()
            assert good.zones()[2:] == ["a.example"], "b.example kept serial 7"
            assert feeders.states()[0].result == "serving"

        asyncio.run(run())


def test_a_newer_build_cancels_the_feed_under_way(tmp_path: Path) -> None:
    with NotifyResponder(rcode=None) as mute:

        async def run() -> None:
            host = Host(config(tmp_path, of(mute, "mute")))
            log = Recorder()
            feeders = Secondaries(host, log)
            feeders.new_build(build({"a.example": 1}, 1))
            await asyncio.to_thread(mute.wait_count, 1)
            feeders.new_build(build({"a.example": 2}, 2))
            await log.wait("served.replaced", 2)  # the newer build's feed starts after
            first, _ = feeds(host)
            await asyncio.wait({first})
            assert first.cancelled()
            await log.wait("notify.sent", 2)
            assert feeders.states()[0].serial == 2
            await feeders.stop()
            assert all(t.done() for t in host.tasks)
            assert not log.find("secondary.late"), "cancelled, never judged"

        asyncio.run(run())


def test_reload_adds_changes_and_removes(tmp_path: Path) -> None:
    with NotifyResponder(soa={"a.example": 3}) as one, NotifyResponder(soa={"a.example": 3}) as two:

        async def run() -> None:
            old = config(tmp_path, of(one, "kept"), of(one, "changed"), of(one, "gone"))
            host = Host(old)
            log = Recorder()
            feeders = Secondaries(host, log)
            host.current = build({"a.example": 3}, 3)
            feeders.new_build(host.current)
            await host.settle()
            kept = feeders.feeders[0]
            new = dataclasses.replace(
                old, secondaries=(of(one, "kept"), of(two, "changed"), of(two, "added"))
            )
            await feeders.reconfigure(old, new)
            await host.settle()
            assert [f.secondary.name for f in feeders.feeders] == ["kept", "changed", "added"]
            assert feeders.feeders[0] is kept, "an unchanged secondary keeps its feeder"
            assert {e["secondary"] for e in log.find("secondary.stopped")} == {"changed", "gone"}
            assert {e["secondary"] for e in log.find("secondary.started")} == {"changed", "added"}
            assert two.zones() == ["a.example", "a.example"], "both new ones fed at once"
            assert [s.result for s in feeders.states()] == ["serving"] * 3
            # [notify] changed: every feeder starts again.
            slower = dataclasses.replace(new, notify=dataclasses.replace(FAST, retries=2))
            await feeders.reconfigure(new, slower)
            assert all(f.options == slower.notify for f in feeders.feeders)
            await host.settle()

        asyncio.run(run())


def test_a_restart_does_not_notify_what_was_served(tmp_path: Path) -> None:
    """The last state file says ``good`` served build 7: it is asked, not notified;
    ``behind`` served 6, so it is notified of every zone."""
    with NotifyResponder(soa={"a.example": 7}) as responder:

        async def run() -> None:
            host = Host(config(tmp_path, of(responder, "good"), of(responder, "behind")))
            feeders = Secondaries(host, Recorder())
            current = build({"a.example": 7}, 7)
            feeders.saved = (
                SecondaryState("good", serial=7, result="serving"),
                SecondaryState("behind", serial=6, result="serving"),
                SecondaryState("gone", serial=7, result="serving"),
            )
            feeders.resume(current)
            feeders.new_build(current)
            await host.settle()
            good, behind = feeders.states()
            assert (good.result, good.notified, good.acked) == ("serving", None, 0)
            assert (behind.result, behind.acked) == ("serving", 1)

        asyncio.run(run())
    assert responder.zones() == ["a.example"], "one NOTIFY: behind's"


def test_a_reload_to_a_new_root_serves_the_current_build_there(tmp_path: Path) -> None:
    """The new root gets the current build at once, and nobody is notified again;
    the old root is left as it was."""
    with NotifyResponder(soa={"a.example": 3}) as one:

        async def run() -> None:
            old = config(tmp_path, of(one, "kept"))
            host = Host(old)
            log = Recorder()
            feeders = Secondaries(host, log)
            host.current = build({"a.example": 3}, 3)
            feeders.new_build(host.current)
            await host.settle()
            new = dataclasses.replace(
                old, axfrdns=AxfrdnsOptions(ip="127.0.0.1", root=tmp_path / "elsewhere")
            )
            host.config = new
            await feeders.reconfigure(old, new)
            await host.settle()
            replaced = log.find("served.replaced")
            assert [e["root"] for e in replaced] == [
                str(tmp_path / "served"),
                str(tmp_path / "elsewhere"),
            ]
            assert (tmp_path / "elsewhere" / "data.cdb").read_bytes() == (
                tmp_path / "served" / "data.cdb"
            ).read_bytes()
            assert len(log.find("notify.sent")) == 1

        asyncio.run(run())
