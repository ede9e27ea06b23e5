"""The soak: the real daemon, supervised, against real slaves, with saves and faults at random.

``python -m benchmarks.soak --minutes M --slaves K [--wan] [--json] [--seed S]``, from the
checkout, as root. It runs ``dnsmaster run`` under daemontools' ``supervise`` (the service
directory made by ``dnsmaster service-conf``), K slaves of tests/lab/realworld.py's lab (real
sshd and tinydns on 127.0.1.N, the non-root slave account, the receiver bundle as the
key's forced command; with ``--wan`` each behind benchmarks/wanproxy.py's delaying proxy),
for M minutes, while two things happen at random (seeded):

Saves, each carrying a unique marker (a TXT record ``marker.soak.example`` whose text is
``FILE=COUNTER``; every zones file holds its own), made the ways operators make them:
in place, temp file + rename, ``sed -i``, ``vim -es``, several files at once, a burst of
100, a file deleted and restored (the guard holds the build without it), and invalid
saves (an octet over 255, carrying a ``soak-invalid-N`` marker) that are fixed a moment
later and must never reach a slave.

Faults:

==================  ================================================================
daemon_kill         kill -9 of the daemon; supervise starts it again
receiver_kill       kill -9 of a slave's receiver while it runs (a save makes one)
conn_cut            a push's connection cut mid-stream: the proxy drops it (--wan), or
                    the sshd session process of that connection is killed
sshd_restart        a slave's sshd stopped, then started again 1-6 s later
tinydns_restart     a slave's tinydns stopped, then started again 1-6 s later
disk_full           a slave's root (a 4 MiB tmpfs the soak mounts in its own mount
                    namespace) filled, then freed 2-6 s later
cdb_delete          a slave's data.cdb deleted by hand
cdb_replace         a slave's data.cdb replaced by hand with an older build's
hostkey_change      a slave's host key changed (sshd restarted); 1-5 s later the new key
                    goes into known_hosts and the daemon gets SIGHUP
zones_move          the master's zones directory moved away and put back 1-5 s later
sighup              SIGHUP to the daemon (svc -h)
manual_push         ``dnsmaster push`` run by hand beside the daemon
==================  ================================================================

Invariants, checked every half second (not only at the end):

- ``pair``: when no receiver runs on a slave (the soak holds the root's flock while it
  looks), its ``data.cdb`` is what compiling its ``data`` gives, unless the receiver's
  journal says an install was cut short (then the next receiver repairs it) or the soak
  itself tampered with data.cdb and no install has happened since;
- ``unknown_build`` / ``invalid_served`` / ``held_served``: what a slave has and serves
  is a build the master produced (the master's output and its kept builds are
  watched), never an invalid save, never a build the guard held;
- ``convergence``: every valid save's marker is served by every slave (asked over DNS)
  within ``--bound`` seconds after the faults touching that slave end, unless a newer
  save to the same file superseded it;
- ``false_ok`` / ``false_critical``: ``status --json`` never says ok for a slave, and
  ``status --nagios`` never says OK, while a slave has served an older build than the
  master's newest for longer than ``--grace`` (the documented ``--warning``, 120 s by
  default) plus the daemon's ``rescan`` (10 s here: a slave broken behind the daemon's
  back is seen at its next check) and one status interval; neither says CRITICAL for a
  slave that serves the newest, except a changed host key while it is changed
  (documented: CRITICAL at once);
- ``litter``: files in each slave root and in the master's output stay under a bound;
- ``rss_growth``: the daemon's resident memory does not grow over the run.

With ``--heal-window S``, each cdb_delete and cdb_replace is followed by S seconds without
saves, and ``no_self_heal`` counts the slaves the daemon did not repair in that time
without a new build (off by default: saves go on, and the next build repairs the slave).

At the end the soak stops the faults, saves once more and waits for every slave to serve
that save and ``status`` to say ok. Output: a table, or with ``--json`` one JSON object
(``violations`` and ``faults`` map kinds to counts). Exit status 1 if any violation.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from benchmarks.wanproxy import Proxy, ProxyThread
from dnsmaster.core import stream
from dnsmaster.core.compiler import compile_data
from dnsmaster.fsutil import JOURNAL, DirectoryLock
from tests.lab.daemonrun import PROJECT, DaemonProcess, config_text
from tests.lab.realworld import Lab, Slave

__all__ = ["FAULTS", "SAVES", "Options", "Soak", "main"]

FAULTS = (
    "daemon_kill",
    "receiver_kill",
    "conn_cut",
    "sshd_restart",
    "tinydns_restart",
    "disk_full",
    "cdb_delete",
    "cdb_replace",
    "hostkey_change",
    "zones_move",
    "sighup",
    "manual_push",
)
#: Faults on the master's side (the others hit one slave each).
MASTER_FAULTS = frozenset({"daemon_kill", "zones_move", "sighup", "manual_push"})
#: Save kinds, each as often in the deck as its weight.
SAVES = {
    "inplace": 4,
    "rename": 3,
    "sed": 2,
    "vim": 2,
    "multi": 2,
    "burst": 1,
    "delete_restore": 1,
    "invalid": 2,
}
MARKER = "marker.soak.example"
INVALID = "soak-invalid-"
FILES = 6
HOSTS = 20
TMPFS_SIZE = "4m"
FILLER = "soak-disk-filler"
#: Set in the environment of the soak re-run in its own mount namespace.
NAMESPACE_ENV = "DNSMASTER_SOAK_NAMESPACE"
SAMPLE_EVERY = 0.5
STATUS_EVERY = 2.0
#: The daemon's rescan (seconds): it asks every slave's tinydns again this often.
RESCAN = 10
KEEP = 30
#: Seconds after a host key is accepted (known_hosts + SIGHUP) that status may still
#: show it changed.
HOSTKEY_SETTLE = 10.0
#: Files a slave root may hold: data, data.cdb, 10 copies, the journal and a few temp
#: files of a killed receiver (swept by the next one).
SLAVE_FILES_MAX = 20
_TXT = re.compile(r"(zones\.soak\d+)=(\S+)")


# -- records -----------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    slaves: tuple[str, ...]  # () = every slave (the master's side)
    start: float
    end: float | None = None
    note: str = ""

    def touches(self, slave: str) -> bool:
        return not self.slaves or slave in self.slaves


@dataclass
class Pending:
    counter: int
    saved: float


@dataclass
class SlaveView:
    """What the sampler last saw of one slave."""

    served: str | None = None  # sha256 of the build its data.cdb is, None: nothing
    behind_since: float | None = None
    longest_behind: float = 0.0
    markers: dict[str, int] = field(default_factory=dict)
    tampered: tuple[float, int] | None = None  # (when, data.cdb inode after) by the soak
    tamper_newest: str | None = None
    tamper_kind: str = ""
    pending: dict[str, Pending] = field(default_factory=dict)
    late: set[tuple[str, int]] = field(default_factory=set)
    files_max: int = 0
    busy: int = 0


@dataclass
class Options:
    minutes: float = 1.0
    slaves: int = 3
    wan: bool = False
    seed: int = 1
    bound: float = 30.0
    grace: float = 120.0
    rtt: float = 40.0
    faults: tuple[str, ...] = FAULTS
    save_gap: float = 1.5
    fault_gap: float = 3.0
    heal_window: float = 0.0
    keep: Path | None = None
    verbose: bool = False


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _deck(rng: random.Random, kinds: dict[str, int]) -> Iterator[str]:
    """The kinds shuffled, each as often as its weight, again and again."""
    while True:
        cards = [k for k, n in kinds.items() for _ in range(n)]
        rng.shuffle(cards)
        yield from cards


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _ppid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rpartition(")")[2].split()[1])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _count_files(path: Path) -> int:
    total = 0
    for _, _, files in os.walk(path):
        total += len(files)
    return total


@dataclass
class RootFiles:
    """A slave root as read under its lock."""

    files: list[str]
    journal: bool
    data: bytes | None = None
    data_mtime: int = 0
    cdb: bytes | None = None
    cdb_inode: int = 0


def _read_root(root: Path) -> RootFiles:
    seen = RootFiles(
        [e.name for e in os.scandir(root) if e.is_file() and e.name != FILLER],
        os.path.lexists(root / JOURNAL),
    )
    with contextlib.suppress(FileNotFoundError), (root / "data").open("rb") as f:
        seen.data = f.read()
        seen.data_mtime = os.fstat(f.fileno()).st_mtime_ns // 10**9
    with contextlib.suppress(FileNotFoundError), (root / "data.cdb").open("rb") as f:
        seen.cdb = f.read()
        seen.cdb_inode = os.fstat(f.fileno()).st_ino
    return seen


# -- the master --------------------------------------------------------------------------


class Master:
    """The zones, the output, the config, the service directory and supervise."""

    def __init__(self, workdir: Path, lab: Lab, ports: dict[str, int], opts: Options) -> None:
        self.workdir = workdir
        self.lab = lab
        self.zones = workdir / "zones"
        self.output = workdir / "out"
        self.state = workdir / "state.json"
        self.config = workdir / "dnsmaster.toml"
        self.known_hosts = workdir / "known_hosts"
        self.service = workdir / "service"
        self.zones.mkdir(parents=True)
        self.output.mkdir()
        self.counter = 0
        self.lock = threading.Lock()  # one writer of the zones directory (saves, moves)
        self.bodies: dict[str, list[str]] = {}
        self.markers: dict[str, str] = {}
        for n in range(FILES):
            name = f"zones.soak{n}"
            self.bodies[name] = [f".soak{n}.example:10.9.{n}.1:a:259200"] + [
                f"+h{i}.soak{n}.example:10.{n}.{i // 250}.{i % 250 + 1}" for i in range(HOSTS)
            ]
            self.markers[name] = "0"
        (self.zones / "header").write_text(".soak.example:10.9.99.1:a:259200\n")
        for name in self.bodies:
            (self.zones / name).write_text(self.text(name))
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                top={"key": lab.key, "known_hosts": self.known_hosts, "user": lab.user},
                daemon={
                    "debounce": 0.3,
                    "max_delay": 3,
                    "retry_initial": 0.5,
                    "retry_max": 4,
                    "rescan": RESCAN,
                    "verify_timeout": 1,
                    "keep": KEEP,
                    "stop_timeout": 10,
                },
                push={
                    "parallel": max(1, opts.slaves),
                    "connect_timeout": 5,
                    "timeout": 30,
                    "keepalive_interval": 5,
                    "host_key_recheck": 10,
                },
                slaves=[
                    {"name": s.name, "host": s.address, "port": ports[s.name], "dns": s.address}
                    for s in lab.slaves
                ],
            )
            + '\n[log]\nformat = "json"\n'
        )
        self.supervise: DaemonProcess | None = None
        self.made_by = ""

    def text(self, name: str, *, invalid: str | None = None) -> str:
        lines = [*self.bodies[name], f"'{MARKER}:{name}={self.markers[name]}:60"]
        if invalid is not None:
            lines.append(f"+{invalid}.{name.removeprefix('zones.')}.example:300.1.2.3")
        return "\n".join(lines) + "\n"

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter

    # -- the service ------------------------------------------------------------------

    def make_service(self) -> None:
        """``dnsmaster service-conf root root DIR CONFIG``; by hand if that fails."""
        bin_dir = Path(sys.executable).parent
        dnsmaster = bin_dir / "dnsmaster"
        if dnsmaster.exists():
            proc = subprocess.run(
                [
                    str(dnsmaster),
                    "service-conf",
                    "root",
                    "root",
                    str(self.service),
                    str(self.config),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if proc.returncode == 0:
                self.made_by = "dnsmaster service-conf"
                return
            self.made_by = f"by hand (service-conf: {proc.stderr.strip()[:200]})"
        else:
            self.made_by = f"by hand (no {dnsmaster})"
        shutil.rmtree(self.service, ignore_errors=True)
        shutil.copytree(PROJECT / "service" / "dnsmaster", self.service)
        wrapper = self.workdir / "bin" / "dnsmaster"
        wrapper.parent.mkdir(exist_ok=True)
        wrapper.write_text(
            f"#!/bin/sh\nPYTHONPATH='{PROJECT}' export PYTHONPATH\n"
            f"exec '{sys.executable}' -m dnsmaster \"$@\"\n"
        )
        wrapper.chmod(0o755)
        env = self.service / "env"
        (env / "DNSMASTER_CONFIG").write_text(f"{self.config}\n")
        (env / "DNSMASTER_USER").write_text("root\n")
        (env / "PATH").write_text(f"{wrapper.parent}:/usr/local/bin:/usr/bin:/bin\n")

    def start(self) -> None:
        self.supervise = DaemonProcess(self.config, argv=["supervise", str(self.service)])
        self.supervise.start()

    def daemon_pid(self) -> int | None:
        """The pid supervise runs, from its status file (daemontools' 18-byte format)."""
        try:
            raw = (self.service / "supervise" / "status").read_bytes()
        except OSError:
            return None
        if len(raw) < 18:
            return None
        pid = int.from_bytes(raw[12:16], "little")
        return pid or None

    def stop(self) -> None:
        sup = self.supervise
        if sup is None:
            return
        if sup.running:
            subprocess.run(["svc", "-dx", str(self.service)], check=False, timeout=10)
            try:
                assert sup.proc is not None
                sup.proc.wait(30)
            except subprocess.TimeoutExpired:
                pid = self.daemon_pid()
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        sup.kill()

    def events(self, name: str) -> list[dict[str, Any]]:
        assert self.supervise is not None
        return self.supervise.find(name)


# -- the soak ----------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.save_rng = random.Random(opts.seed * 7919 + 1)
        self.fault_rng = random.Random(opts.seed * 104729 + 2)
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.tmp = Path(tempfile.mkdtemp(prefix="dnsmaster-soak-"))
        self.lab: Lab | None = None
        self.proxies: ProxyThread | None = None
        self.links: dict[str, Proxy] = {}
        self.mounted: list[Path] = []
        self.master: Master | None = None
        self.views: dict[str, SlaveView] = {}
        self.faults: list[Fault] = []
        self.fault_counts: Counter[str] = Counter()
        self.fault_tries: Counter[str] = Counter()
        self.save_counts: Counter[str] = Counter()
        self.valid_saves = 0
        self.invalid_saves = 0
        self.superseded = 0
        self.violations: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.builds: dict[str, bytes] = {}  # sha256 -> data body, every build the master made
        self.cdb_of: dict[str, str] = {}  # sha256 of a build's data.cdb -> the build's sha256
        self.pair_cache: dict[tuple[str, int], str] = {}
        self.held: set[str] = set()  # sha256 prefixes the guard held
        self.held_mark = 0  # the daemon's log read so far for them
        self.newest: str | None = None
        self.converge: list[float] = []
        self.converge_fault: list[float] = []
        self.false_ok = 0
        self.false_critical = 0
        self.status_samples = 0
        self.status_exits: Counter[str] = Counter()
        self.rss: dict[int, list[tuple[float, int]]] = {}
        self.master_files_base = 0
        self.master_files_max = 0
        self.heal: list[dict[str, Any]] = []
        self.started = 0.0
        self.ended = 0.0
        self.final: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        self.busy: set[str] = set()
        #: How long a slave may be behind before status must not say OK: the grace, plus
        #: the daemon's own rescan (it learns of a slave broken behind its back, a data.cdb
        #: deleted say, at its next check of the slaves' DNS), plus one status interval.
        self.late_after = opts.grace + RESCAN + STATUS_EVERY
        self.sample_errors = 0

    # -- recording --------------------------------------------------------------------

    def violation(self, kind: str, text: str) -> None:
        with self.lock:
            self.violations[kind] += 1
            shown = self.examples.setdefault(kind, [])
            if len(shown) < 5:
                shown.append(f"{time.monotonic() - self.started:.1f}s {text}")
        if self.opts.verbose:
            print(f"# VIOLATION {kind}: {text}", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        if self.opts.verbose:
            print(f"# {time.monotonic() - self.started:7.1f} {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def fault(self, kind: str, slaves: tuple[str, ...] = (), note: str = "") -> Iterator[Fault]:
        f = Fault(kind, slaves, time.monotonic(), note=note)
        with self.lock:
            self.faults.append(f)
            self.fault_tries[kind] += 1
        self.log(f"fault {kind} {','.join(slaves) or 'master'} {note}")
        try:
            yield f
        finally:
            f.end = time.monotonic()

    def happened(self, kind: str) -> None:
        with self.lock:
            self.fault_counts[kind] += 1

    # -- set-up -----------------------------------------------------------------------

    @property
    def slaves(self) -> list[Slave]:
        assert self.lab is not None
        return self.lab.slaves

    def slave(self, name: str) -> Slave:
        return next(s for s in self.slaves if s.name == name)

    def set_up(self) -> None:
        opts = self.opts
        self.lab = Lab(opts.keep / "lab" if opts.keep else None)
        for _ in range(opts.slaves):
            slave = self.lab.add_slave()
            if "disk_full" in opts.faults:
                self._mount_tmpfs(slave)
        ports = {s.name: s.port for s in self.slaves}
        if opts.wan:
            self.proxies = ProxyThread()
            for s in self.slaves:
                self.links[s.name] = self.proxies.add(
                    (s.address, s.port),
                    None,
                    listen=s.address,
                    up_delay=opts.rtt / 2000,
                    down_delay=opts.rtt / 2000,
                )
                ports[s.name] = self.links[s.name].port
        self.views = {s.name: SlaveView() for s in self.slaves}
        self.master = Master(self.tmp / "master", self.lab, ports, opts)
        self.write_known_hosts()
        self.master.make_service()
        self.master.start()
        self.log(f"service made {self.master.made_by}; waiting for the first pushes")
        self.master.supervise.wait_count("push.done", len(self.slaves), timeout=120)  # type: ignore[union-attr]

    def _mount_tmpfs(self, slave: Slave) -> None:
        """The slave's root becomes a small tmpfs (in this process's own mount namespace)."""
        assert self.lab is not None
        slave.tinydns.stop()
        account = self.lab.account
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={TMPFS_SIZE},mode=0755,uid={account.pw_uid},gid={account.pw_gid}",
                f"soak-{slave.name}",
                str(slave.root),
            ],
            check=True,
            capture_output=True,
        )
        self.mounted.append(slave.root)
        slave.tinydns.start()

    def write_known_hosts(self) -> None:
        assert self.master is not None
        lines = []
        for s in self.slaves:
            direct = s.sshd.host_key_line()
            lines.append(direct)
            if s.name in self.links:
                key = direct.split(" ", 1)[1]
                lines.append(f"[{s.address}]:{self.links[s.name].port} {key}")
        # Two slaves re-keyed at once each write it: a temp file of their own.
        tmp = self.master.known_hosts.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.master.known_hosts)

    def close(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(60)
        errors: list[BaseException] = []
        for step in (self._stop_master, self._stop_proxies, self._stop_slaves, self._unmount):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        if self.lab is not None:
            try:
                self.lab.close()
            except Exception as exc:
                errors.append(exc)
        if self.opts.keep is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise errors[0]

    def _stop_master(self) -> None:
        if self.master is not None:
            self.master.stop()
            if self.opts.keep is not None and self.master.supervise is not None:
                run = self.master.supervise
                with (self.opts.keep / "daemon.jsonl").open("w") as f:
                    # The seconds since the start, as the faults file has them: the
                    # daemon logs none under supervise (multilog would add them).
                    for event, at in zip(run.events, run.times, strict=True):
                        f.write(json.dumps({"t": round(at - self.started, 2)} | event) + "\n")
                with (self.opts.keep / "faults.txt").open("w") as f:
                    for x in self.faults:
                        f.write(
                            f"{x.start - self.started:.2f} {x.kind} {','.join(x.slaves) or '-'} "
                            f"{(x.end or 0) - self.started:.2f} {x.note}\n"
                        )

    def _stop_proxies(self) -> None:
        if self.proxies is not None:
            self.proxies.close()

    def _stop_slaves(self) -> None:
        if self.lab is not None:
            for s in self.slaves:
                s.stop()

    def _unmount(self) -> None:
        for root in self.mounted:
            subprocess.run(["umount", str(root)], check=False, capture_output=True)
        self.mounted.clear()

    # -- saves ------------------------------------------------------------------------

    def _write_rename(self, path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".swp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def _record(self, names: list[str], counters: list[int]) -> None:
        now = time.monotonic()
        with self.lock:
            for name, counter in zip(names, counters, strict=True):
                self.valid_saves += 1
                for view in self.views.values():
                    old = view.pending.get(name)
                    if old is not None:
                        self.superseded += 1
                    view.pending[name] = Pending(counter, now)

    def save(self, how: str, name: str) -> None:
        """One valid save of ``name`` the way ``how`` says."""
        m = self.master
        assert m is not None
        counter = m.next_counter()
        old = m.markers[name]
        m.markers[name] = str(counter)
        path = m.zones / name
        if how == "sed":
            subprocess.run(
                [
                    "sed",
                    "-i",
                    f"s/^'{MARKER}:{name}={old}:/'{MARKER}:{name}={counter}:/",
                    str(path),
                ],
                check=True,
                timeout=30,
            )
        elif how == "vim":
            subprocess.run(
                [
                    "vim",
                    "-es",
                    "-u",
                    "NONE",
                    "-i",
                    "NONE",
                    "-n",
                    "-c",
                    f"%s/^'{MARKER}:{name}={old}:/'{MARKER}:{name}={counter}:/",
                    "-c",
                    "wq",
                    str(path),
                ],
                check=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
        elif how == "rename":
            self._write_rename(path, m.text(name))
        else:
            path.write_text(m.text(name))
        if path.read_text() != m.text(name):
            raise RuntimeError(f"{how} did not save {name} as meant")
        self._record([name], [counter])

    def do_save(self, kind: str) -> None:
        m = self.master
        assert m is not None
        rng = self.save_rng
        names = sorted(m.bodies)
        with m.lock:
            self.save_counts[kind] += 1
            if kind in ("inplace", "rename", "sed", "vim"):
                self.save(kind, rng.choice(names))
            elif kind == "multi":
                for name in rng.sample(names, rng.randint(2, 4)):
                    self.save("rename", name)
            elif kind == "burst":
                for _ in range(100):
                    self.save(rng.choice(("inplace", "rename")), rng.choice(names))
                    time.sleep(rng.uniform(0.0, 0.04))
            elif kind == "delete_restore":
                name = rng.choice(names)
                with self.fault("deleted", note=name):
                    (m.zones / name).unlink()
                    time.sleep(rng.uniform(0.1, 3.0))
                    self.save("rename", name)
            elif kind == "invalid":
                name = rng.choice(names)
                with self.fault("invalid", note=name):
                    counter = m.next_counter()
                    self.invalid_saves += 1
                    bad = m.text(name, invalid=f"{INVALID}{counter}").replace(
                        f"{name}={m.markers[name]}:", f"{name}={INVALID}{counter}:"
                    )
                    if rng.random() < 0.5:
                        (m.zones / name).write_text(bad)
                    else:
                        self._write_rename(m.zones / name, bad)
                    time.sleep(rng.uniform(0.2, 3.0))
                    self.save("rename", name)

    def saver(self) -> None:
        deck = _deck(self.save_rng, SAVES)
        while not self.stop_event.wait(self.save_rng.expovariate(1 / self.opts.save_gap)):
            kind = next(deck)
            try:
                self.do_save(kind)
            except Exception as exc:
                self.violation("harness", f"save {kind}: {exc!r}")

    def trigger_save(self) -> None:
        """A save now, to make a push happen (for faults that need one under way)."""
        m = self.master
        assert m is not None
        with m.lock:
            self.save_counts["inplace"] += 1
            self.save("inplace", self.save_rng.choice(sorted(m.bodies)))

    # -- faults -----------------------------------------------------------------------

    def faulter(self) -> None:
        deck = _deck(self.fault_rng, dict.fromkeys(self.opts.faults, 1))
        while not self.stop_event.wait(self.fault_rng.expovariate(1 / self.opts.fault_gap)):
            kind = next(deck)
            target = self._take_target(kind)
            while target is None:
                if self.stop_event.wait(0.2):
                    return
                target = self._take_target(kind)
            rng = random.Random(self.fault_rng.random())
            t = threading.Thread(target=self._run_fault, args=(kind, target, rng), daemon=True)
            t.start()
            self.threads.append(t)

    def _take_target(self, kind: str) -> str | None:
        """A slave (or "master") no other fault is working on, now taken; None: none free."""
        with self.lock:
            if kind in MASTER_FAULTS:
                free = [] if "master" in self.busy else ["master"]
            else:
                free = [s.name for s in self.slaves if s.name not in self.busy]
            if not free:
                return None
            name = self.fault_rng.choice(free)
            self.busy.add(name)
            return name

    def _run_fault(self, kind: str, target: str, rng: random.Random) -> None:
        try:
            getattr(self, f"fault_{kind}")(None if target == "master" else self.slave(target), rng)
        except Exception as exc:
            self.violation("harness", f"fault {kind} on {target}: {exc!r}")
        finally:
            with self.lock:
                self.busy.discard(target)

    def fault_daemon_kill(self, _: Slave | None, rng: random.Random) -> None:
        m = self.master
        assert m is not None
        pid = m.daemon_pid()
        if pid is None:
            return
        time.sleep(rng.uniform(0, 1.0))
        with self.fault("daemon_kill", note=f"pid {pid}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.happened("daemon_kill")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = m.daemon_pid()
                if now is not None and now != pid and Path(f"/proc/{now}").exists():
                    break
                time.sleep(0.05)
            else:
                self.violation("daemon_restart", f"supervise did not restart pid {pid} in 30 s")

    def _await_receiver(self, slave: Slave, rng: random.Random) -> int | None:
        """Save, then the pid of the receiver that push starts on ``slave`` (or None)."""
        self.trigger_save()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not self.stop_event.is_set():
            found = slave.receivers()
            if found:
                time.sleep(rng.uniform(0, 0.15))
                return max(found)
            time.sleep(0.01)
        return None

    def fault_receiver_kill(self, slave: Slave, rng: random.Random) -> None:
        for _ in range(3):
            with self.fault("receiver_kill", (slave.name,)) as f:
                pid = self._await_receiver(slave, rng)
                if pid is None:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                f.note = f"pid {pid}"
                self.happened("receiver_kill")
                return

    def fault_conn_cut(self, slave: Slave, rng: random.Random) -> None:
        for _ in range(3):
            with self.fault("conn_cut", (slave.name,)) as f:
                pid = self._await_receiver(slave, rng)
                if pid is None:
                    continue
                if slave.name in self.links and self.proxies is not None:
                    cut = self.proxies.call(self.links[slave.name].cut())
                    f.note = f"proxy cut {cut} connections"
                    if cut:
                        self.happened("conn_cut")
                        return
                    continue
                session = self._session_of(pid, slave)
                if session is None:
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(session, signal.SIGKILL)
                    f.note = f"sshd session pid {session}"
                    self.happened("conn_cut")
                    return

    def _session_of(self, pid: int, slave: Slave) -> int | None:
        """The sshd process of the connection ``pid`` runs under (below the listener)."""
        listener = slave.sshd.pid
        chain = []
        current: int | None = pid
        while current is not None and current > 1 and current != listener:
            chain.append(current)
            current = _ppid(current)
        if current != listener:
            return None
        sshds = [p for p in chain if _comm(p) == "sshd"]
        return sshds[0] if sshds else None

    def fault_sshd_restart(self, slave: Slave, rng: random.Random) -> None:
        with self.fault("sshd_restart", (slave.name,)):
            slave.sshd.stop()
            self.happened("sshd_restart")
            time.sleep(rng.uniform(1, 6))
            slave.sshd.start()

    def fault_tinydns_restart(self, slave: Slave, rng: random.Random) -> None:
        with self.fault("tinydns_restart", (slave.name,)):
            slave.tinydns.stop()
            self.happened("tinydns_restart")
            time.sleep(rng.uniform(1, 6))
            slave.tinydns.start()

    def fault_disk_full(self, slave: Slave, rng: random.Random) -> None:
        if slave.root not in self.mounted:
            return
        filler = slave.root / FILLER
        with self.fault("disk_full", (slave.name,)):
            # Unbuffered: a buffered file keeps what the full disk refused and raises
            # ENOSPC again when it is closed, outside the suppress.
            with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
            self.happened("disk_full")
            if rng.random() < 0.7:
                self.trigger_save()
            time.sleep(rng.uniform(2, 6))
            filler.unlink()

    def _tamper(self, slave: Slave, rng: random.Random, kind: str) -> None:
        if kind == "cdb_replace" and len(self.builds) < 2:
            self._svc("-h")  # a second build, so that there is an older one to restore
            deadline = time.monotonic() + 10
            while len(self.builds) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
        time.sleep(rng.uniform(0, 0.5))
        # Under the root's lock, so that what is replaced is known: a receiver installing
        # meanwhile would make the tamper land before or after its pair, by chance.
        lock = DirectoryLock(slave.root)
        lock.acquire()
        try:
            with self.fault(kind, (slave.name,)) as f:
                done = self._tamper_locked(slave, rng, kind)
                if done is None:
                    return
                f.note = done
        finally:
            lock.release()
        self.happened(kind)
        if self.opts.heal_window > 0:
            self._await_heal(slave, kind)

    def _tamper_locked(self, slave: Slave, rng: random.Random, kind: str) -> str | None:
        """Delete or replace data.cdb (the caller holds the lock); what was done, or None."""
        cdb = slave.root / "data.cdb"
        try:
            body = stream.split((slave.root / "data").read_bytes())[0]
        except FileNotFoundError:
            return None
        installed = hashlib.sha256(body).hexdigest()
        with self.lock:
            older = sorted(sha for sha in self.builds if sha != installed)
            newest = self.newest
        if kind == "cdb_delete":
            try:
                cdb.unlink()
            except FileNotFoundError:
                return None
            inode, note = 0, ""
        else:
            if not older:
                return None
            sha = rng.choice(older)
            tmp = slave.root / "soak-replace.tmp"
            tmp.write_bytes(compile_data(self.builds[sha], 0))
            tmp.chmod(0o644)
            os.replace(tmp, cdb)
            inode, note = cdb.stat().st_ino, f"build {sha[:12]} over {installed[:12]}"
        with self.lock:
            view = self.views[slave.name]
            view.tampered = (time.monotonic(), inode)
            view.tamper_kind = kind
            view.tamper_newest = newest
        return note

    def _await_heal(self, slave: Slave, kind: str) -> None:
        """No saves for ``--heal-window`` seconds: the daemon alone must repair the slave."""
        m = self.master
        assert m is not None
        with m.lock:
            deadline = time.monotonic() + self.opts.heal_window
            while time.monotonic() < deadline and not self.stop_event.is_set():
                with self.lock:
                    view = self.views[slave.name]
                    if view.tampered is None or self.newest != view.tamper_newest:
                        return
                time.sleep(0.2)
            with self.lock:
                view = self.views[slave.name]
                unhealed = view.tampered is not None and self.newest == view.tamper_newest
            if unhealed and not self.stop_event.is_set():
                self.violation(
                    "no_self_heal",
                    f"{slave.name}: {kind} not repaired in {self.opts.heal_window:g} s "
                    "without a new build",
                )

    def fault_cdb_delete(self, slave: Slave, rng: random.Random) -> None:
        self._tamper(slave, rng, "cdb_delete")

    def fault_cdb_replace(self, slave: Slave, rng: random.Random) -> None:
        self._tamper(slave, rng, "cdb_replace")

    def fault_hostkey_change(self, slave: Slave, rng: random.Random) -> None:
        m = self.master
        assert m is not None
        with self.fault("hostkey_change", (slave.name,)):
            slave.sshd.regenerate_host_key()
            self.happened("hostkey_change")
            if rng.random() < 0.7:
                self.trigger_save()
            time.sleep(rng.uniform(1, 5))
            self.write_known_hosts()
            self._svc("-h")

    def fault_zones_move(self, _: Slave | None, rng: random.Random) -> None:
        m = self.master
        assert m is not None
        away = m.zones.with_name("zones.moved-away")
        with m.lock, self.fault("zones_move"):
            os.rename(m.zones, away)
            self.happened("zones_move")
            time.sleep(rng.uniform(1, 5))
            os.rename(away, m.zones)

    def fault_sighup(self, _: Slave | None, rng: random.Random) -> None:
        with self.fault("sighup"):
            self._svc("-h")
            self.happened("sighup")

    def fault_manual_push(self, _: Slave | None, rng: random.Random) -> None:
        m = self.master
        assert m is not None
        with self.fault("manual_push") as f:
            proc = subprocess.run(
                [sys.executable, "-m", "dnsmaster", "push", "--config", str(m.config)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                env=dict(os.environ, PYTHONPATH=str(PROJECT)),
            )
            f.note = f"exit {proc.returncode}"
            self.happened("manual_push")

    def _svc(self, option: str) -> None:
        m = self.master
        assert m is not None
        subprocess.run(["svc", option, str(m.service)], check=False, timeout=10)

    # -- sampling ---------------------------------------------------------------------

    def sample_master(self) -> None:
        m = self.master
        assert m is not None
        archive = m.output / ".dnsmaster-builds"
        found: dict[str, Path] = {}
        with contextlib.suppress(OSError):
            for entry in os.scandir(archive):
                if entry.name.endswith(".build"):
                    sha = entry.name.rsplit("-", 1)[-1].removesuffix(".build")
                    if len(sha) == 64 and sha not in self.builds:
                        found[sha] = Path(entry.path)
        data_sha = None
        with contextlib.suppress(OSError):
            data = (m.output / "data").read_bytes()
            data_sha = hashlib.sha256(data).hexdigest()
            if data_sha not in self.builds:
                self._add_build(data_sha, data)
        for sha, path in found.items():
            with contextlib.suppress(OSError):
                body = path.read_bytes()
                if hashlib.sha256(body).hexdigest() == sha:
                    self._add_build(sha, body)
        assert m.supervise is not None
        mark = m.supervise.mark()
        held = {
            str(e["sha256"])
            for e in m.supervise.find("guard.held", self.held_mark)
            if e.get("sha256")
        }
        self.held_mark = mark
        with self.lock:
            self.held |= held
            if data_sha is not None and data_sha[:16] not in held:
                self.newest = data_sha
        files = _count_files(m.output)
        self.master_files_max = max(self.master_files_max, files)
        bound = self.master_files_base + 2 * KEEP + 10
        if self.master_files_base and files > bound:
            self.violation("litter", f"master output holds {files} files (bound {bound})")

    def _add_build(self, sha: str, body: bytes) -> None:
        cdb_sha = hashlib.sha256(compile_data(body, 0)).hexdigest()
        with self.lock:
            self.builds[sha] = body
            self.cdb_of[cdb_sha] = sha

    def _pair(self, data: bytes, mtime: int) -> str:
        """sha256 of the data.cdb that compiling ``data`` gives."""
        key = (hashlib.sha256(data).hexdigest(), mtime)
        if key not in self.pair_cache:
            if len(self.pair_cache) > 1000:
                self.pair_cache.clear()
            try:
                self.pair_cache[key] = hashlib.sha256(compile_data(data, mtime)).hexdigest()
            except Exception:
                self.pair_cache[key] = "does not compile"
        return self.pair_cache[key]

    def sample_slave(self, slave: Slave) -> None:
        view = self.views[slave.name]
        try:
            lock = DirectoryLock(slave.root)
        except OSError:
            return
        try:
            if not lock.try_acquire():
                view.busy += 1  # a receiver works there: look next time
                return
            seen = _read_root(slave.root)
        finally:
            lock.release()
        view.files_max = max(view.files_max, len(seen.files))
        if len(seen.files) > SLAVE_FILES_MAX:
            self.violation(
                "litter", f"{slave.name} root holds {len(seen.files)} files: {sorted(seen.files)}"
            )
        self._judge_files(slave, view, seen)

    def _judge_files(self, slave: Slave, view: SlaveView, seen: RootFiles) -> None:
        data, cdb, journal = seen.data, seen.cdb, seen.journal
        data_mtime, cdb_inode = seen.data_mtime, seen.cdb_inode
        name = slave.name
        now = time.monotonic()
        body = stream.split(data)[0] if data is not None else None
        data_sha = hashlib.sha256(body).hexdigest() if body is not None else None
        cdb_sha = hashlib.sha256(cdb).hexdigest() if cdb is not None else None
        if body is not None and INVALID.encode() in body:
            self.violation("invalid_served", f"{name}: data holds an invalid save")
        paired = (
            body is not None and cdb_sha is not None and self._pair(body, data_mtime) == cdb_sha
        )
        with self.lock:
            tampered = view.tampered
            if tampered is not None and paired and cdb_inode != tampered[1] and not journal:
                self._healed(name, view, now)
                tampered = None
        if data_sha is not None and data_sha not in self.builds:
            self.sample_master()
            if data_sha not in self.builds:
                self.violation("unknown_build", f"{name}: data {data_sha[:16]} is no master build")
        if data_sha is not None and data_sha[:16] in self.held:
            self.violation("held_served", f"{name}: has the held build {data_sha[:16]}")
        if tampered is None and not journal and body is not None and not paired:
            self.violation("pair", f"{name}: data.cdb is not the compile of data {data_sha}")
        served = None
        if cdb_sha is not None and slave.tinydns.running:
            served = self.cdb_of.get(cdb_sha)
            if served is None and paired:
                served = data_sha
            if served is None and tampered is None:
                self.violation(
                    "unknown_build", f"{name}: data.cdb {cdb_sha[:16]} is no master build"
                )
        with self.lock:
            view.served = served
            if served is not None and served == self.newest:
                if view.behind_since is not None:
                    view.longest_behind = max(view.longest_behind, now - view.behind_since)
                view.behind_since = None
            elif view.behind_since is None:
                view.behind_since = now

    def _healed(self, name: str, view: SlaveView, now: float) -> None:
        assert view.tampered is not None
        self.heal.append(
            {
                "slave": name,
                "kind": view.tamper_kind,
                "seconds": round(now - view.tampered[0], 2),
                "new_build": self.newest != view.tamper_newest,
            }
        )
        view.tampered = None

    def sample_dns(self, slave: Slave) -> None:
        if not slave.tinydns.running:
            return
        q = dns.message.make_query(MARKER, "TXT")
        try:
            r = dns.query.udp(q, slave.address, port=53, timeout=0.5)
        except (dns.exception.Timeout, OSError):
            return
        markers: dict[str, int] = {}
        for rrset in r.answer:
            if rrset.rdtype != dns.rdatatype.TXT:
                continue
            for rd in rrset:
                text = b"".join(rd.strings).decode(errors="replace")
                found = _TXT.fullmatch(text)
                if found is None:
                    continue
                if found[2].startswith(INVALID):
                    self.violation("invalid_served", f"{slave.name} answers {text}")
                    continue
                markers[found[1]] = int(found[2])
        self._converged(slave.name, markers)

    def _converged(self, name: str, markers: dict[str, int]) -> None:
        now = time.monotonic()
        with self.lock:
            view = self.views[name]
            view.markers = markers
            for file, pending in list(view.pending.items()):
                if markers.get(file, -1) >= pending.counter:
                    ready = self._ready(name, pending.saved, now)
                    self.converge.append(now - pending.saved)
                    if ready > pending.saved:
                        self.converge_fault.append(max(0.0, now - ready))
                    del view.pending[file]

    def _ready(self, name: str, since: float, now: float) -> float:
        """When the faults touching ``name`` after ``since`` ended (now if one runs)."""
        ready = since
        for f in self.faults:
            if f.touches(name) and (f.end is None or f.end > since) and f.start <= now:
                ready = max(ready, now if f.end is None else f.end)
        return ready

    def check_deadlines(self) -> None:
        now = time.monotonic()
        with self.lock:
            for name, view in self.views.items():
                for file, pending in view.pending.items():
                    ready = self._ready(name, pending.saved, now)
                    key = (file, pending.counter)
                    if now - ready > self.opts.bound and key not in view.late:
                        view.late.add(key)
                        self.violations["convergence"] += 1
                        self.examples.setdefault("convergence", []).append(
                            f"{now - self.started:.1f}s {name}: {file}={pending.counter} saved "
                            f"{now - pending.saved:.0f} s ago, serves {view.markers.get(file)}"
                        )

    def sample_rss(self) -> None:
        m = self.master
        assert m is not None
        pid = m.daemon_pid()
        if pid is None:
            return
        kib = _rss_kib(pid)
        if kib is not None:
            self.rss.setdefault(pid, []).append((time.monotonic(), kib))

    def sampler(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            self.sample_once()
            self.stop_event.wait(max(0.05, SAMPLE_EVERY - (time.monotonic() - started)))

    def sample_once(self) -> None:
        try:
            self.sample_master()
            for slave in self.slaves:
                self.sample_slave(slave)
                self.sample_dns(slave)
            self.check_deadlines()
            self.sample_rss()
        except Exception as exc:
            self.sample_errors += 1
            self.violation("harness", f"sampler: {exc!r}")

    # -- status -----------------------------------------------------------------------

    def status(self, how: str) -> tuple[int, str]:
        m = self.master
        assert m is not None
        argv = [sys.executable, "-m", "dnsmaster", "status", "--config", str(m.config)]
        if how == "nagios":
            argv += [
                "--nagios",
                "--warning",
                str(self.opts.grace),
                "--critical",
                str(5 * self.opts.grace),
            ]
        else:
            argv.append("--json")
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        )
        return proc.returncode, proc.stdout

    def _truth(self) -> tuple[dict[str, float | None], set[str]]:
        """Per slave: since when it has been behind (None: serves the newest); and the
        slaves whose host key is changed now."""
        with self.lock:
            behind = {n: v.behind_since for n, v in self.views.items()}
            # A changed key is CRITICAL at once while it is changed, and until the
            # daemon has read the new known_hosts (a few seconds after SIGHUP).
            recent = time.monotonic() - HOSTKEY_SETTLE
            hostkey = {
                s
                for f in self.faults
                if f.kind == "hostkey_change" and (f.end is None or f.end > recent)
                for s in f.slaves
            }
        return behind, hostkey

    def checker(self) -> None:
        turn = 0
        while not self.stop_event.wait(STATUS_EVERY):
            turn += 1
            how = "nagios" if turn % 2 else "json"
            before, hostkey = self._truth()
            try:
                code, out = self.status(how)
            except subprocess.TimeoutExpired:
                self.violation("harness", f"status --{how} took over 60 s")
                continue
            after, _ = self._truth()
            with self.lock:
                self.status_samples += 1
                self.status_exits[f"{how}:{code}"] += 1
            if how == "json":
                self._judge_json(out, before, after, hostkey)
            else:
                self._judge_nagios(code, out, before, after, hostkey)

    def _long_behind(
        self, before: dict[str, float | None], after: dict[str, float | None]
    ) -> list[str]:
        """Slaves behind all through the status run, for longer than the grace."""
        now = time.monotonic()
        return [
            n
            for n, since in before.items()
            if since is not None and after.get(n) is not None and now - since > self.late_after
        ]

    def _judge_json(
        self,
        out: str,
        before: dict[str, float | None],
        after: dict[str, float | None],
        hostkey: set[str],
    ) -> None:
        try:
            doc = json.loads(out)
        except ValueError:
            return  # no state file yet, or the daemon is being started
        health = doc.get("health", {})
        findings = {s["subject"]: s for s in health.get("slaves", [])}
        now = time.time()
        for name in self._long_behind(before, after):
            if findings.get(name, {}).get("state") == "ok":
                self.false_ok += 1
                self.violation(
                    "false_ok", f"status --json says {name} ok; it serves an older build"
                )
        for name, finding in findings.items():
            newest = before.get(name) is None and after.get(name) is None
            since = finding.get("since")
            critical = finding.get("urgent") or (
                since is not None and now - since >= 5 * self.opts.grace
            )
            if newest and critical and not finding.get("chosen") and name not in hostkey:
                self.false_critical += 1
                self.violation(
                    "false_critical",
                    f"status --json: {name} {finding.get('state')} ({finding.get('reason')}), "
                    "critical, while it serves the newest build",
                )

    def _judge_nagios(
        self,
        code: int,
        out: str,
        before: dict[str, float | None],
        after: dict[str, float | None],
        hostkey: set[str],
    ) -> None:
        if code == 0:
            late = self._long_behind(before, after)
            if late:
                self.false_ok += 1
                self.violation("false_ok", f"status --nagios OK while {late} serve an older build")
        elif code == 2:
            text = out.partition(" - ")[2].partition(" | ")[0]
            subjects = {part.split()[0] for part in text.split("; ") if part.split()}
            master_side = bool(subjects & {"daemon", "build", "config"})
            everyone = all(v is None for v in before.values()) and all(
                v is None for v in after.values()
            )
            if everyone and not master_side and not hostkey:
                self.false_critical += 1
                self.violation("false_critical", f"status --nagios: {out.strip()[:300]}")

    # -- the run ----------------------------------------------------------------------

    def run(self) -> None:
        self.started = time.monotonic()
        self.set_up()
        self.sample_once()
        m = self.master
        assert m is not None
        self.master_files_base = _count_files(m.output)
        self.log(f"set up; {self.master_files_base} files in the output; running")
        for target in (self.saver, self.faulter, self.sampler, self.checker):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self.threads.append(t)
        deadline = self.started + self.opts.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(1)
        self.stop_event.set()
        for t in self.threads:
            t.join(120)
        self.threads.clear()
        self.ended = time.monotonic()
        self.settle()

    def settle(self) -> None:
        """No more faults or saves: one last save; every slave must serve it, status ok."""
        m = self.master
        assert m is not None
        for f in self.faults:
            if f.end is None:
                f.end = time.monotonic()
        with m.lock:
            self.save("rename", "zones.soak0")
        deadline = time.monotonic() + self.opts.bound
        served = False
        while time.monotonic() < deadline:
            self.sample_once()
            if all(not v.pending for v in self.views.values()):
                served = True
                break
            time.sleep(0.3)
        self.final["served_last_save_s"] = (
            round(time.monotonic() - self.ended, 1) if served else None
        )
        self.check_deadlines()
        if not served:
            self.violation("convergence", "the last save is not served by every slave")
        deadline = time.monotonic() + self.opts.bound
        code, out = -1, ""
        while time.monotonic() < deadline:
            code, out = self.status("nagios")
            if code == 0:
                break
            time.sleep(1)
        self.final["nagios"] = out.strip()
        if code != 0:
            self.violation("final_status", f"status --nagios at the end: {out.strip()[:300]}")
        self.sample_rss()
        for name, view in self.views.items():
            if view.tampered is not None:
                self.final.setdefault("unhealed", []).append(name)

    # -- the report -------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        m = self.master
        rss_start = rss_end = None
        incarnations = [v for _, v in sorted(self.rss.items(), key=lambda kv: kv[1][0][0])]
        if incarnations:
            settled = [s for s in incarnations[0] if s[0] - incarnations[0][0][0] >= 5]
            rss_start = (settled or incarnations[0])[0][1]
            rss_end = incarnations[-1][-1][1]
        longest = max(incarnations, key=lambda s: s[-1][0] - s[0][0], default=[])
        growth = None
        if len(longest) > 2:
            first = [k for t, k in longest if t - longest[0][0] >= 5][:1] or [longest[0][1]]
            growth = longest[-1][1] - first[0]
            if growth > max(32 * 1024, first[0] // 2):
                self.violation("rss_growth", f"daemon RSS grew {growth} KiB in one life")
        pushes = len(m.events("push.done")) if m else 0
        failed = len(m.events("push.failed")) if m else 0
        behind = max(
            [v.longest_behind for v in self.views.values()]
            + [time.monotonic() - v.behind_since for v in self.views.values() if v.behind_since],
            default=0.0,
        )

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "minutes": round((self.ended - self.started) / 60, 2),
            "slaves": len(self.views),
            "wan": self.opts.wan,
            "seed": self.opts.seed,
            "service": m.made_by if m else None,
            "saves": {"valid": self.valid_saves, "invalid": self.invalid_saves},
            "save_kinds": dict(sorted(self.save_counts.items())),
            "superseded": self.superseded,
            "builds": len(self.builds),
            "faults": {k: self.fault_counts.get(k, 0) for k in self.opts.faults},
            "fault_tries": dict(sorted(self.fault_tries.items())),
            "pushes": pushes,
            "pushes_failed": failed,
            "daemon_starts": len(m.events("daemon.start")) if m else 0,
            "violations": dict(sorted(self.violations.items())),
            "examples": self.examples,
            "convergence_s": {
                "all": {
                    "count": len(self.converge),
                    "p50": r(percentile(self.converge, 50)),
                    "p99": r(percentile(self.converge, 99)),
                    "max": r(max(self.converge, default=None)),
                },
                "after_fault": {
                    "count": len(self.converge_fault),
                    "p50": r(percentile(self.converge_fault, 50)),
                    "p99": r(percentile(self.converge_fault, 99)),
                    "max": r(max(self.converge_fault, default=None)),
                },
            },
            "longest_behind_s": r(behind),
            "status_samples": self.status_samples,
            "status_exits": dict(sorted(self.status_exits.items())),
            "false_ok": self.false_ok,
            "false_critical": self.false_critical,
            "rss_kib": {"start": rss_start, "end": rss_end, "growth_one_life": growth},
            "litter": {
                "slave_files_max": max((v.files_max for v in self.views.values()), default=0),
                "slave_files_bound": SLAVE_FILES_MAX,
                "master_files_start": self.master_files_base,
                "master_files_max": self.master_files_max,
            },
            "tamper_heal": {
                "count": len(self.heal),
                "without_new_build": sum(not h["new_build"] for h in self.heal),
                "max_s": max((h["seconds"] for h in self.heal), default=None),
                "median_s": r(statistics.median([h["seconds"] for h in self.heal]))
                if self.heal
                else None,
                "events": self.heal,
            },
            "final": self.final,
        }


def render(rep: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("run", f"{rep['minutes']} min, {rep['slaves']} slaves, wan={rep['wan']}, "
                f"seed {rep['seed']}"),
        ("service", str(rep["service"])),
        ("saves", f"{rep['saves']['valid']} valid, {rep['saves']['invalid']} invalid; "
                  + ", ".join(f"{k} {v}" for k, v in rep["save_kinds"].items())),
        ("builds, pushes", f"{rep['builds']} builds, {rep['pushes']} pushes done, "
                           f"{rep['pushes_failed']} failed, {rep['daemon_starts']} daemon starts"),
    ]  # fmt: skip
    for kind, n in rep["faults"].items():
        tries = rep["fault_tries"].get(kind, 0)
        rows.append((f"fault {kind}", f"{n}" + (f" (of {tries} tries)" if tries != n else "")))
    for key in ("all", "after_fault"):
        c = rep["convergence_s"][key]
        rows.append(
            (
                f"convergence {key.replace('_', ' ')}",
                f"p50 {c['p50']} s, p99 {c['p99']} s, max {c['max']} s ({c['count']} saves)",
            )
        )
    rows += [
        ("longest behind", f"{rep['longest_behind_s']} s"),
        ("status samples", f"{rep['status_samples']}: false OK {rep['false_ok']}, "
                           f"false CRITICAL {rep['false_critical']}"),
        ("daemon RSS", f"{rep['rss_kib']['start']} KiB at start, {rep['rss_kib']['end']} KiB "
                       f"at end (one life grew {rep['rss_kib']['growth_one_life']} KiB)"),
        ("litter", f"slave root at most {rep['litter']['slave_files_max']} files, master "
                   f"output {rep['litter']['master_files_start']} -> at most "
                   f"{rep['litter']['master_files_max']}"),
        ("tampered data.cdb", f"{rep['tamper_heal']['count']} healed, "
                              f"{rep['tamper_heal']['without_new_build']} without a new build"),
        ("end", f"last save served in {rep['final'].get('served_last_save_s')} s; "
                f"{rep['final'].get('nagios', '')[:100]}"),
    ]  # fmt: skip
    if rep["violations"]:
        for kind, n in rep["violations"].items():
            rows.append(
                (f"VIOLATION {kind}", f"{n}: " + " | ".join(rep["examples"].get(kind, [])[:2]))
            )
    else:
        rows.append(("violations", "none"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _in_namespace(argv: list[str]) -> None:
    """Run again in a private mount namespace (the tmpfs roots vanish with it)."""
    if os.environ.get(NAMESPACE_ENV) or not shutil.which("unshare"):
        return
    env = dict(os.environ, **{NAMESPACE_ENV: "1"})
    os.execvpe(
        "unshare",
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "benchmarks.soak",
            *argv,
        ],
        env,
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--slaves", type=int, default=3)
    p.add_argument("--wan", action="store_true", help="each slave behind the delaying proxy")
    p.add_argument("--rtt", type=float, default=40.0, help="--wan round trip, ms (default 40)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bound", type=float, default=30.0, help="convergence bound, s (default 30)")
    p.add_argument("--grace", type=float, default=120.0, help="status grace, s (default 120)")
    p.add_argument("--save-gap", type=float, default=1.5, help="mean seconds between saves")
    p.add_argument("--fault-gap", type=float, default=3.0, help="mean seconds between faults")
    p.add_argument(
        "--heal-window",
        type=float,
        default=0.0,
        help="after each cdb_delete/cdb_replace, no saves for this many seconds: the daemon "
        "must repair the slave alone (default 0: off; saves go on and repair it)",
    )
    p.add_argument("--faults", default=",".join(FAULTS), help="fault kinds (default: all)")
    p.add_argument("--no-disk-full", action="store_true", help="leave out disk_full (no tmpfs)")
    p.add_argument(
        "--keep",
        type=Path,
        help="keep the lab, the daemon's log (daemon.jsonl, timed) and the faults in DIR",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="faults and violations on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(raw)
    if os.geteuid() != 0:
        print("benchmarks/soak.py needs root (sshd, tinydns, tmpfs)", file=sys.stderr)
        return 2
    faults = tuple(k for k in args.faults.split(",") if k)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        print(f"unknown fault kinds: {sorted(unknown)}", file=sys.stderr)
        return 2
    if args.no_disk_full:
        faults = tuple(k for k in faults if k != "disk_full")
    if "disk_full" in faults:
        _in_namespace(raw)
        if not os.environ.get(NAMESPACE_ENV):
            faults = tuple(k for k in faults if k != "disk_full")  # no unshare: left out
    opts = Options(
        minutes=args.minutes,
        slaves=args.slaves,
        wan=args.wan,
        seed=args.seed,
        bound=args.bound,
        grace=args.grace,
        rtt=args.rtt,
        faults=faults,
        save_gap=args.save_gap,
        fault_gap=args.fault_gap,
        heal_window=args.heal_window,
        keep=args.keep,
        verbose=args.verbose,
    )
    soak = Soak(opts)
    try:
        soak.run()
    finally:
        soak.close()
    rep = soak.report()
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(render(rep))
    return 1 if rep["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
