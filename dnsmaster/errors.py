"""The exception families of dnsmaster.

Every error the program reports on purpose derives from :class:`DnsmasterError`.
The families are kept apart so callers can tell "our data is bad" (never retry,
keep the last good build) from "a slave failed" (retry with backoff).

This module does no I/O, so the pure core may import it.
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConfigError",
    "DataError",
    "DataErrors",
    "DnsmasterError",
    "PushError",
    "ReceiveError",
    "TinydnsDataError",
    "WatchError",
]


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
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {reason}")


class PushError(DnsmasterError):
    """Pushing to one slave failed; the other slaves are not affected."""

    def __init__(self, slave: str, reason: str, exit_status: int | None = None) -> None:
        self.slave = slave
        self.reason = reason
        self.exit_status = exit_status
        super().__init__(f"slave {slave}: {reason}")


class ReceiveError(DnsmasterError):
    """The receiving side refused a push; the installed data is unchanged."""


class WatchError(DnsmasterError):
    """The zones directory cannot be watched, so saved changes would go unnoticed.

    ``path`` names the directory, ``reason`` what is wrong with it (missing, not a
    directory, removed while watched, out of inotify watches...).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
