"""The master's side for standard secondaries: tinydns and axfrdns on one address.

What docs/feeding.rst sets up on a master: a tinydns answering UDP and djbdns'
axfrdns under ucspi-tcp's tcpserver answering TCP, both on port 53 of one address
and both serving one root, the master's served root (the data.cdb the slaves
are given: :mod:`dnsmaster.master.served`). A
secondary asks the SOA over UDP and transfers over TCP. The tcp rules come from
:mod:`dnsmaster.core.axfrrules`, compiled by tcprules into ``tcp.cdb``, which
tcpserver reads at every connection: :meth:`Axfrdns.set_rules` needs no restart.

The address is a 127.0.1.N of its own (:func:`take_dns_address`); a client picks its
source address with ``source=`` (any 127.x.y.z is ours on loopback), which is what
the rules judge. Both servers run as root's children, chroot to the root and drop
to ``nobody``; they are stopped by PID::

    with Axfrdns(output, tmp_path / "axfrdns") as server:
        server.set_rules(rules_text(grants([(["127.0.2.7"], ["example.com"])])))
        assert server.transfer("example.com", source="127.0.2.7").serial == 1_700_000_000

The components are asked for with :func:`tests.conftest.require`, so a missing one
fails under CI=true and skips elsewhere.
"""

from __future__ import annotations

import asyncio
import pwd
import subprocess
import time
from pathlib import Path
from types import TracebackType

from dnsmaster.core.axfrrules import grants, rules_text
from dnsmaster.transport import axfr
from dnsmaster.transport.axfr import Transferred
from tests.conftest import require, require_root
from tests.lab.realworld import (
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    ComponentError,
    Tinydns,
    release_dns_address,
    stop_pid,
    take_dns_address,
)

__all__ = ["Axfrdns", "compile_rules"]


class Axfrdns:
    """tinydns (UDP) and tcpserver + axfrdns (TCP) on ``address``:53, serving ``root``.

    ``workdir`` holds the rules (``tcp``, ``tcp.cdb``) and both logs. Until
    :meth:`set_rules`, the rules deny everyone.
    """

    def __init__(
        self, root: Path, workdir: Path, *, address: str | None = None, user: str = "nobody"
    ) -> None:
        require_root("axfrdns")
        self.tcpserver = require("tcpserver", "ucspi-tcp")
        self.tcprules = require("tcprules", "ucspi-tcp")
        self.axfrdns = require("axfrdns", "axfrdns")
        self.root = root
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.user = pwd.getpwnam(user)
        self.owns_address = address is None
        self.address = address or take_dns_address()
        self.rules = workdir / "tcp"
        self.cdb = workdir / "tcp.cdb"
        self.log = workdir / "axfrdns.log"
        self.tinydns = Tinydns(root, address=self.address, log=workdir / "tinydns.log", user=user)
        self.proc: subprocess.Popen[bytes] | None = None
        self.set_rules(rules_text(grants([])))

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"Axfrdns({self.address}:53, root={self.root}, pid={pid})"

    def __enter__(self) -> Axfrdns:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def set_rules(self, text: str) -> None:
        """Write ``tcp`` and compile it into ``tcp.cdb`` as service-conf's rules are."""
        self.rules.write_text(text)
        compile_rules(self.tcprules, self.rules)

    def start(self) -> None:
        """Start tinydns, then tcpserver; wait until each has bound its socket."""
        self.tinydns.start()
        if self.proc is not None and self.proc.poll() is None:
            return
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "ROOT": str(self.root),
            "UID": str(self.user.pw_uid),
            "GID": str(self.user.pw_gid),
        }
        offset = self.log.stat().st_size if self.log.exists() else 0
        # -vDRHl0 as axfrdns-conf's run: verbose, no Nagle, no ident or DNS lookups.
        argv = [self.tcpserver, "-vDRHl0", "-x", str(self.cdb), "--", self.address, "53"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, self.axfrdns],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ComponentError(
                    f"tcpserver exited with {self.proc.returncode} on {self.address}:53:\n"
                    + self.log_text()
                )
            with self.log.open("rb") as f:
                f.seek(offset)
                if b"tcpserver: status: 0/" in f.read():
                    return
            time.sleep(0.02)
        self.close()
        raise ComponentError(f"tcpserver on {self.address}:53 did not start:\n{self.log_text()}")

    def close(self) -> None:
        """Stop both servers by PID and give the address back (if taken here)."""
        proc, self.proc = self.proc, None
        try:
            stop_pid(proc, "tcpserver", STOP_TIMEOUT)
        finally:
            self.tinydns.stop()
            if self.owns_address:
                release_dns_address(self.address)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def transfer(self, zone: str, *, source: str, timeout: float = 5.0) -> Transferred:
        """AXFR ``zone`` from this axfrdns as a client at ``source`` would (see
        :mod:`dnsmaster.transport.axfr`, which reads axfrdns' answer as dnspython's
        own ``xfr`` will not).

        Raises TransferError when the rules or axfrdns refuse it (tcpserver drops
        a denied client; axfrdns closes on a zone it may not give).
        """
        return asyncio.run(axfr.transfer(self.address, 53, zone, source=source, timeout=timeout))


def compile_rules(tcprules: str, rules: Path) -> None:
    """``tcprules tcp.cdb tcp.tmp < tcp`` beside ``rules``, as the service's Makefile."""
    cdb, tmp = rules.with_name(rules.name + ".cdb"), rules.with_name(rules.name + ".tmp")
    with rules.open("rb") as source:
        proc = subprocess.run(
            [tcprules, str(cdb), str(tmp)], stdin=source, capture_output=True, check=False
        )
    if proc.returncode != 0:
        raise ComponentError(f"tcprules refused {rules}: {proc.stderr.decode(errors='replace')}")
