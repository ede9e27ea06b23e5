"""A master command's request handed to the running daemon that holds the output
directory's lock, and what the daemon did reported in the words the command would
use doing it itself.

``build``, ``push``, ``wait`` and ``rollback`` find the daemon with
:func:`dnsmaster.commands.common.one_writer`, and import this module only then (or,
for ``push``, ``wait`` and ``rollback``, to check that the daemon runs the slaves
they name): a build or push with no daemon running does not pay for the state
file's reader and the guard.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dnsmaster.commands.common import usage_error
from dnsmaster.core.banner import built_from
from dnsmaster.errors import BuildError, DataErrors
from dnsmaster.exits import EXIT_DATA, EXIT_HELD, EXIT_OK, EXIT_SLAVES, EXIT_SYSTEM
from dnsmaster.master import handoff
from dnsmaster.master import state as statefile
from dnsmaster.master.handoff import ACCEPT_FILE

if TYPE_CHECKING:
    from dnsmaster.config import Config
    from dnsmaster.master.build import Builder

__all__ = [
    "daemon_runs",
    "hand_off",
    "handed_off",
    "names_held",
    "slave_reporter",
]


def daemon_runs(cfg: Config, names: Sequence[str], logger: Any) -> int:
    """EXIT_OK when no daemon runs or it runs every slave named; else EXIT_USAGE,
    saying why (a slave added to the file after the daemon loaded it) and the fix.

    A request for a slave the daemon does not run would wait for an outcome that
    never comes, until the hand-off's timeout. A daemon that runs them all on an
    older version of the file is only warned about: it does the work as it is set.
    """
    why = handoff.unknown_slaves(cfg.state, cfg.path, names, grace=handoff.RELOAD_GRACE)
    if why is not None:
        return usage_error(why)
    if handoff.config_behind(cfg.state, cfg.path):
        logger.warning(
            "handoff.config_behind",
            config=str(cfg.path),
            hint="the daemon works with the configuration it loaded before the file "
            f"changed; send it SIGHUP ({handoff.SIGHUP_HOW}) to apply the file",
        )
    return EXIT_OK


def hand_off(
    cfg: Config,
    daemon: int,
    builder: Builder,
    slaves: Sequence[str],
    logger: Any,
    *,
    repush: bool = False,
    accept: str | None = None,
) -> int:
    """Have the running daemon build (and push), and report what it did.

    With ``accept`` (``push --accept [BUILD]``), release the build its guard holds
    (SIGUSR2, with the held build's sha256 in the output directory, so only that
    build is released), if BUILD names it.
    """
    signum = None
    held: statefile.HeldBuild | None = None
    request: str | None = None
    timeout = cfg.push.timeout + cfg.daemon.max_delay + handoff.GRACE
    # ^C from before the request file is written withdraws it (handoff.interruptible).
    with handoff.interruptible():
        if accept is not None:
            try:
                held = statefile.read(cfg.state).held
            except (OSError, ValueError) as exc:
                logger.error("guard.accept_failed", path=str(cfg.state), error=str(exc))
                return EXIT_SYSTEM
            if held is None:
                logger.info("guard.nothing_held", daemon=daemon)
                return EXIT_OK
            if not names_held(accept, held, logger):
                return EXIT_HELD
            name = handoff.instance(cfg.state, daemon)
            if name is None:
                logger.error("handoff.failed", daemon=daemon, error=handoff.NO_INSTANCE)
                return EXIT_SYSTEM
            request = handoff.request_text(daemon=name, timeout=timeout, sha256=held.sha256)
            signum = signal.SIGUSR2
        try:
            if request is not None and held is not None:
                # In the try: a ^C while the file is put in place withdraws it too.
                handoff.put_request(cfg.output / ACCEPT_FILE, request)
                logger.info(
                    "guard.accept", serial=held.serial, sha256=held.sha256[:16], daemon=daemon
                )
            return _follow_daemon(
                cfg, daemon, builder, slaves, logger, repush=repush, held=held, signum=signum
            )
        finally:
            # Unanswered (the daemon stopped, or this command was interrupted): no
            # daemon may carry it out later, when nobody waits for it.
            if request is not None and handoff.withdraw(cfg.output / ACCEPT_FILE, request):
                logger.warning("handoff.withdrawn", daemon=daemon, file=ACCEPT_FILE)


def _follow_daemon(
    cfg: Config,
    daemon: int,
    builder: Builder,
    slaves: Sequence[str],
    logger: Any,
    *,
    repush: bool,
    held: Any,
    signum: int | None,
) -> int:
    """Signal the daemon for a build (a push again, an accept) and report it."""
    try:
        if held is not None:
            fingerprint = held.fingerprint or ""
        elif repush:
            with (cfg.output / "data").open("rb") as f:
                fingerprint = built_from(f.readline(300)) or ""
        else:
            fingerprint = builder.fingerprint()
            # Already built: push it to every slave again, as a push by hand always did.
            repush = bool(slaves) and builder.is_current()
    except (BuildError, DataErrors, OSError) as exc:
        logger.error("build.failed", error=str(exc), changed=False)
        return EXIT_SYSTEM
    logger.info(
        "handoff.start",
        daemon=daemon,
        request="accept the held build"
        if held is not None
        else "push again"
        if repush
        else "build if changed",
        slaves=len(slaves),
    )

    def built(build: Any) -> None:
        logger.info("build.done", serial=build.serial, sha256=build.sha256[:16], by="daemon")

    outcome = handoff.follow(
        cfg.state,
        daemon,
        fingerprint=fingerprint,
        repush=repush,
        slaves=slaves,
        timeout=cfg.push.timeout + cfg.daemon.max_delay + handoff.GRACE,
        on_slave=slave_reporter(logger),
        on_build=built,
        signum=signum,
    )
    return handed_off(outcome, daemon, slaves, logger)


def names_held(spec: str, held: Any, logger: Any) -> bool:
    """Whether ``push --accept SPEC`` names the daemon's held build (logged if not)."""
    from dnsmaster.master import guarded  # noqa: PLC0415 - `wait` comes here without it

    if guarded.names(spec, held.serial, held.sha256):
        return True
    logger.error(
        "guard.not_accepted",
        accepted=spec,
        serial=held.serial,
        sha256=held.sha256[:16],
        error="--accept names another build than the one held; nothing pushed",
        hint=f"dnsmaster diff shows what it changes; dnsmaster push --accept {held.serial}",
    )
    return False


def slave_reporter(logger: Any) -> Callable[[str, Any], None]:
    """What logs each slave's outcome as a daemon that was handed a request reports it."""

    def slave_done(name: str, slave: Any) -> None:
        if slave.result == "ok":
            logger.info("push.done", slave=name, serial=slave.installed_serial, by="daemon")
        else:
            logger.error("push.failed", slave=name, error=slave.error, by="daemon")

    return slave_done


def handed_off(
    outcome: Any,
    daemon: int,
    slaves: Sequence[str],
    logger: Any,
    *,
    late: str = "the daemon did not build in time",
) -> int:
    """Report what the daemon did with a hand-off (:func:`dnsmaster.master.handoff.follow`,
    :func:`~dnsmaster.master.handoff.follow_request`); ``late`` says a daemon that did not."""
    if outcome.held is not None and outcome.held_by == "rollback":
        logger.error("rollback.held", reason=outcome.held, by="daemon")
        return EXIT_DATA
    if outcome.held is not None:
        logger.critical(
            "guard.held",
            reason=outcome.held,
            by="daemon",
            hint="check with dnsmaster diff; release with dnsmaster push --accept",
        )
        return EXIT_HELD
    if outcome.build_failed:
        error = outcome.build.error if outcome.build else None
        logger.error("build.failed", error=error, by="daemon", hint="dnsmaster check")
        return EXIT_DATA
    failed = [n for n, why in outcome.slaves.items() if why is not None]
    for name in outcome.pending:
        logger.error("push.failed", slave=name, error="no outcome from the daemon in time")
    if slaves:
        logger.info(
            "push.end",
            ok=len(slaves) - len(failed) - len(outcome.pending),
            failed=len(failed) + len(outcome.pending),
        )
    if outcome.build is None:
        logger.error("handoff.failed", daemon=daemon, error=late)
        return EXIT_SYSTEM
    return EXIT_SLAVES if failed or outcome.pending else EXIT_OK
