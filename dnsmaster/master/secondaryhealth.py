"""Health of the standard secondaries (``[[secondary]]``): each one's record in the
state file judged against the build, with no I/O.

A secondary is fed apart from the tinydns slaves: the daemon sends NOTIFY for the
zones whose serial changed, then asks the secondary's SOA until it serves the
build's serial (:mod:`dnsmaster.master.secondaries`). ``ok`` means it was seen
serving that serial (or a newer one, RFC 1982) for every zone it carries:

============= =========================================================================
``ok``        serves the build's serial
``notifying`` NOTIFY sent for the build, not answered yet
``waiting``   NOTIFY answered (or nothing changed in its zones), its SOA not yet at
              the build's serial
``behind``    the daemon has not started on the build for it yet (it still has a
              target from an older build)
``late``      did not serve the serial within ``[notify] confirm_timeout``
``failed``    NOTIFY got no answer after its retransmissions, or an error (REFUSED,
              NOTAUTH): it catches up only at its own refresh, or at the next build
``unknown``   the daemon has not fed it yet (no build, or just started)
============= =========================================================================

A secondary not ok never holds up the slaves, and ``status --nagios`` never makes
it more than WARNING (:data:`SECONDARY_FAILING` after ``--warning`` seconds): the
slaves are the service the master vouches for; a secondary outside them (often a
provider's) catches up at its SOA refresh on its own.
"""

from __future__ import annotations

from dnsmaster.master.health import Finding, ago, serial_text, when
from dnsmaster.master.state import SecondaryState, State

__all__ = [
    "SECONDARY_BEHIND",
    "SECONDARY_FAILING",
    "SECONDARY_STATES",
    "judge_secondaries",
    "judge_secondary",
]

SECONDARY_BEHIND = ("notifying", "waiting", "behind", "unknown")
SECONDARY_FAILING = ("late", "failed")
SECONDARY_STATES = ("ok", *SECONDARY_BEHIND, *SECONDARY_FAILING)


def _newer_or_same(served: int, wanted: int) -> bool:
    import dns.serial  # noqa: PLC0415 - RFC 1982 comparison, only needed here

    return bool(dns.serial.Serial(served) >= wanted)


def judge_secondary(sec: SecondaryState, state: State, *, now: float) -> Finding:
    """One secondary against the build.

    Its ``since`` is when the build was made (or, the daemon started later, when it
    started): a secondary is out of date from the moment there is something newer.
    """
    name, build = sec.name, state.build
    how = f"read the daemon's notify.* and secondary.* events for {name}"
    if build is None or sec.serial is None or sec.result == "unknown":
        return Finding(
            name,
            "unknown",
            "no build fed to it yet" if build is not None else "no build to compare with",
            f"wait; if it stays so, {how}",
            max(build.time if build else state.updated, state.started or 0.0),
        )
    since = max(build.time, state.started or build.time)
    target = sec.serial
    zones = f"{sec.zones} zone{'s' if sec.zones != 1 else ''}"
    serving = f"serves {serial_text(sec.serving)}"
    if build.serial is not None and target != build.serial:
        return Finding(
            name,
            "behind",
            f"last fed serial {target} ({serving}), the build is {build.serial}",
            f"the daemon notifies it after each build; if it lasts, {how}",
            since,
        )
    if sec.result == "serving" or (sec.serving is not None and _newer_or_same(sec.serving, target)):
        took = f", in {sec.seconds:.1f} s" if sec.seconds is not None else ""
        return Finding(
            name, "ok", f"serves serial {serial_text(sec.serving or target)} ({zones}{took})"
        )
    if sec.result == "failed" and sec.zones == 0:
        return Finding(
            name,
            "failed",
            f"{sec.error or 'it carries no zone of the build'} (serial {target})",
            f"name zones of the data in its [[secondary]] zones, or remove {name} from the "
            "configuration; then SIGHUP",
            since,
        )
    if sec.result == "failed":
        return Finding(
            name,
            "failed",
            f"its NOTIFY failed: {sec.error or 'no answer'}; {serving}, the build is {target} "
            f"({zones})",
            f"check that {name} takes NOTIFY from the master's [axfrdns] address (NSD and "
            "BIND: allow-notify; Knot: an acl with action notify) and transfers from its "
            "axfrdns (dnsmaster doctor tries both); it catches up at its refresh, or at "
            "the next build",
            sec.notified or since,
        )
    if sec.result == "late":
        waited = f" for {ago(now - sec.notified)}" if sec.notified is not None else ""
        return Finding(
            name,
            "late",
            f"{serving} (lowest of {zones}), expected {target}{waited}"
            + (f": {sec.error}" if sec.error else ""),
            f"see whether {name} transfers from the master's axfrdns (its log; dnsmaster "
            "doctor tries an AXFR as it would); it catches up at its refresh",
            sec.notified or since,
        )
    if sec.result == "waiting":
        answered = (
            f"{sec.acked} of {zones} answered NOTIFY"
            if sec.notified is not None
            else f"none of its {zones} changed (no NOTIFY)"
        )
        return Finding(
            name,
            "waiting",
            f"{answered}; {serving}, waiting for {target}",
            "wait: it transfers the zones after a NOTIFY",
            since,
        )
    sent = f"NOTIFY sent {when(sec.notified)}" if sec.notified is not None else "no NOTIFY sent"
    return Finding(
        name,
        "notifying",
        f"{sent} for serial {target} ({zones}), no answer yet; {serving}",
        f"wait: NOTIFY is sent again with doubling waits; if it lasts, {how}",
        since,
    )


def judge_secondaries(state: State, *, now: float) -> tuple[Finding, ...]:
    """Every secondary in the state file, in its order."""
    return tuple(judge_secondary(s, state, now=now) for s in state.secondaries)
