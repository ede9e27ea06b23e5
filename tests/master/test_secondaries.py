"""Feeding a standard secondary: the plan (pure), then NOTIFY and confirmation
against a dnspython responder on loopback (tests/lab/notifyd.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.rcode
import pytest

from dnsmaster.commands.push import push_to_slaves
from dnsmaster.config import NotifyOptions, Secondary, from_mapping
from dnsmaster.core.fields import name_to_wire
from dnsmaster.exits import EXIT_OK
from dnsmaster.master.secondaries import carried, feed, notify_zones, plan, plan_from, zone_text
from dnsmaster.master.state import SecondaryState
from tests.lab.notifyd import NotifyResponder
from tests.lab.recorder import Recorder


def wire(name: str) -> bytes:
    return name_to_wire(name.encode()).lower()


def data(**serials: int) -> bytes:
    """tinydns data with one Z line per zone (``example_com=5``)."""
    lines = [
        f"Z{zone.replace('_', '.')}:ns.example.com:hostmaster.example.com:{serial}\n"
        for zone, serial in serials.items()
    ]
    return "".join(lines).encode()


def found(logger: Recorder, name: str, **fields: object) -> list[dict[str, object]]:
    return [e for e in logger.find(name) if all(e.get(k) == v for k, v in fields.items())]


NSD = Secondary("nsd1", "127.0.0.1", 53, (), ("127.0.0.1",))


# -- the plan ---------------------------------------------------------------------------


def test_zone_text() -> None:
    assert zone_text(wire("Example.COM")) == "example.com"
    assert zone_text(b"\0") == "."
    # A dot or a byte outside ASCII inside a label stays one label, escaped.
    assert zone_text(b"\x03a.b\x07example\x00") == "a\\.b.example"
    assert zone_text(b"\x03a\xffb\x00") == "a\\255b"


def test_a_secondary_naming_no_zones_carries_them_all() -> None:
    zones = {wire("a.example"): 1, wire("b.example"): 2}
    assert carried(NSD, zones) == zones


def test_a_secondary_carries_the_zones_it_names_that_exist() -> None:
    some = Secondary("s", "127.0.0.1", zones=("b.example", "gone.example"))
    zones = {wire("a.example"): 1, wire("b.example"): 2}
    assert carried(some, zones) == {wire("b.example"): 2}


def test_only_changed_serials_are_notified() -> None:
    now = {wire("a.example"): 5, wire("b.example"): 7, wire("new.example"): 5}
    before = {wire("a.example"): 4, wire("b.example"): 7}
    assert notify_zones(now, before) == {wire("a.example"): 5, wire("new.example"): 5}
    assert notify_zones(now, None) == now


def test_plan_from_two_builds() -> None:
    some = Secondary("s", "127.0.0.1", zones=("a.example", "b.example"))
    p = plan(some, data(a_example=5, b_example=7, c_example=5), 5, data(a_example=4, b_example=7))
    assert p.serial == 5
    assert p.zones == {wire("a.example"): 5, wire("b.example"): 7}
    assert p.notify == {wire("a.example"): 5}
    first = plan(some, data(a_example=5, b_example=7), 5, None)
    assert first.notify == first.zones


def test_plan_from_the_serials_served() -> None:
    """What the served data.cdb gave: a zone served at its serial is not notified, a
    changed or new one is; nothing known (None) notifies every zone."""
    every = Secondary("s", "127.0.0.1")
    served = {wire("a.example"): 5, wire("b.example"): 5}
    p = plan_from(every, data(a_example=6, b_example=5, c_example=6), 6, served)
    assert p.notify == {wire("a.example"): 6, wire("c.example"): 6}
    assert plan_from(every, data(a_example=6), 6, None).notify == {wire("a.example"): 6}


# -- feeding a responder -----------------------------------------------------------------

FAST = NotifyOptions(timeout=0.05, retries=2, confirm_timeout=5.0)


def run_feed(
    responder: NotifyResponder, new: bytes, before: bytes | None, options: NotifyOptions = FAST
) -> tuple[SecondaryState, list[SecondaryState], Recorder]:
    secondary = Secondary("nsd1", responder.address, responder.port)
    logger = Recorder()
    updates: list[SecondaryState] = []

    async def run() -> SecondaryState:
        return await feed(
            plan(secondary, new, 5, before),
            options,
            logger,
            update=updates.append,
            query_timeout=0.2,
            interval=0.02,
            max_interval=0.1,
        )

    return asyncio.run(run()), updates, logger


def test_acked_and_serving() -> None:
    with NotifyResponder(soa={"a.example": 5, "b.example": 7}) as responder:
        final, updates, logger = run_feed(
            responder, data(a_example=5, b_example=7), data(a_example=4, b_example=7)
        )
    assert responder.zones() == ["a.example"], "b.example kept its serial: no NOTIFY"
    assert [u.result for u in updates] == ["notifying", "waiting", "serving"]
    assert final == updates[-1]
    assert final.serial == 5
    assert final.zones == 2
    assert final.acked == 1
    assert final.serving == 5
    assert final.error is None
    assert final.seconds is not None
    (acked,) = logger.find("notify.acked")
    assert acked["secondary"] == "nsd1"
    assert acked["zone"] == "a.example"
    assert acked["attempt"] == 1
    assert found(logger, "secondary.serving", secondary="nsd1", serial=5)


def test_a_secondary_that_catches_up_later_turns_serving() -> None:
    """It serves the old serial first; the feed waits until it serves the new one."""
    with NotifyResponder(soa={"a.example": 4}) as responder:

        async def catch_up() -> None:
            await asyncio.to_thread(responder.wait_count, 1)
            responder.soa["a.example"] = 5

        async def both() -> SecondaryState:
            secondary = Secondary("nsd1", responder.address, responder.port)
            task = asyncio.create_task(catch_up())
            final = await feed(
                plan(secondary, data(a_example=5), 5, None),
                FAST,
                Recorder(),
                update=lambda _: None,
                query_timeout=0.2,
                interval=0.02,
            )
            await task
            return final

        final = asyncio.run(both())
    assert final.result == "serving"


def test_silent_notify_and_no_soa_fails() -> None:
    options = NotifyOptions(timeout=0.02, retries=1, confirm_timeout=0.3)
    with NotifyResponder(rcode=None) as responder:
        final, updates, logger = run_feed(responder, data(a_example=5), None, options)
    assert [u.result for u in updates] == ["notifying", "failed", "failed"]
    assert final.acked == 0
    assert final.error == "no answer"
    assert final.serving is None
    assert len(logger.find("notify.sent")) == 2
    (failed,) = logger.find("notify.failed")
    assert failed["reason"] == "no answer"
    (late,) = logger.find("secondary.late")
    assert late["serves"] == "no answer"
    assert late["expected"] == 5


def test_refused_notify_but_serving_by_refresh_is_serving() -> None:
    with NotifyResponder(rcode=dns.rcode.REFUSED, soa={"a.example": 5}) as responder:
        final, updates, logger = run_feed(responder, data(a_example=5), None)
    assert [u.result for u in updates] == ["notifying", "failed", "serving"]
    assert final.result == "serving"
    assert final.error is None
    assert found(logger, "notify.failed", reason="REFUSED")


@pytest.mark.parametrize("served", [4, 6])
def test_late_or_newer(served: int) -> None:
    """An older serial is late; a newer one (RFC 1982) is serving."""
    options = NotifyOptions(timeout=0.05, retries=0, confirm_timeout=0.3)
    with NotifyResponder(soa={"a.example": served}) as responder:
        final, _, logger = run_feed(responder, data(a_example=5), None, options)
    if served == 4:
        assert final.result == "late"
        assert final.serving == 4
        assert found(logger, "secondary.late", zone="a.example", expected=5, serves=4)
    else:
        assert final.result == "serving"


def test_no_zone_to_feed_fails_at_once() -> None:
    secondary = Secondary("s", "127.0.0.1", 9, zones=("none.example",))
    logger = Recorder()

    async def run() -> SecondaryState:
        return await feed(
            plan(secondary, data(a_example=5), 5, None), FAST, logger, update=lambda _: None
        )

    final = asyncio.run(run())
    assert final.result == "failed"
    assert final.error == "it carries no zone of the build"


# -- push by hand ------------------------------------------------------------------------


def test_push_by_hand_notifies_every_zone_and_waits_for_no_one(tmp_path: Path) -> None:
    """``push`` without a daemon: each secondary is sent a NOTIFY per zone it carries
    (a silent one fails, and the exit status does not change); none is waited for."""
    output = tmp_path / "out"
    output.mkdir()
    built = data(a_example=5, b_example=5)
    with NotifyResponder() as good, NotifyResponder(rcode=None) as mute:
        cfg = from_mapping(
            {
                "zones": "zones",
                "output": str(output),
                "axfrdns": {"ip": "127.0.0.1"},
                "notify": {"timeout": 0.02, "retries": 1},
                "secondary": [
                    {"name": "good", "address": good.address, "port": good.port},
                    {
                        "name": "mute",
                        "address": mute.address,
                        "port": mute.port,
                        "zones": ["b.example"],
                    },
                ],
            },
            path=tmp_path / "dnsmaster.toml",
        )
        logger = Recorder()
        status = asyncio.run(push_to_slaves(cfg, [], logger, built))
    assert status == EXIT_OK
    # A slow answer (a loaded machine, 20 ms) is asked again: each zone once or more.
    assert sorted(set(good.zones())) == ["a.example", "b.example"]
    assert mute.zones() == ["b.example", "b.example"]
    assert sorted(e["zone"] for e in found(logger, "notify.acked", secondary="good")) == [
        "a.example",
        "b.example",
    ]
    assert found(logger, "notify.failed", secondary="mute", zone="b.example", reason="no answer")
    assert not logger.find("secondary.serving"), "push by hand does not wait for secondaries"


def test_push_by_hand_notifies_only_what_the_served_root_did_not_serve(tmp_path: Path) -> None:
    """A second push by hand: the zone whose serial the served root already gave is
    not notified again."""
    output = tmp_path / "out"
    output.mkdir()
    with NotifyResponder() as good:
        cfg = from_mapping(
            {
                "zones": "zones",
                "output": str(output),
                "axfrdns": {"ip": "127.0.0.1"},
                "notify": {"timeout": 0.02, "retries": 1},
                "secondary": [{"name": "good", "address": good.address, "port": good.port}],
            },
            path=tmp_path / "dnsmaster.toml",
        )
        first = asyncio.run(push_to_slaves(cfg, [], Recorder(), data(a_example=5, b_example=5)))
        assert sorted(good.zones()) == ["a.example", "b.example"]
        logger = Recorder()
        second = asyncio.run(push_to_slaves(cfg, [], logger, data(a_example=6, b_example=5)))
    assert (first, second) == (EXIT_OK, EXIT_OK)
    assert sorted(good.zones()) == ["a.example", "a.example", "b.example"]
    assert [e["zone"] for e in found(logger, "notify.acked", secondary="good")] == ["a.example"]
