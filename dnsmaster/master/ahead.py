"""A push by hand reaches its slaves while it builds.

``dnsmaster push`` without a daemon builds, lets the guard judge, then pushes: over
a WAN each slave's SSH handshake and session cost some ten round trips, and the
receiver's own start a few tenths of a second more, none of which needs the build.
:func:`reach_ahead` starts them all at once, before the build: each SSH channel
connects in the background and starts the verb the push will run first (the delta
the push record promises, else ``status``), whose receiver then waits for its
payload. The push (:func:`dnsmaster.master.pushing.push_build`, given these
channels) finds them ready; a verb it does not run is closed unfed, which a
receiver refuses without touching its root. A legacy slave is only connected to:
the classic ``update-dns`` installs whatever a session gives it, nothing included.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnsmaster.config import Config, Slave
from dnsmaster.master import state as statefile
from dnsmaster.master.payload import compresses
from dnsmaster.master.pushing import channel_for
from dnsmaster.protocol import DELTA, ZLIB
from dnsmaster.transport.channel import SlaveChannel

__all__ = ["close_all", "first_verb", "reach_ahead"]


def first_verb(slave: Slave, known: statefile.Pushed | None) -> str | None:
    """The verb a push runs first on ``slave``, whose last push is ``known`` (None:
    not recorded); None for a legacy slave, which must not be started unfed."""
    if slave.protocol == "legacy":
        return None
    if known is None or known.protocol < DELTA:
        return "status"
    return f"delta {ZLIB}" if compresses(slave) else "delta"


def reach_ahead(cfg: Config, slaves: Sequence[Slave]) -> list[SlaveChannel]:
    """A channel to each of ``slaves``, in order, each SSH one connecting from now on
    (in the running event loop) and starting its :func:`first_verb`: the first
    ``[push] parallel`` of them, those the push takes first; the others connect
    when their turn comes, as before, so that no more are open at once."""
    pushed = statefile.read_pushed(statefile.pushed_path(cfg.output))
    channels = [channel_for(slave, cfg) for slave in slaves]
    for channel in channels[: max(1, cfg.push.parallel)]:
        # Only an SSH channel has a connection to make; asking the object, not its
        # class, spares importing asyncssh for local slaves.
        begin = getattr(channel, "begin", None)
        if begin is not None:
            begin(first_verb(channel.slave, pushed.get(channel.slave.name)))
    return channels


async def close_all(channels: Sequence[SlaveChannel]) -> None:
    """Close ``channels`` (what they started unfed, too)."""
    for channel in channels:
        await channel.close()
