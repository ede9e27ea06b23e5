"""The standard secondaries judged (pure), and how status, --nagios, --json and the
metrics show them."""

from __future__ import annotations

import json

import pytest

from dnsmaster import exits
from dnsmaster.commands import status
from dnsmaster.daemon import metrics
from dnsmaster.master import health
from dnsmaster.master.health import Finding, ZonesCheck
from dnsmaster.master.secondaryhealth import (
    SECONDARY_STATES,
    judge_secondaries,
    judge_secondary,
)
from dnsmaster.master.state import BuildState, SecondaryState, SlaveState, State
from tests.lab.metrics import parse

SHA = "a" * 64
NOW = 1_800_000_000.0
SERIAL = 1_700_000_010
BUILT = NOW - 600


def make(*secondaries: SecondaryState, slaves: tuple[SlaveState, ...] = ()) -> State:
    return State(
        pid=42,
        updated=NOW - 2,
        build=BuildState(SERIAL, SHA, 22, BUILT, fingerprint="f" * 64),
        slaves=slaves,
        heartbeat_interval=10.0,
        started=NOW - 3600,
        secondaries=secondaries,
    )


def serving(name: str = "nsd1", **changes: object) -> SecondaryState:
    """A secondary seen serving the build's serial 1.5 s after it was fed the build."""
    fields: dict[str, object] = {
        "name": name,
        "serial": SERIAL,
        "zones": 2,
        "notified": BUILT + 1,
        "acked": 2,
        "serving": SERIAL,
        "served_at": BUILT + 2.5,
        "seconds": 1.5,
        "result": "serving",
    }
    return SecondaryState(**(fields | changes))  # type: ignore[arg-type]


def judged(sec: SecondaryState) -> Finding:
    return judge_secondary(sec, make(sec), now=NOW)


def slave_ok(name: str = "ns2") -> SlaveState:
    return SlaveState(
        name,
        SHA,
        SERIAL,
        "ok",
        verified="ok",
        expected_serial=SERIAL,
        served_serial=SERIAL,
        last_success=BUILT + 5,
    )


class TestJudge:
    def test_serving(self) -> None:
        """Serving the build's serial is ok, and says how fast it came."""
        f = judged(serving())
        assert (f.state, f.ok) == ("ok", True)
        assert f.reason == f"serves serial {SERIAL} (2 zones, in 1.5 s)"

    def test_newer_serial_is_ok(self) -> None:
        """A serial past the build's (RFC 1982, across the wrap too) is ok, whatever
        the result says: a newer build reached it before the record did."""
        assert judged(serving(result="late", serving=SERIAL + 5)).state == "ok"
        wrap = serving(serial=2**32 - 2, serving=3, result="waiting")
        f = judge_secondary(wrap, make(wrap), now=NOW)
        assert f.state == "behind"  # the build's serial is not the target
        state = State(
            pid=1,
            updated=NOW,
            build=BuildState(2**32 - 2, SHA, 1, BUILT),
            secondaries=(wrap,),
        )
        assert judge_secondary(wrap, state, now=NOW).state == "ok"

    def test_notifying_and_waiting(self) -> None:
        """Not there yet, no error: named, with what to do, since the build."""
        f = judged(serving(result="notifying", acked=0, serving=SERIAL - 1, served_at=None))
        assert f.state == "notifying"
        assert "no answer yet; serves 1700000009" in f.reason
        assert f.since == BUILT
        f = judged(serving(result="waiting", acked=1, serving=SERIAL - 1))
        assert f.state == "waiting"
        assert f.reason.startswith("1 of 2 zones answered NOTIFY; serves 1700000009")
        f = judged(serving(result="waiting", acked=0, notified=None, serving=None))
        assert (
            f.reason == f"none of its 2 zones changed (no NOTIFY); serves -, waiting for {SERIAL}"
        )

    def test_failed(self) -> None:
        """NOTIFY not answered: failing since the NOTIFY, with the reason."""
        f = judged(
            serving(
                result="failed",
                acked=0,
                serving=None,
                error="no answer to NOTIFY after 6 tries",
            )
        )
        assert (f.state, f.since) == ("failed", BUILT + 1)
        assert f.reason == (
            f"its NOTIFY failed: no answer to NOTIFY after 6 tries; serves -, the build is "
            f"{SERIAL} (2 zones)"
        )
        assert f.action is not None
        assert "allow-notify" in f.action

    def test_late(self) -> None:
        f = judged(serving(result="late", serving=SERIAL - 3))
        assert f.state == "late"
        assert f.reason == (
            f"serves {SERIAL - 3} (lowest of 2 zones), expected {SERIAL} for 10 min"
        )

    def test_behind_an_older_target(self) -> None:
        """The record names an older build's serial: the daemon has not fed this one."""
        f = judged(serving(serial=SERIAL - 1, serving=SERIAL - 1))
        assert f.state == "behind"
        assert (
            f.reason == f"last fed serial {SERIAL - 1} (serves {SERIAL - 1}), the build is {SERIAL}"
        )

    def test_unknown(self) -> None:
        f = judged(SecondaryState("nsd1"))
        assert (f.state, f.reason) == ("unknown", "no build fed to it yet")
        assert judged(serving(result="unknown")).state == "unknown"
        no_build = State(pid=1, updated=NOW, build=None, secondaries=(SecondaryState("x"),))
        assert judge_secondaries(no_build, now=NOW)[0].state == "unknown"

    def test_carries_no_zone(self) -> None:
        """Failed for want of zones: the fix is in the configuration, not the network."""
        f = judged(
            serving(result="failed", zones=0, acked=0, serving=None, notified=None, error=None)
        )
        assert (f.state, f.reason) == (
            "failed",
            f"it carries no zone of the build (serial {SERIAL})",
        )
        assert f.action is not None
        assert "[[secondary]] zones" in f.action

    def test_every_state_is_listed(self) -> None:
        """What a judgement can give is in SECONDARY_STATES (the metrics' label set)."""
        results = ("notifying", "waiting", "serving", "late", "failed")
        seen = {judged(serving(result=r, serving=SERIAL - 1)).state for r in results}
        seen |= {judged(SecondaryState("x")).state, judged(serving(serial=1)).state}
        assert seen <= set(SECONDARY_STATES)
        assert seen == set(SECONDARY_STATES)


def report(*secondaries: SecondaryState, slaves: tuple[SlaveState, ...] = ()) -> health.Report:
    state = make(*secondaries, slaves=slaves)
    return health.judge(
        state,
        now=NOW,
        alive=True,
        zones=ZonesCheck(False),
        secondaries=judge_secondaries(state, now=NOW),
    )


FAILED = serving(
    "prov",
    result="failed",
    acked=0,
    serving=SERIAL - 1,
    served_at=None,
    seconds=None,
    error="REFUSED",
)


class TestStatus:
    def test_exit_status(self) -> None:
        """A secondary not ok makes status exit 3, as a slave does."""
        assert report(serving(), slaves=(slave_ok(),)).exit_status == exits.EXIT_OK
        assert report(FAILED, slaves=(slave_ok(),)).exit_status == exits.EXIT_SLAVES

    def test_render(self) -> None:
        """A table of its own after the slaves', a row per secondary."""
        text = status.render(report(serving(), FAILED, slaves=(slave_ok(),)))
        table = text.split("\n\n")[-1].splitlines()
        assert table[0].split() == [
            "SECONDARY",
            "STATE",
            "SERIAL",
            "SERVING",
            "NOTIFIED",
            "ACKED",
            "SECONDS",
            "REASON",
        ]
        assert table[1].split()[:4] == ["nsd1", "ok", str(SERIAL), str(SERIAL)]
        assert table[1].split()[6:8] == ["2/2", "1.5"]
        assert table[2].split()[:4] == ["prov", "failed", str(SERIAL), str(SERIAL - 1)]
        assert table[2].split()[6:8] == ["0/2", "-"]
        problems = status.render_problems(report(FAILED, slaves=(slave_ok(),)))
        assert problems.startswith(
            "dnsmaster: prov: failed for 10 min: its NOTIFY failed: REFUSED; "
        )
        assert "what to do: check that prov takes NOTIFY" in problems

    def test_no_secondaries_no_table(self) -> None:
        assert "SECONDARY" not in status.render(report(slaves=(slave_ok(),)))

    def test_json(self) -> None:
        """The record under secondaries, its judgement under health.secondaries."""
        document = json.loads(json.dumps(status.as_json(report(FAILED))))
        assert document["secondaries"][0]["error"] == "REFUSED"
        assert document["health"]["secondaries"][0]["state"] == "failed"
        assert document["health"]["exit"] == exits.EXIT_SLAVES

    @pytest.mark.parametrize(
        ("age", "expected"),
        [(10, status.NAGIOS_OK), (200, status.NAGIOS_WARNING), (7000, status.NAGIOS_WARNING)],
    )
    def test_nagios_never_critical(self, age: float, expected: int) -> None:
        """A failing secondary is WARNING after --warning and stays so: no page, while
        the slaves, the service, are fine."""
        sec = serving("prov", result="failed", serving=1, notified=NOW - age, error="REFUSED")
        code, line = status.nagios(report(sec, slaves=(slave_ok(),)), warning=120, critical=600)
        assert code == expected
        assert "prov failed" in line

    def test_nagios_slaves_still_page(self) -> None:
        """A slave failing long enough is CRITICAL whatever the secondaries."""
        bad = SlaveState("ns2", None, None, "failed", "refused", last_push=BUILT)
        code, _ = status.nagios(report(FAILED, slaves=(bad,)), warning=120, critical=600)
        assert code == status.NAGIOS_CRITICAL

    def test_nagios_ok_and_perfdata(self) -> None:
        code, line = status.nagios(
            report(serving(), slaves=(slave_ok(),)), warning=120, critical=600
        )
        assert code == status.NAGIOS_OK
        assert line.startswith(
            f"DNSMASTER OK - serial {SERIAL} served by 1/1 slaves and 1/1 secondaries | "
        )
        perf = dict(item.split("=", 1) for item in line.split(" | ")[1].split())
        assert perf["secondaries_ok"] == "1;;;0;1"
        _, line = status.nagios(report(serving(), FAILED), warning=120, critical=600)
        perf = dict(item.split("=", 1) for item in line.split(" | ")[1].split())
        assert (perf["secondaries_ok"], perf["secondaries_failing"]) == ("1;;;0;2", "1;;;0;2")
        assert perf["secondaries_behind"] == "0;;;0;2"

    def test_nagios_without_secondaries_unchanged(self) -> None:
        _, line = status.nagios(report(slaves=(slave_ok(),)), warning=120, critical=600)
        assert "secondar" not in line


class TestMetrics:
    def test_values(self) -> None:
        """Per secondary: ok, the serial it serves, how long it took; unknown is no sample."""
        got = parse(metrics.render(make(serving(), FAILED, SecondaryState("new"))))
        nsd1, prov, new = ((("secondary", n),) for n in ("nsd1", "prov", "new"))
        assert got[("dnsmaster_secondary_ok", nsd1)] == 1
        assert got[("dnsmaster_secondary_serial", nsd1)] == SERIAL
        assert got[("dnsmaster_secondary_serve_seconds", nsd1)] == 1.5
        assert got[("dnsmaster_secondary_ok", prov)] == 0
        assert got[("dnsmaster_secondary_serial", prov)] == SERIAL - 1
        assert got[("dnsmaster_secondary_ok", new)] == 0
        assert ("dnsmaster_secondary_serial", new) not in got
        assert ("dnsmaster_secondary_serve_seconds", new) not in got
        for name, judged_as in ((nsd1, "ok"), (prov, "failed"), (new, "unknown")):
            states = {
                labels[1][1]: value
                for (metric, labels), value in got.items()
                if metric == "dnsmaster_secondary_state" and labels[:1] == name
            }
            assert states == {s: int(s == judged_as) for s in SECONDARY_STATES}

    def test_none_without_secondaries(self) -> None:
        assert "dnsmaster_secondary" not in metrics.render(make())
