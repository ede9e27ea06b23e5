"""``dnsmaster check`` and ``dnsmaster build``: the zones checked, or built once.

``build`` writes ``data`` and ``data.cdb`` under the output directory's lock, or
hands the build to the daemon that holds it. ``build --dry-run`` is a plan, made by
:mod:`dnsmaster.commands.diff`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dnsmaster import log
from dnsmaster.commands.common import load_config, one_writer, run_build
from dnsmaster.core.text import printable
from dnsmaster.errors import BuildError, ConfigError
from dnsmaster.exits import EXIT_DATA, EXIT_OK, EXIT_SYSTEM
from dnsmaster.master.build import Builder

__all__ = ["build", "check"]


def check(args: argparse.Namespace) -> int:
    """``dnsmaster check``: every error and warning of the zones; nothing written."""
    try:
        zones, _, strict = _zones_paths(args, output=False)
        # The same cap as the build that follows: a file the daemon would refuse
        # must not pass the check.
        cfg = load_config(args) if args.zones is None else None
    except ConfigError as exc:
        return exc.report(sys.stderr)
    # The output directory is never written by a check; with the configuration's,
    # the files the last build cached are read back instead of checked again.
    output = cfg.output if cfg is not None else zones
    builder = Builder(zones, output, strict=strict, cache=cfg is not None)
    if cfg is not None:
        builder.max_file_size = cfg.max_file_size
        builder.ipv6_int = cfg.ipv6_int
    try:
        found = builder.diagnose()
    except BuildError as exc:
        sys.stderr.write(f"dnsmaster: {exc}\n")
        return EXIT_SYSTEM
    out = sys.stderr
    for name, reason in found.skipped:
        out.write(f"{printable(str(zones / name))}: skipped: {reason}\n")
    problems = sorted(
        [(e, "error") for e in found.errors] + [(w, "warning") for w in found.warnings],
        key=lambda item: (found.sources.index(item[0].file), item[0].line),
    )
    for problem, kind in problems:
        if kind == "warning" and strict:
            kind = "error (strict)"
        out.write(f"{zones / problem.file}:{problem.line}: {kind}: {problem.reason}\n")
    failed = bool(found.errors) or (strict and bool(found.warnings))
    sys.stdout.write(
        f"{'FAILED' if failed else 'ok'}: {len(found.sources)} files, {found.lines} lines, "
        f"{len(found.errors)} errors, {len(found.warnings)} warnings\n"
    )
    return EXIT_DATA if failed else EXIT_OK


def build(args: argparse.Namespace) -> int:
    """``dnsmaster build``: build once, or have the running daemon build."""
    log.configure(fmt=args.log_format or "logfmt")
    logger = log.get_logger()
    try:
        zones, out, strict = _zones_paths(args, output=True)
        cfg = load_config(args) if args.out is None else None
    except ConfigError as exc:
        return exc.report(sys.stderr)
    assert out is not None
    builder = Builder(zones, out, strict=strict, locking=False)
    if cfg is not None:
        builder.max_file_size = cfg.max_file_size
        builder.ipv6_int = cfg.ipv6_int
        builder.catalog = cfg.catalog
        builder.keep = cfg.daemon.keep
    with one_writer(out, cfg.state if cfg else None, logger) as daemon:
        if daemon is not None:
            from dnsmaster.commands.handing import hand_off  # noqa: PLC0415 - a daemon runs

            return hand_off(cfg, daemon, builder, (), logger)  # type: ignore[arg-type]
        return run_build(builder, logger)


def _zones_paths(args: argparse.Namespace, *, output: bool) -> tuple[Path, Path | None, bool]:
    """--zones/--out, else the configuration's zones/output; and strictness."""
    zones: Path | None = args.zones
    out: Path | None = getattr(args, "out", None)
    strict: bool = args.strict
    if zones is None or (output and out is None):
        cfg = load_config(args)
        zones = zones or cfg.zones
        out = out or cfg.output
        strict = strict or cfg.strict
    return zones, out, strict
