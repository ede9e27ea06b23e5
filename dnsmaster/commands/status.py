"""``dnsmaster status``: what the daemon did, judged, for people, scripts and Nagios.

The states and what they mean are :mod:`dnsmaster.master.health`'s (pure judgement);
:mod:`dnsmaster.master.measure` takes what it judges (the pid, the heartbeat, the
zones against the build, the configuration file) and :mod:`dnsmaster.master.probe`
asks the slaves for ``--live``. This module is the command: its options, the table
for people, the JSON document and the Nagios plugin line.

Exit statuses of the plain command (``--json`` too), the highest that applies: 0 all
ok; 1 the daemon does not run on the configuration file as it is (config above); 3 a
slave or a standard secondary is not ok; 4 the build is not current (none, failed,
unbuilt, unreadable); 5 the daemon is not running (or, ``unsure``, whether it runs
cannot be told); 2 usage or configuration error; 111 the state file cannot be read
or is not a state file (a field of the wrong type). ``--nagios`` uses Nagios' own (0
OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); ``--live`` exits 0 when every slave has and
serves the master's data, 3 when one does not, 111 when the master's data cannot be
read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dnsmaster import config
from dnsmaster.config import Config
from dnsmaster.core.text import printable
from dnsmaster.errors import ConfigError
from dnsmaster.exits import (
    EXIT_OK,
    EXIT_SLAVES,
    EXIT_SYSTEM,
    EXIT_USAGE,
)
from dnsmaster.fsutil import describe
from dnsmaster.master import state as statefile
from dnsmaster.master.health import (
    CRITICAL_SECONDS,
    SLAVE_BEHIND,
    SLAVE_FAILING,
    WARNING_SECONDS,
    Finding,
    Report,
    ago,
    serial_text,
    when,
)
from dnsmaster.master.measure import report
from dnsmaster.master.secondaryhealth import SECONDARY_BEHIND, SECONDARY_FAILING

if TYPE_CHECKING:
    from dnsmaster.master.probe import LiveSlave, Master

__all__ = [
    "NAGIOS_CRITICAL",
    "NAGIOS_OK",
    "NAGIOS_UNKNOWN",
    "NAGIOS_WARNING",
    "add_arguments",
    "as_json",
    "main",
    "nagios",
    "render",
    "render_live",
    "render_problems",
]


NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
_NAGIOS_WORDS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
#: Which status wins when problems differ: one known to be bad says more than one
#: that cannot be told (the order of the Nagios plugins' ``max_state_alt``).
_NAGIOS_RANK = (NAGIOS_OK, NAGIOS_UNKNOWN, NAGIOS_WARNING, NAGIOS_CRITICAL)
#: Longest plugin text before the perfdata: Nagios keeps 4 KiB of output in all.
_NAGIOS_TEXT_MAX = 1000


def render(rep: Report) -> str:
    """The report as a table for people (stdout)."""
    lines = [
        f"{'daemon':8} {rep.daemon.state:10} {rep.daemon.reason}",
        f"{'build':8} {rep.build.state:10} {rep.build.reason}",
    ]
    if rep.config is not None:
        lines.append(f"{'config':8} {rep.config.state:10} {rep.config.reason}")
    rows = [("SLAVE", "STATE", "INSTALLED", "SERVED", "LAST SUCCESS", "FAILURES", "REASON")]
    by_name = {s.name: s for s in rep.state.slaves}
    for finding in rep.slaves:
        s = by_name[finding.subject]
        rows.append(
            (
                s.name,
                finding.state,
                serial_text(s.installed_serial),
                serial_text(s.served_serial),
                when(s.last_success),
                str(s.failures),
                finding.reason,
            )
        )
    if rep.slaves:
        lines.append("")
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
    if rep.secondaries:
        lines += ["", *_secondary_table(rep)]
    return "\n".join(lines) + "\n"


def _secondary_table(rep: Report) -> list[str]:
    rows = [("SECONDARY", "STATE", "SERIAL", "SERVING", "NOTIFIED", "ACKED", "SECONDS", "REASON")]
    by_name = {s.name: s for s in rep.state.secondaries}
    for finding in rep.secondaries:
        s = by_name[finding.subject]
        rows.append(
            (
                s.name,
                finding.state,
                serial_text(s.serial),
                serial_text(s.serving),
                when(s.notified),
                f"{s.acked}/{s.zones}",
                "-" if s.seconds is None else f"{s.seconds:.1f}",
                finding.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in rows
    ]


def render_problems(rep: Report) -> str:
    """Each problem with its reason and what to do (stderr)."""
    out = []
    for f in rep.problems:
        # The daemon's reason dates its last heartbeat already.
        dated = f.since is not None and f.subject != "daemon"
        lasting = f" for {ago(rep.now - f.since)}" if dated and f.since is not None else ""
        out.append(f"dnsmaster: {f.subject}: {f.state}{lasting}: {f.reason}\n")
        if f.action:
            out.append(f"  what to do: {f.action}\n")
    return "".join(out)


def as_json(rep: Report) -> dict[str, Any]:
    """The state file's document with the judgement under ``health``."""
    return {
        "format": statefile.FORMAT,
        **asdict(rep.state),
        "health": {
            "status": "ok" if not rep.problems else "problem",
            "exit": rep.exit_status,
            "daemon": asdict(rep.daemon),
            "build": asdict(rep.build),
            "slaves": [asdict(s) for s in rep.slaves],
            "secondaries": [asdict(s) for s in rep.secondaries],
            "config": asdict(rep.config) if rep.config is not None else None,
        },
    }


def _perf_label(label: str) -> str:
    # Nagios perfdata: quote a label with anything but word characters; ' doubles.
    if all(c.isalnum() or c in "_-." for c in label):
        return label
    return "'" + label.replace("'", "''") + "'"


def _perf_seconds(label: str, seconds: float | None) -> str:
    value = "U" if seconds is None else f"{max(0.0, seconds):.0f}s"
    return f"{_perf_label(label)}={value};;;0"


def _one_line(text: str) -> str:
    # "|" starts the perfdata; a newline starts the long output.
    return " ".join(text.replace("|", "/").split())


def _nagios_level(
    f: Finding, age: float, secondaries: set[str], *, warning: float, critical: float
) -> int:
    """One problem's Nagios status, by what it is and how long it has lasted."""
    at_once = f.urgent or f.subject == "daemon" or (f.subject == "build" and f.state == "none")
    if f.unknown:
        return NAGIOS_UNKNOWN
    if f.chosen:
        return NAGIOS_WARNING
    if f.subject == "config" or f.subject in secondaries:
        # The daemon works on, on the configuration it loaded: worth a look, no
        # page. A secondary (often a provider's) is outside the service the slaves
        # give, and catches up at its own refresh: the same.
        return NAGIOS_WARNING if age >= warning else NAGIOS_OK
    if at_once or age >= critical:
        return NAGIOS_CRITICAL
    if age >= warning:
        return NAGIOS_WARNING
    return NAGIOS_OK


def nagios(rep: Report, *, warning: float, critical: float) -> tuple[int, str]:
    """The Nagios plugin line and exit status: ``DNSMASTER OK - ... | perfdata``.

    CRITICAL: the daemon is not running or nothing was ever built, or any other
    problem has lasted ``critical`` seconds; WARNING: one has lasted ``warning``
    seconds. A configuration the daemon does not run on is never more than WARNING
    (a failed reload or settings that need a restart: at once), nor is a standard
    secondary not serving the build (after ``warning`` seconds). Younger problems
    (a push under way, a save in its quiet period) are named but OK.
    """
    code = NAGIOS_OK
    secondaries = {f.subject for f in rep.secondaries}
    for f in rep.problems:
        age = rep.now - (f.since if f.since is not None else rep.now)
        level = _nagios_level(f, age, secondaries, warning=warning, critical=critical)
        code = max(code, level, key=_NAGIOS_RANK.index)
    build = rep.state.build
    total = len(rep.slaves)
    ok = rep.count(("ok",))
    if not rep.problems:
        text = f"serial {build.serial if build else '-'} served by {ok}/{total} slaves"
        if rep.secondaries:
            text += f" and {len(rep.secondaries)}/{len(rep.secondaries)} secondaries"
    else:
        # One line: each problem's name, state and age; the reason only when there is
        # one problem (plain ``dnsmaster status`` gives every reason and what to do).
        named = [
            f"{f.subject} {f.state}"
            + (f" for {ago(rep.now - f.since)}" if f.since and f.subject != "daemon" else "")
            for f in rep.problems
        ]
        if len(rep.problems) == 1:
            named[0] += f": {rep.problems[0].reason}"
        text = "; ".join(named)
        if len(text) > _NAGIOS_TEXT_MAX:
            text = text[: _NAGIOS_TEXT_MAX - 3] + "..."
    n = f";;;0;{total}"
    perf = [
        f"slaves_ok={ok}{n}",
        f"slaves_behind={rep.count(SLAVE_BEHIND)}{n}",
        f"slaves_failing={rep.count(SLAVE_FAILING)}{n}",
        _perf_seconds("build_age", rep.now - build.time if build else None),
        _perf_seconds("heartbeat_age", rep.heartbeat_age),
    ]
    perf += [
        _perf_seconds(
            f"last_success_{s.name}", rep.now - s.last_success if s.last_success else None
        )
        for s in rep.state.slaves
    ]
    if rep.secondaries:
        m = f";;;0;{len(rep.secondaries)}"
        states = [f.state for f in rep.secondaries]
        perf += [
            f"secondaries_ok={states.count('ok')}{m}",
            f"secondaries_behind={sum(s in SECONDARY_BEHIND for s in states)}{m}",
            f"secondaries_failing={sum(s in SECONDARY_FAILING for s in states)}{m}",
        ]
    line = f"DNSMASTER {_NAGIOS_WORDS[code]} - {_one_line(text)} | {' '.join(perf)}"
    return code, line


# -- --live: ask every slave now --------------------------------------------------------


def render_live(master: Master, found: Sequence[LiveSlave]) -> str:
    lines = [
        f"master: serial {serial_text(master.serial)} sha256 {master.sha256[:16]}, "
        f"{len(master.zones)} zones asked"
    ]
    for s in found:
        lines.append(f"{s.name}: {s.verdict}: {s.reason}")
        ms = f" ({s.ssh_ms:.0f} ms)" if s.ssh_ms is not None else ""
        # A slave serving several masters reports this master's own section.
        named = f" as master {printable(s.master)}" if s.master is not None else ""
        if s.installed_sha256 is not None:
            lines.append(
                f"  installed  serial {serial_text(s.installed_serial)} "
                f"sha256 {s.installed_sha256[:16]}{named}{ms}"
            )
        elif s.ssh_error is not None:
            lines.append(f"  installed  ? ssh: {s.ssh_error}{ms}")
        else:
            lines.append(f"  installed  ? (nothing it vouches for{named}){ms}")
        if s.served:
            answers = ", ".join(
                f"{zone} {served}" if served is not None else f"{zone} ? ({error})"
                for zone, _expected, served, error in s.served
            )
            dms = f" ({s.dns_ms:.0f} ms)" if s.dns_ms is not None else ""
            lines.append(f"  serves     {answers}{dms}")
    return "\n".join(lines) + "\n"


def _live(cfg: Config, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Only --live talks to the slaves: the plain report, which a Nagios plugin runs
    # every minute, does not pay for importing asyncssh and dnspython.
    import asyncio  # noqa: PLC0415

    from dnsmaster.master import probe  # noqa: PLC0415

    try:
        master = probe.read_master(cfg.output)
    except OSError as exc:
        err.write(f"dnsmaster: {cfg.output / 'data'}: cannot read: {describe(exc)}\n")
        return EXIT_SYSTEM
    found = asyncio.run(probe.ask_all(cfg, master, args.timeout))
    if args.json:
        document = {
            "master": asdict(master) | {"zones": _zones_text(master.zones)},
            "slaves": [asdict(s) | {"ok": s.ok} for s in found],
        }
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(render_live(master, found))
    for s in found:
        if not s.ok:
            err.write(f"dnsmaster: {s.name}: {s.verdict}: {s.reason}\n")
    return EXIT_OK if all(s.ok for s in found) else EXIT_SLAVES


def _zones_text(zones: Mapping[bytes, int]) -> dict[str, int]:
    import dns.name  # noqa: PLC0415

    return {
        dns.name.from_wire(wire, 0)[0].to_text(omit_final_dot=True): serial
        for wire, serial in zones.items()
    }


# -- the command ------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``status`` sub-command's options (the parser in main.py calls this)."""
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument(
        "--json", action="store_true", help="print the state file and its judgement as JSON"
    )
    p.add_argument(
        "--nagios",
        action="store_true",
        help="one line for Nagios with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    )
    p.add_argument(
        "--warning",
        type=float,
        default=WARNING_SECONDS,
        metavar="SECONDS",
        help="--nagios: WARNING when a problem has lasted this long (default %(default)g)",
    )
    p.add_argument(
        "--critical",
        type=float,
        default=CRITICAL_SECONDS,
        metavar="SECONDS",
        help="--nagios: CRITICAL when a problem has lasted this long (default %(default)g); "
        "a daemon not running is CRITICAL at once",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="ask every slave now, over SSH and DNS, what it has and serves",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="--live: how long to wait for each slave (default %(default)g)",
    )


def _daemon_config(path: Path) -> Config | None:
    """For a configuration file that does not load: its paths, when they lead to the
    state file of a daemon that records the configuration it runs on (None: not)."""
    try:
        cfg = config.load_paths(path)
        state = statefile.read(cfg.state)
    except (ConfigError, OSError, ValueError):
        return None
    return cfg if state.config is not None and state.stopped is None else None


def main(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``dnsmaster status``; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    mode_nagios = bool(getattr(args, "nagios", False))

    def unknown(message: str, status: int) -> int:
        if mode_nagios:
            out.write(f"DNSMASTER UNKNOWN - {_one_line(message)}\n")
            return NAGIOS_UNKNOWN
        err.write(f"dnsmaster: {message}\n")
        return status

    if mode_nagios and (args.json or args.live):
        return unknown("--nagios goes with neither --json nor --live", EXIT_USAGE)
    if args.warning < 0 or args.critical < args.warning:
        return unknown("--critical must be at least --warning, both 0 or more", EXIT_USAGE)
    if args.timeout <= 0:
        return unknown("--timeout must be more than 0", EXIT_USAGE)
    try:
        path = config.resolve_path(args.config, os.environ)
    except ConfigError as exc:  # no file named: no daemon's state to fall back on
        return unknown(str(exc), EXIT_USAGE) if mode_nagios else exc.report(err)
    try:
        # Only --live opens SSH; the report alone must work before known_hosts exists,
        # and for a monitoring user who may not read the private key.
        cfg, config_error = config.load(path, ssh=args.live), None
    except ConfigError as exc:
        older = None if args.live else _daemon_config(path)
        if older is None:
            return unknown(str(exc), EXIT_USAGE) if mode_nagios else exc.report(err)
        # The daemon runs on what it loaded before the file broke: report on it.
        cfg, config_error = older, str(exc)
    if args.live:
        return _live(cfg, args, out, err)
    try:
        current = statefile.read(cfg.state)
    except (OSError, ValueError) as exc:
        why = describe(exc) if isinstance(exc, OSError) else str(exc)
        hint = " (has the daemon ever run?)" if isinstance(exc, FileNotFoundError) else ""
        return unknown(f"{cfg.state}: cannot read the daemon's state: {why}{hint}", EXIT_SYSTEM)
    try:
        rep = report(cfg, current, config_error=config_error)
        code, line = nagios(rep, warning=args.warning, critical=args.critical)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # :func:`statefile.read` checks every field; this is for what it cannot
        # know (a path that is no directory's): a plugin's traceback exits 1, which
        # Nagios takes for WARNING, a claim about the daemon nobody measured.
        why = f"{type(exc).__name__}: {exc}"
        return unknown(f"{cfg.state}: cannot judge the daemon's state: {why}", EXIT_SYSTEM)
    if mode_nagios:
        out.write(line + "\n")
        return code
    if args.json:
        out.write(json.dumps(as_json(rep), indent=2) + "\n")
    else:
        out.write(render(rep))
    err.write(render_problems(rep))
    return rep.exit_status
