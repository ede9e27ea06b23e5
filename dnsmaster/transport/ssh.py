"""The receiver over SSH: asyncssh, a connection kept open between runs.

Each slave keeps its SSH connection open between pushes, so the daemon pays for
the handshake once. The host key is checked against known_hosts before anything
is sent (:mod:`dnsmaster.transport.hostkeys` explains a refusal). A kept
connection is never trusted longer than a new one would be:

- when the known_hosts file changes (an operator removed or replaced a key), kept
  connections are closed and the next run connects and verifies again;
- a connection older than :data:`HOST_KEY_RECHECK` seconds is reused only after a
  key exchange with the slave's sshd (no login) shows the same host key as the
  kept session's. A slave re-keyed since (sshd restarted with a new key, its old
  sessions still running) is then dropped and reported as a changed host key.

The keys that log in are loaded at each connect (:func:`client_keys`), from the
config or the account's passwd home, never ``$HOME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

from dnsmaster.config import DEFAULT_KEYS, Config, Slave, expand_home
from dnsmaster.errors import HostKeyError, SlaveError
from dnsmaster.fsutil import account, describe, file_signature
from dnsmaster.sshlib import asyncssh, client_options
from dnsmaster.transport.channel import LineSink, Payload, RunResult, converse, os_reason
from dnsmaster.transport.hostkeys import check_host_key, presented_key

__all__ = ["HOST_KEY_RECHECK", "SshChannel", "client_keys", "local_file_error"]

#: Seconds a kept SSH connection is reused before the slave's host key is checked
#: again (one key exchange, no login: see the module docstring). 0 checks before
#: every reuse. A ``[push] host_key_recheck`` option, when the config has one,
#: takes precedence.
HOST_KEY_RECHECK = 60.0

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
        # What begin() started: the connection (and the verb's process) made ahead.
        self._ahead: asyncio.Task[None] | None = None
        self._ahead_error: SlaveError | None = None
        self._ready: tuple[str, asyncssh.SSHClientProcess[bytes]] | None = None

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
        now = await presented_key(
            self.slave.host, self.slave.port, self._config.push.connect_timeout, kept
        )
        if kept is None or now is None or now.public_data != kept.public_data:
            # Re-keyed (or unreachable, or not telling): connecting anew decides,
            # and reports a changed key in full.
            return False
        self._key_seen = time.monotonic()
        return True

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
                slave.name, f"cannot connect to {self._where}: {os_reason(exc)}", phase="connect"
            ) from None
        except asyncssh.Error as exc:
            raise SlaveError(
                slave.name, f"ssh to {self._where}: {exc.reason}", phase="connect"
            ) from None
        self._conn, self._verified_with, self._key_seen = conn, signature, time.monotonic()
        return conn

    async def _host_key_error(self, known_hosts: Path, reason: str) -> HostKeyError:
        """Unknown or changed: which, where in known_hosts, and how to accept the key."""
        check = await check_host_key(self.slave, known_hosts, self._config.push.connect_timeout)
        return check.error(reason)

    async def login(self) -> None:
        """Connect and log in now, opening no session: proves the host key, the key
        pair and the account without running anything (the classic update-dns takes
        any session, even an empty one, as data to install). Raises
        :class:`~dnsmaster.errors.SlaveError` as :meth:`run` does."""
        await self.close()
        await self._connect()

    async def warm(self) -> None:
        """Connect now (or check the kept connection), ahead of a run, so that the
        handshake's round trips overlap what the caller computes meanwhile.

        Never raises: the run that follows connects again if this failed, and
        reports the failure as it always does. Not to be run beside a run.
        """
        if self._ahead is not None:
            await self._ahead  # never raises; its failure is the run's
            return
        with contextlib.suppress(Exception):
            await self._connection()

    def begin(self, verb: str | None) -> None:
        """Connect in the background from now on and, with a ``verb``, start it: its
        process waits for the payload while the caller builds, so that a push's first
        run finds the handshake, the session's two round trips and the receiver's own
        start behind it. The next :meth:`run` of the same verb feeds that process; a
        run of another verb (or :meth:`close`) closes it unfed, and a receiver given
        nothing refuses (an empty stream lacks the trailer) without touching its root.

        Only for verbs an empty stream cannot harm: never the classic ``update-dns``,
        which installs whatever it is given, nothing included. A failure to connect
        is the next run's failure, without a second wait.
        """
        if self._ahead is None:
            self._ahead = asyncio.create_task(self._begun(verb))

    async def _begun(self, verb: str | None) -> None:
        try:
            conn = await self._connection()
            if verb is not None:
                async with asyncio.timeout(self._config.push.connect_timeout):
                    proc = await conn.create_process(verb, encoding=None)
                self._ready = (verb, proc)
        except SlaveError as exc:
            self._ahead_error = exc
        except Exception:
            pass  # anything else: the run tries again, and says why it fails

    async def _settled(self) -> None:
        """Wait for what :meth:`begin` started; raise its failure to connect, once."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await ahead
        error, self._ahead_error = self._ahead_error, None
        if error is not None:
            raise error

    def _take_ready(self, verb: str) -> asyncssh.SSHClientProcess[bytes] | None:
        """The process begin() started for ``verb``, if that is this one; any other is
        closed unfed."""
        ready, self._ready = self._ready, None
        if ready is None:
            return None
        if ready[0] == verb:
            return ready[1]  # even if it has ended: ``status`` ends at once, its output kept
        ready[1].close()
        return None

    async def run(self, verb: str, payload: Payload | None, on_line: LineSink) -> RunResult:
        try:
            await self._settled()
            proc = self._take_ready(verb)
            if proc is None:
                proc = await self._process(verb)

            async def wait() -> int | None:
                completed = await proc.wait()
                return completed.returncode

            return await converse(
                self.slave.name,
                proc.stdin,
                proc.stdout,
                proc.stderr,
                payload=payload,
                on_line=on_line,
                wait=wait,
                # The channel module does not import asyncssh: a local slave's push
                # must not pay for it.
                closed=(asyncssh.Error,),
            )
        except HostKeyError:
            await self.close()
            raise
        except SlaveError:
            raise
        except (OSError, asyncssh.Error) as exc:
            await self.close()
            reason = exc.reason if isinstance(exc, asyncssh.Error) else os_reason(exc)
            raise SlaveError(
                self.slave.name, f"ssh to {self._where}: {reason}", phase="transfer"
            ) from None

    async def _process(self, verb: str) -> asyncssh.SSHClientProcess[bytes]:
        conn = await self._connection()
        try:
            return await conn.create_process(verb, encoding=None)
        except asyncssh.ChannelOpenError:
            # The kept connection went away under us (slave restarted): one new try.
            await self.close()
            conn = await self._connection()
            return await conn.create_process(verb, encoding=None)

    async def close(self) -> None:
        ahead, self._ahead, self._ahead_error = self._ahead, None, None
        if ahead is not None:
            ahead.cancel()
            await asyncio.gather(ahead, return_exceptions=True)
        self._take_ready("")
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()


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
