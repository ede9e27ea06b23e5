"""``dnsmaster diff``, ``build --dry-run`` and ``push --dry-run``: the plan, nothing done.

The plan compares two data texts record by record
(:mod:`dnsmaster.core.recordset`). The sides:

- ``dnsmaster diff OLD NEW``: two data files.
- ``dnsmaster diff`` and ``build --dry-run``: the current build (``data`` in the
  output directory; none is an empty one) against the zones there now, built in
  memory (nothing written, no lock taken).
- ``dnsmaster diff --slave NAME``: what the slave holds against what a push would
  send it. A slave reports the sha256 of what it holds, not the text: when that is
  the current build's or one the master keeps (the archive, a rollback's), the
  slave's records are known; when the slave holds nothing, everything is added;
  otherwise the plan cannot be made, and the command says so (exit 2).
- ``push --dry-run``: the build plan, then each slave: whether it already holds
  what a push would send.

While the guard holds a build (:mod:`dnsmaster.master.guarded`), the master's ``data`` is
the held build, which the slaves were not given: ``diff`` and ``push --dry-run``
then compare with the build the slaves were given, say that the build is held and
why (``held:`` first, a ``held`` key in JSON), and ``push --dry-run`` says so too of
a build the guard would hold when the push builds it.

Exit statuses, as diff(1)'s: 0 no change, 1 changes (a held build is a change: the
push itself would exit 4), 2 no plan could be made (configuration, zones errors,
an unreadable file, a slave that cannot be asked or holds a build the master does
not have); the reason is on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsmaster.commands.common import load_config
from dnsmaster.core.makedata import previous_serial
from dnsmaster.core.recordset import Plan, compare
from dnsmaster.errors import (
    ArchiveError,
    BuildError,
    ConfigError,
    DataErrors,
    DnsmasterError,
    SlaveError,
    TinydnsDataError,
)
from dnsmaster.exits import EXIT_CHANGES, EXIT_NO_PLAN, EXIT_OK
from dnsmaster.fsutil import describe
from dnsmaster.master import guarded, handoff, rollback
from dnsmaster.master.build import Builder

if TYPE_CHECKING:
    from dnsmaster.config import Config, Slave
    from dnsmaster.master.guarded import Given

__all__ = [
    "build_plan",
    "main",
    "push_dry_run",
    "push_plan",
]


class CannotPlan(DnsmasterError):
    """No plan can be made."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class Sides:
    """The current build and what would replace it."""

    current: bytes
    planned: bytes
    #: The sources are those ``current`` was built from: a push sends ``current``.
    up_to_date: bool


def main(args: argparse.Namespace) -> int:
    """``dnsmaster diff [OLD NEW] [--slave NAME] [--json]``."""
    try:
        if args.files:
            if len(args.files) != 2 or args.slave:
                return _cannot("give two data files (OLD NEW), or none to compare the zones")
            old, new = (_read(Path(name)) for name in args.files)
            return _report(compare_texts(old, new), args.json)
        if args.slave:
            return asyncio.run(_slave_plan(args))
        builder, cfg = _builder(args)
        sides = planned_sides(builder, cfg)
        hold = _hold(cfg, sides.current)
        if hold is not None:
            return _report(compare_texts(hold.given.data, sides.planned), args.json, hold)
        return _report(compare_texts(sides.current, sides.planned), args.json)
    except _PLAN_FAILURES as exc:
        return _failed(exc)


#: What stops a plan from being made: each is told by :func:`_failed`.
_PLAN_FAILURES = (ConfigError, CannotPlan, BuildError, DataErrors)


def _failed(exc: Exception) -> int:
    """Say why no plan could be made, in the shape its kind is told in; the exit status."""
    if isinstance(exc, ConfigError):
        return exc.report(sys.stderr)
    if isinstance(exc, DataErrors):
        return _data_errors(exc)
    return _cannot(str(exc))


def build_plan(args: argparse.Namespace) -> int:
    """``dnsmaster build --dry-run``: what the build would change; nothing written."""
    try:
        sides = planned_sides(*_builder(args))
        return _report(compare_texts(sides.current, sides.planned), args.json)
    except _PLAN_FAILURES as exc:
        return _failed(exc)


def push_dry_run(args: argparse.Namespace) -> int:
    """``dnsmaster push --dry-run``, run to its end; the exit status."""
    return asyncio.run(push_plan(args))


async def push_plan(args: argparse.Namespace) -> int:
    """``dnsmaster push --dry-run``: the build plan and each slave's; nothing pushed."""
    try:
        builder, cfg = _builder(args)
        assert cfg is not None  # push has no --zones/--out: the configuration names them
        chosen = cfg.select(args.slave)
        if args.no_build:
            current = _current(builder.output)
            sides = Sides(current, current, True)
        else:
            sides = planned_sides(builder, cfg)
        hold = _hold(cfg, sides.current) or _would_hold(cfg, sides.planned)
        plan = compare_texts(hold.given.data if hold else sides.current, sides.planned)
        rolled = _rollback_line(cfg)
    except _PLAN_FAILURES as exc:
        return _failed(exc)
    slaves = chosen
    sha256 = hashlib.sha256(sides.planned).hexdigest() if sides.up_to_date else None
    held = await asyncio.gather(*(_holds(s, cfg) for s in slaves))
    report: dict[str, dict[str, Any]] = {}
    lines = []
    for slave, (version, error) in zip(slaves, held, strict=True):
        report[slave.name], line = _slave_line(slave.name, version, error, sha256)
        lines.append(line)
    changes = plan.changed or any(r["push"] for r in report.values()) or hold is not None
    if rolled is not None:
        lines.append(rolled)
    if args.json:
        document = {**plan.to_json(), "slaves": report}
        if hold is not None:
            document["held"] = hold.to_json()
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        summary = plan.lines()
        pushes = sum(r["push"] for r in report.values())
        lines.append(f"slaves: {pushes} of {len(report)} would change")
        heading = [hold.line()] if hold is not None else []
        sys.stdout.write("\n".join([*heading, *summary[:-1], *lines, summary[-1]]) + "\n")
    return EXIT_CHANGES if changes else EXIT_OK


def _rollback_line(cfg: Config) -> str | None:
    """What ``push --dry-run`` says of a rollback in force: the push would refuse."""
    try:
        hold = rollback.read(cfg.output)
    except ArchiveError as exc:
        raise CannotPlan(f"{exc.path}: {exc.reason}") from None
    if hold is None:
        return None
    return (
        f"rollback: serial {hold.serial} (kept build {hold.kept_serial}) is held on every "
        "slave: a push pushes nothing until dnsmaster rollback --release"
    )


@dataclass(frozen=True, slots=True)
class Hold:
    """A build the guard holds (or would hold, ``pending``) and what the slaves were
    given: the plan is made from ``given``, not from the master's ``data``."""

    serial: int | None
    sha256: str
    reason: str
    given: Given
    pending: bool = False

    def line(self) -> str:
        what = "would hold" if self.pending else "holds"
        return (
            f"held: the guard {what} serial {self.serial}: {self.reason}; compared with "
            f"serial {self.given.serial}, the build the slaves were given; "
            f"dnsmaster push --accept {self.serial} pushes it"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "sha256": self.sha256,
            "reason": self.reason,
            "pending": self.pending,
            "given": {"serial": self.given.serial, "sha256": self.given.sha256},
        }


def _hold(cfg: Config | None, current: bytes) -> Hold | None:
    """The hold in force on ``current`` (the master's data), with what the slaves were
    given; :class:`CannotPlan` when the master no longer has that build."""
    if cfg is None:
        return None
    held = guarded.held(cfg, hashlib.sha256(current).hexdigest())
    if held is None:
        return None
    given = guarded.given(cfg.output, cfg.daemon.keep, held.base)
    if given is None:
        raise CannotPlan(
            f"the guard holds serial {held.serial} ({held.reason}), and the build the slaves "
            "were given is no longer kept here: no plan (dnsmaster rollback --list)"
        )
    return Hold(held.serial, held.sha256, held.reason, given)


def _would_hold(cfg: Config, planned: bytes) -> Hold | None:
    """Whether the guard would hold ``planned`` when a push builds it: judged against
    the build the last push installed, as the push will be."""
    given = guarded.given(cfg.output, cfg.daemon.keep)
    if given is None:
        return None
    try:
        verdict = guarded.judge(cfg, given, planned)
    except DnsmasterError as exc:
        raise CannotPlan(f"the build cannot be judged: {exc}") from None
    if verdict is None:
        return None
    sha256 = hashlib.sha256(planned).hexdigest()
    return Hold(previous_serial(planned[:200]), sha256, verdict.reason, given, pending=True)


def _slave_line(
    name: str, version: Any, error: str | None, sha256: str | None
) -> tuple[dict[str, Any], str]:
    """One slave's part of ``push --dry-run``: its JSON entry and its line.

    ``version`` is what its status reports (None: nothing), ``sha256`` the build's
    (None: a new build, which no slave can hold yet).
    """
    has = version is not None and sha256 is not None and version.sha256 == sha256
    entry = {
        "push": not has,
        "sha256": version.sha256 if version else None,
        "serial": version.serial if version else None,
        "error": error,
    }
    if has:
        return entry, f"slave {name}: holds this build already (serial {version.serial})"
    if error is not None:
        why = error
    elif version is None:
        why = "holds nothing a status reports"
    elif sha256 is None:
        why = f"holds serial {version.serial}; the push sends a new build"
    else:
        why = f"holds serial {version.serial}, not this build"
    return entry, f"slave {name}: would push: {why}"


def compare_texts(old: bytes, new: bytes) -> Plan:
    """The plan from ``old`` to ``new``; :class:`CannotPlan` when one is not valid data."""
    try:
        return compare(old, new)
    except TinydnsDataError as exc:
        raise CannotPlan(f"not valid tinydns data: {exc}") from None


def planned_sides(builder: Builder, cfg: Config | None = None) -> Sides:
    """The current build, and the zones built in memory (the current one if unchanged).

    Nothing is written and no lock is taken: ``data`` is only ever replaced by a
    rename, so it is read whole, old or new.
    """
    current = _current(builder.output)
    if builder.is_current():
        return Sides(current, current, True)
    return Sides(current, builder.plan(), False)


def _builder(args: argparse.Namespace) -> tuple[Builder, Config | None]:
    """The Builder --zones/--out or the configuration name (as ``build``'s)."""
    zones: Path | None = getattr(args, "zones", None)
    out: Path | None = getattr(args, "out", None)
    strict: bool = getattr(args, "strict", False)
    cfg = None
    if zones is None or out is None:
        cfg = load_config(args)
        zones = zones or cfg.zones
        out = out or cfg.output
        strict = strict or cfg.strict
    builder = Builder(zones, out, strict=strict, locking=False)
    if cfg is not None:
        builder.max_file_size = cfg.max_file_size
        builder.ipv6_int = cfg.ipv6_int
        builder.catalog = cfg.catalog
    return builder, cfg


async def _slave_plan(args: argparse.Namespace) -> int:
    builder, _ = _builder(args)
    cfg = load_config(args)
    (slave,) = cfg.select([args.slave])
    # What a push would send it: a running daemon that does not run it sends nothing.
    why = handoff.unknown_slaves(cfg.state, cfg.path, [slave.name], grace=handoff.RELOAD_GRACE)
    if why is not None:
        raise CannotPlan(why)
    if slave.protocol == "legacy":
        raise CannotPlan(f"{slave.name} runs the classic update-dns: it cannot say what it holds")
    version, error = await _holds(slave, cfg)
    if error is not None:
        raise CannotPlan(f"{slave.name}: cannot ask what it holds: {error}")
    sides = planned_sides(builder, cfg)
    hold = _hold(cfg, sides.current)
    if version is None:
        sys.stderr.write(f"dnsmaster: {slave.name} holds no build: every zone is new to it\n")
        held = b""
    elif version.sha256 == hashlib.sha256(sides.current).hexdigest():
        held = sides.current
    else:
        kept = _kept(cfg, version.sha256)
        if kept is None:
            raise CannotPlan(
                f"{slave.name} holds a build the master does not have (serial {version.serial}, "
                f"sha256 {version.sha256[:16]}); a push would replace it whole"
            )
        held = kept
    return _report(compare_texts(held, sides.planned), args.json, hold)


def _kept(cfg: Config, sha256: str) -> bytes | None:
    """The bytes of the build with ``sha256``, when the master keeps it."""
    given = guarded.given(cfg.output, cfg.daemon.keep, sha256)
    return given.data if given is not None else None


async def _holds(slave: Slave, cfg: Config) -> tuple[Any, str | None]:
    """What ``slave`` reports it holds (None: nothing, or it cannot say), and why not."""
    # Only when a slave is asked: the plans of the zones alone need no SSH.
    from dnsmaster.master import pushing  # noqa: PLC0415
    from dnsmaster.transport.channel import fetch_status  # noqa: PLC0415

    if slave.protocol == "legacy":
        return None, "classic update-dns: cannot ask what it holds"
    channel = pushing.channel_for(slave, cfg)
    try:
        return await fetch_status(channel, cfg.push.connect_timeout * 2, _ignore), None
    except SlaveError as exc:
        return None, f"cannot ask ({exc.phase}): {exc.reason}"
    finally:
        await channel.close()


def _ignore(slave: str, stream: str, text: str, truncated: int) -> None:
    return None


def _current(output: Path) -> bytes:
    """The output directory's ``data``; empty when there is none yet.

    No output directory is no plan: the build itself would fail there (exit 111),
    and a dry run must not say it would change what cannot be written.
    """
    try:
        return (output / "data").read_bytes()
    except FileNotFoundError:
        if not output.is_dir():
            raise CannotPlan(f"{output}: output directory does not exist; create it") from None
        return b""
    except OSError as exc:
        raise CannotPlan(f"{output / 'data'}: cannot read: {describe(exc)}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CannotPlan(f"{path}: cannot read: {describe(exc)}") from None


def _report(plan: Plan, as_json: bool, hold: Hold | None = None) -> int:
    if as_json:
        document = plan.to_json()
        if hold is not None:
            document["held"] = hold.to_json()
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        held = [hold.line()] if hold is not None else []
        sys.stdout.write("\n".join([*held, *plan.lines()]) + "\n")
    return EXIT_CHANGES if plan.changed or hold is not None else EXIT_OK


def _cannot(reason: str) -> int:
    sys.stderr.write(f"dnsmaster: {reason}\n")
    return EXIT_NO_PLAN


def _data_errors(exc: DataErrors) -> int:
    for error in exc.errors:
        sys.stderr.write(f"{error.file}:{error.line}: error: {error.reason}\n")
    sys.stderr.write("dnsmaster: the zones have errors: no plan (dnsmaster check)\n")
    return EXIT_NO_PLAN
