"""The known_hosts policy: which key a slave should present, which it does, and what
to tell an operator when they differ.

asyncssh verifies the host key itself (against the configured known_hosts file,
never ``~/.ssh``); this module explains its refusals. It finds the file's entries
for a slave the way asyncssh looks them up (:func:`known_entries`), asks the
slave's sshd which key it presents (a key exchange, no login:
:func:`presented_key`), and names the case, with the commands that accept a key
once the operator trusts it (:meth:`HostKeyCheck.error`). The SSH channel and
``dnsmaster doctor`` both use it, so a push and a check say the same words.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dnsmaster.config import Slave
from dnsmaster.errors import HostKeyChanged, HostKeyError, HostKeyUnknown
from dnsmaster.sshlib import asyncssh, host_key_options

__all__ = [
    "Entries",
    "HostKeyCheck",
    "check_host_key",
    "classify_host_key",
    "fingerprint",
    "known_entries",
    "known_hosts_name",
    "presented_key",
]


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH writes in known_hosts for ``host`` on ``port``."""
    return host if port == 22 else f"[{host}]:{port}"


#: known_hosts entries as (1-based line number, key).
Entries = list[tuple[int, asyncssh.SSHKey]]


def known_entries(path: Path, host: str, port: int) -> tuple[Entries, Entries]:
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

    def scan(name: str) -> tuple[Entries, Entries]:
        found: Entries = []
        revoked: Entries = []
        for lineno, entry in parsed:
            # Port None: the name is matched as given, without asyncssh's fallback.
            keys, _, bad, *_ = entry.match(name, "", None)
            found += [(lineno, key) for key in keys]
            revoked += [(lineno, key) for key in bad]
        return found, revoked

    found, revoked = scan(known_hosts_name(host, port))
    if port != 22 and not found:
        more, revoked_more = scan(host)
        return more, revoked + revoked_more
    return found, revoked


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 SHA256:...``, as ssh-keygen -l shows a key."""
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


def classify_host_key(
    slave: Slave,
    known_hosts: Path,
    *,
    entries: Entries,
    revoked: Entries,
    presented: asyncssh.SSHKey | None,
    reason: str,
) -> HostKeyError:
    """The error for a host key asyncssh could not verify (``reason`` its words)."""
    host, port, file = slave.host, slave.port, str(known_hosts)
    name = known_hosts_name(host, port)
    shown = fingerprint(presented) if presented is not None else None
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
            f"{fingerprint(known)} for it. Either the slave was re-keyed or something "
            f"else answers at its address: {check}; if it matches, accept it with "
            f"`{remove} && {keyscan}`. Nothing is pushed to it until known_hosts changes",
            host=host,
            port=port,
            known_hosts=file,
            line=line,
            lines=tuple(dict.fromkeys(n for n, _ in entries)),
            known=fingerprint(known),
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


async def presented_key(
    host: str, port: int, timeout: float, like: asyncssh.SSHKey | None = None
) -> asyncssh.SSHKey | None:
    """The host key ``host``'s sshd presents now (a key exchange, no login), of the
    same type as ``like`` when given; None when it cannot be had in ``timeout``."""
    algs: Sequence[str] = ()
    if like is not None:
        algs = [alg.decode("ascii") for alg in like.sig_algorithms]
    try:
        async with asyncio.timeout(timeout):
            return await asyncssh.get_server_host_key(
                host,
                port,
                server_host_key_algs=algs or (),
                config=[],
                options=host_key_options(),
            )
    except (OSError, asyncssh.Error, ValueError):  # TimeoutError is an OSError
        return None


@dataclass(frozen=True, slots=True)
class HostKeyCheck:
    """A slave's entries in known_hosts beside the key its sshd presents now."""

    slave: Slave
    known_hosts: Path
    entries: Entries
    revoked: Entries
    #: None: the key exchange failed, no key could be had.
    presented: asyncssh.SSHKey | None

    @property
    def known_lines(self) -> list[int]:
        """The lines that hold the presented key, none when it is also revoked."""
        key = self.presented
        if key is None or any(k.public_data == key.public_data for _, k in self.revoked):
            return []
        return [n for n, k in self.entries if k.public_data == key.public_data]

    def error(self, reason: str = "") -> HostKeyError:
        """The error to report when the key is not accepted (``reason``: asyncssh's)."""
        return classify_host_key(
            self.slave,
            self.known_hosts,
            entries=self.entries,
            revoked=self.revoked,
            presented=self.presented,
            reason=reason,
        )


async def check_host_key(slave: Slave, known_hosts: Path, timeout: float) -> HostKeyCheck:
    """What known_hosts holds for ``slave`` and which key it presents: one of the
    known type first, else any (it may offer no key of the known type)."""
    entries, revoked = known_entries(known_hosts, slave.host, slave.port)
    like = entries[0][1] if entries else None
    presented = await presented_key(slave.host, slave.port, timeout, like)
    if presented is None and like is not None:
        presented = await presented_key(slave.host, slave.port, timeout)
    return HostKeyCheck(slave, known_hosts, entries, revoked, presented)
