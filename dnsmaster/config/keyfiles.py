"""The files an SSH slave is reached with, checked when the configuration loads.

Private keys are read and parsed here, not at the first push: a key with a
passphrase, or a file that is no private key, would otherwise surface only as a
failed push per slave, retried forever. What is legal but unsafe (files others may
write, a key others may read) comes back as warnings for the caller to log.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from dnsmaster.config.reader import expand_home
from dnsmaster.errors import ConfigError
from dnsmaster.fsutil import account, describe

__all__ = ["default_known_hosts", "known_hosts_readable", "private_key", "writable_by_anyone"]


def default_known_hosts(path: Path) -> Path:
    # Never fall back to "no checking": the account's own known_hosts, or an error.
    try:
        return expand_home("~/.ssh/known_hosts")
    except ValueError as exc:
        raise ConfigError(str(path), "known_hosts", f"missing, and {exc}") from None


def known_hosts_readable(path: Path, file: Path) -> None:
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            str(path),
            "known_hosts",
            f"cannot read {file} as {account()}: {describe(exc)}; every SSH slave's host key "
            f"is checked against it: create it (`ssh-keyscan -p PORT HOST >> {file}`, then "
            "compare the keys with the slaves'), or set known_hosts to the file that holds them",
        ) from None


#: Far beyond any private key (an 16384-bit RSA key is 13 kB): a bigger file is not
#: one, and reading it whole would only waste memory.
_KEY_SIZE_MAX = 1 << 20


def private_key(path: Path, key: str, file: Path) -> list[str]:
    """Check that ``file`` holds a private key usable without a passphrase.

    Raises ConfigError (naming ``key``) when it is not; returns the warnings about
    its permissions.
    """

    def error(reason: str) -> ConfigError:
        return ConfigError(str(path), key, f"{file}: {reason}")

    try:
        # O_NONBLOCK: a key path naming a FIFO must not hang the start.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            str(path), key, f"cannot read {file} as {account()}: {describe(exc)}"
        ) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error("cannot read: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise error("not a regular file, so not a private key")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(_KEY_SIZE_MAX + 1)
    except OSError as exc:
        raise error(f"cannot read: {describe(exc)}") from None
    finally:
        os.close(fd)
    if not data.strip():
        raise error("empty file, not a private key")
    if len(data) > _KEY_SIZE_MAX:
        raise error("over 1 MiB: not a private key")
    _parse_private_key(data, file, error)
    return _key_permissions(key, file, info.st_mode)


def _parse_private_key(data: bytes, file: Path, error: Callable[[str], ConfigError]) -> None:
    # Imported here: asyncssh costs 0.16 s to import, which `build` and `check`
    # need not pay when no SSH slave is configured.
    from dnsmaster.sshlib import asyncssh  # noqa: PLC0415

    try:
        asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        reason = str(exc)
        if "assphrase" in reason:
            # The SSH channel (transport/ssh.py) connects without an agent and
            # cannot ask for a passphrase.
            raise error(
                "the private key is encrypted with a passphrase; dnsmaster needs a key "
                "without a passphrase; make one with ssh-keygen -t ed25519 -N '' "
                f"(or remove this one's: ssh-keygen -p -N '' -f {file})"
            ) from None
        if _is_public_key(data):
            fix = ": name the file without .pub" if file.suffix == ".pub" else ""
            raise error(f"a public key, not a private key{fix}") from None
        if reason == "Invalid private key":
            reason = "not in a format ssh-keygen writes (OpenSSH, PEM or PKCS#8)"
        raise error(f"not a private key: {reason}") from None


def _is_public_key(data: bytes) -> bool:
    from dnsmaster.sshlib import asyncssh  # noqa: PLC0415

    try:
        asyncssh.import_public_key(data)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def _key_permissions(key: str, file: Path, mode: int) -> list[str]:
    # OpenSSH's ssh refuses a key whose mode has any of 0o077 set ("UNPROTECTED
    # PRIVATE KEY FILE"); asyncssh does not check, so we say it ourselves.
    if mode & 0o077 == 0:
        return []
    return [
        f"{key}: {file}: the private key has mode {stat.S_IMODE(mode):04o}, open to group "
        f"or others: whoever can read it can log in to the slaves, and OpenSSH refuses "
        f"such a key; fix: chmod 600 {file}"
    ]


def writable_by_anyone(file: Path, what: str, risk: str) -> list[str]:
    """A warning when any user may write ``file`` (a missing file is no warning)."""
    try:
        mode = file.stat().st_mode
    except OSError:
        return []  # what must exist is checked elsewhere, with a clear error
    if not mode & stat.S_IWOTH:
        return []
    return [
        f"{file}: {what} is writable by anyone (mode {stat.S_IMODE(mode):04o}): any local "
        f"user could {risk}; fix: chmod o-w {file}"
    ]
