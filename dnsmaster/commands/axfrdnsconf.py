"""``dnsmaster service-conf --axfrdns``: the axfrdns service that feeds the secondaries.

``dnsmaster service-conf --axfrdns [--runit] ACCT LOGACCT DIR CONFIG`` creates DIR,
as djbdns' ``axfrdns-conf`` would, for the master's served root:

- ``run``: ucspi-tcp's ``tcpserver -vDRHl0 -x tcp.cdb`` on ``[axfrdns] ip`` and
  ``port``, running axfrdns as ACCT (``envuidgid``; runit: ``chpst -U``);
- ``env/IP``, ``env/PORT`` and ``env/ROOT``, the served root (``[axfrdns] root``,
  :mod:`dnsmaster.master.served`), which holds only the data.cdb the slaves were
  given, never a build the guard holds: axfrdns chroots there. The root is made
  (mode 755) if missing, so that axfrdns starts before the first build is served;
- ``tcp``, the rules (:mod:`dnsmaster.core.axfrrules`): one line per address a
  ``[[secondary]]`` transfers from, with its zones, then ``:deny``; and ``tcp.cdb``,
  compiled by ``tcprules``, which tcpserver reads at each connection;
- ``log/run`` and ``log/main`` as the daemon's own service has them.

Run again on a DIR it made, it rewrites ``tcp`` and ``tcp.cdb`` from the config and
nothing else (and says so): the step after changing ``[[secondary]]``. tcpserver
reads the new rules at the next connection; nothing restarts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from dnsmaster import config as configuration
from dnsmaster import fsutil
from dnsmaster.commands.serviceconf import BASE_PATH, Account
from dnsmaster.config import Config
from dnsmaster.core.axfrrules import Grant, rules_text
from dnsmaster.errors import ConfigError, ServiceConfError
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM
from dnsmaster.master import served
from dnsmaster.master.secondarycheckup import secondary_grants

__all__ = [
    "MARK",
    "env_for",
    "main",
    "make",
    "rules_for",
    "run_scripts",
    "stale_env",
    "update_rules",
]

#: The run script's second line: how a directory this command made is known again.
MARK = "# Made by dnsmaster service-conf --axfrdns."
#: Where tcpserver, tcprules and axfrdns are looked for (Debian puts axfrdns in sbin).
TOOL_PATH = BASE_PATH + ":/usr/local/sbin:/usr/sbin:/sbin"


def main(args: argparse.Namespace) -> int:
    """Run ``service-conf --axfrdns``; the exit status."""
    try:
        cfg = configuration.load(args.config)
    except ConfigError as exc:
        return exc.report(sys.stderr)
    try:
        directory = args.directory.absolute()
        if (directory / "run").is_file() and MARK in _read(directory / "run"):
            granted = update_rules(directory, cfg)
            sys.stdout.write(
                f"updated the rules of {directory}: {directory / 'tcp'} and tcp.cdb, "
                f"{_counted(granted)}; run, env and log left as they were\n"
            )
            for name, have, want in stale_env(directory, cfg):
                sys.stdout.write(
                    f"note: env/{name} says {have!r}, the config {want!r}: "
                    f"echo {shlex.quote(want)} > {directory / 'env' / name}, then restart "
                    f"the service (svc -t {directory})\n"
                )
            return EXIT_OK
        granted = make(args.account, args.log_account, directory, cfg, runit=args.runit)
    except ServiceConfError as exc:
        sys.stderr.write(f"dnsmaster service-conf: {exc}\n")
        return exc.status
    kind = "runit" if args.runit else "daemontools"
    root = served.root_of(cfg)
    sys.stdout.write(
        f"made {directory} for {kind}: axfrdns on {cfg.axfrdns.ip} port {cfg.axfrdns.port} "
        f"TCP serving {root} as {args.account}, {_counted(granted)}\n"
        f"to start it, link it into the scanned directory: ln -s {directory} /etc/service/\n"
        f"secondaries ask the SOA over UDP: run a tinydns on the same address with "
        f"ROOT={root} (see the manual, feeding.rst)\n"
    )
    return EXIT_OK


def _counted(granted: list[Grant]) -> str:
    if not granted:
        return "no secondary may transfer (no [[secondary]] in the config)"
    plural = "" if len(granted) == 1 else "es"
    return f"{len(granted)} address{plural} may transfer"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def rules_for(cfg: Config) -> list[Grant]:
    """The grants the config's secondaries call for; ServiceConfError if the rules
    cannot say them (an IPv6 transfer address, a zone a rule cannot carry)."""
    try:
        return secondary_grants(cfg)
    except ValueError as exc:
        raise ServiceConfError(f"{cfg.path}: [[secondary]]: {exc}") from None


def run_scripts(
    account: str, log_account: str, tools: dict[str, str], *, runit: bool
) -> dict[str, str]:
    """The ``run`` and ``log/run`` scripts; ``tools`` are tcpserver's and axfrdns'
    paths, written out so the supervisor's PATH need not hold sbin."""
    acct, logacct = shlex.quote(account), shlex.quote(log_account)
    serve = (
        f'{shlex.quote(tools["tcpserver"])} -vDRHl0 -x tcp.cdb -- "$IP" "$PORT" '
        f"{shlex.quote(tools['axfrdns'])}"
    )
    if runit:
        run = f"exec chpst -e ./env -U {acct} sh -c '\n  exec {serve}\n'"
        log = f"exec chpst -u {logacct} svlogd -tt ./main"
    else:
        run = f"exec envdir ./env sh -c '\n  exec envuidgid {acct} {serve}\n'"
        log = f"exec setuidgid {logacct} multilog t s1000000 n20 ./main"
    return {
        "run": "#!/bin/sh\n"
        f"{MARK}\n"
        f"# axfrdns answers zone transfers on env/IP port env/PORT (TCP) from env/ROOT,\n"
        f"# the build the slaves were given, as {account}; tcp.cdb (from tcp) says who\n"
        "# may transfer what: run service-conf --axfrdns again after changing\n"
        "# [[secondary]].\n"
        "exec 2>&1\n"
        f"{run}\n",
        "log/run": "#!/bin/sh\n"
        f"# Made by dnsmaster service-conf --axfrdns: the log in ./main, owned by {log_account}.\n"
        f"{log}\n",
    }


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=TOOL_PATH)
    if found is None:
        raise ServiceConfError(f"{name} not found in {TOOL_PATH}: apt-get install {package}")
    return found


def _write_rules(directory: Path, granted: list[Grant]) -> None:
    """``tcp`` replaced atomically, then ``tcprules tcp.cdb tcp.tmp < tcp``."""
    tcprules = _tool("tcprules", "ucspi-tcp")
    rules = directory / "tcp"
    text = rules_text(granted).encode()
    try:
        fsutil.publish([(fsutil.stage(rules, lambda fd: fsutil.write_all(fd, text)), rules)])
        with rules.open("rb") as source:
            proc = subprocess.run(
                [tcprules, "tcp.cdb", "tcp.tmp"],
                cwd=directory,
                stdin=source,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
    except OSError as exc:
        raise ServiceConfError(
            f"cannot write {rules}: {fsutil.describe(exc)}", EXIT_SYSTEM
        ) from None
    if proc.returncode != 0:
        raise ServiceConfError(
            f"tcprules refused {rules} (exit {proc.returncode}): {proc.stderr.strip()}",
            EXIT_SYSTEM,
        )


def env_for(cfg: Config) -> dict[str, str]:
    """The service's env directory: where tcpserver listens and axfrdns' root."""
    root = str(served.root_of(cfg))
    return {"IP": cfg.axfrdns.ip, "PORT": str(cfg.axfrdns.port), "ROOT": root}


def stale_env(directory: Path, cfg: Config) -> list[tuple[str, str, str]]:
    """Each (name, value in DIR/env, value the config calls for) that differ: a
    second run rewrites only the rules, so it says what else changed."""
    stale = []
    for name, want in env_for(cfg).items():
        have = _read(directory / "env" / name).strip()
        if have != want:
            stale.append((name, have, want))
    return stale


def update_rules(directory: Path, cfg: Config) -> list[Grant]:
    """Rewrite DIR's ``tcp`` and ``tcp.cdb`` from ``cfg``; the grants written."""
    granted = rules_for(cfg)
    _write_rules(directory, granted)
    return granted


def make(
    account: str, log_account: str, directory: Path, cfg: Config, *, runit: bool
) -> list[Grant]:
    """Check, then create the axfrdns service directory; the grants its rules hold."""
    Account.lookup(account, "ACCT")
    logacct = Account.lookup(log_account, "LOGACCT")
    if directory.exists() or directory.is_symlink():
        raise ServiceConfError(
            f"{directory} exists and is not an axfrdns service service-conf made; "
            "it never overwrites a directory"
        )
    if not cfg.axfrdns.ip:
        raise ServiceConfError(
            f"{cfg.path}: [axfrdns] ip is not set: the address axfrdns should answer on"
        )
    if ":" in cfg.axfrdns.ip:
        raise ServiceConfError(
            f"{cfg.path}: [axfrdns] ip {cfg.axfrdns.ip}: tcpserver (ucspi-tcp) listens on IPv4 only"
        )
    granted = rules_for(cfg)
    supervisor = ("chpst", "svlogd") if runit else ("envdir", "envuidgid", "setuidgid", "multilog")
    missing = [tool for tool in supervisor if shutil.which(tool, path=BASE_PATH) is None]
    if missing:
        package = "runit" if runit else "daemontools"
        raise ServiceConfError(
            f"{', '.join(missing)} not found in {BASE_PATH}: apt-get install {package}"
        )
    tools = {"tcpserver": _tool("tcpserver", "ucspi-tcp"), "axfrdns": _tool("axfrdns", "axfrdns")}
    _tool("tcprules", "ucspi-tcp")
    if os.geteuid() != 0:
        raise ServiceConfError("run it as root: tcpserver binds port 53 and gives log/main away")
    env = env_for(cfg)
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o755)  # exclusive: never someone else's directory
    except FileExistsError:
        raise ServiceConfError(f"{directory} exists; service-conf never overwrites it") from None
    except OSError as exc:
        raise ServiceConfError(f"cannot create {directory}: {exc.strerror}", EXIT_SYSTEM) from None
    try:
        # axfrdns chroots to ROOT as it starts: it must be there before any build is.
        served.make_root(served.root_of(cfg))
        _fill(directory, env, logacct)
        # The rules before run: a supervisor must never start tcpserver without tcp.cdb.
        _write_rules(directory, granted)
        texts = run_scripts(account, log_account, tools, runit=runit)
        for name in ("log/run", "run"):  # run last, as the daemon's service-conf does
            (directory / name).write_text(texts[name])
            (directory / name).chmod(0o755)
    except (OSError, ServiceConfError) as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
        reason = exc if isinstance(exc, ServiceConfError) else fsutil.describe(exc)
        raise ServiceConfError(f"{reason}; nothing was left", EXIT_SYSTEM) from None
    return granted


def _fill(directory: Path, env: dict[str, str], log_account: Account) -> None:
    for sub in ("log", "env"):
        (directory / sub).mkdir(mode=0o755)
    main_log = directory / "log" / "main"
    main_log.mkdir(mode=0o755)
    os.chown(main_log, log_account.uid, log_account.gid)
    for name, value in env.items():
        (directory / "env" / name).write_text(f"{value}\n")
