"""What a SIGHUP's new configuration changes for a running daemon (pure).

The daemon re-reads its configuration file on SIGHUP and applies it at once:
slaves added, removed or changed, hooks, guard thresholds, the ``[daemon]`` and
``[push]`` timings, the watcher (``daemon.poll``, ``poll_interval``: the new one
starts before the old one stops, then a rescan catches a save made in between),
``strict``, ``max_file_size``, ``catalog`` (the next build has it, or not),
``metrics`` and ``log.level``.
A slave counts as changed when anything its connection is made of differs: its
own table, or for an SSH slave the top-level ``key`` and ``known_hosts`` and
``[push] connect_timeout``, ``keepalive_interval`` and ``host_key_recheck``. Its
worker is then restarted on a new connection. Standard secondaries
(``[[secondary]]``) added, removed or changed (their table or ``[notify]``) are
handled alike by :mod:`dnsmaster.daemon.secondary`: a new or changed one is fed the
current build at once.

The settings in :data:`RESTART_NEEDED` are not changed by a reload: the daemon
keeps running on the value it started with, logs ``config.restart_needed``, and
``status`` says so until a restart. Why each one needs a restart:

* ``zones``, ``output``, ``state``: the daemon holds the output directory's lock
  for its life, watches the zones directory, and is found by its state file (a
  second daemon started on the new paths would not see the first).
* ``log.format``, ``log.timestamps``: the lines already in the log and the ones
  after a reload would not parse alike (multilog/svlogd keep one file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from dnsmaster.config import Config, Slave

__all__ = [
    "RESTART_NEEDED",
    "Change",
    "compare",
    "keep_restart_needed",
    "slave_settings",
]

#: Settings a reload does not change (see the module's docstring for why).
RESTART_NEEDED: tuple[str, ...] = (
    "zones",
    "output",
    "state",
    "log.format",
    "log.timestamps",
)

#: Config fields that are not settings: where it was read from, what it warned.
_NOT_SETTINGS = frozenset({"path", "warnings", "slaves"})


@dataclass(frozen=True, slots=True)
class Change:
    """What a new configuration changes, by slave name and by setting."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    #: Top-level keys and sections whose value differs (``daemon``, ``hooks``).
    sections: tuple[str, ...] = ()
    #: Settings of :data:`RESTART_NEEDED` that differ: kept at their old value.
    restart_needed: tuple[str, ...] = ()


def slave_settings(config: Config, slave: Slave) -> tuple[Hashable, ...]:
    """What a slave's worker and its connection are made of: a difference restarts it."""
    if slave.transport == "local":
        return (slave,)
    push = config.push
    return (
        slave,
        config.key,
        config.known_hosts,
        push.connect_timeout,
        push.keepalive_interval,
        push.host_key_recheck,
    )


def _value(config: Config, key: str) -> object:
    section, _, name = key.partition(".")
    value = getattr(config, section)
    return getattr(value, name) if name else value


def compare(old: Config, new: Config) -> Change:
    """What changes from ``old`` to ``new`` (both as loaded from the file)."""
    before = {s.name: s for s in old.slaves}
    after = {s.name: s for s in new.slaves}
    sections = tuple(
        f.name
        for f in dataclasses.fields(Config)
        if f.name not in _NOT_SETTINGS and getattr(old, f.name) != getattr(new, f.name)
    )
    return Change(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(
            n
            for n in after
            if n in before and slave_settings(old, before[n]) != slave_settings(new, after[n])
        ),
        sections=sections,
        restart_needed=tuple(k for k in RESTART_NEEDED if _value(old, k) != _value(new, k)),
    )


def keep_restart_needed(running: Config, new: Config) -> Config:
    """``new`` with every :data:`RESTART_NEEDED` setting at its ``running`` value."""
    return dataclasses.replace(
        new,
        zones=running.zones,
        output=running.output,
        state=running.state,
        log=dataclasses.replace(
            new.log, format=running.log.format, timestamps=running.log.timestamps
        ),
    )
