"""Pushing data to slaves: one task per slave, bounded, none waiting on another.

A :class:`Slave` channel runs one verb on the slave's receiver — over SSH (asyncssh,
host key checked against known_hosts before anything is sent) or, for the demo and
tests, as a local subprocess — feeds it the data, and reports every line the slave
prints as it arrives. Each slave keeps its SSH connection open between pushes, so
the daemon pays for the handshake once.

What is sent depends on what the slave's receiver speaks (its ``status`` line,
:mod:`dnsmaster.protocol`): protocol 1 gets the data and its trailer, protocol 2 a
delta against the build it holds when the master has that build's bytes
(:mod:`dnsmaster.core.delta`; the daemon keeps what it pushed, ``dnsmaster push``
reads the master's archive), compressed with zlib when the slave's ``compress``
says so (:func:`compresses`). A delta the receiver refuses (exit status 3: its
data is not the base, say) is followed at once by the full data, in the same run.
Legacy slaves (classic ``update-dns``) get the plain data.

Failures stay per slave: a result says ok or why not, and the others carry on.
Every failure is a :class:`~dnsmaster.errors.SlaveError` (phase, reason, whether
retrying can help); a result carries the same facts.

A kept connection is never trusted longer than a new one would be:

- when the known_hosts file changes (an operator removed or replaced a key), kept
  connections are closed and the next run connects and verifies again;
- a connection older than :data:`HOST_KEY_RECHECK` seconds is reused only after a
  key exchange with the slave's sshd (no login) shows the same host key as the
  kept session's. A slave re-keyed since (sshd restarted with a new key, its old
  sessions still running) is then dropped and reported as a changed host key.

What a slave prints is capped per run and stream (:data:`MAX_OUTPUT_LINES`,
:data:`MAX_OUTPUT_BYTES`, each line at :data:`MAX_LINE` bytes): beyond that it is
read, counted and discarded, so a slave that prints forever neither blocks nor
fills the master's memory, and its exit status and last stderr line (its reason
for failing) still arrive. Each stream has its own budget: whatever the slave
prints on stderr, the receiver's status and ``done`` lines on stdout are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import shlex
import socket
import sys
import time
import weakref
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dnsmaster import __version__
from dnsmaster.config import DEFAULT_KEYS, Config, Slave, expand_home
from dnsmaster.core import delta as deltas
from dnsmaster.core.stream import seal
from dnsmaster.core.text import LineCutter, printable
from dnsmaster.errors import (
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    SlaveError,
    SlavePhase,
)
from dnsmaster.fsutil import account, describe
from dnsmaster.protocol import DELTA, NEEDED
from dnsmaster.transport.sshlib import asyncssh, client_options, host_key_options

__all__ = [
    "EXIT_DELTA",
    "HOST_KEY_RECHECK",
    "MAX_OUTPUT_BYTES",
    "MAX_OUTPUT_LINES",
    "LineSink",
    "Offer",
    "PushLog",
    "PushResult",
    "Receiver",
    "ReceiverOutdated",
    "SlaveChannel",
    "SlaveVersion",
    "channel_for",
    "check_receiver",
    "client_keys",
    "compresses",
    "fetch_receiver",
    "fetch_status",
    "file_signature",
    "local_file_error",
    "parse_status",
    "push_all",
    "receiver_reason",
]


class LineSink(Protocol):
    """Called for every line a slave prints: (slave name, ``stdout`` or ``stderr``,
    the line, how many bytes were cut from its end: 0 for a whole line)."""

    def __call__(self, slave: str, stream: str, line: str, truncated: int, /) -> None: ...


_CHUNK = 64 * 1024

#: The most lines, and bytes, of a slave's output passed on (logged) per run, for
#: each stream: stdout's lines (the status and ``done`` lines) must be read whatever
#: arrives on stderr. The receiver prints a handful; anything near these is a broken
#: or hostile slave, whose further output is read, counted and thrown away.
MAX_OUTPUT_LINES = 1000
MAX_OUTPUT_BYTES = 256 * 1024
#: A longer line is cut to this many bytes (a line without end must not grow forever).
MAX_LINE = 4096
#: How much of the end of stderr is kept to find the receiver's last line (its reason).
_STDERR_TAIL = 2 * MAX_LINE
#: The longest reason quoted from a slave into a result, the log and ``status``.
_MAX_REASON = 500

#: Seconds a kept SSH connection is reused before the slave's host key is checked
#: again (one key exchange, no login: see the module docstring). 0 checks before
#: every reuse. A ``[push] host_key_recheck`` option, when the config has one,
#: takes precedence.
HOST_KEY_RECHECK = 60.0

#: The receiver's prefixes for a refusal and a failure (dnsmaster.slave.receive.main);
#: the words after them are the reason.
_RECEIVER_PREFIXES = (
    "dnsmaster receive: refused: ",
    "dnsmaster receive: failed: ",
    "dnsmaster receive: ",
)

#: Exit statuses of ``dnsmaster receive`` after which pushing the same build again
#: is refused again: 1 the data (incomplete, too large, does not compile, older than
#: the installed build), 2 the command. 111 (system error) and others may pass.
_FINAL_EXITS = frozenset({1, 2})
#: The receiver's exit status for a refused delta (another base, a wrong result):
#: nothing changed there, and the full data goes at once.
EXIT_DELTA = 3
#: The receiver's exit status for a command it does not know.
_EXIT_USAGE = 2
#: zlib's level: 6 (its default) makes 28 MB of data 4.6 MB in 0.5 s, once per build
#: for every slave; level 1 makes 5.8 MB in 0.17 s. The bytes are the cost on a WAN.
_ZLIB_LEVEL = 6

#: Ciphers in order of preference. asyncssh puts chacha20-poly1305 first, which it
#: runs as two OpenSSL calls plus Python per packet; AES-GCM is one call, with AES-NI
#: on both ends: pushing 30 x 4.5 MB took 0.19 s of the master's CPU instead of 0.38 s.
#: All of these are in OpenSSH's default server list.
_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)


@dataclass(frozen=True, slots=True)
class PushResult:
    """How one slave's push ended.

    On failure ``error`` is the reason to show (the receiver's own last stderr line
    when it refused), ``phase`` where it failed and ``retryable`` whether pushing
    the same build again can help (see :class:`~dnsmaster.errors.SlaveError`).
    ``output_cut`` says the slave printed more than :data:`MAX_OUTPUT_LINES` lines or
    :data:`MAX_OUTPUT_BYTES` bytes on a stream, and the rest (``output_dropped``
    lines) was discarded.
    """

    slave: str
    ok: bool
    sha256: str
    bytes: int
    seconds: float
    exit_status: int | None = None
    error: str | None = None
    phase: SlavePhase | None = None
    retryable: bool = True
    output_cut: bool = False
    #: What was sent: ``delta`` or ``full`` (``bytes`` counts what went over the wire,
    #: after compression), and whether it was compressed.
    mode: str = "full"
    compressed: bool = False
    #: Why the receiver refused a delta, when it did (the full data followed).
    delta_refused: str | None = None
    #: Lines of the last run's output dropped past the caps, both streams together.
    output_dropped: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    """A verb's exit status, what it printed on stdout (within the caps), the last
    line it printed on stderr, whether its output was cut, and how many lines of it
    were dropped."""

    exit_status: int | None
    stdout: tuple[str, ...]
    stderr_last: str | None = None
    cut: bool = False
    dropped: int = 0


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Budget:
    """What one stream may still pass on in a run, and what it dropped."""

    def __init__(self) -> None:
        self.lines_left = MAX_OUTPUT_LINES
        self.bytes_left = MAX_OUTPUT_BYTES
        self.full = False
        self.dropped = 0

    def take(self, size: int) -> bool:
        """Whether a line of ``size`` bytes fits; once one does not, none does."""
        if self.full or self.lines_left <= 0 or size > self.bytes_left:
            self.full = True  # from here on, everything is counted out
            self.dropped += 1
            return False
        self.lines_left -= 1
        self.bytes_left -= size
        return True


class _Output:
    """A run's output as lines for ``on_line``, within a budget for each stream.

    Bounded memory whatever the slave prints: a line is cut at :data:`MAX_LINE`
    bytes (no newline at all, a 10 MB line: read in chunks, never by
    ``readline``, whose buffer limit would raise), stdout keeps at most its
    budget's lines, and stderr keeps its last :data:`_STDERR_TAIL` bytes for the
    reason. A stream's budget is its own: a receiver's wrapper that prints
    thousands of lines on stderr does not hide the status line on stdout.
    """

    def __init__(self, name: str, on_line: LineSink) -> None:
        self._name = name
        self._on_line = on_line
        self._budgets = {"stdout": _Budget(), "stderr": _Budget()}
        self.stdout: list[str] = []
        self.stderr_tail = b""

    @property
    def cut(self) -> bool:
        return any(b.full for b in self._budgets.values())

    @property
    def dropped(self) -> int:
        return sum(b.dropped for b in self._budgets.values())

    def emit(self, stream: str, raw: bytes, truncated: int) -> None:
        if not self._budgets[stream].take(len(raw)):
            return
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if stream == "stdout":
            self.stdout.append(line)
        self._on_line(self._name, stream, line, truncated)

    async def read(self, reader: _Reader, stream: str) -> None:
        budget = self._budgets[stream]
        cutter = LineCutter(MAX_LINE)
        while chunk := await reader.read(_CHUNK):
            if stream == "stderr":
                self.stderr_tail = (self.stderr_tail + chunk)[-_STDERR_TAIL:]
            if budget.full:
                # Drained and counted: the slave never blocks on a full window.
                budget.dropped += cutter.skip(chunk)
                continue
            for raw, truncated in cutter.feed(chunk):
                self.emit(stream, raw, truncated)
        if budget.full:
            budget.dropped += cutter.open
        elif (last := cutter.end()) is not None:
            self.emit(stream, *last)

    def stderr_last(self) -> str | None:
        """The last non-empty line on stderr, escaped for logs and terminals."""
        for raw in reversed(self.stderr_tail.splitlines()):
            if raw.strip():
                return printable(raw.decode("utf-8", "surrogateescape").strip())
        return None


async def _converse(
    name: str,
    stdin: _Writer,
    stdout: _Reader,
    stderr: _Reader,
    *,
    payload: bytes | None,
    on_line: LineSink,
    wait: Callable[[], Awaitable[int | None]],
) -> RunResult:
    """Feed ``payload`` and read both output streams at once, then the exit status.

    Reading while writing matters: a slave that prints while the channel window
    is full would otherwise stall both directions.
    """
    output = _Output(name, on_line)

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, asyncssh.Error):
            if payload:
                view = memoryview(payload)
                for start in range(0, len(view), _CHUNK):
                    stdin.write(bytes(view[start : start + _CHUNK]))
                    await stdin.drain()
            stdin.write_eof()

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(feed())
            tasks.create_task(output.read(stdout, "stdout"))
            tasks.create_task(output.read(stderr, "stderr"))
    except BaseExceptionGroup as group:
        # A lost connection fails both readers at once. Callers handle asyncssh.Error
        # and OSError per slave, not groups: raise the first cause itself.
        raise _first_cause(group) from None
    return RunResult(
        await wait(), tuple(output.stdout), output.stderr_last(), output.cut, output.dropped
    )


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first


def receiver_reason(stderr_last: str | None, exit_status: int | None) -> str:
    """Why a receiver failed, in its own words: its last stderr line without the
    ``dnsmaster receive: refused:`` prefix, and the exit status.

    ``data does not compile: line 3: ... (exit 1)``; a receiver that printed nothing
    gives ``receiver exited with status 111``.
    """
    if exit_status is None:
        status = "receiver ended without an exit status"
    elif exit_status < 0:
        status = f"receiver killed by signal {-exit_status}"
    else:
        status = f"receiver exited with status {exit_status}"
    if not stderr_last:
        return status
    reason = stderr_last
    for prefix in _RECEIVER_PREFIXES:
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
            break
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    short = f"exit {exit_status}" if exit_status is not None and exit_status >= 0 else status
    return f"{reason} ({short})"


def _receive_error(slave: Slave, result: RunResult, phase: SlavePhase = "receive") -> SlaveError:
    """The failure of a run that ended with a non-zero exit status."""
    final = slave.protocol != "legacy" and result.exit_status in _FINAL_EXITS
    return SlaveError(
        slave.name,
        receiver_reason(result.stderr_last, result.exit_status),
        result.exit_status,
        phase=phase,
        retryable=not final,
    )


class SlaveChannel(Protocol):
    """Runs one verb of the receiver on one slave.

    ``run`` raises :class:`~dnsmaster.errors.SlaveError` (and nothing else but
    cancellation) when the slave cannot be reached or the conversation breaks; a
    non-zero exit status is a result, not an error.
    """

    slave: Slave

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult: ...

    async def close(self) -> None: ...


def file_signature(path: os.PathLike[str] | str | None) -> tuple[int, int, int, int] | None:
    """What tells a changed file from an unchanged one without reading it (device,
    inode, size, mtime); None when it cannot be stat'ed. An editor's rename and an
    in-place write both change it."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SshChannel:
    """The receiver over SSH, on a connection kept open between runs.

    ``recheck`` is :data:`HOST_KEY_RECHECK` unless given (or set in the config's
    ``[push] host_key_recheck``).
    """

    def __init__(self, slave: Slave, config: Config, *, recheck: float | None = None) -> None:
        self.slave = slave
        self._config = config
        self._conn: asyncssh.SSHClientConnection | None = None
        # known_hosts as it was when the kept connection was verified against it.
        self._verified_with: tuple[int, int, int, int] | None = None
        # When the kept connection's host key was last known to be the slave's.
        self._key_seen = 0.0
        if recheck is None:
            recheck = float(getattr(config.push, "host_key_recheck", HOST_KEY_RECHECK))
        self._recheck = recheck

    @property
    def _where(self) -> str:
        return f"{self.slave.host} port {self.slave.port}"

    async def _connection(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None:
            if not conn.is_closed() and await self._still_trusted(conn):
                return conn
            await self.close()
        return await self._connect()

    async def _still_trusted(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Whether a new connection would be accepted with the same host key."""
        if file_signature(self._config.known_hosts) != self._verified_with:
            return False  # keys were added, removed or replaced: verify again
        if time.monotonic() - self._key_seen < self._recheck:
            return True
        kept = conn.get_server_host_key()
        now = await self._presented_key(kept)
        if kept is None or now is None or now.public_data != kept.public_data:
            # Re-keyed (or unreachable, or not telling): connecting anew decides,
            # and reports a changed key in full.
            return False
        self._key_seen = time.monotonic()
        return True

    async def _presented_key(self, like: asyncssh.SSHKey | None = None) -> asyncssh.SSHKey | None:
        """The host key the slave's sshd presents now (a key exchange, no login),
        of the same type as ``like``; None when it cannot be had."""
        algs: Sequence[str] = ()
        if like is not None:
            algs = [alg.decode("ascii") for alg in like.sig_algorithms]
        try:
            async with asyncio.timeout(self._config.push.connect_timeout):
                return await asyncssh.get_server_host_key(
                    self.slave.host,
                    self.slave.port,
                    server_host_key_algs=algs or (),
                    config=[],
                    options=host_key_options(),
                )
        except (OSError, asyncssh.Error, ValueError):  # TimeoutError is an OSError
            return None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        slave, push = self.slave, self._config.push
        known_hosts = self._config.known_hosts
        # load() always sets known_hosts for SSH slaves; asyncssh would read None as
        # "check nothing", so refuse rather than ever connect unchecked.
        if known_hosts is None:
            raise SlaveError(
                slave.name,
                "no known_hosts file configured: set known_hosts in the config",
                phase="hostkey",
                retryable=False,
            )
        keys = client_keys(slave, self._config)
        # Taken before connecting: an edit made while connecting means verify again.
        signature = file_signature(known_hosts)
        try:
            conn = await asyncssh.connect(
                slave.host,
                port=slave.port,
                username=slave.user,
                client_keys=keys,
                known_hosts=str(known_hosts),
                connect_timeout=push.connect_timeout,
                login_timeout=push.connect_timeout,
                keepalive_interval=push.keepalive_interval or 0,
                keepalive_count_max=3,
                encryption_algs=_CIPHERS,
                compression_algs=["none"],
                **client_options(),
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise await self._host_key_error(Path(known_hosts), exc.reason) from None
        except asyncssh.PermissionDenied as exc:
            raise SlaveError(
                slave.name,
                f"permission denied for {slave.user or 'the login'} on {self._where} "
                f"({exc.reason}): its authorized_keys must hold the master's key with the "
                "forced command (dnsmaster authorized-key prints the line)",
                phase="auth",
            ) from None
        except TimeoutError:
            raise SlaveError(
                slave.name,
                f"cannot connect to {self._where}: no answer in {push.connect_timeout:g} s",
                phase="connect",
            ) from None
        except OSError as exc:
            if exc.filename is not None:  # known_hosts, not the network
                raise local_file_error(slave.name, exc) from None
            raise SlaveError(
                slave.name, f"cannot connect to {self._where}: {_os_reason(exc)}", phase="connect"
            ) from None
        except asyncssh.Error as exc:
            raise SlaveError(
                slave.name, f"ssh to {self._where}: {exc.reason}", phase="connect"
            ) from None
        self._conn, self._verified_with, self._key_seen = conn, signature, time.monotonic()
        return conn

    async def _host_key_error(self, known_hosts: Path, reason: str) -> HostKeyError:
        """Unknown or changed: which, where in known_hosts, and how to accept the key."""
        slave = self.slave
        entries, revoked = _known_entries(known_hosts, slave.host, slave.port)
        presented = await self._presented_key(entries[0][1] if entries else None)
        if presented is None and entries:
            presented = await self._presented_key()  # it offers no key of the known type
        return _classify_host_key(
            slave, known_hosts, entries=entries, revoked=revoked, presented=presented, reason=reason
        )

    async def warm(self) -> None:
        """Connect now (or check the kept connection), ahead of a run, so that the
        handshake's round trips overlap what the caller computes meanwhile.

        Never raises: the run that follows connects again if this failed, and
        reports the failure as it always does. Not to be run beside a run.
        """
        with contextlib.suppress(Exception):
            await self._connection()

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
        try:
            conn = await self._connection()
            try:
                proc = await conn.create_process(verb, encoding=None)
            except asyncssh.ChannelOpenError:
                # The kept connection went away under us (slave restarted): one new try.
                await self.close()
                conn = await self._connection()
                proc = await conn.create_process(verb, encoding=None)

            async def wait() -> int | None:
                completed = await proc.wait()
                return completed.returncode

            return await _converse(
                self.slave.name,
                proc.stdin,
                proc.stdout,
                proc.stderr,
                payload=payload,
                on_line=on_line,
                wait=wait,
            )
        except HostKeyError:
            await self.close()
            raise
        except SlaveError:
            raise
        except (OSError, asyncssh.Error) as exc:
            await self.close()
            reason = exc.reason if isinstance(exc, asyncssh.Error) else _os_reason(exc)
            raise SlaveError(
                self.slave.name, f"ssh to {self._where}: {reason}", phase="transfer"
            ) from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


def _os_reason(exc: OSError) -> str:
    """An OSError in plain words: ``connection refused``, ``no route to host``."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name: {exc.strerror or exc}"
    if exc.errno:
        text = describe(exc)
        return text[:1].lower() + text[1:]  # os.strerror capitalizes, djb's words do not
    # asyncio's "Multiple exceptions: ..." for several addresses, each with its words.
    return str(exc) or type(exc).__name__


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH writes in known_hosts for ``host`` on ``port``."""
    return host if port == 22 else f"[{host}]:{port}"


#: known_hosts entries as (1-based line number, key).
_Entries = list[tuple[int, asyncssh.SSHKey]]


def _known_entries(path: Path, host: str, port: int) -> tuple[_Entries, _Entries]:
    """The (line number, key) of every known_hosts entry for ``host`` on ``port``, and
    of every ``@revoked`` one, the way asyncssh looks them up: ``[host]:port`` names
    (plain, patterns or hashed ``|1|`` names), else names without the port."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return [], []
    parsed: list[tuple[int, asyncssh.SSHKnownHosts]] = []
    for lineno, text in enumerate(lines, 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            parsed.append((lineno, asyncssh.import_known_hosts(text)))
        except (ValueError, asyncssh.KeyImportError):
            continue  # asyncssh skips what it cannot read, and so do we

    def scan(name: str) -> tuple[_Entries, _Entries]:
        found: _Entries = []
        revoked: _Entries = []
        for lineno, entry in parsed:
            # Port None: the name is matched as given, without asyncssh's fallback.
            keys, _, bad, *_ = entry.match(name, "", None)
            found += [(lineno, key) for key in keys]
            revoked += [(lineno, key) for key in bad]
        return found, revoked

    found, revoked = scan(_known_hosts_name(host, port))
    if port != 22 and not found:
        more, revoked_more = scan(host)
        return more, revoked + revoked_more
    return found, revoked


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


def _keyscan_type(algorithm: str) -> str | None:
    """ssh-keyscan's -t name for a key algorithm."""
    if algorithm == "ssh-ed25519":
        return "ed25519"
    if algorithm.startswith("ecdsa-"):
        return "ecdsa"
    if algorithm in ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"):
        return "rsa"
    return None


def _classify_host_key(
    slave: Slave,
    known_hosts: Path,
    *,
    entries: _Entries,
    revoked: _Entries,
    presented: asyncssh.SSHKey | None,
    reason: str,
) -> HostKeyError:
    """The error for a host key asyncssh could not verify (``reason`` its words)."""
    host, port, file = slave.host, slave.port, str(known_hosts)
    name = _known_hosts_name(host, port)
    shown = _fingerprint(presented) if presented is not None else None
    like = presented or (entries[0][1] if entries else None)
    kind = _keyscan_type(like.get_algorithm()) if like is not None else None
    keyscan = " ".join(
        [
            "ssh-keyscan",
            *(["-p", str(port)] if port != 22 else []),
            *(["-t", kind] if kind else []),
            shlex.quote(host),
            ">>",
            shlex.quote(file),
        ]
    )
    check = (
        f"compare it with `ssh-keygen -lf /etc/ssh/ssh_host_{kind or '*'}_key.pub` run on "
        "the slave itself (not over this network)"
    )
    if presented is not None:
        for lineno, key in revoked:
            if key.public_data == presented.public_data:
                return HostKeyError(
                    slave.name,
                    f"host key REVOKED: {name} presents {shown}, marked @revoked at "
                    f"{file}:{lineno}; nothing is pushed to it",
                    host=host,
                    port=port,
                    known_hosts=file,
                    presented=shown,
                )
        if any(key.public_data == presented.public_data for _, key in entries):
            # The key is known: asyncssh refused for another reason (a certificate,
            # an algorithm); say so in its words.
            return HostKeyError(
                slave.name,
                f"host key not verifiable: {reason}",
                host=host,
                port=port,
                known_hosts=file,
                presented=shown,
            )
    now = f"now presents {shown}" if shown else "presents another key"
    if entries:
        line, known = entries[0]
        others = [n for n, _ in entries[1:] if n != line]
        also = f" (also line {', '.join(map(str, others))})" if others else ""
        remove = f"ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(file)}"
        return HostKeyChanged(
            slave.name,
            f"host key CHANGED: {name} {now}, but {file}:{line}{also} holds "
            f"{_fingerprint(known)} for it. Either the slave was re-keyed or something "
            f"else answers at its address: {check}; if it matches, accept it with "
            f"`{remove} && {keyscan}`. Nothing is pushed to it until known_hosts changes",
            host=host,
            port=port,
            known_hosts=file,
            line=line,
            lines=tuple(dict.fromkeys(n for n, _ in entries)),
            known=_fingerprint(known),
            presented=shown,
            accept=(remove, keyscan),
        )
    return HostKeyUnknown(
        slave.name,
        f"host key unknown: {file} holds no key for {name}, which {now.replace('now ', '')}. "
        f"Add it once you trust it: {check}, then `{keyscan}`. Nothing is pushed to it "
        "until known_hosts changes",
        host=host,
        port=port,
        known_hosts=file,
        presented=shown,
        accept=(keyscan,),
    )


def local_file_error(slave: str, exc: OSError) -> SlaveError:
    """A file on the master that this account cannot read (a key, known_hosts): named
    with the account, since the daemon runs as its own and the fix is a chown here,
    not anything on the slave. Retried: the next try reads the file again."""
    where = exc.filename if exc.filename is not None else "a local file"
    return SlaveError(
        slave, f"cannot read {os.fsdecode(where)} as {account()}: {describe(exc)}", phase="local"
    )


def client_keys(slave: Slave, config: Config) -> Sequence[asyncssh.SSHKeyPair]:
    """The key pairs that log in to ``slave``: its ``key``, else the config's, else the
    running account's default keys (:data:`dnsmaster.config.DEFAULT_KEYS`, found in
    its passwd entry's home, never ``$HOME``). Loaded here, at each connect, so that a
    key made unusable after start is a failed push with the reason."""
    key = slave.key or config.key
    if key is not None:
        return _load_key(slave.name, key)
    try:
        candidates = [expand_home(name) for name in DEFAULT_KEYS]
    except ValueError as exc:
        raise SlaveError(
            slave.name,
            f"no private key: {exc}: set key in {config.path}",
            phase="local",
            retryable=False,
        ) from None
    loaded: list[asyncssh.SSHKeyPair] = []
    failure: SlaveError | None = None
    for path in (p for p in candidates if os.path.lexists(p)):
        try:
            loaded += _load_key(slave.name, path)
        except SlaveError as exc:  # as ssh does: an unusable default key is skipped
            failure = failure or exc
    if loaded:
        return loaded
    if failure is not None:
        raise failure
    raise SlaveError(
        slave.name,
        f"no private key: key is not set in {config.path}, and {account()} has none of "
        f"{', '.join(map(str, candidates))}",
        phase="local",
        retryable=False,
    )


def _load_key(slave: str, key: os.PathLike[str]) -> Sequence[asyncssh.SSHKeyPair]:
    try:
        return asyncssh.load_keypairs([os.fspath(key)])
    except OSError as exc:
        if exc.filename is None:
            exc.filename = os.fspath(key)
        raise local_file_error(slave, exc) from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
    raise SlaveError(
        slave,
        f"cannot use the private key {os.fspath(key)}: {reason}",
        phase="local",
        retryable=False,
    )


class LocalChannel:
    """The receiver as a local subprocess, exactly as sshd would run it."""

    def __init__(self, slave: Slave) -> None:
        self.slave = slave

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
        assert self.slave.root is not None
        env = dict(os.environ, SSH_ORIGINAL_COMMAND=verb)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dnsmaster",
                "receive",
                "--root",
                str(self.slave.root),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise SlaveError(
                self.slave.name, f"cannot start the receiver: {_os_reason(exc)}", phase="connect"
            ) from None
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            return await _converse(
                self.slave.name,
                _PipeWriter(proc.stdin),
                proc.stdout,
                proc.stderr,
                payload=payload,
                on_line=on_line,
                wait=proc.wait,
            )
        except OSError as exc:
            raise SlaveError(
                self.slave.name, f"receiver pipe: {_os_reason(exc)}", phase="transfer"
            ) from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def close(self) -> None:
        return None


class _PipeWriter:
    """asyncio's pipe StreamWriter with write_eof meaning "close stdin"."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        self._writer.close()


def channel_for(slave: Slave, config: Config) -> SlaveChannel:
    """The channel that reaches ``slave``."""
    if slave.transport == "local":
        return LocalChannel(slave)
    return SshChannel(slave, config)


def payload_for(slave: Slave, data: bytes) -> bytes:
    """What a slave is sent: data and trailer, or plain data for legacy update-dns."""
    if slave.protocol == "legacy":
        return data
    return _sealed(data)


# The caches below hold whole data texts, keys and values alike, for as long as the
# daemon lives: small sizes, so an idle daemon keeps about one build's worth beside
# the one it serves, not several (a build of 1M lines is some 57 MB).


@functools.lru_cache(maxsize=1)
def _sealed(data: bytes) -> bytes:
    # Every slave gets the same bytes: hash and copy the data once per build, not once
    # per slave (the cache compares the very same object first, so a hit is cheap).
    return data + seal(data)


@functools.lru_cache(maxsize=2)
def _zipped(payload: bytes) -> bytes:
    # Once per build (the delta and the full data), whatever the number of slaves.
    return zlib.compress(payload, _ZLIB_LEVEL)


@functools.lru_cache(maxsize=2)
def _delta(base: bytes, data: bytes) -> bytes:
    # Slaves on the same base (the usual case) share one delta.
    return deltas.make(base, data)


def compresses(slave: Slave) -> bool:
    """Whether what ``slave`` is sent is compressed, given its receiver takes it.

    ``compress = "auto"`` (the default) compresses unless the slave is on this
    machine (a local transport, or a loopback host: ``localhost``, 127.0.0.0/8,
    ::1), where the bytes cost nothing and zlib's time would be the whole cost.
    """
    if slave.compress != "auto":
        return slave.compress == "on"
    if slave.transport == "local" or slave.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(slave.host).is_loopback
    except ValueError:
        return True  # a name: assume it is elsewhere


#: Why a recorded offer was not used although the record holds: the whole data is
#: smaller than a delta (most of it changed), so the slave is asked as usual.
NO_SMALLER_DELTA = "no delta smaller than the data"


@dataclass(frozen=True, slots=True)
class Offer:
    """What a slave can take beyond the plain data, from its last ``status``.

    ``protocol`` is its receiver's (None: unknown, treated as 1); ``base`` the
    bytes of the build it holds, when the master has them: a delta is sent against
    it when the receiver speaks :data:`~dnsmaster.protocol.DELTA`.
    """

    protocol: int | None = None
    base: bytes | None = None
    #: ``protocol`` and ``base`` come from the master's record of its last push to
    #: the slave, which was not asked this time (see :func:`push_one`).
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class _Send:
    verb: str
    #: What is sent, before compression.
    plain: bytes
    mode: str
    compressed: bool


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def _computed(fn: Callable[[bytes, bytes], bytes], *args: bytes) -> bytes:
    """``fn(*args)``, a cached delta or compression, in a thread (half a second of
    CPU for 500,000 lines must not stall the daemon's loop), one at a time: the
    first slave computes it, the others wait and find it in the cache."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.setdefault(loop, asyncio.Lock())
    async with lock:
        return await asyncio.to_thread(fn, *args)


async def _sends(slave: Slave, data: bytes, offer: Offer) -> list[_Send]:
    """What to try, in order: a delta (when it can be had and is smaller), the data."""
    if slave.protocol == "legacy":
        return [_Send("update-dns", data, "full", False)]
    full = _sealed(data)
    if offer.protocol is None or offer.protocol < DELTA:
        return [_Send("push", full, "full", False)]
    zipped = compresses(slave)
    flag = " --zlib" if zipped else ""
    tries = []
    if offer.base is not None:
        stream = await _computed(_delta, offer.base, data)
        if len(stream) < len(full):
            tries.append(_Send("delta" + flag, stream, "delta", zipped))
    tries.append(_Send("push" + flag, full, "full", zipped))
    return tries


async def push_one(
    channel: SlaveChannel,
    data: bytes,
    sha256: str,
    timeout: float,
    on_line: LineSink,
    *,
    offer: Offer | None = None,
    on_delta_refused: Callable[[str, str], None] | None = None,
    ask: Callable[[str], Awaitable[PushResult | Offer]] | None = None,
) -> PushResult:
    """Push ``data`` to one slave; never raises for the slave's failures.

    With an ``offer`` from the slave's status, a delta and compression as it
    allows; a delta the receiver refuses is reported to ``on_delta_refused`` (slave,
    reason) and followed by the full data, within the same ``timeout`` each.

    A :attr:`~Offer.recorded` offer saves the ``status`` exchange: only its delta is
    sent, and it counts only when the receiver says it installed this build. When
    it does not (another base there, exit 3; a receiver that no longer knows the
    verb, exit 2; or no such line), ``ask`` (called with why) asks the slave as a
    first contact does, and its answer is pushed as usual: the protocol check and
    the fallback to the full data stay as they were.
    """
    started = time.monotonic()
    offer = offer or Offer()
    if offer.recorded:
        done, stale = await _push_recorded(
            channel, data, sha256, timeout=timeout, on_line=on_line, offer=offer
        )
        if done is not None:
            return done
        asked = await ask(stale) if ask is not None else Offer()
        if isinstance(asked, PushResult):
            return asked
        offer = asked
    return await _push_offered(
        channel,
        data,
        sha256,
        timeout=timeout,
        on_line=on_line,
        offer=offer,
        on_delta_refused=on_delta_refused,
        started=started,
    )


async def _push_recorded(
    channel: SlaveChannel,
    data: bytes,
    sha256: str,
    *,
    timeout: float,
    on_line: LineSink,
    offer: Offer,
) -> tuple[PushResult | None, str]:
    """The delta of a recorded offer: its result when it is final (installed, or a
    failure asking would not mend), else None and why the record does not hold."""
    slave = channel.slave
    started = time.monotonic()
    # Nothing to wait for before the delta: connect while it is computed (the first
    # slave computes it, about half a second at 500,000 lines; the others wait for it).
    warming = asyncio.create_task(channel.warm()) if isinstance(channel, SshChannel) else None
    try:
        sends = await _sends(slave, data, offer)
    finally:
        if warming is not None:
            await warming
    send = sends[0]
    if send.mode != "delta":
        return None, NO_SMALLER_DELTA
    payload = await _computed(_zipped, send.plain) if send.compressed else send.plain
    try:
        async with asyncio.timeout(timeout):
            result = await channel.run(send.verb, payload, on_line)
    except TimeoutError:
        await channel.close()
        error: SlaveError = SlaveError(
            slave.name, f"timed out after {timeout:g} s", phase="timeout"
        )
    except SlaveError as exc:
        error = exc
    else:
        if result.exit_status in {EXIT_DELTA, _EXIT_USAGE}:
            return None, receiver_reason(result.stderr_last, result.exit_status)
        if result.exit_status != 0:
            error = _receive_error(slave, result)
        elif any(line.startswith(f"done sha256={sha256} ") for line in result.stdout):
            return PushResult(
                slave.name,
                True,
                sha256,
                len(payload),
                time.monotonic() - started,
                0,
                output_cut=result.cut,
                mode=send.mode,
                compressed=send.compressed,
                output_dropped=result.dropped,
            ), ""
        else:
            return None, "the receiver did not say it installed the build"
    failed = PushResult(
        slave.name,
        False,
        sha256,
        len(payload),
        time.monotonic() - started,
        error.exit_status,
        error.reason,
        error.phase,
        error.retryable,
        mode=send.mode,
        compressed=send.compressed,
    )
    return failed, ""


async def _push_offered(
    channel: SlaveChannel,
    data: bytes,
    sha256: str,
    *,
    timeout: float,
    on_line: LineSink,
    offer: Offer,
    on_delta_refused: Callable[[str, str], None] | None,
    started: float,
) -> PushResult:
    """:func:`push_one` once the slave's offer is known."""
    slave = channel.slave
    refused: str | None = None
    crossed = 0  # the bytes of a refused delta crossed too
    sends = await _sends(slave, data, offer)
    for n, send in enumerate(sends):
        # Compressed only when it is sent: a delta taken spares the data's zlib.
        payload = await _computed(_zipped, send.plain) if send.compressed else send.plain
        crossed += len(payload)

        def failed(
            error: SlaveError,
            run: RunResult | None = None,
            send: _Send = send,
            sent: int = crossed,
            refused: str | None = refused,
        ) -> PushResult:
            return PushResult(
                slave.name,
                False,
                sha256,
                sent,
                time.monotonic() - started,
                error.exit_status,
                error.reason,
                error.phase,
                error.retryable,
                run is not None and run.cut,
                send.mode,
                send.compressed,
                refused,
                run.dropped if run is not None else 0,
            )

        try:
            async with asyncio.timeout(timeout):
                result = await channel.run(send.verb, payload, on_line)
        except TimeoutError:
            await channel.close()
            return failed(SlaveError(slave.name, f"timed out after {timeout:g} s", phase="timeout"))
        except SlaveError as exc:
            return failed(exc)
        if result.exit_status == EXIT_DELTA and send.mode == "delta" and n + 1 < len(sends):
            refused = receiver_reason(result.stderr_last, result.exit_status)
            if on_delta_refused is not None:
                on_delta_refused(slave.name, refused)
            continue
        if result.exit_status != 0:
            return failed(_receive_error(slave, result), result)
        return PushResult(
            slave.name,
            True,
            sha256,
            crossed,
            time.monotonic() - started,
            0,
            output_cut=result.cut,
            mode=send.mode,
            compressed=send.compressed,
            delta_refused=refused,
            output_dropped=result.dropped,
        )
    raise AssertionError("unreachable: the last send returns")  # pragma: no cover


async def push_all(
    channels: Sequence[SlaveChannel],
    data: bytes,
    sha256: str,
    *,
    parallel: int,
    timeout: float,
    on_line: LineSink,
    on_result: Callable[[PushResult], None] | None = None,
    before: Callable[[SlaveChannel], Awaitable[PushResult | Offer | None]] | None = None,
    on_delta_refused: Callable[[str, str], None] | None = None,
    ask: Callable[[SlaveChannel, str], Awaitable[PushResult | Offer]] | None = None,
) -> list[PushResult]:
    """Push to every channel, at most ``parallel`` at once; results in channel order.

    ``before`` runs first in each slave's slot (asking its receiver what it runs,
    say); a result from it is that slave's outcome and nothing is pushed, an
    :class:`Offer` says what the push may use. Each slave goes on as soon as its own
    ``before`` is done, never waiting for the others'. ``ask`` (channel, why) is
    :func:`push_one`'s, for a recorded offer that does not hold.
    """
    gate = asyncio.Semaphore(parallel)

    async def one(channel: SlaveChannel) -> PushResult:
        async with gate:
            asked = await before(channel) if before is not None else None
            if isinstance(asked, PushResult):
                result = asked
            else:
                result = await push_one(
                    channel,
                    data,
                    sha256,
                    timeout,
                    on_line,
                    offer=asked,
                    on_delta_refused=on_delta_refused,
                    ask=None if ask is None else functools.partial(ask, channel),
                )
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(c) for c in channels)))


@dataclass(frozen=True, slots=True)
class SlaveVersion:
    """What a slave reports as installed (the ``status`` verb), and which receiver said so.

    ``protocol`` and ``version`` are the receiver's (None from one older than
    protocol 1). They describe the reporter, not the installed build, so they take
    no part in comparisons: two reports of one build are equal.
    """

    sha256: str
    serial: int | None
    protocol: int | None = field(default=None, compare=False)
    version: str | None = field(default=None, compare=False)


class ReceiverOutdated(SlaveError):
    """The slave's receiver speaks an older protocol than this master needs.

    ``protocol`` and ``version`` are what the receiver reported (None: nothing, it
    predates protocol 1), ``needed`` what this master needs at least
    (:data:`~dnsmaster.protocol.NEEDED`).
    Never retryable: only an operator who upgrades the slave's receiver can fix it.
    """

    def __init__(
        self, slave: str, protocol: int | None, version: str | None, needed: int = NEEDED
    ) -> None:
        self.protocol = protocol
        self.version = version
        self.needed = needed
        if protocol is None:
            speaks = f"no protocol version (it predates protocol {min(needed, 1)})"
        else:
            speaks = f"protocol {protocol}"
        reason = (
            f"receiver version {version or 'unknown'} speaks {speaks}; this master "
            f"(dnsmaster {__version__}) needs protocol {needed}: upgrade it: copy a new "
            "bundle (dnsmaster receiver-bundle -o dnsmaster-receive.pyz) over the file its "
            "authorized_keys line runs, or upgrade the dnsmaster installed there "
            f"(pip install --upgrade 'dnsmaster>={__version__}')"
        )
        super().__init__(slave, reason, phase="status", retryable=False)


def _status_fields(lines: Sequence[str]) -> dict[str, str] | None:
    """The ``key=value`` words of the receiver's first ``status`` line; None without one."""
    for line in lines:
        words = line.split()
        if words and words[0] == "status":
            return dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return None


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def parse_status(lines: Sequence[str]) -> SlaveVersion | None:
    """Read the receiver's ``status sha256=... serial=... protocol=... version=...`` line.

    None when it names no sha256 (``status none``: nothing installed it vouches for).
    """
    fields = _status_fields(lines)
    if fields is None or "sha256" not in fields:
        return None
    return SlaveVersion(
        fields["sha256"],
        _number(fields.get("serial")),
        _number(fields.get("protocol")),
        fields.get("version"),
    )


def check_receiver(slave: str, lines: Sequence[str], needed: int = NEEDED) -> None:
    """Raise :class:`ReceiverOutdated` unless the ``status`` output in ``lines`` comes
    from a receiver of protocol ``needed`` or later (see :mod:`dnsmaster.protocol`).

    Output without a status line is no receiver of any version: a plain
    :class:`~dnsmaster.errors.SlaveError`, not retryable either.
    """
    fields = _status_fields(lines)
    if fields is None:
        raise SlaveError(
            slave,
            "its forced command printed no status line: it is not dnsmaster receive "
            "(dnsmaster authorized-key prints the line that runs it)",
            0,
            phase="status",
            retryable=False,
        )
    protocol = _number(fields.get("protocol"))
    if protocol is None or protocol < needed:
        raise ReceiverOutdated(slave, protocol, fields.get("version"), needed)


@dataclass(frozen=True, slots=True)
class Receiver:
    """What a slave's receiver said to ``status``: its protocol and version (None:
    not said, or a legacy slave, which is not asked) and the build it has installed
    (None: none it vouches for)."""

    protocol: int | None
    version: str | None
    installed: SlaveVersion | None

    def offer(self, base: bytes | None = None) -> Offer:
        """The :class:`Offer` for a push to it, with ``base`` the bytes of its build."""
        return Offer(self.protocol, base)


async def fetch_status(
    channel: SlaveChannel, timeout: float, on_line: LineSink
) -> SlaveVersion | None:
    """The version a slave has installed; None when it has none (or is legacy).

    As :func:`fetch_receiver`, for those who need only the installed build.
    """
    return (await fetch_receiver(channel, timeout, on_line)).installed


async def fetch_receiver(channel: SlaveChannel, timeout: float, on_line: LineSink) -> Receiver:
    """What a slave's receiver speaks, and the version it has installed.

    Raises :class:`~dnsmaster.errors.SlaveError` when the slave cannot be asked
    (phase ``connect``, ``hostkey``, ``auth``, ``transfer``, ``timeout``) or its
    receiver fails the verb (phase ``status``, with the receiver's reason), and
    :class:`ReceiverOutdated` (phase ``status``, not retryable) when the receiver
    speaks an older protocol than this master's.
    """
    slave = channel.slave
    if slave.protocol == "legacy":
        return Receiver(None, None, None)  # the classic update-dns script has no status
    try:
        async with asyncio.timeout(timeout):
            result = await channel.run("status", None, on_line)
    except TimeoutError:
        await channel.close()
        raise SlaveError(
            slave.name, f"status timed out after {timeout:g} s", phase="timeout"
        ) from None
    if result.exit_status != 0:
        raise _receive_error(slave, result, "status")
    # First contact: a receiver too old for this master is named now, with what to do,
    # rather than failing pushes in ways that do not say why.
    check_receiver(slave.name, result.stdout)
    fields = _status_fields(result.stdout) or {}
    return Receiver(
        _number(fields.get("protocol")), fields.get("version"), parse_status(result.stdout)
    )


class PushLog:
    """Logs a push as it happens: ``push.line`` per slave line, then one result event.

    A changed or unknown host key is logged at level critical (someone may pose as
    the slave; only an operator can decide), other failures at error. Output cut at
    the caps is one ``push.output_cut`` warning before the result.
    """

    def __init__(self, logger: Any, serial: int | None = None) -> None:
        self._logger = logger
        self._serial = serial

    def line(self, slave: str, stream: str, line: str, truncated: int = 0) -> None:
        if truncated:
            self._logger.info(
                "push.line", slave=slave, stream=stream, line=line, truncated=truncated
            )
        else:
            self._logger.info("push.line", slave=slave, stream=stream, line=line)

    def delta_refused(self, slave: str, reason: str) -> None:
        """The receiver refused a delta; the full data goes next."""
        self._logger.warning("push.delta_refused", slave=slave, error=reason, next="full push")

    def receiver(self, slave: str, receiver: Receiver) -> None:
        """Once per slave and run: a receiver too old for deltas is served, and told."""
        if receiver.protocol is not None and receiver.protocol < DELTA:
            self._logger.info(
                "push.receiver_old",
                slave=slave,
                protocol=receiver.protocol,
                version=receiver.version,
                hint=f"upgrade its receiver to protocol {DELTA} for delta and compressed pushes",
            )

    def result(self, result: PushResult) -> None:
        context: dict[str, object] = {
            "slave": result.slave,
            "serial": self._serial,
            "sha256": result.sha256[:16],
            "bytes": result.bytes,
            "mode": result.mode,
            "compressed": result.compressed,
            "seconds": round(result.seconds, 3),
        }
        if result.output_cut:
            self._logger.warning(
                "push.output_cut",
                slave=result.slave,
                dropped_lines=result.output_dropped,
                max_lines=MAX_OUTPUT_LINES,
                max_bytes=MAX_OUTPUT_BYTES,
            )
        if result.ok:
            self._logger.info("push.done", **context)
            return
        if result.exit_status is not None:
            context["exit_status"] = result.exit_status
        context["phase"] = result.phase
        context["retryable"] = result.retryable
        level = self._logger.critical if result.phase == "hostkey" else self._logger.error
        level("push.failed", **context, error=result.error)
