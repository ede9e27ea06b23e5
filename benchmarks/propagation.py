"""Time from saving a zones file until every slave serves it: dnsmaster vs the classic way.

A lab of N slaves on this machine (``tests.lab.realworld``: OpenSSH's sshd, logged in to as
a plain slave account whose key's forced command is the receiver, by default the package
with its C accelerator, with ``--receiver bundle`` the README's pure-Python bundle; and
Debian's tinydns on 127.0.1.N:53), a zones
directory from :mod:`benchmarks.datagen` (100 ``zones.*`` files), and two ways to get
an edit out, measured in the same run on the same slaves:

* dnsmaster: ``dnsmaster run`` (default debounce, 0.5 s) watching the zones directory,
  pushing to every slave in parallel over kept SSH connections.
* classic: what the operator runs by hand right after saving (zero human delay):
  ``make-data`` (``cat header zones.* > data``, as the perl script's core does),
  ``tinydns-data``, then a sequential ``ssh slave < data`` loop into a classic
  ``update-dns`` forced command (``cat > data.tmp && mv data.tmp data && tinydns-data``)
  on a second key in each slave's authorized_keys.

One edit rewrites ``zones.group0000`` with a new address for a marker host. The clock
starts when the file is written and stops when every slave's tinydns answers both the
marker's new address and a new SOA serial for its zone over DNS (dnspython, polled
every 5 ms). Edits are at least 1.1 s apart: the classic data has no explicit serials,
so tinydns-data takes the data file's mtime, one second granularity.

Needs root (tinydns binds port 53, sshd switches users). Run from the project root::

    python benchmarks/propagation.py                       # 10 slaves, 20 edits, 10k + 100k
    python benchmarks/propagation.py --sizes 10k --edits 5 --readme
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from datagen import write_zones  # noqa: E402

from tests.lab.daemonrun import DaemonProcess, config_text  # noqa: E402

if TYPE_CHECKING:
    from tests.lab.realworld import Lab, Slave

ZONE = "customer0.example"
MARKER = f"bench.{ZONE}"
EDITED = "zones.group0000"
POLL = 0.005
TIMEOUT = 120.0
MIN_GAP = 1.1

UPDATE_DNS = """#!/bin/sh
# The classic update-dns forced command: data on stdin, install it, rebuild data.cdb.
cd {root} || exit 111
cat > data.new || exit 111
mv data.new data || exit 111
PATH=/usr/sbin:/usr/bin:/sbin:/bin exec tinydns-data
"""

CLASSIC = """#!/bin/sh
# The classic master: make-data, tinydns-data, then push to each slave in turn.
set -e
cd {master}
cat {zones}/header {zones}/zones.* > data.tmp
mv data.tmp data
tinydns-data
for slave in {slaves}; do
    {ssh} -p "${{slave#*:}}" "{user}@${{slave%:*}}" < data || echo "push to $slave failed" >&2
done
"""


def parse_size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("k", 1000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def label(lines: int) -> str:
    return f"{lines // 1_000_000}M" if lines >= 1_000_000 else f"{lines // 1000}k"


# -- asking the slaves -------------------------------------------------------------------


def _ask(address: str, name: str, rdtype: dns.rdatatype.RdataType) -> list[str]:
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    try:
        answer = dns.query.udp(query, address, port=53, timeout=0.5)
    except (dns.exception.DNSException, OSError):
        return []
    return [rd.to_text() for rrset in answer.answer if rrset.rdtype == rdtype for rd in rrset]


def soa_serial(address: str) -> int | None:
    found = _ask(address, ZONE, dns.rdatatype.SOA)
    return int(found[0].split()[2]) if found else None


def marker(address: str) -> list[str]:
    return _ask(address, MARKER, dns.rdatatype.A)


def wait_all(
    slaves: list[Slave], address: str, old: dict[str, int | None], *, new_serial: bool = True
) -> float:
    """Poll until every slave serves ``address`` for the marker and (``new_serial``) a new
    serial; the time.monotonic() when the last one did.

    The classic way is timed without ``new_serial``: its serials come from the mtime of
    ``data``, so two builds in one second (or a serial equal to an earlier dnsmaster
    build's) leave the serial where it was, and waiting for it would never end.
    """
    pending = {s.name: s for s in slaves}
    deadline = time.monotonic() + TIMEOUT
    while pending:
        for name, slave in list(pending.items()):
            if marker(slave.address) == [address]:
                serial = soa_serial(slave.address)
                if not new_serial or (serial is not None and serial != old[name]):
                    del pending[name]
        if not pending:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"not propagated after {TIMEOUT} s: {sorted(pending)}")
        time.sleep(POLL)
    return time.monotonic()


# -- the two ways ------------------------------------------------------------------------


class Edits:
    """Rewrites zones.group0000 with the marker at a new address each time."""

    def __init__(self, zones: Path) -> None:
        self.path = zones / EDITED
        self.base = self.path.read_text()
        self.count = 0
        self.last = 0.0

    def next(self) -> str:
        """Write the next edit (at least MIN_GAP after the last); its marker address."""
        wait = self.last + MIN_GAP - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.count += 1
        address = f"10.255.{self.count >> 8 & 255}.{self.count & 255}"
        with self.path.open("w") as f:
            f.write(self.base + f"+{MARKER}:{address}\n")
        self.last = time.monotonic()  # the save is complete: the clock starts
        return address


def run_dnsmaster(
    lab: Lab, slaves: list[Slave], zones: Path, work: Path, edits: int
) -> list[float]:
    output = work / "out"
    output.mkdir()
    config = work / "dnsmaster.toml"
    config.write_text(
        config_text(
            zones=zones,
            output=output,
            state=work / "state.json",
            top={"key": lab.key, "known_hosts": lab.known_hosts, "user": lab.user},
            slaves=[
                {"name": s.name, "host": s.address, "port": s.port, "dns": s.address}
                for s in slaves
            ],
        )
    )
    editor = Edits(zones)
    daemon = DaemonProcess(config).start()
    try:
        first = daemon.wait("build.done", timeout=TIMEOUT)
        daemon.wait_count("push.done", len(slaves), timeout=TIMEOUT, serial=first["serial"])
        times = []
        for _ in range(edits):
            old = {s.name: soa_serial(s.address) for s in slaves}
            mark = daemon.mark()
            address = editor.next()
            started = editor.last
            ended = wait_all(slaves, address, old)
            times.append(ended - started)
            # let the verify queries finish before the next edit
            daemon.wait_count("push.done", len(slaves), mark, timeout=TIMEOUT)
        return times
    finally:
        status = daemon.stop(timeout=60)
        if status != 0:
            print(daemon.dump(), file=sys.stderr)
        editor.path.write_text(editor.base)


def run_classic(lab: Lab, slaves: list[Slave], zones: Path, work: Path, edits: int) -> list[float]:
    from tests.lab.realworld import ssh_keygen  # noqa: PLC0415

    master = work / "classic"
    master.mkdir()
    key = work / "classic_ed25519"
    ssh_keygen(key, "classic-master@bench")
    pub = key.with_name(key.name + ".pub").read_text().strip()
    for s in slaves:
        script = lab.workdir / f"update-dns-{s.name}"  # work is not the slave account's to read
        script.write_text(UPDATE_DNS.format(root=shlex.quote(str(s.root))))
        script.chmod(0o755)
        line = f'restrict,command="{script}" {pub}\n'
        keys = s.sshd.authorized_keys.read_text()
        s.sshd.set_authorized_keys(keys.rstrip("\n") + "\n" + line)
    ssh = lab.ssh_argv(slaves[0])[:-3]  # drop -p PORT and the destination
    ssh[ssh.index(str(lab.key))] = str(key)
    ssh.insert(1, "-T")  # no command, stdin not a terminal: say so, or ssh warns
    pipeline = master / "push-changes"
    pipeline.write_text(
        CLASSIC.format(
            master=shlex.quote(str(master)),
            zones=shlex.quote(str(zones)),
            slaves=" ".join(f"{s.address}:{s.port}" for s in slaves),
            ssh=shlex.join(ssh),
            user=lab.user,
        )
    )
    pipeline.chmod(0o755)
    editor = Edits(zones)
    times = []
    try:
        for _ in range(edits):
            old = {s.name: soa_serial(s.address) for s in slaves}
            address = editor.next()
            started = editor.last
            pushing = subprocess.Popen(
                [str(pipeline)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            try:
                ended = wait_all(slaves, address, old, new_serial=False)
            except RuntimeError:
                _, errors = pushing.communicate(timeout=TIMEOUT)
                raise RuntimeError(f"classic: {errors.decode()}") from None
            _, errors = pushing.communicate(timeout=TIMEOUT)
            if pushing.returncode != 0 or b"failed" in errors:
                raise RuntimeError(f"classic push failed: {errors.decode()}")
            times.append(ended - started)
        return times
    finally:
        editor.path.write_text(editor.base)


# -- the report ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cpus} CPUs{', ' + model if model else ''}, Python {sys.version.split()[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slaves", type=int, default=10)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--sizes", default="10k,100k", help="comma-separated line counts")
    parser.add_argument("--ways", default="dnsmaster,classic", help="which ways to time")
    parser.add_argument("--readme", action="store_true", help="append the table to README.md")
    parser.add_argument(
        "--receiver",
        choices=["installed", "bundle"],
        default="installed",
        help="the slaves' receiver: the package with its C accelerator (default), or the "
        "pure-Python bundle the README installs",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("propagation.py needs root (tinydns binds port 53, sshd)", file=sys.stderr)
        return 2
    from tests.lab.realworld import Lab  # noqa: PLC0415

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="dnsmaster-propagation-") as tmp:
        base = Path(tmp)
        lab = Lab(base / "lab", receiver=args.receiver)
        try:
            slaves = lab(args.slaves)
            for lines in sizes:
                work = base / f"run-{lines}"
                zones = work / "zones"
                write_zones(zones, lines)
                print(f"{label(lines)} lines, {args.slaves} slaves, {args.edits} edits", flush=True)
                ways: list[tuple[str, Callable[..., list[float]]]] = [
                    ("dnsmaster run", run_dnsmaster),
                    ("classic", run_classic),
                ]
                chosen = args.ways.split(",")
                for name, way in [w for w in ways if w[0].split()[0] in chosen]:
                    sub = work / name.split()[0]
                    sub.mkdir(parents=True)
                    times = way(lab, slaves, zones, sub, args.edits)
                    rows.append((label(lines), name, times))
                    print(
                        f"  {name:14} p50 {percentile(times, 50):6.3f} s"
                        f"  p95 {percentile(times, 95):6.3f} s  max {max(times):6.3f} s",
                        flush=True,
                    )
        finally:
            lab.close()
    table = render(rows, args.slaves, args.edits, args.receiver)
    print(table)
    if args.readme:
        append_readme(table)
    return 0


def render(rows: list[tuple[str, str, list[float]]], slaves: int, edits: int, receiver: str) -> str:
    out = [
        "## propagation",
        "",
        f"`python benchmarks/propagation.py` ({time.strftime('%Y-%m-%d')}, {machine()}): "
        f"{slaves} slaves (sshd + tinydns on 127.0.1.x, all on this machine), "
        f"{edits} edits of one zones file out of 100; seconds from the write until every "
        "slave's tinydns answers the new record and a new SOA serial over DNS. dnsmaster "
        f"with its default debounce (0.5 s), receiver {receiver}; classic = make-data + "
        "tinydns-data + a "
        "sequential `ssh slave < data` loop into update-dns, started at once. "
        f"Load average at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "| data | way | p50 | p95 | max |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for size, name, times in rows:
        out.append(
            f"| {size} lines | {name} | {percentile(times, 50):.2f} s | "
            f"{percentile(times, 95):.2f} s | {max(times):.2f} s |"
        )
    return "\n".join(out) + "\n"


def append_readme(table: str) -> None:
    readme = HERE / "README.md"
    existing = readme.read_text() if readme.exists() else ""
    with readme.open("a") as f:
        if existing and not existing.endswith("\n\n"):
            f.write("\n" if existing.endswith("\n") else "\n\n")
        f.write(table)


if __name__ == "__main__":
    sys.exit(main())
