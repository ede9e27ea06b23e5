"""The exception families of dnsmaster.

Every error the program reports on purpose derives from :class:`DnsmasterError`,
and each carries its facts as fields as well as in its message. The families are
kept apart so callers can tell "our data is bad" (never retry, keep the last good
build) from "a slave failed" (retry with backoff, unless the error says retrying
cannot help)::

    DnsmasterError
    ├── TinydnsDataError      data line (lineno, reason): tinydns-data's own words
    ├── NameTooLong           a DNS name past its limits (also a ValueError)
    ├── CdbTooLarge           a cdb that would pass 4 GiB (also a ValueError)
    ├── DataError             zones file and line (file, line, reason)
    ├── DataErrors            every DataError of one build (errors)
    ├── BuildError            a file the build reads or writes (path, reason, errors)
    ├── ConfigError           the config file and key (path, key, reason)
    ├── ServiceConfError      a service directory not made (status)
    ├── WatchError            the zones directory (path, reason)
    ├── ReceiveError          the receiver refusing a push, on the slave itself
    ├── AllowlistError        a confined master's name or domains (domain, reason)
    ├── ArchiveError          the master's kept builds, or a rollback (path, reason)
    ├── DeltaError            a delta push that cannot be applied (reason)
    ├── TransferError         an AXFR asked of axfrdns or a secondary (server, zone, reason)
    └── SlaveError            one slave (slave, phase, reason, exit_status, retryable)
        └── HostKeyError          its host key (host, port, known_hosts, presented)
            ├── HostKeyUnknown        known_hosts has no key for it
            └── HostKeyChanged        known_hosts has another key (line, known)

The two the pure core raises for values out of range stay ValueErrors too, as
Python's own checks of a value are.

This module does no I/O of its own (:meth:`ConfigError.report` writes to the stream
it is given), so the pure core may import it.
"""

from __future__ import annotations

from typing import Literal, TextIO

__all__ = [
    "AllowlistError",
    "ArchiveError",
    "BuildError",
    "CdbTooLarge",
    "ConfigError",
    "DataError",
    "DataErrors",
    "DeltaError",
    "DnsmasterError",
    "HostKeyChanged",
    "HostKeyError",
    "HostKeyUnknown",
    "NameTooLong",
    "ReceiveError",
    "ServiceConfError",
    "SlaveError",
    "SlavePhase",
    "TinydnsDataError",
    "TransferError",
    "WatchError",
    "reason",
]


def reason(exc: BaseException) -> str:
    """An error's reason for a log line or a report: its own words, else its type's
    name ("timed out" for a timeout, whose own words are none)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return str(text) or type(exc).__name__


class DnsmasterError(Exception):
    """dnsmaster failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else (self.__doc__ or "").strip()
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class TinydnsDataError(DnsmasterError):
    """tinydns-data refused the data.

    ``message`` is exactly what tinydns-data prints after ``tinydns-data: fatal: ``
    (``unable to parse data line 4: unrecognized leading character``, or the bare
    ``protocol error`` it gives for over-long names). ``lineno`` is the 1-based data
    line at fault, which we always know even where tinydns-data does not say it, and
    ``reason`` says in plain words what is wrong with that line.
    """

    def __init__(self, message: str, *, lineno: int, reason: str) -> None:
        super().__init__(message)
        self.lineno = lineno
        self.reason = reason


class NameTooLong(DnsmasterError, ValueError):
    """A name does not fit the DNS limits (a label over 63 bytes, a name over 255).

    tinydns-data dies on it with ``protocol error``; the message says which limit.
    """


class CdbTooLarge(DnsmasterError, ValueError):
    """The database would pass 4 GiB, where cdb's 32-bit positions end (§8.4)."""


class DataError(DnsmasterError):
    """A zones file has a line that must not be published.

    Carries the file name and 1-based line number so the operator can go straight
    to it: ``zones.example:12: label longer than 63 bytes``.
    """

    def __init__(self, file: str, line: int, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        super().__init__(f"{file}:{line}: {reason}")


class DataErrors(DnsmasterError):
    """Zones files have lines that must not be published.

    ``errors`` lists every :class:`DataError` found, in file and line order.
    """

    def __init__(self, errors: tuple[DataError, ...]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")


class BuildError(DnsmasterError):
    """A build could not read its input or write its output.

    ``path`` names the file or directory, ``reason`` what went wrong with it.
    ``errors`` holds every :class:`DataError` when the build failed on bad data.
    """

    def __init__(self, path: str, reason: str, errors: tuple[DataError, ...] = ()) -> None:
        self.path = path
        self.reason = reason
        self.errors = errors
        super().__init__(f"{path}: {reason}")


class ConfigError(DnsmasterError):
    """The configuration file is wrong; ``key`` names the offending key."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        # No file yet (no --config, no $DNSMASTER_CONFIG): the reason alone, not ": reason".
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {reason}" if where else reason)

    def report(self, stream: TextIO) -> int:
        """Tell the operator, the one way every command does, and give the exit status.

        One line on ``stream`` (stderr), ``dnsmaster: FILE: key: reason``, whatever
        the log format: the command stops before it logs anything. The status is 2,
        a usage error's.
        """
        stream.write(f"dnsmaster: {self}\n")
        return 2


class ServiceConfError(DnsmasterError):
    """``dnsmaster service-conf`` made no service directory; ``status`` is its exit status
    (2, a usage error, unless the system failed it)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


#: Where a slave's push or status request failed: a file on the master that the
#: running account cannot use, a private key or known_hosts (``local``: the slave was
#: not asked), reaching it (``connect``), its host key (``hostkey``), logging in
#: (``auth``), the connection breaking while data or output flowed (``transfer``),
#: the receiver's non-zero exit (``receive``, or ``status`` for the status verb), or
#: the push's deadline (``timeout``).
SlavePhase = Literal[
    "local", "connect", "hostkey", "auth", "transfer", "receive", "status", "timeout"
]


class SlaveError(DnsmasterError):
    """Pushing to one slave failed; the other slaves are not affected.

    ``phase`` says where (:data:`SlavePhase`), ``reason`` what went wrong in words
    an operator can act on, ``exit_status`` the receiver's exit status when it ran.
    ``retryable`` is False when trying the same thing again cannot help until an
    operator acts (a changed host key, a refused build): a daemon waits for that
    instead of backing off and retrying.
    """

    def __init__(
        self,
        slave: str,
        reason: str,
        exit_status: int | None = None,
        *,
        phase: SlavePhase = "receive",
        retryable: bool = True,
    ) -> None:
        self.slave = slave
        self.reason = reason
        self.exit_status = exit_status
        self.phase: SlavePhase = phase
        self.retryable = retryable
        super().__init__(f"slave {slave}: {reason}")


class HostKeyError(SlaveError):
    """A slave's host key cannot be verified against known_hosts; nothing was sent.

    ``host``/``port`` are what was connected to, ``known_hosts`` the file checked,
    ``presented`` the fingerprint of the key the slave showed (None when it could
    not be fetched). Never retryable: only an operator who checks the key and
    edits ``known_hosts`` can fix it.
    """

    def __init__(
        self,
        slave: str,
        reason: str,
        *,
        host: str,
        port: int,
        known_hosts: str,
        presented: str | None = None,
    ) -> None:
        super().__init__(slave, reason, phase="hostkey", retryable=False)
        self.host = host
        self.port = port
        self.known_hosts = known_hosts
        self.presented = presented


class HostKeyUnknown(HostKeyError):
    """known_hosts holds no key for the slave; ``accept`` are the commands that add it."""

    def __init__(
        self,
        slave: str,
        reason: str,
        *,
        host: str,
        port: int,
        known_hosts: str,
        presented: str | None = None,
        accept: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            slave, reason, host=host, port=port, known_hosts=known_hosts, presented=presented
        )
        self.accept = accept


class HostKeyChanged(HostKeyError):
    """The slave presents a key other than the one known_hosts holds for it.

    Either the slave was re-keyed (reinstalled, keys regenerated) or something
    else answers at its address. ``line`` is the 1-based known_hosts line of the
    stale entry (``lines`` all of them), ``known`` its key's fingerprint, and
    ``accept`` the commands that replace it once the new key is checked.
    """

    def __init__(
        self,
        slave: str,
        reason: str,
        *,
        host: str,
        port: int,
        known_hosts: str,
        line: int,
        lines: tuple[int, ...] = (),
        known: str | None = None,
        presented: str | None = None,
        accept: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            slave, reason, host=host, port=port, known_hosts=known_hosts, presented=presented
        )
        self.line = line
        self.lines = lines or (line,)
        self.known = known
        self.accept = accept


class TransferError(DnsmasterError):
    """A zone transfer (AXFR over TCP) asked of ``server`` for ``zone`` gave no whole
    zone; ``reason`` says what happened instead (refused, closed, timed out)."""

    def __init__(self, server: str, zone: str, reason: str) -> None:
        self.server = server
        self.zone = zone
        self.reason = reason
        super().__init__(f"AXFR {zone} from {server}: {reason}")


class ArchiveError(DnsmasterError):
    """The master's kept builds cannot be written or read, or have no such build.

    ``path`` names the kept build or their directory, ``reason`` what is wrong
    (for a rollback's ``--to``, which builds are kept).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DeltaError(DnsmasterError):
    """A delta push cannot be applied: malformed, another base, or a wrong result.

    ``reason`` says which; the master answers with a full push.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ReceiveError(DnsmasterError):
    """The receiving side refused a push; the installed data is unchanged."""


class AllowlistError(DnsmasterError):
    """A confined master's name or allowlist cannot be used (``--master``,
    ``--allow``, ``--except`` of a key line).

    ``domain`` is the value at fault, printable (empty when none is), ``reason``
    what is wrong with it.
    """

    def __init__(self, domain: str, reason: str) -> None:
        self.domain = domain
        self.reason = reason
        super().__init__(f"{domain}: {reason}" if domain else reason)


class WatchError(DnsmasterError):
    """The zones directory cannot be watched, so saved changes would go unnoticed.

    ``path`` names the directory, ``reason`` what is wrong with it (missing, not a
    directory, removed while watched, out of inotify watches...).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
