"""Real slaves for tests: OpenSSH's sshd, Debian's tinydns and the ssh client.

Everything runs on loopback: a slave is an ``sshd`` on a free high port and a
``tinydns`` on port 53 UDP of its own 127.0.1.N address, both serving one root
directory where ``dnsmaster receive`` (the key's forced command) installs data and
data.cdb. Processes are started as children and stopped by their PID.

Usage: the fixtures come in with ``pytest_plugins``; import the names only for type
checking (a test module that imports this module first makes pytest warn that it
cannot rewrite its asserts)::

    if TYPE_CHECKING:
        from tests.realworld import Lab

    pytest_plugins = ["tests.realworld"]

    def test_push(lab: Lab) -> None:
        a, b = lab(2)
        proc = lab.push(a, data)              # ssh ... push < data + seal(data)
        assert proc.returncode == 0, proc.stderr
        assert a.tinydns.soa_serial("example.com") == 1_700_000_000

Root is needed (tinydns chroots and binds port 53, sshd switches users); the
components are asked for with :func:`tests.conftest.require`, so a missing one
fails under CI=true and skips elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

import dnsmaster
from dnsmaster.core.stream import seal
from tests.conftest import require, require_root

__all__ = [
    "Lab",
    "Slave",
    "Sshd",
    "Tinydns",
    "free_port",
    "lab",
    "sealed",
    "slaves",
]

#: The directory that holds the ``dnsmaster`` package under test.
PROJECT = Path(dnsmaster.__file__).resolve().parent.parent
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

#: 127.0.1.N addresses handed out to tinydns in this process (port 53 is per address).
_TAKEN: set[str] = set()


class ComponentError(RuntimeError):
    """A real component did not start or stop as expected."""


def sealed(data: bytes) -> bytes:
    """``data`` followed by its trailer line: what a push sends."""
    return data + seal(data)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _udp53_free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 53))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def take_dns_address(start: int = 1) -> str:
    """The first 127.0.1.N (N >= start) whose port 53 UDP is free; reserved until released."""
    for n in range(start, 255):
        address = f"127.0.1.{n}"
        if address not in _TAKEN and _udp53_free(address):
            _TAKEN.add(address)
            return address
    raise ComponentError("no free 127.0.1.N address with port 53 UDP free")


def release_dns_address(address: str) -> None:
    _TAKEN.discard(address)


def _stop_pid(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    """SIGTERM the process by its PID and wait; SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)
        raise ComponentError(f"{what} (pid {proc.pid}) ignored SIGTERM; killed") from None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _ssh_keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        [require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


class _Server:
    """A server process this test run started, known by its PID."""

    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Sshd(_Server):
    """OpenSSH's sshd in the foreground with its own host key, config and authorized_keys.

    ``workdir`` holds ``sshd_config``, ``host_ed25519_key``, ``authorized_keys`` and
    ``sshd.log`` (LogLevel VERBOSE). The port is chosen once and kept across
    :meth:`stop` / :meth:`start`, as is the host key unless :meth:`regenerate_host_key`.
    """

    def __init__(self, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        require_root("sshd")
        self.binary = require("sshd")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.config = workdir / "sshd_config"
        self.host_key = workdir / "host_ed25519_key"
        self.authorized_keys = workdir / "authorized_keys"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if not self.host_key.exists():
            _ssh_keygen(self.host_key, f"sshd@{host}")
        self.authorized_keys.touch()
        self._write_config()

    def __repr__(self) -> str:
        return f"Sshd({self.host}:{self.port}, pid={self.pid})"

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    "AddressFamily inet",
                    f"HostKey {self.host_key}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "AuthorizedPrincipalsFile none",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "HostbasedAuthentication no",
                    "PermitRootLogin forced-commands-only",
                    "AllowUsers root",
                    "PermitUserEnvironment no",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "LoginGraceTime 30",
                    "MaxStartups 200",
                    "MaxSessions 50",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def set_authorized_keys(self, text: str) -> None:
        """Replace authorized_keys (read at every login: no restart needed)."""
        self.authorized_keys.write_text(text if text.endswith("\n") or not text else text + "\n")

    def start(self) -> None:
        """Start sshd and wait until the port answers with an SSH-2.0 banner."""
        if self.running:
            return
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privsep dir
        check = subprocess.run(
            [self.binary, "-t", "-f", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise ComponentError(f"sshd -t rejects {self.config}: {check.stderr.strip()}")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"sshd exited with {self.proc.returncode} on {self.host}:{self.port}:\n"
                    + _tail(self.log)
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    banner = s.recv(256)
                if banner.startswith(b"SSH-2.0-"):
                    return
                last = repr(banner)
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise ComponentError(
            f"sshd on {self.host}:{self.port} not ready: {last}\n{_tail(self.log)}"
        )

    def stop(self) -> None:
        """SIGTERM the listener by PID and wait (open sessions end with their connections)."""
        _stop_pid(self.proc, "sshd")
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def host_key_line(self) -> str:
        """The known_hosts line for this server: ``[HOST]:PORT ssh-ed25519 AAAA...``."""
        kind, blob = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}"

    def regenerate_host_key(self) -> None:
        """A new host key (as after a reinstall); a running sshd is restarted to use it."""
        was_running = self.running
        self.stop()
        _ssh_keygen(self.host_key, f"sshd@{self.host}")
        if was_running:
            self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Tinydns(_Server):
    """Debian's tinydns serving ``root`` (its data.cdb, read at every query) on ADDRESS:53 UDP.

    tinydns chroots to ``root`` and drops to ``user``'s uid/gid, so ``root`` must be
    searchable and data.cdb readable by that user (the receiver writes 0644).
    """

    def __init__(self, root: Path, *, address: str, log: Path, user: str = "nobody") -> None:
        require_root("tinydns")
        self.binary = require("tinydns")
        self.root = root
        self.address = address
        self.log = log
        self.user = pwd.getpwnam(user)
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Tinydns({self.address}:53, root={self.root}, pid={self.pid})"

    def start(self) -> None:
        """Start tinydns and wait until it has bound its socket ("starting tinydns")."""
        if self.running:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "IP": self.address,
            "ROOT": str(self.root),
            "UID": str(self.user.pw_uid),
            "GID": str(self.user.pw_gid),
        }
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"tinydns exited with {self.proc.returncode} on {self.address}:\n"
                    + _tail(self.log)
                )
            with self.log.open("rb") as f:
                f.seek(offset)
                if b"starting tinydns" in f.read():
                    return
            time.sleep(0.02)
        self.stop()
        raise ComponentError(f"tinydns on {self.address} did not start:\n{_tail(self.log)}")

    def stop(self) -> None:
        _stop_pid(self.proc, "tinydns")
        self.proc = None

    def query(
        self, name: str, rdtype: str | dns.rdatatype.RdataType = "A", *, timeout: float = 2.0
    ) -> dns.message.Message:
        """Ask this tinydns over UDP; raises dns.exception.Timeout if it does not answer
        (tinydns stays silent while there is no data.cdb)."""
        q = dns.message.make_query(name, rdtype)
        q.flags &= ~dns.flags.RD
        return dns.query.udp(q, self.address, port=53, timeout=timeout)

    def answer(self, name: str, rdtype: str | dns.rdatatype.RdataType = "A") -> list[str]:
        """The answer section's records for ``name``/``rdtype`` as text, sorted."""
        response = self.query(name, rdtype)
        wanted = dns.rdatatype.RdataType.make(rdtype)
        return sorted(
            rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset
        )

    def soa_serial(self, zone: str) -> int | None:
        """The SOA serial tinydns serves for ``zone``, or None if it has no SOA for it."""
        response = self.query(zone, "SOA")
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None

    def wait_serial(self, zone: str, serial: int, timeout: float = 5.0) -> int | None:
        """Poll until ``zone``'s serial is ``serial`` (or timeout); return the last seen."""
        deadline = time.monotonic() + timeout
        seen: int | None = None
        while True:
            with contextlib.suppress(dns.exception.Timeout):
                seen = self.soa_serial(zone)
            if seen == serial or time.monotonic() > deadline:
                return seen
            time.sleep(0.05)


@dataclass
class Slave:
    """One slave: an sshd and a tinydns on ``address``, serving ``root``."""

    name: str
    address: str
    root: Path
    sshd: Sshd
    tinydns: Tinydns

    @property
    def port(self) -> int:
        return self.sshd.port

    def start(self) -> None:
        self.tinydns.start()
        self.sshd.start()

    def stop(self) -> None:
        """Take the slave down (both processes, by PID); :meth:`start` brings it back."""
        try:
            self.sshd.stop()
        finally:
            self.tinydns.stop()

    def installed(self) -> bytes | None:
        """The installed data file, or None."""
        try:
            return (self.root / "data").read_bytes()
        except FileNotFoundError:
            return None

    def receivers(self) -> list[int]:
        """PIDs of ``dnsmaster receive`` processes working on this root (read from /proc)."""
        wanted = f"receive\0--root\0{self.root}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if wanted in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
        return found

    def wait_receivers_gone(self, timeout: float = 10.0) -> None:
        """Wait until no receiver works on this root (after a cut connection)."""
        deadline = time.monotonic() + timeout
        while self.receivers():
            if time.monotonic() > deadline:
                raise ComponentError(f"{self.name}: receivers still running: {self.receivers()}")
            time.sleep(0.05)

    def snapshot(self) -> dict[str, bytes]:
        """Every file in the root by name (to prove that nothing changed)."""
        return {p.name: p.read_bytes() for p in sorted(self.root.iterdir()) if p.is_file()}


@dataclass
class Lab:
    """A set of slaves sharing one client key pair and one known_hosts file.

    ``lab(n)`` starts ``n`` more slaves and returns them; :meth:`close` stops every
    process by PID. The forced command is ``bin/dnsmaster`` in ``workdir``: a wrapper
    that runs this interpreter on the package under test.
    """

    workdir: Path
    slaves: list[Slave] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_root("a lab of real slaves")
        require("sshd")
        require("tinydns")
        self.ssh_binary = require("ssh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key = self.workdir / "client_ed25519"
        self.pubkey = self.key.with_name(self.key.name + ".pub")
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.touch()
        _ssh_keygen(self.key, "dnsmaster-master@test")
        self.forced_command = self._write_forced_command()

    def _write_forced_command(self) -> Path:
        # authorized-key quotes --command as one word, so "python -m dnsmaster" cannot be
        # given there; sshd's session environment is minimal (no PYTHONPATH, a short PATH),
        # so the wrapper names the interpreter by absolute path and the package's directory.
        path = self.workdir / "bin" / "dnsmaster"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={shlex.quote(str(PROJECT))} export PYTHONPATH\n"
            f'exec {shlex.quote(sys.executable)} -m dnsmaster "$@"\n'
        )
        path.chmod(0o755)
        return path

    def authorized_key(self, root: Path, *extra: str) -> str:
        """The authorized_keys line, from ``python -m dnsmaster authorized-key``."""
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dnsmaster",
                "authorized-key",
                "--pubkey",
                str(self.pubkey),
                "--root",
                str(root),
                "--command",
                str(self.forced_command),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        )
        return proc.stdout

    def __call__(self, n: int = 1) -> list[Slave]:
        return [self.add_slave() for _ in range(n)]

    def add_slave(self, name: str | None = None) -> Slave:
        """Start one more slave on the next free 127.0.1.N."""
        name = name or f"slave{len(self.slaves) + 1}"
        address = take_dns_address()
        base = self.workdir / name
        root = base / "root"
        root.mkdir(parents=True)
        try:
            sshd = Sshd(base / "sshd", host=address)
            sshd.set_authorized_keys(self.authorized_key(root))
            tinydns = Tinydns(root, address=address, log=base / "tinydns.log")
            slave = Slave(name, address, root, sshd, tinydns)
            self.slaves.append(slave)
            slave.start()
        except BaseException:
            release_dns_address(address)
            raise
        self.write_known_hosts()
        return slave

    def write_known_hosts(self) -> None:
        """known_hosts with every slave's current host key."""
        self.known_hosts.write_text("".join(s.sshd.host_key_line() + "\n" for s in self.slaves))

    def ssh_argv(self, slave: Slave, *command: str) -> list[str]:
        """The OpenSSH client command line for ``slave``, host key checked strictly."""
        return [
            self.ssh_binary,
            "-F",
            "/dev/null",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            "CheckHostIP=no",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(slave.port),
            f"root@{slave.address}",
            *command,
        ]

    def ssh(
        self, slave: Slave, *command: str, input: bytes = b"", timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``ssh slave COMMAND`` with ``input`` on stdin; never raises on exit status."""
        return subprocess.run(
            self.ssh_argv(slave, *command),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def push(self, slave: Slave, data: bytes) -> subprocess.CompletedProcess[bytes]:
        """``ssh slave push < data + seal(data)``."""
        return self.ssh(slave, "push", input=sealed(data))

    def close(self) -> None:
        """Stop every slave's processes by PID; raise the first failure after trying all."""
        errors: list[BaseException] = []
        for slave in reversed(self.slaves):
            try:
                slave.stop()
            except Exception as exc:
                errors.append(exc)
            finally:
                release_dns_address(slave.address)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A :class:`Lab` in tmp_path; call it (``lab(3)``) to start slaves."""
    the_lab = Lab(tmp_path / "lab")
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def slaves(lab: Lab) -> list[Slave]:
    """Three running slaves (127.0.1.N, each its own sshd and tinydns)."""
    return lab(3)
