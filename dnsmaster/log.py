"""structlog set up for a supervised daemon.

One line per event on stderr. logfmt without a timestamp by default, because
multilog and svlogd stamp every line themselves; JSON and an ISO timestamp on
request. Every event is a short dotted name (``push.done``) with its context as
keys, never values pasted into prose.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

__all__ = ["FORMATS", "LEVELS", "Logger", "configure", "get_logger"]

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warning", "error")

Logger = structlog.typing.FilteringBoundLogger


def configure(
    *,
    fmt: Literal["logfmt", "json"] | str = "logfmt",
    timestamps: bool = False,
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Send every event to ``stream`` (stderr) as one logfmt or JSON line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if timestamps:
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(sort_keys=False))
    else:
        processors.append(
            structlog.processors.LogfmtRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True, bool_as_flag=False
            )
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # PrintLogger flushes each line: a supervisor's log service sees it at once.
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Logger:
    """The process's logger; call :func:`configure` first."""
    logger: Logger = structlog.get_logger()
    return logger
