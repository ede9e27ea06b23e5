"""What the master's commands share: configuration and logging, usage errors, the
one-writer lock, and the build as a command reports it.

``build``, ``push``, ``wait`` and ``rollback`` take the output directory's lock
(:func:`one_writer`); when a running daemon holds it, they hand it the request
(:mod:`dnsmaster.commands.handing`). This module is on every master command's
path, so it imports only what they all need: the configuration, the builder and
the daemon's state file are loaded when a command asks for them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsmaster import fsutil, log
from dnsmaster.errors import BuildError, ConfigError, DataErrors
from dnsmaster.exits import EXIT_DATA, EXIT_OK, EXIT_SYSTEM, EXIT_USAGE

if TYPE_CHECKING:
    from dnsmaster.config import Config, Slave
    from dnsmaster.master.build import Builder

__all__ = [
    "builder_for",
    "config_and_log",
    "config_log_slaves",
    "load_config",
    "one_writer",
    "run_build",
    "usage_error",
]


def usage_error(message: str) -> int:
    """A usage error: one line on stderr, whatever the log format, in the shape of a
    configuration error's (:meth:`dnsmaster.errors.ConfigError.report`)."""
    sys.stderr.write(f"dnsmaster: {message}\n")
    return EXIT_USAGE


def load_config(args: argparse.Namespace) -> Config:
    """The configuration named by --config or $DNSMASTER_CONFIG."""
    # Imported here: the configuration's model and reader cost a new process about
    # 0.1 s, which `build --zones --out` and the commands without a file never need.
    from dnsmaster import config  # noqa: PLC0415

    return config.load(config.resolve_path(args.config, os.environ))


def config_and_log(args: argparse.Namespace) -> Config | None:
    """The configuration, with logging set up as it and --log-format say.

    None when the configuration is wrong; the error is on stderr by then.
    """
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        exc.report(sys.stderr)
        return None
    log.configure(
        fmt=args.log_format or cfg.log.format, timestamps=cfg.log.timestamps, level=cfg.log.level
    )
    for warning in cfg.warnings:
        log.get_logger().warning("config.warning", warning=warning)
    return cfg


def config_log_slaves(args: argparse.Namespace) -> tuple[Config, Any, list[Slave]] | None:
    """The configuration, the logger, and the slaves ``--slave`` names (all by default);
    None when either is wrong (the error is logged by then)."""
    cfg = config_and_log(args)
    if cfg is None:
        return None
    try:
        return cfg, log.get_logger(), list(cfg.select(args.slave))
    except ConfigError as exc:
        exc.report(sys.stderr)
        return None


@contextlib.contextmanager
def one_writer(output: Path, state: Path | None, logger: Any) -> Iterator[int | None]:
    """Hold the output directory's lock for the block, or yield the pid of the
    running daemon that holds it (the request is then handed to the daemon).

    Another ``build`` or ``push`` holding it is waited for, with a message.
    """
    try:
        lock = fsutil.DirectoryLock(output)
    except OSError:
        yield None  # no such directory: the build reports it in its own words
        return
    try:
        if not lock.try_acquire():
            daemon = _daemon_pid(state) if state is not None else None
            if daemon is not None:
                yield daemon
                return
            logger.info("lock.wait", path=str(output), holder="another dnsmaster build or push")
            lock.acquire()
        yield None
    finally:
        lock.release()


def builder_for(cfg: Config) -> Builder:
    """The Builder of the configuration's zones and output, for a caller that holds
    the output directory's lock (:func:`one_writer`)."""
    from dnsmaster.master.build import Builder  # noqa: PLC0415 - see the module's docstring

    return Builder(
        cfg.zones,
        cfg.output,
        strict=cfg.strict,
        ipv6_int=cfg.ipv6_int,
        catalog=cfg.catalog,
        max_file_size=cfg.max_file_size,
        locking=False,
        keep=cfg.daemon.keep,
    )


def run_build(builder: Builder, logger: Any) -> int:
    """One build, logged event by event; the exit status it deserves."""
    out = builder.output
    try:
        result = builder.build()
    except DataErrors as exc:
        for error in exc.errors:
            logger.error("build.error", file=error.file, line=error.line, error=error.reason)
        logger.error("build.failed", errors=len(exc.errors), output=str(out), changed=False)
        return EXIT_DATA
    except BuildError as exc:
        logger.error("build.failed", path=exc.path, error=exc.reason, changed=False)
        return EXIT_SYSTEM
    for name, reason in result.skipped:
        logger.info("build.skipped", file=name, reason=reason)
    for warning in result.warnings:
        logger.warning("build.warning", file=warning.file, line=warning.line, error=warning.reason)
    logger.info(
        "build.done",
        serial=result.serial,
        files=len(result.sources),
        lines=result.lines,
        records=result.records,
        cached=len(result.cached),  # files read back from the build cache, not compiled
        sha256=result.sha256[:16],
        seconds=round(result.seconds, 3),
        output=str(out),
    )
    return EXIT_OK


def _daemon_pid(state: Path) -> int | None:
    # Only a contended lock asks: the state file's reader is not on a lone build's path.
    from dnsmaster.master.handoff import daemon_pid  # noqa: PLC0415

    return daemon_pid(state)
