"""``dnsmaster service-conf``: make a supervised service directory, as tinydns-conf does.

``dnsmaster service-conf [--runit] ACCT LOGACCT DIR CONFIG`` creates DIR with
(``--axfrdns`` makes axfrdns' service instead: :mod:`dnsmaster.commands.axfrdnsconf`)

- ``run``: ``exec envdir ./env setuidgid ACCT dnsmaster run`` (runit: ``exec chpst
  -e ./env chpst -u ACCT dnsmaster run``), stderr on stdout;
- ``env/DNSMASTER_CONFIG`` (CONFIG, absolute) and ``env/PATH``, whose first
  directory is the one holding the dnsmaster command that ran service-conf, so the
  daemon runs the installation that made it, whatever the supervisor's PATH;
- ``env/HOME``: ACCT's home from its passwd entry, in place of whatever HOME the
  supervisor's starter had (root's ``/root``, from a root shell). The daemon itself
  reads nothing through HOME (see :mod:`dnsmaster.sshlib`); hooks it runs may;
- ``log/run``: ``multilog t s1000000 n20 ./main`` as LOGACCT (runit: ``svlogd -tt
  ./main``);
- ``log/main``, owned by LOGACCT.

Before creating anything it proves that the daemon could work: both accounts
exist, DIR does not (it is never overwritten), and ACCT itself, running that
dnsmaster command through that PATH, can load CONFIG (and so read the private
keys), read the zones and known_hosts, and write the output and state
directories. That last part runs as ACCT (:func:`probe`, through the hidden
``--probe`` option) because only the kernel knows what ACCT may do: group
memberships, ACLs and a venv under a private home all show up there and nowhere
else. A refusal names each problem and its fix, and creates nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dnsmaster import config as configuration
from dnsmaster import fsutil
from dnsmaster.errors import ConfigError, ServiceConfError
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM

__all__ = ["Account", "add_arguments", "main", "probe", "scripts"]

#: After the installed dnsmaster's own directory: where envdir, setuidgid, chpst live.
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"

# An account name that needs no quoting in a run script (useradd's own rule, roughly).
_ACCOUNT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


@dataclass(frozen=True, slots=True)
class Account:
    """A local account the service runs a program as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str = "/nonexistent"

    @classmethod
    def lookup(cls, name: str, role: str) -> Account:
        """The account ``name``, or a ServiceConfError saying how to create it."""
        if not _ACCOUNT_NAME.fullmatch(name):
            raise ServiceConfError(f"{role} {name!r}: not a valid account name")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            # Silently falling back to root (what a hand-written log/run did) is the
            # failure this check exists for.
            raise ServiceConfError(
                f"{role} {name!r} does not exist: create it first "
                f"(adduser --system --group --no-create-home --home /nonexistent {name})"
            ) from None
        groups = tuple(os.getgrouplist(name, entry.pw_gid))
        return cls(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``service-conf`` sub-command's arguments."""
    p.add_argument("account", metavar="ACCT", help="the account the daemon runs as")
    p.add_argument("log_account", metavar="LOGACCT", help="the account multilog/svlogd runs as")
    p.add_argument("directory", metavar="DIR", type=Path, help="the service directory to create")
    p.add_argument("config", metavar="CONFIG", type=Path, help="the daemon's configuration file")
    p.add_argument(
        "--runit",
        action="store_true",
        help="for runit (chpst, svlogd) instead of daemontools (envdir, setuidgid, multilog)",
    )
    p.add_argument(
        "--axfrdns",
        action="store_true",
        help="make (or, run again, update the rules of) the axfrdns service that lets the "
        "[[secondary]] entries transfer the zones from the output directory, run as ACCT",
    )
    # Internal: service-conf runs itself as ACCT with this to check what ACCT may do.
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    """Run ``service-conf`` (or, with ``--probe``, the check as ACCT); the exit status."""
    if args.probe:
        problems = probe(args.config)
        for problem in problems:
            sys.stdout.write(f"{problem}\n")
        return EXIT_SYSTEM if problems else EXIT_OK
    try:
        directory, program = make(
            args.account, args.log_account, args.directory, args.config, runit=args.runit
        )
    except ServiceConfError as exc:
        sys.stderr.write(f"dnsmaster service-conf: {exc}\n")
        return exc.status
    kind = "runit" if args.runit else "daemontools"
    sys.stdout.write(
        f"made {directory} for {kind}: {program} run as {args.account}, "
        f"logged by {args.log_account} in {directory / 'log' / 'main'}\n"
        f"to start it, link it into the scanned directory: "
        f"ln -s {directory} /etc/service/  (djb's layout: /service/)\n"
    )
    return EXIT_OK


def scripts(account: str, log_account: str, *, runit: bool) -> dict[str, str]:
    """The ``run`` and ``log/run`` scripts, by path relative to the service directory."""
    acct, logacct = shlex.quote(account), shlex.quote(log_account)
    if runit:
        # Two chpst, as envdir then setuidgid: one chpst -e -u looks dnsmaster up on
        # runsv's PATH, not env/PATH ("unable to run: dnsmaster: file does not exist").
        run = f"exec chpst -e ./env chpst -u {acct} dnsmaster run"
        log = f"exec chpst -u {logacct} svlogd -tt ./main"
        tools = "chpst"
    else:
        run = f"exec envdir ./env setuidgid {acct} dnsmaster run"
        log = f"exec setuidgid {logacct} multilog t s1000000 n20 ./main"
        tools = "envdir and setuidgid"
    return {
        "run": "#!/bin/sh\n"
        "# Made by dnsmaster service-conf. env/PATH names the dnsmaster installation\n"
        f"# (its directory first) and where {tools} are; env/DNSMASTER_CONFIG the config;\n"
        f"# env/HOME {account}'s home, not the supervisor's.\n"
        "# The log is on stderr: send it to log/run.\n"
        "exec 2>&1\n"
        f"{run}\n",
        "log/run": "#!/bin/sh\n"
        f"# Made by dnsmaster service-conf: one line per event in ./main, owned by {log_account}.\n"
        f"{log}\n",
    }


def make(
    account: str, log_account: str, directory: Path, config: Path, *, runit: bool
) -> tuple[Path, Path]:
    """Check everything, then create the service directory; (DIR, the dnsmaster command)."""
    acct = Account.lookup(account, "ACCT")
    logacct = Account.lookup(log_account, "LOGACCT")
    directory = directory.absolute()
    config = config.absolute()
    if directory.exists() or directory.is_symlink():
        raise ServiceConfError(f"{directory} exists; service-conf never overwrites a directory")
    if not config.is_file():
        raise ServiceConfError(f"{config}: no such configuration file")
    tools = ("chpst", "svlogd") if runit else ("envdir", "setuidgid", "multilog")
    missing = [tool for tool in tools if shutil.which(tool, path=BASE_PATH) is None]
    if missing:
        package = "runit" if runit else "daemontools"
        raise ServiceConfError(
            f"{', '.join(missing)} not found in {BASE_PATH}: apt-get install {package}"
        )
    program = _dnsmaster_command()
    path = ":".join(dict.fromkeys([str(program.parent), *BASE_PATH.split(":")]))
    euid = os.geteuid()
    if euid != 0 and {acct.uid, logacct.uid} != {euid}:
        raise ServiceConfError("run it as root: it checks as ACCT and gives log/main to LOGACCT")
    problems = _probe_as(acct, program, path, [account, log_account, str(directory), str(config)])
    if problems:
        listed = "".join(f"\n  {problem}" for problem in problems)
        raise ServiceConfError(
            f"{account} could not run the daemon; nothing was created:{listed}", EXIT_SYSTEM
        )
    env = {"DNSMASTER_CONFIG": str(config), "PATH": path, "HOME": acct.home}
    _create(directory, scripts(account, log_account, runit=runit), env, logacct)
    return directory, program


def _dnsmaster_command() -> Path:
    """The dnsmaster command that is running: what the service must run too.

    Not resolved: a /usr/local/bin/dnsmaster symlink into a venv stays the name, so
    re-pointing the link upgrades the service.
    """
    argv0 = Path(sys.argv[0])
    candidates = []
    if argv0.name == "dnsmaster":  # the console script (python -m gives __main__.py)
        candidates.append(argv0.absolute())
    candidates.append(Path(sys.executable).parent / "dnsmaster")  # python -m in a venv
    found = shutil.which("dnsmaster")
    if found:
        candidates.append(Path(found).absolute())
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceConfError(
        "cannot tell where the dnsmaster command is: run service-conf as "
        "/path/to/bin/dnsmaster (the installation the service should run)"
    )


def _probe_as(account: Account, program: Path, path: str, args: list[str]) -> list[str]:
    """Run ``dnsmaster service-conf --probe`` as ``account``, the way ``run`` will."""
    as_other = os.geteuid() != account.uid
    try:
        proc = subprocess.run(
            # By its path: env/PATH has its directory first, so this is what
            # setuidgid/chpst will find; by name, a PATH lookup could quietly fall
            # through to another installation ACCT can run.
            [str(program), "service-conf", "--probe", *args],
            env={"PATH": path, "HOME": account.home, "LC_ALL": "C.UTF-8"},
            cwd="/",
            user=account.uid if as_other else None,
            group=account.gid if as_other else None,
            extra_groups=list(account.groups) if as_other else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except OSError as exc:
        return [f"cannot run {program} as {account.name}: {exc.strerror or exc}"]
    except subprocess.TimeoutExpired:
        return [f"{program} service-conf --probe as {account.name} did not finish in 120 s"]
    if proc.returncode == EXIT_OK:
        return []
    problems = proc.stdout.splitlines()
    if proc.returncode != EXIT_SYSTEM or not problems:
        # Not our probe's answer: it could not even start (a venv ACCT cannot read,
        # a missing module). Its last words say why.
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        problems.append(
            f"{program} failed as {account.name} (exit {proc.returncode}): {tail}; "
            f"can {account.name} read the installation?"
        )
    return problems


def probe(config: Path) -> list[str]:
    """What keeps the current user from running the daemon on ``config``; [] if nothing.

    Each problem names the path, what is wrong and the fix.
    """
    user = fsutil.user_name()
    try:
        cfg = configuration.load(config)
    except ConfigError as exc:
        # Covers an unreadable config and an unreadable or encrypted private key.
        return [f"{exc} (as {user})"]
    problems = []
    # load() reads the keys only once a slave is pushed to over SSH; a service made
    # before the first slave is added must not start failing when it is.
    if cfg.key is not None and not os.access(cfg.key, os.R_OK):
        problems.append(f"{cfg.key}: {user} cannot read the private key; chown {user}: {cfg.key}")
    if not cfg.zones.is_dir():
        problems.append(f"{cfg.zones}: the zones directory does not exist; create it")
    elif not os.access(cfg.zones, os.R_OK | os.X_OK):
        problems.append(f"{cfg.zones}: {user} cannot read the zones directory; chmod a+rx it")
    ssh = [s for s in cfg.slaves if s.transport == "ssh"]
    if cfg.known_hosts is not None:
        if not cfg.known_hosts.exists():
            if ssh:
                problems.append(
                    f"{cfg.known_hosts}: known_hosts does not exist; record each slave's "
                    "host key (ssh-keyscan -p PORT -t ed25519 HOST >> it)"
                )
        elif not os.access(cfg.known_hosts, os.R_OK):
            problems.append(f"{cfg.known_hosts}: {user} cannot read known_hosts; chmod a+r it")
    targets = [(cfg.output, "output"), (cfg.state.parent, "state")]
    if cfg.metrics is not None:
        targets.append((cfg.metrics.parent, "metrics"))
    named: dict[Path, str] = {}
    for directory, what in targets:
        named.setdefault(directory, what)  # the state file's default place is the output
    for directory, what in named.items():
        problems += _unwritable(directory, what, user)
    if cfg.state.exists() and not os.access(cfg.state, os.W_OK):
        problems.append(f"{cfg.state}: {user} cannot write the state file; chown {user}: it")
    return problems


def _unwritable(directory: Path, what: str, user: str) -> list[str]:
    """Why ``user`` cannot write ``directory`` (the daemon's ``what`` directory); [] if it can."""
    if not directory.is_dir():
        return [
            f"{directory}: the {what} directory does not exist; "
            f"install -d -o {user} -g {user} {directory}"
        ]
    # What the daemon itself does at start: a real file, not os.access, so a
    # read-only mount or an ACL is found too.
    try:
        fsutil.discard([fsutil.stage(directory / ".dnsmaster-probe", lambda fd: None)])
    except OSError as exc:
        return [
            f"{directory}: {user} cannot write the {what} directory "
            f"({fsutil.describe(exc)}); chown {user}: {directory}"
        ]
    return []


def _create(
    directory: Path, texts: dict[str, str], env: dict[str, str], log_account: Account
) -> None:
    """Create the service directory; on any failure, remove what was created."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o755)  # exclusive: never someone else's directory
    except FileExistsError:
        raise ServiceConfError(
            f"{directory} exists; service-conf never overwrites a directory"
        ) from None
    except OSError as exc:
        raise ServiceConfError(f"cannot create {directory}: {exc.strerror}", EXIT_SYSTEM) from None
    try:
        for sub in ("log", "env"):
            (directory / sub).mkdir(mode=0o755)
        main = directory / "log" / "main"
        main.mkdir(mode=0o755)
        os.chown(main, log_account.uid, log_account.gid)
        for name, value in env.items():
            (directory / "env" / name).write_text(f"{value}\n")
        # run last: a supervisor that sees the directory early finds no run yet and
        # tries again, instead of starting a daemon whose env is half written.
        for name in ("log/run", "run"):
            target = directory / name
            target.write_text(texts[name])
            target.chmod(0o755)
    except OSError as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
        raise ServiceConfError(
            f"cannot create {directory}: {exc.strerror or exc}; nothing was left", EXIT_SYSTEM
        ) from None
