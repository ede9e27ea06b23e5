"""``dnsmaster run``: the long-running loop and its parts.

:mod:`~dnsmaster.daemon.loop` (the Daemon: start, serve, shut down; nothing dies
quietly), :mod:`~dnsmaster.daemon.building` (the build loop), :mod:`~dnsmaster.daemon.holds`
(the guard's hold, a rollback in force, hand-off requests), :mod:`~dnsmaster.daemon.statefile`
(the state file and its heartbeat), :mod:`~dnsmaster.daemon.signals` (signals, SIGHUP's
reload), :mod:`~dnsmaster.daemon.worker` (one per slave), and the watcher, debouncer,
hooks and metrics.
"""

import signal

__all__ = ["SIGNALS"]

#: The signals the daemon acts on (:mod:`~dnsmaster.daemon.signals` says how).
#: ``dnsmaster run`` blocks them from its start until their handlers are in place:
#: one that came while the daemon loads would otherwise end it (Python's default
#: action for SIGHUP, SIGALRM and the SIGUSRs), and a supervisor's ``svc -h`` right
#: after a restart would cost a restart instead of a reload. This module is the
#: package's and costs nothing to import, so the block comes before the daemon's
#: imports.
SIGNALS = frozenset(
    (
        signal.SIGHUP,
        signal.SIGALRM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTERM,
        signal.SIGINT,
    )
)
