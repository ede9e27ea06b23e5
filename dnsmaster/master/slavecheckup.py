"""Each slave's checkup for ``dnsmaster doctor``, along the path a push takes: the
name, TCP, the host key, the login, the receiver's status, the installed build and
tinydns. The checks stop at the first failure, since every later step would fail
for the same reason; the words of each finding and its fix live in
:class:`SlaveFindings`, the steps in :class:`SlaveCheckup`.

Whether an SSH slave's root is writable cannot be seen from here: the receiver's
``status`` verb reports a missing root (it fails) but not a read-only one. A status
line carrying ``writable=no`` is read as that failure, for a receiver that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
from collections.abc import Sequence

from dnsmaster import __version__
from dnsmaster.config import Config, Slave
from dnsmaster.core.text import printable
from dnsmaster.errors import HostKeyChanged, HostKeyError, HostKeyUnknown, SlaveError
from dnsmaster.fsutil import user_name
from dnsmaster.master.checkup import Build, Check, Findings, writable
from dnsmaster.master.pushing import channel_for
from dnsmaster.protocol import DELTA, SlaveVersion, parse_status
from dnsmaster.transport.channel import fetch_status, os_reason
from dnsmaster.transport.dns import check_serials
from dnsmaster.transport.hostkeys import check_host_key, fingerprint, known_hosts_name
from dnsmaster.transport.ssh import SshChannel

__all__ = ["MAX_ZONES", "SlaveCheckup", "SlaveFindings", "check_slave"]

#: The most zones asked for over DNS per slave: enough to show that tinydns serves
#: this data, without thousands of sequential queries across a WAN.
MAX_ZONES = 20
#: The longest line a server may send before its SSH version line: asyncssh's own
#: limit, so that doctor judges a port as push does ("Banner line too long").
_MAX_BANNER_LINE = 8192

#: Words of the receiver's refusals that the fix depends on: a key line without
#: ``--master`` on a root that serves named masters, and one with it on a root that
#: holds a single master's data (which the slave's operator converts with --adopt).
_CONFINED_ROOT = "serves confined masters"
_ADOPT = "--adopt"

#: Where a slave's tinydns root is named: the master cannot see it, only the slave's
#: authorized_keys line says it.
_ROOT = "the slave's root (the --root of the forced command in its authorized_keys)"


class SlaveFindings(Findings):
    """One slave's checks, and the words of what each finding means and how to fix it."""

    def __init__(self, cfg: Config, slave: Slave) -> None:
        super().__init__(f"slave {slave.name}")
        self.cfg = cfg
        self.slave = slave
        #: This master's name on a slave that serves several (its status line's
        #: ``master=``); its key line then needs ``--master NAME --allow DOMAIN``.
        self.master: str | None = None

    @property
    def _where(self) -> str:
        return f"{self.slave.host} port {self.slave.port}"

    @property
    def pubkey(self) -> str:
        key = self.slave.key or self.cfg.key
        return shlex.quote(f"{key}.pub") if key is not None else "MASTER_KEY.pub"

    def authorized_key_fix(self, *, replace: bool = False, confined: bool = False) -> str:
        where = f"~{self.slave.user}/.ssh/authorized_keys"
        # On a slave that serves several masters each key line names its master and
        # the domains it may publish (docs: Secondary DNS service).
        named = shlex.quote(self.master) if self.master is not None else "NAME"
        confine = f" --master {named} --allow DOMAIN" if confined or self.master else ""
        line = (
            f"`dnsmaster authorized-key --pubkey {self.pubkey} --root SLAVE_ROOT{confine}` prints"
        )
        if replace:
            return f"on the slave, replace this key's line in {where} with the line that {line}"
        return f"on the slave, add to {where} the line that {line}"

    def host_key_failed(self, error: HostKeyError) -> None:
        name = known_hosts_name(self.slave.host, self.slave.port)
        check = (
            f"on the slave itself (not over this network) `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub` must show {error.presented}; if it does, "
        )
        if isinstance(error, HostKeyChanged):
            self.fail(
                "host key CHANGED",
                f"{name} now presents {error.presented}, but {error.known_hosts}:{error.line} "
                f"holds {error.known} for it: the slave was re-keyed, or something else "
                "answers at its address",
                check + "`" + " && ".join(error.accept) + "`",
            )
        elif isinstance(error, HostKeyUnknown):
            self.fail(
                "host key unknown",
                f"{error.known_hosts} holds no key for {name}, which presents {error.presented}",
                check + "`" + " && ".join(error.accept) + "`",
            )
        else:
            self.fail("host key", error.reason, f"only you can decide: check {error.known_hosts}")

    def ssh_failed(self, exc: SlaveError) -> None:
        """A login or status that failed before the receiver answered."""
        if isinstance(exc, HostKeyError):
            self.host_key_failed(exc)
        elif exc.phase == "local":
            self.local_failed(exc)
        elif exc.phase == "auth":
            self.fail(
                f"login as {self.slave.user}",
                f"refused by {self._where}: the slave's authorized_keys does not hold this key",
                self.authorized_key_fix(),
            )
        else:
            self.fail("ssh", exc.reason, "see the slave's sshd log")

    def local_failed(self, exc: SlaveError) -> None:
        """A key or known_hosts this account cannot use: the slave was never asked."""
        if exc.reason.startswith("cannot use the private key"):
            fix = "make a key without a passphrase: ssh-keygen -t ed25519 -N ''"
        elif exc.reason.startswith("no private key"):
            fix = f"set key in {self.cfg.path} (ssh-keygen -t ed25519 -N '' -f KEYFILE)"
        else:
            # Checked as whoever runs doctor: the daemon's account is what matters.
            fix = (
                f"let {user_name()} read that file (chown {user_name()} FILE, or chmod g+r FILE "
                f"for a group {user_name()} is in), or run doctor as the daemon's account"
            )
        self.fail("local files", exc.reason, fix)

    def login_ok(self) -> None:
        if self.slave.transport == "ssh":
            self.ok(f"login as {self.slave.user} accepted")

    def receiver_ok(self, fields: dict[str, str]) -> None:
        said = [
            f"{k} {printable(fields[k])}" for k in ("version", "protocol", "master") if k in fields
        ]
        self.master = fields.get("master")
        self.ok(
            "receiver: dnsmaster receive answers status"
            + (f" ({', '.join(said)})" if said else " (it reports no version)")
        )
        theirs = fields.get("version")
        if theirs is not None and theirs != __version__:
            self.warn(
                "receiver version",
                f"the slave runs dnsmaster {theirs}, the master {__version__}",
                "install the same dnsmaster on both",
            )
        protocol = fields.get("protocol", "")
        if protocol.isdigit() and int(protocol) < DELTA:
            # Served, but every push is the whole data, uncompressed.
            self.warn(
                "receiver protocol",
                f"protocol {protocol}: it takes full pushes only, not deltas or compression "
                f"(protocol {DELTA})",
                f"upgrade dnsmaster on the slave to {__version__} (or its receiver bundle)",
            )

    def receiver_failed(self, exc: SlaveError, *, answered: bool) -> None:
        """The receiver refused the status verb, or (``answered``) gave a status that
        the master refuses: one too old for this master."""
        if answered:
            self.fail(
                "receiver",
                exc.reason,
                f"upgrade dnsmaster on the slave to {__version__} (or its receiver bundle)",
            )
            return
        fix = "see the reason, on the slave"
        if _CONFINED_ROOT in exc.reason:
            # A key line without --master, on a root that serves named masters.
            fix = self.authorized_key_fix(replace=True, confined=True)
        elif _ADOPT in exc.reason:
            # A named master's key line, on a root that holds one unnamed master's data.
            fix = (
                f"on the slave, `dnsmaster receive --root SLAVE_ROOT {_ADOPT} NAME` makes the "
                "master it serves now a named one (see the Secondary DNS service page)"
            )
        elif "does not exist" in exc.reason:
            fix = f"create {_ROOT}, owned by {self.slave.user}"
        elif "permission denied" in exc.reason:
            fix = f"chown {self.slave.user} {_ROOT}"
        self.fail("receiver", f"status failed: {exc.reason}", fix)

    def installed(
        self, version: SlaveVersion | None, lines: Sequence[tuple[str, str]], build: Build | None
    ) -> None:
        doubt = [
            line for stream, line in lines if stream == "stderr" and "not known to match" in line
        ]
        push_cmd = (
            f"dnsmaster push --config {shlex.quote(str(self.cfg.path))} --slave {self.slave.name}"
        )
        if doubt:
            self.warn("installed", doubt[-1].removeprefix("dnsmaster receive: "), push_cmd)
            return
        if version is None:
            self.warn("installed", "nothing installed yet", push_cmd)
            return
        serial = version.serial if version.serial is not None else "none"
        if build is None:
            self.ok(f"installed: serial {serial}")
        elif version.sha256 == build.sha256:
            self.ok(f"installed: the master's build (serial {serial})")
        else:
            self.warn(
                "installed",
                f"serial {serial}, not the master's build (serial {build.serial})",
                push_cmd + " (a running daemon pushes by itself)",
            )


class SlaveCheckup:
    """One slave's checks, along the path a push takes; each step returns whether
    the next one makes sense."""

    def __init__(self, cfg: Config, slave: Slave, build: Build | None) -> None:
        self.cfg = cfg
        self.slave = slave
        self.build = build
        self.group = SlaveFindings(cfg, slave)
        self.step = cfg.push.connect_timeout
        #: Every line the receiver printed, as (stream, line).
        self.lines: list[tuple[str, str]] = []

    def _sink(self, name: str, stream: str, line: str, truncated: int) -> None:
        self.lines.append((stream, line))

    @property
    def _where(self) -> str:
        return f"{self.slave.host} port {self.slave.port}"

    async def run(self) -> None:
        if self.slave.transport == "local":
            if await self._local_root() and await self._status():
                await self._dns()
            return
        if (
            await self._resolve()
            and await self._reach()
            and await self._host_key()
            and (await self._login() if self.slave.protocol == "legacy" else await self._status())
        ):
            await self._dns()

    async def _resolve(self) -> bool:
        host = self.slave.host
        try:
            async with asyncio.timeout(self.step):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, self.slave.port, type=socket.SOCK_STREAM
                )
        except (OSError, UnicodeError) as exc:  # TimeoutError is an OSError
            reason = "no answer in time" if isinstance(exc, TimeoutError) else exc.args[-1]
            self.group.fail(
                f"name {host}",
                f"cannot resolve: {reason}",
                f"correct the slave's host in {self.cfg.path}, or add {host} to DNS or /etc/hosts",
            )
            return False
        addresses = ", ".join(dict.fromkeys(str(info[4][0]) for info in infos))
        if addresses != host:  # an address needs no resolving, and gets no line
            self.group.ok(f"name {host} resolves to {addresses}")
        return True

    async def _reach(self) -> bool:
        try:
            async with asyncio.timeout(self.step):
                reader, writer = await asyncio.open_connection(
                    self.slave.host, self.slave.port, limit=_MAX_BANNER_LINE
                )
                try:
                    banner = await _first_line(reader)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                reason = f"no answer in {self.step:g} s"
                fix = "check that the slave is up and no firewall drops port " + str(
                    self.slave.port
                )
            else:
                reason = os_reason(exc)
                fix = (
                    f"start sshd on the slave (listening on port {self.slave.port}), "
                    "or correct the slave's port in the config"
                )
            self.group.fail(f"ssh {self._where}", f"cannot connect: {reason}", fix)
            return False
        if banner is None:
            # The words push and status --live say (asyncssh's), for the same server.
            self.group.fail(
                f"ssh {self._where}",
                f"Banner line too long: what answers there is not sshd (it sent over "
                f"{_MAX_BANNER_LINE} bytes without a newline)",
                "correct the slave's port in the config",
            )
            return False
        text = printable(banner.strip()[:80])
        if not banner.startswith(b"SSH-"):
            self.group.fail(
                f"ssh {self._where}",
                f"what answers there is not sshd (it said {text!r})",
                "correct the slave's port in the config",
            )
            return False
        self.group.ok(f"sshd answers on {self._where} ({text})")
        return True

    async def _host_key(self) -> bool:
        known_hosts = self.cfg.known_hosts
        if known_hosts is None:  # load() sets it whenever a slave uses ssh
            self.group.fail("host key", "no known_hosts file", "set known_hosts in the config")
            return False
        check = await check_host_key(self.slave, known_hosts, self.step)
        if check.presented is None:
            self.group.fail(
                "host key",
                f"{self._where} showed no host key (the key exchange failed)",
                "see sshd's log on the slave",
            )
            return False
        if check.known_lines:
            shown = fingerprint(check.presented)
            self.group.ok(f"host key {shown} known ({known_hosts}:{check.known_lines[0]})")
            return True
        self.group.host_key_failed(check.error())
        return False

    async def _login(self) -> bool:
        """Log in without opening a session: the classic update-dns takes any session,
        even an empty one, as data to install."""
        channel = SshChannel(self.slave, self.cfg)
        try:
            await channel.login()
        except SlaveError as exc:
            self.group.ssh_failed(exc)
            return False
        finally:
            await channel.close()
        self.group.ok(
            f"login as {self.slave.user} accepted (protocol legacy: the receiver is not asked, "
            "since update-dns would install an empty push)"
        )
        return True

    async def _local_root(self) -> bool:
        root = self.slave.root
        assert root is not None  # load() requires it for local slaves
        if not root.is_dir():
            exists = root.exists()
            self.group.fail(
                "root",
                f"{root} is {'not a directory' if exists else 'missing'}",
                f"mkdir -p {shlex.quote(str(root))}" if not exists else "point root at a directory",
            )
            return False
        return writable(self.group, "root", root)

    async def _status(self) -> bool:
        """Ask the receiver for its status: proves login, forced command and root."""
        channel = channel_for(self.slave, self.cfg)
        failure: SlaveError | None = None
        version: SlaveVersion | None = None
        try:
            version = await fetch_status(channel, self.step * 2, self._sink)
        except SlaveError as exc:
            if exc.phase != "status":
                self.group.ssh_failed(exc)
                return False
            failure = exc  # logged in; what answered is judged by what it printed
        finally:
            await channel.close()
        self.group.login_ok()
        stdout = [line for stream, line in self.lines if stream == "stdout"]
        stderr = [line for stream, line in self.lines if stream == "stderr"]
        status = next((line.split() for line in stdout if line.split()[:1] == ["status"]), None)
        if status is None and not any(line.startswith("dnsmaster receive:") for line in stderr):
            if stdout:
                said = f"it printed {printable(stdout[0][:80])!r}"
            else:
                said = failure.reason if failure is not None else "it printed nothing"
            self.group.fail(
                "receiver",
                f"the key's forced command is not dnsmaster receive ({said})",
                self.group.authorized_key_fix(replace=True),
            )
            return False
        if failure is not None:
            self.group.receiver_failed(failure, answered=status is not None)
            return False
        assert status is not None  # a receiver that exits 0 prints its status line
        fields = dict(w.split("=", 1) for w in status[1:] if "=" in w)
        self.group.receiver_ok(fields)
        if fields.get("writable") == "no":
            self.group.fail(
                "root", "the receiver cannot write its root", f"chown {self.slave.user} {_ROOT}"
            )
            return False
        self.group.installed(version, self.lines, self.build)
        return True

    def _expects_master_serials(self) -> bool:
        """Whether the slave should serve exactly the master's zone serials: it has
        the master's build (or cannot tell us, being legacy)."""
        if self.build is None:
            return False
        if self.slave.protocol == "legacy":
            return True
        installed = parse_status([line for stream, line in self.lines if stream == "stdout"])
        return installed is not None and installed.sha256 == self.build.sha256

    async def _dns(self) -> None:
        slave = self.slave
        if not slave.dns:
            return  # a local slave without a tinydns to ask
        where = f"tinydns on {slave.dns} port {slave.dns_port}"
        if self.build is None or not self.build.zones:
            self.group.warn(where, "not asked: the master has no built zones to ask for")
            return
        zones = dict(list(self.build.zones.items())[:MAX_ZONES])
        checks = await check_serials(
            slave.dns, slave.dns_port, zones, self.cfg.daemon.verify_timeout
        )
        silent = [c for c in checks if c.served is None]
        if silent:
            first = silent[0]
            if first.error and "timeout" in first.error:
                fix = (
                    "start tinydns on the slave (svc -u /service/tinydns), and check that the "
                    f"slave's dns in the config ({slave.dns}) is the address it listens on"
                )
            else:
                fix = "check that this tinydns serves the slave's root (its ROOT)"
            self.group.fail(
                where,
                f"{first.zone}: {first.error or 'no SOA in the answer'}"
                + (f" (and {len(silent) - 1} more zones)" if len(silent) > 1 else ""),
                fix,
            )
            return
        count = (
            f"{len(checks)} of {len(self.build.zones)} zones"
            if len(self.build.zones) > len(checks)
            else f"{len(checks)} zones"
        )
        wrong = [c for c in checks if not c.ok]
        if self._expects_master_serials() and wrong:
            c = wrong[0]
            self.group.fail(
                where,
                f"serves serial {c.served} for {c.zone}, the installed build has {c.expected}: "
                "this tinydns does not serve the root the receiver installs into",
                "set the slave's dns to the address of the tinydns whose ROOT is "
                "the receiver's --root",
            )
            return
        self.group.ok(f"{where} answers SOA for {count}")


async def _first_line(reader: asyncio.StreamReader) -> bytes | None:
    """The first line a server sends; None when it is longer than the reader's limit.

    readline raises ValueError on such a line (a server that is no sshd may send
    anything): here that is an answer to report, not an error to crash on.
    """
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial  # the server closed before a newline: judge what it sent
    except asyncio.LimitOverrunError:
        return None


async def check_slave(
    cfg: Config, slave: Slave, build: Build | None, timeout: float
) -> list[Check]:
    """One slave's checks in order; a deadline missed is one more failure, not an error."""
    check = SlaveCheckup(cfg, slave, build)
    try:
        async with asyncio.timeout(timeout):
            await check.run()
    except TimeoutError:
        check.group.fail(
            "checks", f"not done in {timeout:g} s", "check the slave's network and load"
        )
    return check.group.checks
