"""``dnsmaster run``: the long-running loop and its parts.

:mod:`~dnsmaster.daemon.loop` (the Daemon: start, serve, shut down; nothing dies
quietly), :mod:`~dnsmaster.daemon.building` (the build loop), :mod:`~dnsmaster.daemon.holds`
(the guard's hold, a rollback in force, hand-off requests), :mod:`~dnsmaster.daemon.statefile`
(the state file and its heartbeat), :mod:`~dnsmaster.daemon.signals` (signals, SIGHUP's
reload), :mod:`~dnsmaster.daemon.worker` (one per slave), and the watcher, debouncer,
hooks and metrics.
"""
