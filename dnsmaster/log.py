"""structlog set up for a supervised daemon.

One line per event on stderr. logfmt without a timestamp by default, because
multilog and svlogd stamp every line themselves; JSON and an ISO timestamp on
request. Every event is a short dotted name (``push.done``) with its context as
keys, never values pasted into prose.

Values often quote what came from outside (a zones line, a file name, a slave's
output). In logfmt a control character in a value could forge a line or rewrite
the terminal of whoever tails the log, so every one of them is escaped as
``\\xNN`` before rendering (JSON escapes them itself).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from typing import Any, Literal, TextIO


class _Deferred(types.ModuleType):
    """A module in ``sys.modules`` whose code has not run yet: it runs at the first
    look at any of its names, in whichever thread looks first (the others wait).
    ``import`` itself looks only at ``__spec__``, which does not run it."""

    def __getattribute__(self, name: str) -> Any:
        spec = types.ModuleType.__getattribute__(self, "__spec__")
        if name != "__spec__":
            with _DEFERRED_LOCK:
                # type() does not look through the instance: no recursion here
                if type(self) is _Deferred and spec.name not in _RUNNING:
                    _RUNNING.add(spec.name)
                    try:
                        spec.loader.exec_module(self)
                    except BaseException:
                        sys.modules.pop(spec.name, None)  # as a failed import leaves it
                        raise
                    finally:
                        _RUNNING.discard(spec.name)
                    object.__setattr__(self, "__class__", types.ModuleType)
        return types.ModuleType.__getattribute__(self, name)


_DEFERRED_LOCK = threading.RLock()
_RUNNING: set[str] = set()


def _defer(name: str, within: list[str] | None = None) -> None:
    """Put ``name`` in ``sys.modules`` unrun (see :class:`_Deferred`), unless it is
    there already; ``within``: its package's directories (a submodule found without
    running the package's ``__init__``)."""
    if name in sys.modules:
        return
    if within is None:
        spec = importlib.util.find_spec(name)
    else:
        spec = importlib.machinery.PathFinder.find_spec(name, within)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module


# Importing structlog imports every module of it, and with them asyncio (which
# brings ssl, socket, selectors, subprocess...), its stdlib-logging bridge and its
# deprecated thread-local context (uuid, platform): a quarter of a one-shot
# build's start-up, none of which the log uses (a daemon or a push imports
# asyncio itself, and then it runs). Deferred: each runs when first used.
_defer("asyncio")
_STRUCTLOG = importlib.util.find_spec("structlog")
if _STRUCTLOG is not None and _STRUCTLOG.submodule_search_locations is not None:
    for _name in ("structlog.stdlib", "structlog.threadlocal"):
        _defer(_name, list(_STRUCTLOG.submodule_search_locations))

import structlog  # noqa: E402 - after the deferrals above
import structlog.testing  # noqa: E402
from structlog.typing import EventDict  # noqa: E402

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

Logger = structlog.typing.FilteringBoundLogger


# C0 controls but the newline (logfmt writes it as \n itself), DEL and C1 controls.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x0A}


def escape_controls(_: object, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: control characters in string values become ``\\xNN``."""
    for key, value in event_dict.items():
        if isinstance(value, str) and not value.isprintable():
            event_dict[key] = value.translate(_CONTROLS)
    return event_dict


def configure(
    *,
    fmt: Literal["logfmt", "json"] | str = "logfmt",
    timestamps: bool = False,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Send every event to ``stream`` as one logfmt or JSON line; without one, to
    whatever ``sys.stderr`` is when the line is written."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # exc_info=True (a crash) renders the traceback into the event's
        # ``exception`` key: still one line per event.
        structlog.processors.format_exc_info,
    ]
    if timestamps:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(sort_keys=False))
    else:
        processors.append(escape_controls)
        processors.append(
            structlog.processors.LogfmtRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True, bool_as_flag=False
            )
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # PrintLogger flushes each line: a supervisor's log service sees it at once.
        logger_factory=(
            structlog.PrintLoggerFactory(file=stream) if stream is not None else _Stderr
        ),
        cache_logger_on_first_use=False,
    )
    # A library's own logging (asyncio's "socket.send() raised exception.", say)
    # would print raw text between the log's lines: with no handler set up, Python
    # hands a warning or worse to logging.lastResort, which is made an event here.
    logging.lastResort = _LIBRARY_LOG


class _LibraryLog(logging.Handler):
    """A stdlib logging record from a library, as one ``python.log`` event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            get_logger().warning(
                "python.log",
                logger=record.name,
                severity=record.levelname.lower(),
                message=record.getMessage(),
            )
        except Exception:  # logging's rule: a handler never raises
            self.handleError(record)


_LIBRARY_LOG = _LibraryLog(logging.WARNING)


class _Stderr:
    """structlog's PrintLogger, but on the ``sys.stderr`` of each line's moment: a
    command run in process (a test's, whose capture closes after it) leaves no log
    pointing at a closed file."""

    def __init__(self, *_: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def set_level(level: str) -> None:
    """Log from ``level`` up from now on, the format as :func:`configure` set it."""
    # structlog.configure changes only what it is given: the renderer and stream stay.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper()))
    )


def get_logger() -> Logger:
    """The process's logger; call :func:`configure` first."""
    logger: Logger = structlog.get_logger()
    return logger


@contextlib.contextmanager
def capture() -> Iterator[list[EventDict]]:
    """For tests: the events logged in the block, none written; each is its keys,
    ``event`` and ``log_level``."""
    with structlog.testing.capture_logs() as events:
        yield events


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
    if not structlog.is_configured():
        configure()  # a warning before the command set up its log: logfmt on stderr
    get_logger().warning(
        "python.warning",
        category=category.__name__,
        message=str(message),
        where=f"{filename}:{lineno}",
    )
