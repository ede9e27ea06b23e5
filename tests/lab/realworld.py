"""Real slaves for tests: OpenSSH's sshd, Debian's tinydns and the ssh client.

Everything runs on loopback: a slave is an ``sshd`` on a free high port and a
``tinydns`` on port 53 UDP of its own 127.0.1.N address, both serving one root
directory where the receiver (the key's forced command) installs data and data.cdb.
Processes are started as children and stopped by their PID.

The master logs in as an ordinary account, as it does to a real slave's
``dnsslave``: ``dnsmaster-lab`` (a system account with ``/bin/sh`` as its shell,
made once by :func:`lab_account` when the tests run as root, as CI does), or the
user running the tests. Root's login would differ from a real slave's in what costs
time and what is allowed: root's shell here reads ``~/.bashrc``, which runs ``pyenv
init`` at every SSH session (0.1 s of CPU a push), and root may write any file, so a
receiver that wrote outside the directory it owns would pass. Each lab keeps its files
in a fresh directory under that account's home (``/var/lib/dnsmaster-lab``, owned by
root, mode 0755), which the lab removes when it closes: pytest's ``tmp_path`` lies
under ``/tmp/pytest-of-root`` (mode 0700), which the account cannot reach, and sshd's
``StrictModes`` (on, as on a real slave) refuses an ``authorized_keys`` whose
directories, up to the account's home, are writable by others, which ``/tmp`` is.
Each slave's root belongs to the account; tinydns reads it as ``nobody``.

The forced command runs what the manual (docs/slaves.rst) has operators install on
a slave: the receiver bundle (``dnsmaster receiver-bundle``, built once per test
process) run by Debian's ``/usr/bin/python3 -I -S``. The master's interpreter (pyenv's, under
``/root``, mode 0700) is out of the account's reach anyway. The bundle is pure
Python, which costs the tests nothing: their data is small, and a receiver of 10k
lines takes 0.14 s of CPU with or without the C accelerator (at 100k, 1.06 s
against 0.43 s); with the account's plain shell, tests/commands/test_push.py went from 77 s
of CPU to 30 s, tests/test_realworld.py from 19 s to 9 s. It also proves, at every
lab push, that the bundle holds every module the receiver imports. Benchmarks of
big data take ``Lab(receiver="installed")`` instead: a copy of the package with the
accelerator, run by the same interpreter. ``bin/dnsmaster`` in the lab's directory is
a one-line wrapper around either, so that authorized-key's ``--command`` line keeps
the ``receive`` word by which :meth:`Slave.receivers` finds its processes.

Usage: the fixtures (``lab``, ``slaves``, ``private_lab``) are in
:mod:`tests.lab.shared`, which shares one lab among a test module's tests, and come in
with ``tests/conftest.py``'s ``pytest_plugins``; import the names only for type
checking (a test module that imports this module first makes pytest warn that it
cannot rewrite its asserts)::

    if TYPE_CHECKING:
        from tests.lab.realworld import Lab

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
import fcntl
import functools
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset

import dnsmaster
from dnsmaster.core.stream import seal
from dnsmaster.slave import bundle
from tests.conftest import require, require_root

__all__ = [
    "Lab",
    "Slave",
    "Sshd",
    "Tinydns",
    "free_port",
    "lab_account",
    "sealed",
    "second_lab_account",
    "ssh_keygen",
    "ssh_options",
    "stop_pid",
]

#: The directory that holds the ``dnsmaster`` package under test.
PROJECT = Path(dnsmaster.__file__).resolve().parent.parent
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

#: The account the master logs in as when the tests run as root (see the module's doc).
ACCOUNT = "dnsmaster-lab"
#: The second account of a slave with one account per master (:func:`second_lab_account`).
SECOND_ACCOUNT = "dnsmaster-lab2"
ACCOUNT_HOME = Path("/var/lib/dnsmaster-lab")
#: The GECOS field that marks the account as the lab's own: an account of that name
#: without it belongs to someone else and is left alone.
ACCOUNT_COMMENT = "dnsmaster test lab"
#: Debian's interpreter, which runs the receiver bundle on a real slave.
RECEIVER_PYTHON = "/usr/bin/python3"
#: What a lab slave's forced command runs: the receiver bundle (the default, what the
#: manual, docs/slaves.rst, installs), or a copy of the package with its C
#: accelerator ("installed", as ``pip install`` on a slave would give; for
#: benchmarks of big data, see Lab).
Receiver = Literal["bundle", "installed"]

#: 127.0.1.N addresses handed out to tinydns in this process (port 53 is per address),
#: each with the descriptor of its lock file, which reserves it from other test runs.
_TAKEN: dict[str, int] = {}
#: Where the address locks live: a place every test run on the machine can reach.
_ADDRESS_LOCKS = Path(tempfile.gettempdir())


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


def _lock_address(address: str) -> int | None:
    """An flock on ``dnsmaster-lab-ADDRESS.lock``, or None if another process holds it.

    Test runs side by side (two pytest processes, a benchmark) would otherwise both
    find an address free in the moment between one's check and its tinydns binding,
    or one would take the address of the other's stopped tinydns, and a test would
    read the other's answers. The kernel drops the lock when its holder dies.
    """
    path = _ADDRESS_LOCKS / f"dnsmaster-lab-{address}.lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def take_dns_address(start: int = 1) -> str:
    """The first 127.0.1.N (N >= start) whose port 53 UDP is free; reserved (from other
    test processes too) until released."""
    for n in range(start, 255):
        address = f"127.0.1.{n}"
        if address in _TAKEN:
            continue
        fd = _lock_address(address)
        if fd is None:
            continue
        if _udp53_free(address):
            _TAKEN[address] = fd
            return address
        os.close(fd)
    raise ComponentError("no free 127.0.1.N address with port 53 UDP free")


def release_dns_address(address: str) -> None:
    fd = _TAKEN.pop(address, None)
    if fd is not None:
        os.close(fd)


def stop_pid(
    proc: subprocess.Popen[bytes] | None, what: str, timeout: float = STOP_TIMEOUT
) -> None:
    """SIGTERM the process by its PID and wait; SIGKILL and ComponentError if it
    outlasts ``timeout``. Nothing for a process that has ended."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
        raise ComponentError(f"{what} (pid {proc.pid}) ignored SIGTERM; killed") from None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ssh_keygen(path: Path, comment: str) -> None:
    """A fresh ed25519 key pair without a passphrase at ``path`` (and ``path.pub``)."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        [require("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


@functools.cache
def lab_account() -> pwd.struct_passwd:
    """The account the master logs in to slaves as: the user running the tests, or,
    for root, ``dnsmaster-lab`` (made here the first time, like a slave's ``dnsslave``).
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    account = _system_account(ACCOUNT, "--user-group")
    # Owned by root and 0755: sshd's StrictModes accepts it, the account cannot write it.
    ACCOUNT_HOME.mkdir(mode=0o755, exist_ok=True)
    os.chown(ACCOUNT_HOME, 0, 0)
    ACCOUNT_HOME.chmod(0o755)
    return account


@functools.cache
def second_lab_account() -> pwd.struct_passwd:
    """A second slave account, ``dnsmaster-lab2``, whose primary group is the lab
    account's: a slave with one account per master (the classic secondary DNS set-up)
    lets each write the tinydns root through that group. Made the first time, with the
    same care as :func:`lab_account`; root only."""
    require_root("a second slave account")
    first = lab_account()
    return _system_account(SECOND_ACCOUNT, "--gid", str(first.pw_gid))


def _system_account(name: str, *group: str) -> pwd.struct_passwd:
    """The lab's system account ``name``, made by ``useradd`` (with the ``group``
    options) unless it exists; refused when an account of that name is not the lab's.

    ``useradd --system`` would lock the account (``!`` as its password), and sshd with
    ``UsePAM no`` refuses a locked account even a key login: ``*`` unlocks it without
    giving it a password. Another test run may make it at the same moment, so a
    useradd that finds the name taken, or ``/etc/passwd`` locked, looks again.
    """
    useradd = [
        require("useradd", "passwd"),
        "--system",
        *group,
        "--shell",
        "/bin/sh",
        "--home-dir",
        str(ACCOUNT_HOME),
        "--no-create-home",
        "--comment",
        ACCOUNT_COMMENT,
        "--password",
        "*",
        name,
    ]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            account = pwd.getpwnam(name)
            break
        except KeyError:
            pass
        proc = subprocess.run(useradd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            continue
        # 9: the name is taken (by a run that just made it); 1 and 10: /etc/passwd or
        # /etc/group is locked by another useradd. Anything else, or for too long, fails.
        if proc.returncode not in (1, 9, 10) or time.monotonic() > deadline:
            raise ComponentError(f"useradd {name} exited {proc.returncode}: {proc.stderr}")
        time.sleep(0.1)
    wanted = (ACCOUNT_COMMENT, str(ACCOUNT_HOME), "/bin/sh")
    if account.pw_uid == 0 or (account.pw_gecos, account.pw_dir, account.pw_shell) != wanted:
        raise ComponentError(
            f"account {name} exists but is not the test lab's "
            f"(uid {account.pw_uid}, {account.pw_gecos!r}, {account.pw_dir}, "
            f"{account.pw_shell}): the lab will not log in as someone else's account"
        )
    return account


#: A lab directory's name: ``lab-PID-RANDOM``, PID being the test process that made it.
_LAB_DIR = re.compile(r"lab-(\d+)-")


def _remove_stale_labs(home: Path) -> None:
    """Remove the directories of labs whose test process is gone (killed before it closed
    them); the processes those labs started are not ours and are left alone."""
    for entry in home.iterdir():
        found = _LAB_DIR.match(entry.name)
        if found and entry.is_dir() and not Path(f"/proc/{found[1]}").exists():
            shutil.rmtree(entry, ignore_errors=True)


@functools.cache
def _receiver_bundle() -> bytes:
    """The receiver bundle of the package under test, built once per test process."""
    return bundle.build(RECEIVER_PYTHON)


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
    Only ``user`` may log in (the lab's account by default), never root. sshd reads
    ``authorized_keys`` as that user, with ``StrictModes``: it and its directories up to
    the user's home must be owned by root or the user and writable by nobody else.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
    ) -> None:
        require_root("sshd")
        self.binary = require("sshd")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        # Only this account may log in; by default the one the lab's slaves use.
        self.user = user or lab_account().pw_name
        self.port = port or free_port(host)
        self.config = workdir / "sshd_config"
        self.host_key = workdir / "host_ed25519_key"
        self.authorized_keys = workdir / "authorized_keys"
        self.log = workdir / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: The config and public host key the running sshd read when it started.
        self.started_with: tuple[str, str] | None = None
        if not self.host_key.exists():
            ssh_keygen(self.host_key, f"sshd@{host}")
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
                    "StrictModes yes",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "AuthorizedPrincipalsFile none",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "HostbasedAuthentication no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.user}",
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
        pub = self.host_key.with_name(self.host_key.name + ".pub")
        self.started_with = (self.config.read_text(), pub.read_text())
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
        stop_pid(self.proc, "sshd")
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
        ssh_keygen(self.host_key, f"sshd@{self.host}")
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
        stop_pid(self.proc, "tinydns")
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


def ssh_options(key: Path, known_hosts: Path, *, connect_timeout: int = 5) -> list[str]:
    """The OpenSSH client's options for a lab: ``key`` only, no config file, no
    prompt, the host key checked strictly against ``known_hosts``."""
    return [
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        "CheckHostIP=no",
        "-o",
        f"ConnectTimeout={connect_timeout}",
    ]


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


class Lab:
    """A set of slaves sharing one client key pair and one known_hosts file.

    ``lab(n)`` starts ``n`` more slaves and returns them; :meth:`close` stops every
    process by PID and removes the lab's directory. ``workdir`` is that directory,
    fresh under the account's home (see the module's doc), reachable by ``user``; a
    test that gives a slave a forced command of its own writes it there. ``link``,
    if given (pytest's ``tmp_path / "lab"``), becomes a symlink to it, to find the
    logs by while the lab runs. The forced command is ``bin/dnsmaster`` in ``workdir``:
    the receiver bundle of the package under test, run by ``/usr/bin/python3``.

    ``receiver="installed"`` runs a copy of the package instead, C accelerator included
    (built for the master's CPython 3.11, whose ABI Debian's 3.11 shares; checked here):
    the bundle compiles in pure Python, 0.14 s of CPU a receiver at 10k lines either
    way, but 1.06 s against 0.43 s at 100k and some 11 s against 0.65 s at 500k, which
    the benchmarks of big data would otherwise measure. The tests keep the bundle.
    """

    def __init__(self, link: Path | None = None, *, receiver: Receiver = "bundle") -> None:
        require_root("a lab of real slaves")
        require("sshd")
        require("tinydns")
        self.ssh_binary = require("ssh")
        self.receiver_python = require(RECEIVER_PYTHON, "python3")
        #: The account the master logs in as (``user@address``); it owns each slave's root.
        self.account = lab_account()
        self.user = self.account.pw_name
        self.slaves: list[Slave] = []
        home = Path(self.account.pw_dir)
        _remove_stale_labs(home)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lab-{os.getpid()}-", dir=home))
        self.workdir.chmod(0o755)
        self._closed = False
        # The plain authorized_keys line, made for a root no slave has (see authorized_key).
        self._root_mark = self.workdir / "ROOT-OF-EACH-SLAVE"
        self._key_line: str | None = None
        if link is not None:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            if not link.exists():
                link.symlink_to(self.workdir, target_is_directory=True)
        self.key = self.workdir / "client_ed25519"
        self.pubkey = self.key.with_name(self.key.name + ".pub")
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.touch()
        ssh_keygen(self.key, "dnsmaster-master@test")
        self.receiver = receiver
        self.forced_command = self._write_forced_command()

    def __repr__(self) -> str:
        return f"Lab({self.workdir}, user={self.user}, slaves={[s.name for s in self.slaves]})"

    def _write_forced_command(self) -> Path:
        # What a real slave runs: the bundle, by Debian's python3, isolated (-I -S) from
        # the session's environment. A wrapper rather than authorized-key --bundle: the
        # tests swap the command in the key line by this path, and find the receivers by
        # the "receive" word of authorized-key's --command line (the bundle skips it).
        path = self.workdir / "bin" / "dnsmaster"
        path.parent.mkdir()
        if self.receiver == "bundle":
            runs = path.with_name("dnsmaster-receive.pyz")
            runs.write_bytes(_receiver_bundle())
            runs.chmod(0o644)
        else:
            runs = self._install_receiver(self.workdir / "receiver")
        path.write_text(
            "#!/bin/sh\n"
            f'exec {shlex.quote(self.receiver_python)} -I -S {shlex.quote(str(runs))} "$@"\n'
        )
        path.chmod(0o755)
        return path

    def _install_receiver(self, directory: Path) -> Path:
        """A copy of the package, accelerator and all, that python3 runs as a directory
        (its ``__main__.py`` is the bundle's); byte-compiled here, since the account may
        not write ``__pycache__`` there and would compile every module at every push."""
        shutil.copytree(
            PROJECT / "dnsmaster",
            directory / "dnsmaster",
            ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.h", "*.pyi"),
        )
        (directory / "__main__.py").write_bytes(bundle.MAIN)
        subprocess.run(
            [self.receiver_python, "-I", "-m", "compileall", "-q", str(directory)],
            check=True,
            capture_output=True,
        )
        # As the forced command will find it: the directory first on sys.path.
        check = (
            "import sys; sys.path.insert(0, sys.argv[1]); from dnsmaster.core import accel; "
            "sys.exit(accel.found('compiler').why_not)"
        )
        proc = subprocess.run(
            [self.receiver_python, "-I", "-S", "-c", check, str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ComponentError(
                f"{self.receiver_python} does not load the C accelerator from {directory} "
                f"(build it with pip install -e .; the ABI must be CPython 3.11's): "
                f"{proc.stderr.strip() or proc.returncode}"
            )
        return directory

    def authorized_key(self, root: Path, *extra: str) -> str:
        """The authorized_keys line, from ``dnsmaster authorized-key``.

        The plain line (no ``extra``) differs between this lab's slaves only in the
        root, so the command runs once per lab and its line is reused with each
        slave's root. A root the command would quote is asked for on its own.
        """
        if extra or shlex.quote(str(root)) != str(root):
            return self._run_authorized_key(root, *extra)
        if self._key_line is None:
            self._key_line = self._run_authorized_key(self._root_mark)
        return self._key_line.replace(str(self._root_mark), str(root))

    def _run_authorized_key(self, root: Path, *extra: str) -> str:
        argv = [
            "authorized-key",
            "--pubkey",
            str(self.pubkey),
            "--root",
            str(root),
            "--command",
            str(self.forced_command),
            *extra,
        ]
        if threading.current_thread() is threading.main_thread():
            # By its main() in this process: a line of text, for no Python start.
            from tests.conftest import dnsmaster_here  # noqa: PLC0415 - conftest imports us

            here = dnsmaster_here(*argv)
            assert here.returncode == 0, here.stderr
            return here.stdout
        # dnsmaster_here's timer signal reaches the main thread alone.
        proc = subprocess.run(
            [sys.executable, "-m", "dnsmaster", *argv],
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
        # The receiver, logged in as the account, writes data and data.cdb here itself.
        os.chown(root, self.account.pw_uid, self.account.pw_gid)
        try:
            sshd = Sshd(base / "sshd", host=address, user=self.user)
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
            *ssh_options(self.key, self.known_hosts),
            "-p",
            str(slave.port),
            f"{self.user}@{slave.address}",
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
        """Stop every slave's processes by PID, then remove the lab's directory; raise the
        first failure after trying all. Closing twice does nothing more."""
        errors: list[BaseException] = []
        for slave in reversed(self.slaves):
            try:
                slave.stop()
            except Exception as exc:
                errors.append(exc)
            finally:
                release_dns_address(slave.address)
        if not self._closed:
            self._closed = True
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise errors[0]
