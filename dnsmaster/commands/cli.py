"""The ``dnsmaster`` command line.

Sub-commands import what they need when they run: ``dnsmaster receive`` starts once
per push on every slave, and must not pay for asyncssh, structlog or dnspython.

The exit status of every command is in :data:`EXIT_STATUSES`, one table. The
constants below are this module's; other modules name theirs (``diff``, ``status``,
``doctor``, ``receive``, the daemon's) with the same numbers for the same meaning.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnsmaster.config import Config, Slave
    from dnsmaster.master.build import Builder

__all__ = [
    "EXIT_DATA",
    "EXIT_HELD",
    "EXIT_OK",
    "EXIT_SLAVES",
    "EXIT_STATUSES",
    "EXIT_SYSTEM",
    "EXIT_USAGE",
    "main",
]

#: Every command's exit statuses (argparse's usage errors are 2 for all of them, and
#: ``--help``/``--version`` exit 0). For the docs: keep it the one table.
EXIT_STATUSES = """\
command                        exit statuses
-----------------------------  ----------------------------------------------------------
build                          0 built (or already current); 1 the zones have errors (or
                               warnings, with --strict): nothing written; 2 configuration;
                               111 a file or directory cannot be read or written.
                               Handed to a running daemon: 1 too when a rollback holds
                               the slaves; 4 the guard holds the build; 111 the daemon
                               did not build in time
diff                           as diff(1): 0 no change; 1 changes (a held build is one:
                               the push itself would exit 4); 2 no plan: errors in the
                               zones, configuration, no output directory, an unreadable
                               file, a slave that cannot be asked or holds a build the
                               master does not keep (--slave), a damaged rollback file
build --dry-run                as diff
push --dry-run                 as diff (a slave that cannot be asked is a change: the push
                               would try it)
check                          0 ok; 1 errors (or warnings, with --strict); 2
                               configuration; 111 the zones cannot be read
push                           0 every slave took the build (or, --accept, nothing was
                               held); 1 the zones have errors, the data on disk is not
                               valid data, or a rollback holds the slaves (rollback
                               --release); 2 usage or configuration; 3 a slave did not
                               take it (the others did), or, --wait, did not serve the
                               serial in time; 4 the guard holds the build (push --accept
                               BUILD releases it), or --accept names another build than
                               the one held; 111 a file cannot be read or written, or a
                               daemon handed the push did not act in time
wait                           0 every slave serves the serial; 2 usage or configuration
                               (no zone has the serial: name it with --zone); 3 the time
                               ran out; 111 the data cannot be read
rollback                       0 done (--list; --release with nothing held); 1 --release:
                               the zones have errors (the rollback stays); 2 usage or
                               configuration, no kept build matches --to; 3 a slave did
                               not take it; 4 (handed to a daemon) the guard holds the
                               released build; 111 the rollback cannot be written, or a
                               daemon refused it or did not act in time
status                         the highest that applies: 0 all ok; 1 the daemon does not
                               run on the configuration file as it is (reload-failed,
                               changed, restart-needed); 3 a slave is not ok; 4 the build
                               is not current (none, failed, unbuilt, held, rollback); 5
                               the daemon is not running, or whether it runs cannot be
                               told (unsure: its heartbeat is dated in the future); 2
                               usage or configuration; 111 no readable state file, or one
                               that is not a state file (the field is named). --nagios: 0
                               OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. --live: 0 every slave
                               serves the data, 3 one does not, 111 the data cannot be
                               read
doctor                         0 nothing failed (warnings allowed); 1 a check failed; 2
                               the configuration cannot be loaded
run                            0 stopped by SIGTERM; 2 configuration; 70 an unexpected
                               exception (a bug: the traceback is in the log); 111 the
                               output directory or state file cannot be written, or the
                               zones watcher was lost
demo                           as run; --setup-only 0; 111 the demo cannot be created
service-conf                   0 made; 2 usage (an account does not exist, DIR exists);
                               111 ACCT cannot run the daemon, or DIR cannot be created
receive (the slave)            0 installed (or status printed); 1 the data was refused
                               (incomplete, too large, does not compile, older serial); 2
                               the command was refused (unknown verb); 3 the delta was
                               refused (another base): a full push is needed; 111 a
                               system error
authorized-key                 0 printed; 2 not a public key, relative paths
receiver-bundle                0 written; 2 a bad --python, or stdout is a terminal; 111
                               the file cannot be written
tinydns-data                   0 compiled; 111 any failure, as the original
"""

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_SLAVES = 3
#: ``push``, and ``build``/``rollback`` handed to a daemon: the guard holds the build.
EXIT_HELD = 4
EXIT_SYSTEM = 111


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``command``, when known, is the one being run.

    ``status`` and ``service-conf`` define their options in their own modules, which
    cost tens of milliseconds to import: only the command being run loads them, so
    ``dnsmaster build`` does not pay for ``status``.
    """
    parser = argparse.ArgumentParser(
        prog="dnsmaster",
        description="Build tinydns data from zones.* files and push it to every slave.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, and whether the C accelerator is active",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _master_commands(sub, command)
    _push_commands(sub)
    _slave_commands(sub)
    return parser


def _zones_options(p: argparse.ArgumentParser, *, output: bool) -> None:
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument("--zones", type=Path, help="directory holding header and zones.*")
    if output:
        p.add_argument("--out", type=Path, help="directory to write data and data.cdb in")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")


def _master_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None
) -> None:
    """The commands that build, check and watch on the master."""
    p = sub.add_parser("build", help="build data and data.cdb from the zones directory")
    _zones_options(p, output=True)
    _log_options(p)
    _dry_run_options(p, "build in memory and print what it would change; write nothing")

    p = sub.add_parser("check", help="check the zones directory without writing anything")
    _zones_options(p, output=False)

    p = sub.add_parser(
        "diff",
        help="what a push would change, record by record; exit 0 no change, 1 changes, 2 no plan",
        description="Compare the zones there now (built in memory) with the current build "
        "(while the guard holds a build: with the build the slaves were given), or with what "
        "slave NAME holds (--slave), or two data files (OLD NEW): zones added and removed, "
        "records added, removed and changed per zone, serials. Exit 0 no change, 1 changes, "
        "2 no plan could be made (the reason on stderr).",
    )
    _zones_options(p, output=True)
    p.add_argument("files", nargs="*", metavar="OLD NEW", help="compare two data files")
    p.add_argument("--slave", metavar="NAME", help="compare with what this slave holds")
    p.add_argument("--json", action="store_true", help="the plan as JSON")

    p = sub.add_parser(
        "run",
        help="the daemon: watch the zones, build on every save, push to every slave",
        description="Watch the zones directory; after each burst of saves build data and "
        "data.cdb and push them to every slave, retrying slaves that fail. SIGHUP re-reads "
        "the configuration (slaves, hooks, timings) and builds now, SIGALRM pushes again, "
        "SIGTERM stops.",
    )
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    _log_options(p)

    p = sub.add_parser(
        "service-conf",
        help="make a daemontools (or runit) service directory for the daemon, as tinydns-conf does",
        description="Create DIR with run, log/run, log/main (owned by LOGACCT) and env/ "
        "(DNSMASTER_CONFIG, PATH starting with this dnsmaster's directory), after checking "
        "that ACCT can load CONFIG, read the keys and zones and write the output. Never "
        "overwrites DIR; creates nothing when a check fails.",
    )
    if command in (None, "service-conf"):
        from dnsmaster.commands.serviceconf import add_arguments as service_conf_args  # noqa: PLC0415

        service_conf_args(p)

    p = sub.add_parser(
        "status",
        help="judge what the daemon built and what each slave has and serves; non-zero "
        "unless all is ok",
        description="Read the daemon's state file and say whether the daemon is alive, the "
        "zones are built, and each slave serves the build; --live asks every slave now. "
        "Exit 0 all ok, 1 the daemon does not run on the configuration file as it is "
        "(SIGHUP), 3 a slave is not, 4 the build is not current, 5 the daemon is not "
        "running, 111 no state file (--nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).",
    )
    if command in (None, "status"):
        from dnsmaster.commands.status import add_arguments  # noqa: PLC0415

        add_arguments(p)

    p = sub.add_parser(
        "doctor",
        help="check everything a push needs, now: config, keys, output, each slave",
        description="Check the configuration and key permissions, the output directory, and "
        "for each slave: its name, sshd, host key, login, forced command, receiver and "
        "tinydns. One line per check: OK, WARN or FAIL with the reason and the fix. "
        "Exit 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the "
        "configuration cannot be loaded.",
    )
    # Options here, not in doctor.py: importing it loads asyncssh and dnspython,
    # which the other commands must not pay for.
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline for all of one slave's checks (default: 60)",
    )

    p = sub.add_parser(
        "demo",
        help="set up a demo master with two local slaves in DIR and run the daemon on it",
    )
    p.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("dnsmaster-demo"),
        help="(default: %(default)s)",
    )
    p.add_argument("--setup-only", action="store_true", help="create the demo, do not run it")


def _push_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands that put builds on the slaves and wait for them."""
    p = sub.add_parser(
        "push",
        help="build if the zones changed, then push data to every slave in parallel",
        description="Build data and data.cdb if the zones changed since the last build, "
        "then push data to every configured slave (or those named) in parallel.",
    )
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument(
        "--slave", action="append", default=[], metavar="NAME", help="push only to this slave"
    )
    p.add_argument("--no-build", action="store_true", help="push the data as it is on disk")
    p.add_argument(
        "--accept",
        nargs="?",
        const="",
        metavar="BUILD",
        help="push the build the guard holds back (it removes records or zones), and only "
        "it: BUILD, if given, is its serial or sha256 (prefix); nothing is built",
    )
    _dry_run_options(p, "print the build plan and which slaves would change; push nothing")
    _wait_options(p, flag=True)
    _log_options(p)

    p = sub.add_parser(
        "rollback",
        help="put an earlier kept build on every slave and hold it there",
        description="Put one of the master's kept builds on every slave, with a new "
        "serial, and hold it there (saves are built, not pushed) until --release.",
    )
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--to",
        default="-1",
        metavar="SERIAL|STAMP|-N",
        help="the kept build: its serial, a UTC date-time such as 2026-11-26T01:30 (the "
        "newest build made by then), or -N builds back from the newest (default: -1)",
    )
    what.add_argument("--list", action="store_true", help="list the kept builds")
    what.add_argument(
        "--release", action="store_true", help="end the hold: build the zones and push them"
    )
    p.set_defaults(slave=[])
    _log_options(p)

    p = sub.add_parser(
        "wait",
        help="wait until every slave's tinydns serves a serial",
        description="Ask each slave's tinydns (its dns address) for the SOA of every zone "
        "until it serves SERIAL (default: the build on disk's) or a newer one. "
        "Exit 3 naming the laggards on timeout.",
    )
    p.add_argument(
        "serial",
        type=_serial_arg,
        nargs="?",
        metavar="SERIAL",
        help="the build's SOA serial (default: the serial of the build on disk)",
    )
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="ZONE",
        help="wait for this zone (default: every zone of the build on disk with SERIAL)",
    )
    p.add_argument("--config", help="TOML configuration (default: $DNSMASTER_CONFIG)")
    p.add_argument(
        "--slave", action="append", default=[], metavar="NAME", help="wait only for this slave"
    )
    _wait_options(p, flag=False)
    _log_options(p)


def _slave_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The slave's side (the receiver and its key and bundle), and the drop-in."""
    p = sub.add_parser(
        "receive",
        help="the slave's forced command: take a push on stdin, or report status",
        description="Run on a slave as the forced command of the master's key. The verb "
        "comes from SSH_ORIGINAL_COMMAND: push (data on stdin) or status.",
        add_help=False,
    )

    p = sub.add_parser(
        "authorized-key",
        help="print the authorized_keys line that restricts a key to dnsmaster receive",
    )
    p.add_argument("--pubkey", type=Path, required=True, help="the master's public key file")
    p.add_argument(
        "--root", type=Path, required=True, help="the slave's tinydns root (an absolute path)"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--command",
        dest="receiver",
        default="dnsmaster",
        help="how the slave runs dnsmaster (an absolute path if it is not on PATH); "
        "with or without the receive word",
    )
    how.add_argument(
        "--bundle",
        metavar="PATH",
        help="the slave runs the receiver bundle (dnsmaster receiver-bundle) at this absolute path",
    )
    p.add_argument(
        "--python",
        default="/usr/bin/python3",
        help="with --bundle: the slave's python3 (default: %(default)s)",
    )
    p.add_argument("--keep", type=int, help="copies of data the slave keeps (default 10)")
    p.add_argument("--max-size", type=int, help="largest push the slave accepts, in bytes")

    p = sub.add_parser(
        "receiver-bundle",
        help="write the receiver as one file a slave's python3 runs, with no pip install",
        description="Write dnsmaster's receiver as a zipapp: a slave needs only python3, "
        "tinydns and this file (see authorized-key --bundle).",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write it here, mode 0755 (default: stdout, unless that is a terminal)",
    )
    p.add_argument(
        "--python",
        default="/usr/bin/python3",
        help="the interpreter its #! line names (default: %(default)s)",
    )

    sub.add_parser(
        "tinydns-data",
        help="drop-in for tinydns-data: compile ./data into ./data.cdb",
        description=(
            "Compile ./data into ./data.cdb exactly as tinydns-data does: the same "
            "data.cdb, messages and exit status (111 on any failure). On a failure "
            "data.cdb is untouched and data.tmp is left behind, as with tinydns-data, "
            "but empty unless the failure came while writing it (a full disk); "
            "tinydns-data leaves a partly written file there, which is no cdb either."
        ),
    )


def _wait_options(p: argparse.ArgumentParser, *, flag: bool) -> None:
    if flag:
        p.add_argument(
            "--wait",
            action="store_true",
            help="then wait until every slave's tinydns serves the build's serial",
        )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the slaves (default: %(default)s)",
    )


def _serial_arg(text: str) -> int:
    if not text.isdigit() or int(text) >= 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r}: a serial is 0 to 4294967295")
    return int(text)


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("logfmt", "json"), help="log line format")


def _dry_run_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help=f"{what} (exit 0 no change, 1 changes, 2 no plan: zones errors, configuration)",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")


class _VersionAction(argparse.Action):
    """``--version``, worked out only when asked for: it loads the compiler to say
    whether the C accelerator is active, which no other command should pay for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(_version() + "\n")
        parser.exit()


def _version() -> str:
    from dnsmaster import __version__  # noqa: PLC0415
    from dnsmaster.commands.doctor import accelerator_state  # noqa: PLC0415

    return f"dnsmaster {__version__} (C accelerator: {accelerator_state()[1]})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _log_warning
    if argv[:1] == ["receive"]:
        # The slave's hot path: straight to the receiver, its own options and nothing
        # else to import or parse.
        from dnsmaster.slave.receive import main as receive  # noqa: PLC0415

        return receive(argv[1:])
    args = _parser(argv[0] if argv else None).parse_args(argv)
    if args.command == "diff" or getattr(args, "dry_run", False):
        return _plan(args)
    return _COMMANDS[args.command](args)


def _log_warning(*args: Any, **kwargs: Any) -> None:
    """A Python warning becomes a log event; structlog is imported only if one comes."""
    from dnsmaster import log  # noqa: PLC0415

    log.capture_warnings()
    warnings.showwarning(*args, **kwargs)


def _tinydns_data(args: argparse.Namespace) -> int:
    from dnsmaster.commands.tinydnsdata import main as tinydns_data  # noqa: PLC0415

    return tinydns_data()


def _service_conf(args: argparse.Namespace) -> int:
    from dnsmaster.commands.serviceconf import main as service_conf  # noqa: PLC0415

    return service_conf(args)


def _doctor(args: argparse.Namespace) -> int:
    from dnsmaster.commands.doctor import main as doctor  # noqa: PLC0415

    return doctor(args)


def _demo(args: argparse.Namespace) -> int:
    from dnsmaster.commands.demo import main as demo  # noqa: PLC0415

    status = demo(args.directory)
    if status != EXIT_OK or args.setup_only:
        return status
    args.config, args.log_format = str(args.directory / "dnsmaster.toml"), None
    return _run(args)


def _push_command(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    return asyncio.run(_push(args))


def _wait_command(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    return asyncio.run(_wait(args))


def _rollback(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from dnsmaster.commands.rollback import main as rollback  # noqa: PLC0415

    return asyncio.run(rollback(args))


def _config(args: argparse.Namespace) -> Config:
    """The configuration named by --config or $DNSMASTER_CONFIG."""
    from dnsmaster import config  # noqa: PLC0415

    return config.load(config.resolve_path(args.config, os.environ))


def _config_and_log(args: argparse.Namespace) -> Config | None:
    """The configuration, with logging set up as it and --log-format say.

    None when the configuration is wrong; the error is on stderr by then.
    """
    from dnsmaster import log  # noqa: PLC0415
    from dnsmaster.errors import ConfigError  # noqa: PLC0415

    try:
        cfg = _config(args)
    except ConfigError as exc:
        _usage_error(str(exc))
        return None
    log.configure(
        fmt=args.log_format or cfg.log.format, timestamps=cfg.log.timestamps, level=cfg.log.level
    )
    for warning in cfg.warnings:
        log.get_logger().warning("config.warning", warning=warning)
    return cfg


def _zones_paths(args: argparse.Namespace, *, output: bool) -> tuple[Path, Path | None, bool]:
    """--zones/--out, else the configuration's zones/output; and strictness."""
    zones: Path | None = args.zones
    out: Path | None = getattr(args, "out", None)
    strict: bool = args.strict
    if zones is None or (output and out is None):
        cfg = _config(args)
        zones = zones or cfg.zones
        out = out or cfg.output
        strict = strict or cfg.strict
    return zones, out, strict


def _usage_error(message: str) -> int:
    """A usage or configuration error (``str(ConfigError)``: ``FILE: key: reason``):
    one line on stderr, whatever the log format, as status, doctor and diff print it."""
    sys.stderr.write(f"dnsmaster: {message}\n")
    return EXIT_USAGE


def _plan(args: argparse.Namespace) -> int:
    """``diff``, ``build --dry-run``, ``push --dry-run`` (:mod:`dnsmaster.commands.diff`)."""
    from dnsmaster.commands import diff  # noqa: PLC0415

    if args.command == "push":
        import asyncio  # noqa: PLC0415

        return asyncio.run(diff.push_plan(args))
    return diff.build_plan(args) if args.command == "build" else diff.main(args)


def _check(args: argparse.Namespace) -> int:
    from dnsmaster.errors import BuildError, ConfigError  # noqa: PLC0415
    from dnsmaster.master.build import Builder  # noqa: PLC0415

    try:
        zones, _, strict = _zones_paths(args, output=False)
        # The same cap as the build that follows: a file the daemon would refuse
        # must not pass the check.
        cfg = _config(args) if args.zones is None else None
    except ConfigError as exc:
        return _usage_error(str(exc))
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
    from dnsmaster.core.text import printable  # noqa: PLC0415

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


def _build(args: argparse.Namespace) -> int:
    from dnsmaster import log  # noqa: PLC0415
    from dnsmaster.errors import ConfigError  # noqa: PLC0415
    from dnsmaster.master.build import Builder  # noqa: PLC0415

    log.configure(fmt=args.log_format or "logfmt")
    logger = log.get_logger()
    try:
        zones, out, strict = _zones_paths(args, output=True)
        cfg = _config(args) if args.out is None else None
    except ConfigError as exc:
        return _usage_error(str(exc))
    assert out is not None
    builder = Builder(zones, out, strict=strict, locking=False)
    if cfg is not None:
        builder.max_file_size = cfg.max_file_size
        builder.ipv6_int = cfg.ipv6_int
        builder.keep = cfg.daemon.keep
    with _one_writer(out, cfg.state if cfg else None, logger) as daemon:
        if daemon is not None:
            return _hand_off(cfg, daemon, builder, (), logger)  # type: ignore[arg-type]
        return _run_build(builder, logger)


def _run_build(builder: Builder, logger: Any) -> int:
    """One build, logged event by event; the exit status it deserves."""
    from dnsmaster.errors import BuildError, DataErrors  # noqa: PLC0415

    out = builder.output
    try:
        result = builder.build()
    except DataErrors as exc:
        for error in exc.errors:
            logger.error("build.error", file=error.file, line=error.line, error=error.reason)
        logger.error("build.failed", errors=len(exc.errors), output=str(out), changed=False)
        return EXIT_DATA
    except BuildError as exc:
        logger.error("build.failed", path=exc.path, error=exc.reason, changed=False)
        return EXIT_SYSTEM
    for name, reason in result.skipped:
        logger.info("build.skipped", file=name, reason=reason)
    for warning in result.warnings:
        logger.warning("build.warning", file=warning.file, line=warning.line, error=warning.reason)
    logger.info(
        "build.done",
        serial=result.serial,
        files=len(result.sources),
        lines=result.lines,
        records=result.records,
        cached=len(result.cached),  # files read back from the build cache, not compiled
        sha256=result.sha256[:16],
        seconds=round(result.seconds, 3),
        output=str(out),
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from dnsmaster import log  # noqa: PLC0415
    from dnsmaster.daemon.loop import Daemon  # noqa: PLC0415

    cfg = _config_and_log(args)
    if cfg is None:
        return EXIT_USAGE

    async def run() -> int:
        return await Daemon(cfg, log.get_logger()).run()

    return asyncio.run(run())


def _status(args: argparse.Namespace) -> int:
    from dnsmaster.commands.status import main as status  # noqa: PLC0415

    return status(args)


async def _push(args: argparse.Namespace) -> int:
    setup = _config_log_slaves(args)
    if setup is None:
        return EXIT_USAGE
    cfg, logger, slaves = setup
    with _one_writer(cfg.output, cfg.state, logger) as daemon:
        if _rollback_holds(cfg, logger):
            # Neither built nor handed to the daemon: it would push nothing new, and
            # without a daemon the push would undo the rollback.
            status = EXIT_DATA
        elif daemon is not None:
            names = [s.name for s in slaves]
            status = _daemon_runs(cfg, names, logger) or _hand_off(
                cfg, daemon, _builder(cfg), names, logger, repush=args.no_build, accept=args.accept
            )
        else:
            status = await _push_by_hand(cfg, slaves, args, logger)
    if status != EXIT_OK or not args.wait:
        return status
    return await _wait_for_build(cfg, slaves, None, args.timeout, logger)


async def _push_by_hand(
    cfg: Config, slaves: list[Slave], args: argparse.Namespace, logger: Any
) -> int:
    """Without a daemon: build if the zones changed, let the guard judge, push.

    ``--accept`` pushes the data on disk only when it is the build the guard holds
    (and the one it names, if it names one): never a build nobody looked at.
    """
    if args.accept is None:
        status = EXIT_OK if args.no_build else _build_if_needed(cfg, logger)
        if status != EXIT_OK:
            return status
    data = _data_on_disk(cfg, logger)
    if isinstance(data, int):
        return data
    if args.accept is not None:
        refused = _accepted(cfg, data, args.accept, logger)
    else:
        refused = _guard(cfg, data, logger)
    if refused is not None:
        return refused
    return await _push_to_slaves(cfg, slaves, logger, data)


def _accepted(cfg: Config, data: bytes, spec: str, logger: Any) -> int | None:
    """``push --accept [BUILD]`` without a daemon: None when ``data`` is the held build
    (and BUILD names it), else the exit status (nothing is pushed)."""
    import hashlib  # noqa: PLC0415

    from dnsmaster.master import guarded  # noqa: PLC0415

    held = guarded.held(cfg, hashlib.sha256(data).hexdigest())
    if held is None:
        logger.info("guard.nothing_held", output=str(cfg.output), hint="dnsmaster push")
        return EXIT_OK
    if not _names_held(spec, held, logger):
        return EXIT_HELD
    logger.warning(
        "guard.accepted", serial=held.serial, sha256=held.sha256[:16], reason=held.reason
    )
    return None


def _guard(cfg: Config, data: bytes, logger: Any) -> int | None:
    """The guard on a push by hand: None when ``data`` may go, else the exit status.

    It judges ``data`` against the build the last push installed, as the daemon
    judges each build against what it gave the slaves (:mod:`dnsmaster.master.guarded`).
    """
    import hashlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from dnsmaster.core.makedata import previous_serial  # noqa: PLC0415
    from dnsmaster.errors import TinydnsDataError  # noqa: PLC0415
    from dnsmaster.fsutil import describe  # noqa: PLC0415
    from dnsmaster.master import guarded  # noqa: PLC0415

    base = guarded.given(cfg.output, cfg.daemon.keep)
    if base is None:
        logger.info("guard.no_base", reason="no build recorded as pushed is kept here")
        return None
    try:
        verdict = guarded.judge(cfg, base, data)
    except TinydnsDataError as exc:
        logger.error("push.failed", path=str(cfg.output / "data"), error=f"not valid data: {exc}")
        return EXIT_DATA
    if verdict is None:
        with contextlib.suppress(OSError):
            guarded.clear(cfg.output)
        return None
    sha256 = hashlib.sha256(data).hexdigest()
    serial = previous_serial(data[:200])
    before = guarded.held(cfg, sha256)
    since = before.since if before is not None else time.time()
    try:
        guarded.write(cfg.output, guarded.Held(serial, sha256, verdict.reason, since, base.sha256))
    except OSError as exc:
        # Still refused: the next push judges the build again.
        logger.warning("guard.record_failed", path=str(cfg.output), error=describe(exc))
    logger.critical(
        "guard.held",
        serial=serial,
        sha256=sha256[:16],
        records=verdict.new_records,
        was=verdict.old_records,
        zones=",".join(verdict.removed_zones) or None,
        reason=verdict.reason,
        pushed_serial=base.serial,
        error="the guard holds this build: nothing pushed",
        hint=f"dnsmaster diff shows what it changes; dnsmaster push --accept {serial} pushes it",
    )
    return EXIT_HELD


def _daemon_runs(cfg: Config, names: Sequence[str], logger: Any) -> int:
    """EXIT_OK when no daemon runs or it runs every slave named; else EXIT_USAGE,
    saying why (a slave added to the file after the daemon loaded it) and the fix.

    A request for a slave the daemon does not run would wait for an outcome that
    never comes, until the hand-off's timeout. A daemon that runs them all on an
    older version of the file is only warned about: it does the work as it is set.
    """
    from dnsmaster.master import handoff  # noqa: PLC0415

    why = handoff.unknown_slaves(cfg.state, cfg.path, names, grace=handoff.RELOAD_GRACE)
    if why is not None:
        return _usage_error(why)
    if handoff.config_behind(cfg.state, cfg.path):
        logger.warning(
            "handoff.config_behind",
            config=str(cfg.path),
            hint="the daemon works with the configuration it loaded before the file "
            f"changed; send it SIGHUP ({handoff.SIGHUP_HOW}) to apply the file",
        )
    return EXIT_OK


def _rollback_holds(cfg: Config, logger: Any) -> bool:
    """Whether a rollback holds the slaves on an earlier build (logged if so).

    A push by hand would undo it without a word; ``rollback --release`` ends it.
    """
    from dnsmaster.errors import ArchiveError  # noqa: PLC0415
    from dnsmaster.master import rollback  # noqa: PLC0415

    try:
        hold = rollback.read(cfg.output)
    except ArchiveError as exc:
        logger.error("rollback.damaged", path=exc.path, error=exc.reason)
        return True
    if hold is None:
        return False
    logger.error(
        "rollback.held",
        serial=hold.serial,
        kept_serial=hold.kept_serial,
        error="a rollback holds every slave on an earlier build; nothing pushed",
        hint="dnsmaster rollback --release ends it and pushes the zones",
    )
    return True


def _config_log_slaves(args: argparse.Namespace) -> tuple[Config, Any, list[Slave]] | None:
    """The configuration, the logger, and the slaves ``--slave`` names (all by default);
    None when either is wrong (the error is logged by then)."""
    from dnsmaster import log  # noqa: PLC0415
    from dnsmaster.errors import ConfigError  # noqa: PLC0415

    cfg = _config_and_log(args)
    if cfg is None:
        return None
    try:
        return cfg, log.get_logger(), list(cfg.select(args.slave))
    except ConfigError as exc:
        _usage_error(str(exc))
        return None


async def _wait(args: argparse.Namespace) -> int:
    from dnsmaster.core.fields import name_to_wire  # noqa: PLC0415

    setup = _config_log_slaves(args)
    if setup is None:
        return EXIT_USAGE
    cfg, logger, slaves = setup
    if args.zone and args.serial is None:
        return _usage_error("--zone needs the SERIAL to wait for")
    try:
        zones = {name_to_wire(z.encode()).lower(): args.serial for z in args.zone} or None
    except ValueError as exc:
        return _usage_error(f"--zone: {exc}")
    # A slave the daemon does not run gets no build: waiting for it would time out.
    status = _daemon_runs(cfg, [s.name for s in slaves], logger)
    if status != EXIT_OK:
        return status
    return await _wait_for_build(cfg, slaves, zones, args.timeout, logger, serial=args.serial)


async def _wait_for_build(
    cfg: Config,
    slaves: Sequence[Slave],
    zones: dict[bytes, int] | None,
    timeout: float,
    logger: Any,
    *,
    serial: int | None = None,
) -> int:
    """Wait until ``slaves`` serve ``zones`` (default: the build's on disk); the exit status."""
    import time  # noqa: PLC0415

    from dnsmaster.core.banner import previous_serial  # noqa: PLC0415
    from dnsmaster.fsutil import describe  # noqa: PLC0415
    from dnsmaster.master import wait  # noqa: PLC0415

    if zones is None:
        path = cfg.output / "data"
        try:
            data = path.read_bytes()
        except OSError as exc:
            logger.error("wait.failed", path=str(path), error=describe(exc))
            return EXIT_SYSTEM
        built = previous_serial(data[:200])
        if serial is None:
            serial = built
        if serial is None:
            logger.error("wait.failed", path=str(path), error="no dnsmaster banner: no serial")
            return EXIT_USAGE
        zones = wait.build_zones(data, serial)
        if not zones:
            return _usage_error(
                f"no zone in {path} has serial {serial} (the build on disk is {built}): "
                "name the zones with --zone"
            )
    logger.info("wait.start", serial=serial, zones=len(zones), slaves=len(slaves), timeout=timeout)
    start = time.monotonic()
    results = await wait.wait_live(
        slaves,
        zones,
        timeout=timeout,
        logger=logger,
        query_timeout=min(cfg.daemon.verify_timeout, 1.0),
    )
    live = wait.report(results, logger, seconds=time.monotonic() - start)
    return EXIT_OK if live else EXIT_SLAVES


def _data_on_disk(cfg: Config, logger: Any) -> bytes | int:
    """The data in the output directory, or the exit status when it cannot be pushed."""
    try:
        data = (cfg.output / "data").read_bytes()
    except OSError as exc:
        from dnsmaster.fsutil import describe  # noqa: PLC0415

        logger.error("push.failed", path=str(cfg.output / "data"), error=describe(exc))
        return EXIT_SYSTEM
    if data and not data.endswith(b"\n"):
        # A hand-edited data file (--no-build): the trailer could not follow it.
        logger.error(
            "push.failed", path=str(cfg.output / "data"), error="data does not end with a newline"
        )
        return EXIT_DATA
    return data


async def _push_to_slaves(
    cfg: Config, slaves: Sequence[Slave], logger: Any, data: bytes | None = None
) -> int:
    """Push ``data`` (default: the data on disk) to ``slaves`` without a daemon
    (:func:`dnsmaster.master.pushing.push_build`); the exit status."""
    from dnsmaster.master import pushing  # noqa: PLC0415

    found = _data_on_disk(cfg, logger) if data is None else data
    if isinstance(found, int):
        return found
    results = await pushing.push_build(cfg, slaves, found, logger)
    return EXIT_OK if all(r.ok for r in results) else EXIT_SLAVES


def _builder(cfg: Config) -> Builder:
    from dnsmaster.master.build import Builder  # noqa: PLC0415

    # The caller holds the output directory's lock (_one_writer).
    return Builder(
        cfg.zones,
        cfg.output,
        strict=cfg.strict,
        ipv6_int=cfg.ipv6_int,
        max_file_size=cfg.max_file_size,
        locking=False,
        keep=cfg.daemon.keep,
    )


def _build_if_needed(cfg: Config, logger: Any) -> int:
    """Build unless data and data.cdb already come from the zones there now."""
    from dnsmaster.errors import BuildError  # noqa: PLC0415

    builder = _builder(cfg)
    try:
        for name in builder.tidy():
            logger.info("build.swept", file=name)
        if builder.is_current():
            logger.info("build.current", output=str(cfg.output))
            return EXIT_OK
    except BuildError as exc:
        logger.error("build.failed", path=exc.path, error=exc.reason, changed=False)
        return EXIT_SYSTEM
    return _run_build(builder, logger)


@contextlib.contextmanager
def _one_writer(output: Path, state: Path | None, logger: Any) -> Iterator[int | None]:
    """Hold the output directory's lock for the block, or yield the pid of the
    running daemon that holds it (the request is then handed to the daemon).

    Another ``build`` or ``push`` holding it is waited for, with a message.
    """
    from dnsmaster import fsutil  # noqa: PLC0415
    from dnsmaster.master import handoff  # noqa: PLC0415

    try:
        lock = fsutil.DirectoryLock(output)
    except OSError:
        yield None  # no such directory: the build reports it in its own words
        return
    try:
        if not lock.try_acquire():
            daemon = handoff.daemon_pid(state) if state is not None else None
            if daemon is not None:
                yield daemon
                return
            logger.info("lock.wait", path=str(output), holder="another dnsmaster build or push")
            lock.acquire()
        yield None
    finally:
        lock.release()


def _hand_off(
    cfg: Config,
    daemon: int,
    builder: Builder,
    slaves: Sequence[str],
    logger: Any,
    *,
    repush: bool = False,
    accept: str | None = None,
) -> int:
    """Have the running daemon build (and push), and report what it did.

    With ``accept`` (``push --accept [BUILD]``), release the build its guard holds
    (SIGUSR2, with the held build's sha256 in the output directory, so only that
    build is released), if BUILD names it.
    """
    import signal  # noqa: PLC0415

    from dnsmaster.daemon.loop import ACCEPT_FILE  # noqa: PLC0415
    from dnsmaster.master import handoff  # noqa: PLC0415
    from dnsmaster.master import state as statefile  # noqa: PLC0415

    signum = None
    held: statefile.HeldBuild | None = None
    request: str | None = None
    timeout = cfg.push.timeout + cfg.daemon.max_delay + handoff.GRACE
    if accept is not None:
        try:
            held = statefile.read(cfg.state).held
        except (OSError, ValueError) as exc:
            logger.error("guard.accept_failed", path=str(cfg.state), error=str(exc))
            return EXIT_SYSTEM
        if held is None:
            logger.info("guard.nothing_held", daemon=daemon)
            return EXIT_OK
        if not _names_held(accept, held, logger):
            return EXIT_HELD
        name = handoff.instance(cfg.state, daemon)
        if name is None:
            logger.error("handoff.failed", daemon=daemon, error=handoff.NO_INSTANCE)
            return EXIT_SYSTEM
        flag = cfg.output / ACCEPT_FILE
        request = handoff.write_request(flag, daemon=name, timeout=timeout, sha256=held.sha256)
        signum = signal.SIGUSR2
        logger.info("guard.accept", serial=held.serial, sha256=held.sha256[:16], daemon=daemon)
    try:
        return _follow_daemon(
            cfg, daemon, builder, slaves, logger, repush=repush, held=held, signum=signum
        )
    finally:
        # Unanswered (the daemon stopped, or this command was interrupted): no
        # daemon may carry it out later, when nobody waits for it.
        if request is not None and handoff.withdraw(cfg.output / ACCEPT_FILE, request):
            logger.warning("handoff.withdrawn", daemon=daemon, file=ACCEPT_FILE)


def _follow_daemon(
    cfg: Config,
    daemon: int,
    builder: Builder,
    slaves: Sequence[str],
    logger: Any,
    *,
    repush: bool,
    held: Any,
    signum: int | None,
) -> int:
    """Signal the daemon for a build (a push again, an accept) and report it."""
    from dnsmaster.core.banner import built_from  # noqa: PLC0415
    from dnsmaster.errors import BuildError, DataErrors  # noqa: PLC0415
    from dnsmaster.master import handoff  # noqa: PLC0415

    try:
        if held is not None:
            fingerprint = held.fingerprint or ""
        elif repush:
            with (cfg.output / "data").open("rb") as f:
                fingerprint = built_from(f.readline(300)) or ""
        else:
            fingerprint = builder.fingerprint()
            # Already built: push it to every slave again, as a push by hand always did.
            repush = bool(slaves) and builder.is_current()
    except (BuildError, DataErrors, OSError) as exc:
        logger.error("build.failed", error=str(exc), changed=False)
        return EXIT_SYSTEM
    logger.info(
        "handoff.start",
        daemon=daemon,
        request="accept the held build"
        if held is not None
        else "push again"
        if repush
        else "build if changed",
        slaves=len(slaves),
    )

    def built(build: Any) -> None:
        logger.info("build.done", serial=build.serial, sha256=build.sha256[:16], by="daemon")

    outcome = handoff.follow(
        cfg.state,
        daemon,
        fingerprint=fingerprint,
        repush=repush,
        slaves=slaves,
        timeout=cfg.push.timeout + cfg.daemon.max_delay + handoff.GRACE,
        on_slave=_slave_reporter(logger),
        on_build=built,
        signum=signum,
    )
    return _handed_off(outcome, daemon, slaves, logger)


def _names_held(spec: str, held: Any, logger: Any) -> bool:
    """Whether ``push --accept SPEC`` names the daemon's held build (logged if not)."""
    from dnsmaster.master import guarded  # noqa: PLC0415

    if guarded.names(spec, held.serial, held.sha256):
        return True
    logger.error(
        "guard.not_accepted",
        accepted=spec,
        serial=held.serial,
        sha256=held.sha256[:16],
        error="--accept names another build than the one held; nothing pushed",
        hint=f"dnsmaster diff shows what it changes; dnsmaster push --accept {held.serial}",
    )
    return False


def _slave_reporter(logger: Any) -> Callable[[str, Any], None]:
    """What logs each slave's outcome as a daemon that was handed a request reports it."""

    def slave_done(name: str, slave: Any) -> None:
        if slave.result == "ok":
            logger.info("push.done", slave=name, serial=slave.installed_serial, by="daemon")
        else:
            logger.error("push.failed", slave=name, error=slave.error, by="daemon")

    return slave_done


def _handed_off(
    outcome: Any,
    daemon: int,
    slaves: Sequence[str],
    logger: Any,
    *,
    late: str = "the daemon did not build in time",
) -> int:
    """Report what the daemon did with a hand-off (:func:`dnsmaster.master.handoff.follow`,
    :func:`~dnsmaster.master.handoff.follow_request`); ``late`` says a daemon that did not."""
    if outcome.held is not None and outcome.held_by == "rollback":
        logger.error("rollback.held", reason=outcome.held, by="daemon")
        return EXIT_DATA
    if outcome.held is not None:
        logger.critical(
            "guard.held",
            reason=outcome.held,
            by="daemon",
            hint="check with dnsmaster diff; release with dnsmaster push --accept",
        )
        return EXIT_HELD
    if outcome.build_failed:
        error = outcome.build.error if outcome.build else None
        logger.error("build.failed", error=error, by="daemon", hint="dnsmaster check")
        return EXIT_DATA
    failed = [n for n, why in outcome.slaves.items() if why is not None]
    for name in outcome.pending:
        logger.error("push.failed", slave=name, error="no outcome from the daemon in time")
    if slaves:
        logger.info(
            "push.end",
            ok=len(slaves) - len(failed) - len(outcome.pending),
            failed=len(failed) + len(outcome.pending),
        )
    if outcome.build is None:
        logger.error("handoff.failed", daemon=daemon, error=late)
        return EXIT_SYSTEM
    return EXIT_SLAVES if failed or outcome.pending else EXIT_OK


def _authorized_key(args: argparse.Namespace) -> int:
    import shlex  # noqa: PLC0415

    try:
        words = args.pubkey.read_text().split()
    except OSError as exc:
        from dnsmaster.fsutil import describe  # noqa: PLC0415

        return _usage_error(f"{args.pubkey}: cannot read: {describe(exc)}")
    if len(words) < 2 or not (words[0].startswith(("ssh-", "ecdsa-", "sk-"))):
        return _usage_error(f"{args.pubkey}: not an OpenSSH public key")
    if not args.root.is_absolute():
        # Made absolute here, it would name a directory of this master, not the slave.
        return _usage_error(
            f"--root {args.root}: give the slave's tinydns root as an absolute path "
            "(it is a directory on the slave, e.g. /etc/tinydns/root)"
        )
    if args.bundle is not None:
        if not (args.bundle.startswith("/") and args.python.startswith("/")):
            return _usage_error("--bundle and --python must be absolute paths on the slave")
        # -I -S: nothing in the slave's environment or site-packages changes what runs.
        # The bundle is the receiver itself: no "receive" word.
        command = [args.python, "-I", "-S", args.bundle, "--root", str(args.root)]
    else:
        receiver = _receiver_command(args.receiver)
        if isinstance(receiver, str):
            return _usage_error(receiver)
        command = [*receiver, "receive", "--root", str(args.root)]
    if args.keep is not None:
        command += ["--keep", str(args.keep)]
    if args.max_size is not None:
        command += ["--max-size", str(args.max_size)]
    forced = " ".join(shlex.quote(w) for w in command).replace("\\", "\\\\").replace('"', '\\"')
    sys.stdout.write(f'restrict,command="{forced}" {" ".join(words)}\n')
    return EXIT_OK


def _receiver_command(text: str) -> list[str] | str:
    """--command's words without a trailing ``receive``, or why it is refused.

    The manual's wording (docs/slaves.rst: the forced command runs ``dnsmaster
    receive``) invites giving the whole command; both forms mean the same program.
    """
    import shlex  # noqa: PLC0415

    # Several words are allowed ("/usr/bin/python3 -m dnsmaster").
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return f"--command {text!r}: {exc}"
    if words[-1:] == ["receive"]:
        words.pop()
    if not words:
        return "--command: give how the slave runs dnsmaster, e.g. /opt/dnsmaster/bin/dnsmaster"
    if "receive" in words:
        return (
            f"--command {text!r}: receive must be its last word; give the receiver's "
            "options as --keep and --max-size"
        )
    return words


def _receiver_bundle(args: argparse.Namespace) -> int:
    from dnsmaster.fsutil import describe  # noqa: PLC0415
    from dnsmaster.slave import bundle  # noqa: PLC0415

    if args.output is None and sys.stdout.isatty():
        # Checked first: a zip on a terminal is garbage on screen, and building is wasted.
        return _usage_error(
            "the bundle is a binary file, not for a terminal: give -o FILE "
            "(e.g. -o dnsmaster-receive.pyz) or redirect it (> FILE)"
        )
    try:
        if args.output is not None:
            bundle.write(args.output, args.python)
            return EXIT_OK
        data = bundle.build(args.python)
    except ValueError as exc:
        return _usage_error(f"--python: {exc}")
    except OSError as exc:
        sys.stderr.write(f"dnsmaster: {args.output}: cannot write: {describe(exc)}\n")
        return EXIT_SYSTEM
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


#: Every command but diff and the dry runs (see main), by name.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "tinydns-data": _tinydns_data,
    "authorized-key": _authorized_key,
    "receiver-bundle": _receiver_bundle,
    "check": _check,
    "build": _build,
    "run": _run,
    "service-conf": _service_conf,
    "status": _status,
    "doctor": _doctor,
    "demo": _demo,
    "push": _push_command,
    "wait": _wait_command,
    "rollback": _rollback,
}
