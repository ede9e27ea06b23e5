"""The ``dnsmaster`` command line: the parser, and which module runs each command.

Each command is a function in a module of its own (:data:`COMMANDS`), imported only
when that command runs: ``dnsmaster receive`` starts once per push on every slave
and must not pay for asyncssh or dnspython, and ``dnsmaster check`` need not pay
for the daemon. The options of most commands are declared here, where declaring
them costs nothing; ``status`` and ``service-conf`` declare theirs in their own
modules (``add_arguments``), loaded only when that command runs.

``dnsmaster --version`` and ``--help`` import this module and argparse, nothing
more (``tests/commands/test_main.py`` holds every command to a list of modules it
must not import).

The exit statuses of every command are :data:`dnsmaster.exits.EXIT_STATUSES`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsmaster import __version__
from dnsmaster.daemon import SIGNALS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["AXFRDNS_CONF", "COMMANDS", "DRY_RUNS", "Command", "main", "parser"]


class Command:
    """Where a command's code is: ``function(args)`` in ``module``, which returns the
    exit status.

    A plain class, not a dataclass: this module is all that ``dnsmaster --version``
    and ``--help`` import, and the dataclasses module (with inspect) would be most
    of their cost.
    """

    __slots__ = ("function", "module")

    def __init__(self, module: str, function: str = "main") -> None:
        self.module = module
        self.function = function

    def __repr__(self) -> str:
        return f"Command({self.module!r}, {self.function!r})"

    def load(self) -> Callable[[argparse.Namespace], int]:
        """The function, its module imported now.

        Importing makes tens of thousands of objects (classes, functions, their
        dicts) that live as long as the process, and no garbage: the collector
        is off meanwhile, and what the imports made is frozen afterwards
        (:func:`gc.freeze`), so that no later collection walks it again. Only
        the first time: a process that runs commands one after the other (the
        tests') would freeze its own garbage too.
        """
        first = self.module not in sys.modules  # else (a test's process) nothing new
        enabled = gc.isenabled()
        if first:
            gc.disable()
        try:
            function: Callable[[argparse.Namespace], int] = getattr(
                importlib.import_module(self.module), self.function
            )
        finally:
            if first:
                gc.freeze()
                if enabled:
                    gc.enable()
        return function


#: Every command but ``receive`` (see :func:`main`), by name.
COMMANDS: dict[str, Command] = {
    "build": Command("dnsmaster.commands.build", "build"),
    "check": Command("dnsmaster.commands.build", "check"),
    "diff": Command("dnsmaster.commands.diff"),
    "run": Command("dnsmaster.commands.run"),
    "service-conf": Command("dnsmaster.commands.serviceconf"),
    "status": Command("dnsmaster.commands.status"),
    "doctor": Command("dnsmaster.commands.doctor"),
    "demo": Command("dnsmaster.commands.demo"),
    "push": Command("dnsmaster.commands.push"),
    "rollback": Command("dnsmaster.commands.rollback"),
    "wait": Command("dnsmaster.commands.wait"),
    "authorized-key": Command("dnsmaster.commands.keys", "authorized_key"),
    "receiver-bundle": Command("dnsmaster.commands.keys", "receiver_bundle"),
    "tinydns-data": Command("dnsmaster.commands.tinydnsdata"),
}

#: ``--dry-run``: the command's plan (:mod:`dnsmaster.commands.diff`) instead of the command.
DRY_RUNS: dict[str, Command] = {
    "build": Command("dnsmaster.commands.diff", "build_plan"),
    "push": Command("dnsmaster.commands.diff", "push_dry_run"),
}

#: ``service-conf --axfrdns``: the service feeding the secondaries, not the daemon's.
AXFRDNS_CONF = Command("dnsmaster.commands.axfrdnsconf")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status."""
    own = argv is None  # the process's own command line: it ends when this returns
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _log_warning
    if argv[:1] == ["receive"]:
        # The slave's hot path: straight to the receiver, its own options and nothing
        # else to import or parse; run as the process, it ends it (no teardown).
        from dnsmaster.commands.receive import main as receive  # noqa: PLC0415
        from dnsmaster.commands.receive import run  # noqa: PLC0415

        if own:
            run(argv[1:])
        return receive(argv[1:])
    args = parser(argv[0] if argv else None).parse_args(argv)
    command = DRY_RUNS[args.command] if getattr(args, "dry_run", False) else COMMANDS[args.command]
    if args.command == "service-conf" and args.axfrdns:
        command = AXFRDNS_CONF
    if args.command != "run":
        status: int = command.load()(args)
        if own:
            _exit_now(status)
        return status
    held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # until the daemon handles them
    try:
        return command.load()(args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a daemon that never got that far


def _exit_now(status: int) -> None:
    """End the process with ``status`` once its output is flushed, without the
    interpreter's teardown (every module and object freed one by one: 0.2 s of CPU
    after a push by hand had logged its end), when no other thread is left to finish.
    The command's work is done: its files are written and closed, its connections
    closed. Returns, for the usual exit, when a flush fails or a thread runs."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


def _log_warning(*args: Any, **kwargs: Any) -> None:
    """A Python warning becomes a log event."""
    # Imported only if a warning comes.
    from dnsmaster import log  # noqa: PLC0415

    log.capture_warnings()
    warnings.showwarning(*args, **kwargs)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``command``, when known, is the one being run (None: every
    command's options are wanted, as for the manual).

    ``status`` and ``service-conf`` define their options in their own modules, which
    cost tens of milliseconds to import: only the command being run loads them, so
    ``dnsmaster build`` does not pay for ``status``.
    """
    top = argparse.ArgumentParser(
        prog="dnsmaster",
        description="Build tinydns data from zones.* files and push it to every slave.",
    )
    top.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, and whether the C accelerator is active",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _master_commands(sub, command)
    _push_commands(sub)
    _slave_commands(sub, command)
    return top


def _own_options(p: argparse.ArgumentParser, name: str, command: str | None) -> None:
    """The options command ``name`` declares in its own module (``add_arguments``),
    imported only when it is the ``command`` being run, or when every one is wanted."""
    if command in (None, name):
        importlib.import_module(COMMANDS[name].module).add_arguments(p)


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
    _own_options(p, "service-conf", command)

    p = sub.add_parser(
        "status",
        help="judge what the daemon built and what each slave has and serves; non-zero "
        "unless all is ok",
        description="Read the daemon's state file and say whether the daemon is alive, the "
        "zones are built, and each slave and secondary serves the build; --live asks every "
        "slave now. Exit 0 all ok, 1 the daemon does not run on the configuration file as it "
        "is (SIGHUP), 3 a slave or a secondary is not, 4 the build is not current, 5 the "
        "daemon is not running, 111 no state file (--nagios: 0 OK, 1 WARNING, 2 CRITICAL, "
        "3 UNKNOWN).",
    )
    _own_options(p, "status", command)

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


def _slave_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None
) -> None:
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
    if command in (None, "authorized-key"):
        # The protocol module (shared with the receiver, which reads these options
        # back) only for this command: every other one starts without it.
        from dnsmaster.protocol import add_confinement_options  # noqa: PLC0415

        confined = p.add_argument_group(
            "a confined master (a slave serving several masters, docs: Secondary DNS service)"
        )
        add_confinement_options(confined)

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
    p.add_argument(
        "--secondaries",
        action="store_true",
        help="wait for the standard secondaries ([[secondary]]) too, each for the zones it carries",
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
    """``--version``, worked out only when asked for: it loads the compiler's
    extension to say whether the C accelerator is active."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(_version() + "\n")
        parser.exit()


def _version() -> str:
    # Only when asked: it loads the extension (and nothing of the master's rooms).
    from dnsmaster.core import accel  # noqa: PLC0415

    return f"dnsmaster {__version__} (C accelerator: {accel.state()[1]})"
