"""The log of a supervised daemon and of every command: one line per event.

One line per event on stderr. logfmt without a timestamp by default, because
multilog and svlogd stamp every line themselves; JSON and an ISO timestamp on
request. Every event is a short dotted name (``push.done``) with its context as
keys, never values pasted into prose.

Values often quote what came from outside (a zones line, a file name, a slave's
output). In logfmt a control character in a value could forge a line or rewrite
the terminal of whoever tails the log, so every one of them is escaped as
``\\xNN`` before rendering (JSON escapes them itself).

The lines are those structlog's ``LogfmtRenderer`` (``key_order=["timestamp",
"level", "event"]``, ``drop_missing``, no bool flags) and ``JSONRenderer`` wrote
when this module configured structlog, and the logger has the methods of its
filtering bound logger that dnsmaster calls. It is written here because every
``dnsmaster`` process logs and importing structlog (which imports asyncio, ssl,
pickle and more) took a third of a ``dnsmaster build``'s start-up: this module
imports only what the standard library has loaded before any code runs, and the
JSON and traceback modules when a line needs them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "FORMATS",
    "LEVELS",
    "EventDict",
    "Logger",
    "capture",
    "capture_warnings",
    "configure",
    "escape_controls",
    "get_logger",
    "set_level",
]

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warning", "error")

#: One event as the processors see it: its keys, then ``event``, ``level`` and
#: (with timestamps) ``timestamp``, in that order.
EventDict = MutableMapping[str, Any]

# The numbers of Python's logging module, which the configuration's level names.
_DEBUG, _INFO, _WARNING, _ERROR, _CRITICAL = 10, 20, 30, 40, 50
_NUMBERS = {"debug": _DEBUG, "info": _INFO, "warning": _WARNING, "error": _ERROR}
_NUMBERS["critical"] = _CRITICAL
_KEY_ORDER = ("timestamp", "level", "event")

# C0 controls but the newline (logfmt writes it as \n itself), DEL and C1 controls.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x0A}


def escape_controls(_: object, __: str, event_dict: EventDict) -> EventDict:
    """A processor: control characters in string values become ``\\xNN``."""
    for key, value in event_dict.items():
        if isinstance(value, str) and not value.isprintable():
            event_dict[key] = value.translate(_CONTROLS)
    return event_dict


class _Setup:
    """What :func:`configure` chose; read at every event, so a logger got before
    :func:`configure` writes as it says."""

    fmt: str = "logfmt"
    timestamps: bool = False
    minimum: int = _INFO
    #: None: the ``sys.stderr`` of the moment (a test's capture, a redirection).
    stream: TextIO | None = None
    #: With :func:`capture`: the events are collected here instead of written.
    captured: list[EventDict] | None = None


_setup = _Setup()
# One line at a time from the daemon's threads (asyncio.to_thread, the workers).
_write_lock = threading.Lock()


def configure(
    *,
    fmt: Literal["logfmt", "json"] | str = "logfmt",
    timestamps: bool = False,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Send every event to ``stream`` (stderr) as one logfmt or JSON line."""
    _setup.fmt = fmt
    _setup.timestamps = timestamps
    _setup.minimum = _NUMBERS[level.lower()]
    _setup.stream = stream


def set_level(level: str) -> None:
    """Log from ``level`` up from now on, the format as :func:`configure` set it."""
    _setup.minimum = _NUMBERS[level.lower()]


class Logger:
    """The process's logger: ``logger.info("push.done", slave="ns2")``.

    An event below the configured level costs one comparison. ``exc_info`` (an
    exception, its ``sys.exc_info()`` tuple, or True for the one being handled)
    becomes the ``exception`` key, the traceback as Python prints it.
    """

    __slots__ = ()

    def debug(self, event: str, **kw: Any) -> None:
        """Log ``event`` at level debug."""
        if _setup.minimum <= _DEBUG:
            _emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log ``event`` at level info."""
        if _setup.minimum <= _INFO:
            _emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log ``event`` at level warning."""
        if _setup.minimum <= _WARNING:
            _emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log ``event`` at level error."""
        if _setup.minimum <= _ERROR:
            _emit("error", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        """Log ``event`` at level critical."""
        _emit("critical", event, kw)


_logger = Logger()


def get_logger() -> Logger:
    """The process's logger; :func:`configure` sets where and how it writes."""
    return _logger


def _emit(level: str, event: str, kw: dict[str, Any]) -> None:
    event_dict: EventDict = kw  # a fresh dict: the call's own keywords
    event_dict["event"] = event
    if _setup.captured is not None:
        event_dict["log_level"] = level
        _setup.captured.append(event_dict)
        return
    event_dict["level"] = level
    if "exc_info" in event_dict:
        _format_exc_info(event_dict)
    if _setup.timestamps:
        from datetime import UTC, datetime  # noqa: PLC0415 - only JSON logs ask for time

        event_dict["timestamp"] = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
    if _setup.fmt == "json":
        import json  # noqa: PLC0415 - logfmt, the default, needs no json

        line = json.dumps(event_dict, default=repr)
    else:
        line = _logfmt(escape_controls(None, level, event_dict))
    stream = _setup.stream or sys.stderr
    with _write_lock:
        # Flushed at once: a supervisor's log service sees each line as it comes.
        print(line, file=stream, flush=True)


def _format_exc_info(event_dict: EventDict) -> None:
    found = event_dict.pop("exc_info")
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None
    if isinstance(found, BaseException):
        exc_info = (type(found), found, found.__traceback__)
    elif isinstance(found, tuple) and len(found) == 3:  # sys.exc_info()
        exc_info = found
    elif found and sys.exc_info()[1] is not None:
        exc_info = sys.exc_info()  # type: ignore[assignment]
    if exc_info is not None:
        import traceback  # noqa: PLC0415 - only a crash renders one

        event_dict["exception"] = "".join(traceback.format_exception(*exc_info)).removesuffix("\n")


def _logfmt(event_dict: EventDict) -> str:
    items = []
    for key in _KEY_ORDER:
        value = event_dict.pop(key, None)
        if value is not None:
            items.append((key, value))
    items += event_dict.items()
    elements = []
    for key, value in items:
        if any(c <= " " for c in key):
            raise ValueError(f'Invalid key: "{key}"')
        if value is None:
            elements.append(f"{key}=")
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = str(value)
        quoted = " " in text or "=" in text or '"' in text
        if quoted and "\\" in text:
            text = text.replace("\\", "\\\\")
        text = text.replace('"', '\\"').replace("\n", "\\n")
        elements.append(f'{key}="{text}"' if quoted else f"{key}={text}")
    return " ".join(elements)


@contextlib.contextmanager
def capture() -> Iterator[list[EventDict]]:
    """For tests: the events logged in the block, none written; each is its keys,
    ``event`` and ``log_level`` (as ``structlog.testing.capture_logs`` had them)."""
    before = _setup.captured
    _setup.captured = []
    try:
        yield _setup.captured
    finally:
        _setup.captured = before


def capture_warnings() -> None:
    """Send every Python warning to the log as one ``python.warning`` event.

    Python prints a warning as two lines of raw text on stderr, which would land
    between the log's lines (and break ``--log-format json``); a dependency that
    starts to warn after an upgrade must show up as an event an operator can grep.
    """
    warnings.showwarning = _log_warning


def _log_warning(  # noqa: PLR0917 (warnings.showwarning's signature)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    # Before the command set its log up, this is logfmt on stderr (the default).
    get_logger().warning(
        "python.warning",
        category=category.__name__,
        message=str(message),
        where=f"{filename}:{lineno}",
    )
