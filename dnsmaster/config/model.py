"""The configuration's shape: one frozen dataclass per table of the TOML file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dnsmaster.errors import ConfigError

__all__ = [
    "DEFAULT_KEYS",
    "MAX_FILE_SIZE",
    "AxfrdnsOptions",
    "Config",
    "DaemonOptions",
    "GuardOptions",
    "HookOptions",
    "LogOptions",
    "NotifyOptions",
    "PushOptions",
    "Secondary",
    "Slave",
]

#: The default cap on one zones file: far above any real one (1M lines are about
#: 50 MB), far below what would exhaust memory.
MAX_FILE_SIZE = 256 * 1024 * 1024

#: The keys an SSH slave is logged in to with when neither it nor the config names
#: one (OpenSSH's own defaults, in its order of preference); ``~`` as in
#: :func:`expand_home`.
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True, slots=True)
class Slave:
    """One slave: where to reach its receiver and where its tinydns answers."""

    name: str
    host: str = ""
    port: int = 22
    user: str = "dnsslave"
    key: Path | None = None
    dns: str = ""
    dns_port: int = 53
    protocol: Literal["dnsmaster", "legacy"] = "dnsmaster"
    transport: Literal["ssh", "local"] = "ssh"
    #: The tinydns root, for ``transport = "local"`` (the receiver runs here).
    root: Path | None = None
    #: zlib on what is pushed: ``auto`` (on unless the slave is on this machine:
    #: a loopback host or a local transport), ``on`` or ``off``. Only receivers of
    #: protocol 2 and up take it; older ones get the data plain.
    compress: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True, slots=True)
class Secondary:
    """One standard secondary (BIND, NSD, Knot, a provider): it transfers the zones
    by AXFR from the master's axfrdns and is told of a new serial by NOTIFY."""

    name: str
    #: Where NOTIFY and the SOA questions go: an IPv4 or IPv6 literal.
    address: str
    port: int = 53
    #: The zones it carries, lower case without the final dot; empty: every zone
    #: with a ``Z`` or ``.`` line in data (the catalog zone included).
    zones: tuple[str, ...] = ()
    #: The addresses its AXFR comes from, for axfrdns' tcp rules. The loader fills
    #: in ``(address,)`` when the config names none; empty here means the same.
    transfer_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AxfrdnsOptions:
    """``[axfrdns]``: where the master's axfrdns (TCP) and tinydns (UDP) answer,
    both with ROOT = the served root (only the build the slaves are given)."""

    #: Required (an IPv4 or IPv6 literal) when any ``[[secondary]]`` exists.
    ip: str = ""
    port: int = 53
    #: The service directory ``service-conf --axfrdns`` made; doctor reads its rules.
    service: Path | None = None
    #: The served root: a directory holding only the data.cdb the slaves are given
    #: (:mod:`dnsmaster.master.served`). The loader fills in ``OUTPUT/served``;
    #: None (a Config made by hand) means the same.
    root: Path | None = None


@dataclass(frozen=True, slots=True)
class NotifyOptions:
    """``[notify]``: how NOTIFY is retransmitted and how long a secondary may take."""

    #: Seconds before the first retransmission; doubled for each one after.
    timeout: float = 1.0
    #: Retransmissions after the first NOTIFY (RFC 1996 3.6 wants them bounded).
    retries: int = 5
    #: Seconds a secondary may take to serve the new serial before it is late.
    confirm_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """``[daemon]``: when to build, how to retry and verify."""

    debounce: float = 0.5
    max_delay: float = 5.0
    poll: bool = False
    poll_interval: float = 1.0
    retry_initial: float = 1.0
    retry_max: float = 300.0
    stop_timeout: float = 30.0
    verify: bool = True
    verify_timeout: float = 2.0
    #: Seconds between checks of the sources' fingerprint, which catch any change the
    #: watcher missed (0: never).
    rescan: float = 60.0
    #: How many builds the master keeps in OUTPUT/.dnsmaster-builds for rollback.
    keep: int = 10


@dataclass(frozen=True, slots=True)
class PushOptions:
    """``[push]``: how many slaves at once, and how long to wait for each."""

    parallel: int = 16
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    timeout: float = 300.0
    #: A kept connection whose host key was confirmed longer ago than this is reused
    #: only after a key exchange shows the slave still has that key (0: every push).
    host_key_recheck: float = 60.0


@dataclass(frozen=True, slots=True)
class HookOptions:
    """``[hooks]``: shell commands run on events, with the facts in the environment.

    Each is run by ``/bin/sh -c``; empty means none. A hook never holds up a push:
    it runs beside the daemon's work and is killed after ``timeout`` seconds.
    """

    build: str = ""  # after a good build
    push: str = ""  # after each slave's push, whatever its result
    done: str = ""  # once every slave has the build or failed it
    failure: str = ""  # after a failed build or a failed push
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class GuardOptions:
    """``[guard]``: a build that removes this much waits for ``push --accept``."""

    max_removed: float = 0.1  # the share of records a build may remove (1: no limit)
    zones: bool = True  # dropping a whole zone holds the build
    allow: tuple[str, ...] = ()  # zones that may be dropped without holding


@dataclass(frozen=True, slots=True)
class LogOptions:
    """``[log]``: one line per event; logfmt without timestamps suits multilog."""

    format: Literal["logfmt", "json"] = "logfmt"
    timestamps: bool = False
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    path: Path
    zones: Path
    output: Path
    state: Path
    key: Path | None = None
    known_hosts: Path | None = None
    strict: bool = False
    #: A ``6`` line (the IPv6 patch's AAAA + PTR) publishes its PTR under ip6.int as
    #: well as ip6.arpa, as the patched tinydns-data does; false leaves it out.
    ipv6_int: bool = True
    #: The largest zones file a build reads, in bytes.
    max_file_size: int = MAX_FILE_SIZE
    slaves: tuple[Slave, ...] = ()
    daemon: DaemonOptions = field(default_factory=DaemonOptions)
    push: PushOptions = field(default_factory=PushOptions)
    log: LogOptions = field(default_factory=LogOptions)
    hooks: HookOptions = field(default_factory=HookOptions)
    guard: GuardOptions = field(default_factory=GuardOptions)
    #: The Prometheus textfile the daemon rewrites after each build and push (for
    #: node_exporter's textfile collector, which reads only ``*.prom``); None: none.
    metrics: Path | None = None
    #: The standard secondaries fed by NOTIFY and AXFR (``[[secondary]]``).
    secondaries: tuple[Secondary, ...] = ()
    axfrdns: AxfrdnsOptions = field(default_factory=AxfrdnsOptions)
    notify: NotifyOptions = field(default_factory=NotifyOptions)
    #: The RFC 9432 catalog zone make-data adds, lower case without the final
    #: dot; empty: none.
    catalog: str = ""
    #: Unsafe but working setups found at load, each naming the path, what is
    #: wrong and the fix (``chmod 600 KEY``); the daemon and push log them.
    warnings: tuple[str, ...] = ()

    def select(self, names: Sequence[str]) -> tuple[Slave, ...]:
        """The slaves named (all when ``names`` is empty), in config order.

        Raises :class:`ConfigError` naming every name no slave has.
        """
        unknown = sorted(set(names) - {s.name for s in self.slaves})
        if unknown:
            raise ConfigError(str(self.path), "slave", f"no such slave: {', '.join(unknown)}")
        return tuple(s for s in self.slaves if not names or s.name in names)
