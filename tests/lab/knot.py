"""A real catalog consumer for tests: Debian's Knot 3.2 fed by the master's axfrdns.

Knot runs in the foreground (``knotd -c``) as root, on port 53 of its own 127.0.1.N
address, with every file it keeps (zone storage, timer, journal and catalog
databases, its control socket, its log) under a directory of the test's. Its
config names one zone, the catalog, with ``catalog-role: interpret``; each member
the catalog lists is added from the ``catalog-template``, which transfers from the
same master: no member zone is ever in the config.

Knot transfers from the master's axfrdns ``via`` its own address, so the tcp rules
can name exactly that address, and takes NOTIFY from loopback. The refresh of
every zone is pinned to one hour (``refresh-min-interval`` = ``refresh-max-interval``)
and so is the retry: within a test only a NOTIFY can explain Knot serving a new
serial or a new member, never a timer. At its start Knot transfers the catalog
once, as any secondary does a zone it has no data for.

Usage::

    with Knot(tmp_path / "knot", master=axfr.address, catalog="catalog.example") as knot:
        knot.wait_serials({"example.com": serial, "example.net": None})

Root is needed (port 53); the components are asked for with
:func:`tests.conftest.require`, so a missing one fails under CI=true and skips
elsewhere.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from types import TracebackType

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

__all__ = ["REFRESH", "Knot"]

#: Knot's refresh and retry, in seconds, whatever the master's SOAs say: far longer
#: than any test, so a quick change is a NOTIFY's doing.
REFRESH = 3600
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0


class Knot:
    """Knot as a consumer of the catalog zone ``catalog`` of ``master``:``master_port``.

    The address Knot answers on is taken at construction and released by
    :meth:`close`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        master: str,
        catalog: str,
        master_port: int = 53,
        notify_from: str = "127.0.0.0/8",
    ) -> None:
        require_root("knotd")
        self.binary = require("knotd", "knot")
        self.workdir = workdir
        self.master = master
        self.master_port = master_port
        self.catalog = catalog.rstrip(".")
        self.notify_from = notify_from
        # Knot 3.2 does not make its catalog database's directory, and crashes
        # (SIGSEGV) interpreting a catalog without it.
        (workdir / "db").mkdir(parents=True, exist_ok=True)
        (workdir / "zones").mkdir(exist_ok=True)
        self.config = workdir / "knot.conf"
        self.log = workdir / "knot.log"
        self.address = take_dns_address()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(self.config_text())

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"Knot({self.address}:53, master={self.master}:{self.master_port}, pid={pid})"

    def __enter__(self) -> Knot:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def config_text(self) -> str:
        """Knot's configuration: the catalog zone, and the template of its members."""
        w = self.workdir
        timers = [
            f"    refresh-min-interval: {REFRESH}",
            f"    refresh-max-interval: {REFRESH}",
            f"    retry-min-interval: {REFRESH}",
            f"    retry-max-interval: {REFRESH}",
        ]
        # Zones live in memory and the journal only: nothing is written as a zone file.
        kept = ["    zonefile-sync: -1", "    zonefile-load: none", "    journal-content: all"]
        lines = [
            "server:",
            f'    rundir: "{w}"',
            f'    pidfile: "{w / "knot.pid"}"',
            f"    listen: {self.address}@53",
            "    background-workers: 1",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "log:",
            f'  - target: "{self.log}"',
            "    any: info",
            "database:",
            f'    storage: "{w / "db"}"',
            "control:",
            f'    listen: "{w / "knot.sock"}"',
            "remote:",
            "  - id: master",
            f"    address: {self.master}@{self.master_port}",
            # The transfers leave from Knot's own address: what the tcp rules allow.
            f"    via: {self.address}",
            "acl:",
            "  - id: notify",
            f"    address: {self.notify_from}",
            "    action: notify",
            "template:",
            "  - id: default",
            f'    storage: "{w / "zones"}"',
            "  - id: member",
            f'    storage: "{w / "zones"}"',
            "    master: master",
            "    acl: notify",
            *timers,
            *kept,
            "zone:",
            f"  - domain: {self.catalog}.",
            "    master: master",
            "    acl: notify",
            "    catalog-role: interpret",
            "    catalog-template: member",
            *timers,
            *kept,
        ]
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start knotd and wait until it answers on its address (SERVFAIL for a
        catalog it has not transferred yet counts: it is up)."""
        if self.running:
            return
        offset = self.log.stat().st_size if self.log.exists() else 0
        with (self.workdir / "knotd.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)],
                env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"knotd exited with {self.proc.returncode} on {self.address}:\n"
                    + self.log_tail(offset)
                )
            with contextlib.suppress(dns.exception.Timeout, OSError):
                self.query(self.catalog, "SOA", timeout=0.2)
                return
        self.stop()
        raise ComponentError(f"knotd on {self.address} did not start:\n{self.log_tail(offset)}")

    def stop(self) -> None:
        """SIGTERM knotd by its PID and wait."""
        proc, self.proc = self.proc, None
        stop_pid(proc, "knotd", STOP_TIMEOUT)

    def close(self) -> None:
        """Stop Knot and give its address back."""
        try:
            self.stop()
        finally:
            release_dns_address(self.address)

    def query(
        self, name: str, rdtype: str | dns.rdatatype.RdataType = "A", *, timeout: float = 2.0
    ) -> dns.message.Message:
        """Ask Knot over UDP; raises dns.exception.Timeout if it does not answer."""
        return ask(self.address, name, rdtype, timeout=timeout)

    def soa_serial(self, zone: str) -> int | None:
        """The serial Knot serves for ``zone``; None when it serves no such zone
        (REFUSED: not one of its zones; SERVFAIL: not transferred yet)."""
        return served_serial(self.address, zone, authoritative=True)

    def wait_serials(self, expected: dict[str, int | None], timeout: float = WAIT_TIMEOUT) -> None:
        """Poll until Knot serves each zone of ``expected`` with its serial (None: does
        not serve it); ComponentError with what it served and the end of its log
        when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        seen: dict[str, int | None] | str = {}
        while True:
            try:
                seen = {zone: self.soa_serial(zone) for zone in expected}
            except dns.exception.Timeout:
                seen = "no answer"
            if seen == expected:
                return
            if time.monotonic() > deadline or not self.running:
                raise ComponentError(f"knot serves {seen}, not {expected}:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, offset: int = 0, lines: int = 40) -> str:
        """The last ``lines`` of Knot's log from ``offset`` on."""
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
