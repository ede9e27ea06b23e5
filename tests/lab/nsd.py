"""A real secondary for tests: Debian's NSD 4.6 fed by the master's axfrdns.

NSD runs in the foreground (``nsd -d``) as root with ``username: ""`` (no chroot, no
user switch), on port 53 of its own 127.0.1.N address, with every file it keeps
(zone files, pidfile, xfrd state, the transfer directory, its log) under a
directory of the test's. Each zone asks its transfers from the master's axfrdns
(``request-xfr``, from NSD's own address, which the rules must allow) and takes
NOTIFY from the master (``allow-notify``).

The refresh is pinned to one hour (``min-refresh-time`` = ``max-refresh-time``
= 3600, whatever the SOA says), and the retry too: within a test, only a NOTIFY
can explain NSD serving a new serial quickly, never its refresh timer. At its
start NSD asks the master once, as it does for a zone it has no data or state
for.

Usage::

    nsd = Nsd(tmp_path / "nsd", master=axfr.address, zones=["example.com"])
    nsd.start()                       # binds ADDRESS:53 (UDP and TCP)
    assert nsd.wait_serial("example.com", 1_700_000_000) == 1_700_000_000
    nsd.stop()                        # SIGTERM by PID; the address is released

Root is needed (port 53); the component is asked for with
:func:`tests.conftest.require`, so a missing one fails under CI=true and skips
elsewhere.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.conftest import require, require_root
from tests.lab.realworld import (
    ComponentError,
    release_dns_address,
    stop_pid,
    take_dns_address,
)
from tests.lab.servers import ask, served_serial

__all__ = ["REFRESH", "Nsd"]

#: NSD's refresh and retry, in seconds, whatever the master's SOA says: far longer
#: than any test, so a quick catch-up is a NOTIFY's doing.
REFRESH = 3600
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class Nsd:
    """NSD as a secondary of ``master`` (an address, port ``master_port``) for ``zones``.

    ``notify_from`` is the address or prefix NSD takes NOTIFY from (the master's
    NOTIFY leaves from a loopback address the kernel picks). The address NSD
    answers on is taken at construction and released by :meth:`close`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        master: str,
        zones: Iterable[str],
        master_port: int = 53,
        notify_from: str = "127.0.0.0/8",
    ) -> None:
        require_root("nsd")
        self.binary = require("nsd", "nsd")
        self.workdir = workdir
        self.master = master
        self.master_port = master_port
        self.notify_from = notify_from
        self.zones = tuple(z.rstrip(".") for z in zones)
        self.address = take_dns_address()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "nsd.conf"
        self.log = workdir / "nsd.log"
        self._write_config()

    def __repr__(self) -> str:
        return f"Nsd({self.address}:53, master={self.master}:{self.master_port}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        w = self.workdir
        (w / "xfr").mkdir(exist_ok=True)
        lines = [
            "server:",
            f"  ip-address: {self.address}@53",
            "  port: 53",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{w}"',
            f'  pidfile: "{w / "nsd.pid"}"',
            f'  xfrdfile: "{w / "xfrd.state"}"',
            f'  xfrdir: "{w / "xfr"}"',
            f'  zonelistfile: "{w / "zone.list"}"',
            '  database: ""',
            f'  logfile: "{self.log}"',
            "  verbosity: 2",
            "  server-count: 1",
            "  do-ip6: no",
            "  reuseport: no",
            # Zone files are written only when the lab stops NSD (``nsd-control write``).
            "  zonefiles-write: 0",
            # On a unix socket: no TLS keys to make, no port to take.
            "remote-control:",
            "  control-enable: yes",
            f'  control-interface: "{w / "nsd.sock"}"',
        ]
        for zone in self.zones:
            lines += [
                "zone:",
                f"  name: {zone}",
                f'  zonefile: "{zone}.zone"',
                f"  request-xfr: AXFR {self.master}@{self.master_port} NOKEY",
                # Its transfers leave from its own address, which the master's
                # axfrdns rules allow (the kernel would pick 127.0.0.1).
                f"  outgoing-interface: {self.address}",
                f"  allow-notify: {self.notify_from} NOKEY",
                f"  min-refresh-time: {REFRESH}",
                f"  max-refresh-time: {REFRESH}",
                f"  min-retry-time: {REFRESH}",
                f"  max-retry-time: {REFRESH}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start NSD and wait until it answers on its address (SERVFAIL for a zone it
        has not transferred yet counts: it is up)."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-d", "-c", str(self.config)],
                env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"nsd exited with {self.proc.returncode} on {self.address}:\n{self.log_tail()}"
                )
            with contextlib.suppress(dns.exception.Timeout, OSError):
                self.query(self.zones[0] if self.zones else ".", "SOA", timeout=0.2)
                return
        self.stop()
        raise ComponentError(f"nsd on {self.address} did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        """Write the zones NSD holds, then SIGTERM it by its PID (its server and xfrd
        children go with it) and wait.

        NSD writes its zone files only when told (``zonefiles-write: 0``); written
        here, a restart resumes from the serials it had, with its refresh timers in
        ``xfrd.state``, as a long-running server's would, and does not transfer at
        once as a server without data does: only a NOTIFY then brings it up to date.
        """
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        control = require("nsd-control", "nsd")
        subprocess.run(
            [control, "-c", str(self.config), "write"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=STOP_TIMEOUT,
            check=True,
        )
        stop_pid(proc, "nsd", STOP_TIMEOUT)

    def close(self) -> None:
        """Stop NSD and give its address back."""
        self.stop()
        release_dns_address(self.address)

    def query(
        self, name: str, rdtype: str | dns.rdatatype.RdataType = "A", *, timeout: float = 2.0
    ) -> dns.message.Message:
        """Ask NSD over UDP; raises dns.exception.Timeout if it does not answer."""
        return ask(self.address, name, rdtype, timeout=timeout)

    def soa_serial(self, zone: str) -> int | None:
        """The serial NSD serves for ``zone``; None while it has none (SERVFAIL before
        the first transfer)."""
        return served_serial(self.address, zone)

    def wait_serial(self, zone: str, serial: int, timeout: float = 5.0) -> int | None:
        """Poll until NSD serves ``serial`` (or newer, RFC 1982) for ``zone``, or
        ``timeout`` passes; the last serial seen."""
        import dns.serial  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        seen: int | None = None
        while True:
            with contextlib.suppress(dns.exception.Timeout):
                seen = self.soa_serial(zone)
            if seen is not None and dns.serial.Serial(seen) >= serial:
                return seen
            if time.monotonic() > deadline:
                return seen
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
