"""Push over an emulated WAN: ``dnsmaster push`` against the classic ssh loops, bytes counted.

The lab is the one of tests/lab/realworld.py: every slave is a real OpenSSH sshd (and a
tinydns) on its own 127.0.1.N, logged in to as a plain account. In front of each sshd
sits a :class:`wanproxy.Proxy` on the same address: a one-way delay in each direction
(``--rtt`` / 2) and one token bucket shared by all slaves for the master-to-slaves
direction (``--rate``, the master's uplink), counting the bytes that cross per slave.
See benchmarks/wanproxy.py for the method and its limits (a user-space hop; TCP's own
slow start over the long path is not reproduced, SSH's windows and every request-reply
turn are).

Each slave's authorized_keys holds dnsmaster's key, forced to the lab's receiver
(``--receiver installed``, the default: the package under test with its C accelerator,
run by Debian's python3, as ``pip install`` on a slave gives; or ``bundle``, the
pure-Python one-file receiver the README installs, which compiles 500k lines some 17
times slower, so ten of them on two cores would be what this measures), and a classic
key, forced to ``update-dns`` (``cat > data.new && mv data.new data && tinydns-data``
in a directory of its own). The master's zones are ``--lines`` lines in ``--files``
zones.* files (benchmarks/datagen.py).

Scenarios, each way timed from the zones as they are on disk to every slave holding
the data (the ways in the same run, on the same slaves and link):

* **change**: every slave already holds the current build (seeded through the sshd
  ports, proxy-free, so set-up is quick), then one line of one zones file changes.
  ``dnsmaster push`` runs as a new process, as an operator runs it (it builds, asks each
  receiver what it holds, pushes); the classic ways run ``cat header zones.* > data``
  then ``for s in slaves; do ssh s < data; done`` (loop) or the same ssh commands
  through ``xargs -P N`` (xargs).
* **full**: the first push to empty slaves (every file in each dnsmaster root removed,
  the master's state file and push record too): ``dnsmaster push`` against xargs.

Every run is checked (every slave holds the data the master built or concatenated).
With each run go the bytes each proxy carried, each way, and the CPU seconds of the
pushing side (dnsmaster, or the shell, xargs and ssh clients) and of the rest of the
machine (this machine's busy time less the pushing side and the proxies: the sshds and
receivers of all slaves, and whatever else ran meanwhile, so run it on a quiet
machine). The slaves share this machine's cores, which real slaves do not: the second
figure says how much of a wall time that may be.

``--compress on|off|auto`` writes ``compress = ...`` into each slave's entry of the
generated dnsmaster config. The default is ``on``: ``auto`` means off for a slave on a
loopback address, which every lab slave is, while over a real WAN it would mean on.
``--compress unset`` leaves the key out (for code that predates it).
``--timeline`` prints dnsmaster's log events with the time each arrived; ``--trace``
prints each read the first slave's proxy made during each ``dnsmaster push`` (its
time, ``>`` towards the slave or ``<`` back, bytes): the round trips, counted.

Needs root (sshd, tinydns), sshd, tinydns, tinydns-data, xargs. From the project root::

    python benchmarks/wan.py                                  # 10 slaves, 500k lines
    python benchmarks/wan.py --slaves 3 --lines 50k --readme  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from datagen import write_zones  # noqa: E402
from wanproxy import Counts, Proxy, ProxyThread  # noqa: E402

from tests.lab.realworld import Lab, Receiver, Slave, ssh_keygen, ssh_options  # noqa: E402

UPDATE_DNS = """#!/bin/sh
# The classic update-dns forced command: plain data on stdin, compiled in place.
cd "$1" || exit 111
cat > data.new && mv data.new data && PATH=/usr/sbin:/usr/bin:/sbin:/bin exec tinydns-data
"""

EDITED = "zones.group0000"
MARKER = "wan-bench.customer0.example"


@dataclass(frozen=True)
class Run:
    """One timed run: wall seconds and the bytes that crossed, per slave."""

    wall: float
    bytes: tuple[Counts, ...]
    master_cpu: float  # the pushing side: dnsmaster, or the shell, xargs and ssh clients
    rest_cpu: float  # the rest of the machine: the slaves' sshds and receivers, and others
    proxy_cpu: float  # the proxies' thread
    build: float | None = None  # dnsmaster's own build.done seconds, when it built

    @property
    def sent(self) -> int:
        """The most bytes any slave was sent."""
        return max(c.to_target for c in self.bytes)

    @property
    def sent_mean(self) -> float:
        return sum(c.to_target for c in self.bytes) / len(self.bytes)

    @property
    def back_mean(self) -> float:
        return sum(c.to_client for c in self.bytes) / len(self.bytes)


_TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu() -> float:
    """CPU seconds this machine has been busy, all cores, all processes (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the pushing side)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Meter:
    """Bytes, CPU and wall time from its making until :meth:`stop`."""

    def __init__(self, wan: Wan) -> None:
        self.wan = wan
        self.counts = wan.counted()
        self.client = children_cpu()
        self.proxy = wan.proxies.cpu()
        self.busy = busy_cpu()
        self.started = time.perf_counter()

    def stop(self, build: float | None = None) -> Run:
        """The run that ends now (once the pushing side has been waited for)."""
        wall = time.perf_counter() - self.started
        crossed = tuple(a - b for a, b in zip(self.wan.counted(), self.counts, strict=True))
        client = children_cpu() - self.client
        proxy = self.wan.proxies.cpu() - self.proxy
        rest = busy_cpu() - self.busy - client - proxy
        return Run(wall, crossed, client, rest, proxy, build)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("m", 1_000_000), ("k", 1_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


class Wan:
    """The lab, its proxies, the master's directories and both ways of pushing."""

    def __init__(
        self,
        workdir: Path,
        count: int,
        *,
        rtt: float,
        rate: float,
        compress: str | None,
        receiver: Receiver = "installed",
        timeline: bool = False,
        trace: bool = False,
    ) -> None:
        self.workdir = workdir
        self.compress = compress
        self.timeline = timeline
        self.trace = trace
        self.master = workdir / "master"
        self.zones = self.master / "zones"
        (self.master / "out").mkdir(parents=True)
        self.classic_master = workdir / "classic"
        self.classic_master.mkdir()
        self.classic_key = workdir / "classic_ed25519"
        ssh_keygen(self.classic_key, "classic-push@wan-bench")
        self.known_hosts = workdir / "known_hosts"
        self.links: dict[str, Proxy] = {}
        self.lab = Lab(workdir / "lab", receiver=receiver)
        self.update_dns = self.lab.workdir / "update-dns"  # where the slave account reaches
        self.proxies = ProxyThread()
        try:
            self._set_up(count, rtt, rate)
        except BaseException:
            self.close()
            raise

    def _set_up(self, count: int, rtt: float, rate: float) -> None:
        """Start the slaves with both keys, and a proxy in front of each."""
        self.update_dns.write_text(UPDATE_DNS)
        self.update_dns.chmod(0o755)
        pubkey = self.classic_key.with_name(self.classic_key.name + ".pub").read_text().strip()
        started = time.monotonic()
        bucket = self.proxies.bucket(rate)
        for _ in range(count):
            slave = self.lab.add_slave()
            classic = self.classic_dir(slave)
            classic.mkdir()
            os.chown(classic, self.lab.account.pw_uid, self.lab.account.pw_gid)
            line = f'restrict,command="{self.update_dns} {classic}" {pubkey}\n'
            slave.sshd.set_authorized_keys(self.lab.authorized_key(slave.root) + line)
            self.links[slave.name] = self.proxies.add(
                (slave.address, slave.port),
                bucket,
                listen=slave.address,
                up_delay=rtt / 2,
                down_delay=rtt / 2,
            )
        self.write_known_hosts()
        print(f"# {count} slaves and proxies up in {time.monotonic() - started:.1f} s", flush=True)

    @property
    def slaves(self) -> list[Slave]:
        return self.lab.slaves

    @property
    def user(self) -> str:
        """The account the lab logs in as."""
        return self.lab.user

    def close(self) -> None:
        try:
            self.proxies.close()
        finally:
            self.lab.close()

    def classic_dir(self, slave: Slave) -> Path:
        return slave.root.parent / "classic"

    def write_known_hosts(self) -> None:
        """Every slave's host key under its sshd's address and under its proxy's."""
        lines = []
        for s in self.slaves:
            direct = s.sshd.host_key_line()
            key = direct.split(" ", 1)[1]
            lines += [direct, f"[{s.address}]:{self.links[s.name].port} {key}"]
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def counted(self) -> list[Counts]:
        return self.proxies.counted([self.links[s.name] for s in self.slaves])

    # ------------------------------------------------------------------ the data

    def make_zones(self, lines: int, files: int) -> None:
        write_zones(self.zones, lines, files=files)

    def change_one_line(self, n: int) -> None:
        """Add (or move) the marker host: a one-line change in one zones file."""
        path = self.zones / EDITED
        text = path.read_text()
        text = "".join(x for x in text.splitlines(True) if not x.startswith(f"+{MARKER}:"))
        path.write_text(text + f"+{MARKER}:10.255.{n >> 8 & 255}.{n & 255}\n")

    def wipe_slaves(self) -> None:
        """Empty every dnsmaster root and forget what the master knew of the slaves."""
        for s in self.slaves:
            for entry in s.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        (self.master / "state.json").unlink(missing_ok=True)
        # What dnsmaster push recorded of its last push to each slave.
        (self.master / "out" / ".dnsmaster-builds" / "pushed").unlink(missing_ok=True)

    # ------------------------------------------------------------------ dnsmaster

    def write_config(self, *, proxied: bool) -> Path:
        path = self.master / ("wan.toml" if proxied else "direct.toml")
        lines = [
            f'zones = "{self.zones}"',
            f'output = "{self.master / "out"}"',
            f'state = "{self.master / "state.json"}"',
            f'key = "{self.lab.key}"',
            f'known_hosts = "{self.known_hosts}"',
            f'user = "{self.user}"',
            "[push]",
            f"parallel = {len(self.slaves)}",
            "timeout = 900",
        ]
        for s in self.slaves:
            port = self.links[s.name].port if proxied else s.port
            lines += ["[[slave]]", f'name = "{s.name}"', f'host = "{s.address}"', f"port = {port}"]
            if self.compress is not None:
                lines.append(f'compress = "{self.compress}"')
        path.write_text("\n".join(lines) + "\n")
        return path

    def dnsmaster_push(self, *, proxied: bool = True) -> Run:
        config = self.write_config(proxied=proxied)
        argv = [sys.executable, "-m", "dnsmaster", "push", "--config", str(config)]
        argv += ["--log-format", "json"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # The first slave's link, read by read, for --trace (set before connecting).
        traced = self.links[self.slaves[0].name] if self.trace and proxied else None
        if traced is not None:
            traced.trace = []
        meter = Meter(self)
        # Each log line is stamped as it arrives, for --timeline.
        events: list[dict[str, object]] = []
        lines: list[str] = []
        with subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        ) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                event["at"] = time.perf_counter() - meter.started
                events.append(event)
        build = [e.get("seconds") for e in events if e.get("event") == "build.done"]
        seconds = build[0] if build else None
        run = meter.stop(float(seconds) if isinstance(seconds, (int, float)) else None)
        if self.timeline:
            for e in events:
                fields = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "event"))
                print(f"#   {e['at']:7.3f} {e['event']} {fields}", flush=True)
        if traced is not None and traced.trace is not None:
            print(f"# the link to {self.slaves[0].name}, as the proxy read it:", flush=True)
            for at, side, size in traced.trace:
                print(f"#   {at - meter.started:7.3f} {side} {size}", flush=True)
            traced.trace = None
        done = [e for e in events if e.get("event") == "push.done"]
        if proc.returncode != 0 or len(done) != len(self.slaves):
            tail = "".join(lines)[-3000:]
            raise SystemExit(f"dnsmaster push failed ({proc.returncode}):\n{tail}")
        data = (self.master / "out" / "data").read_bytes()
        for s in self.slaves:
            installed = s.installed() or b""
            if not installed.startswith(data) or not (s.root / "data.cdb").is_file():
                raise SystemExit(f"dnsmaster push: {s.name} does not hold the data")
        return run

    # ------------------------------------------------------------------ the classic way

    def classic_ssh(self) -> str:
        """The classic ssh command, without port and destination (the script adds them)."""
        argv = [
            self.lab.ssh_binary,
            "-T",
            *ssh_options(self.classic_key, self.known_hosts, connect_timeout=30),
        ]
        return shlex.join(argv)

    def classic(self, *, parallel: bool) -> Run:
        """make-data, then the loop (or xargs -P N) through the proxies."""
        data = self.classic_master / "data"
        targets = " ".join(
            shlex.quote(f"{self.user}@{s.address}:{self.links[s.name].port}") for s in self.slaves
        )
        ssh = self.classic_ssh()
        one = f'{ssh} -p "${{1##*:}}" "${{1%:*}}" < data || echo "failed $1" >&2'
        if parallel:
            push = (
                f"printf '%s\\n' {targets} | "
                f"xargs -P {len(self.slaves)} -n 1 sh -c {shlex.quote(one)} sh"
            )
        else:
            push = f'for s in {targets}; do set -- "$s"; {one}; done'
        script = self.workdir / ("push-xargs" if parallel else "push-loop")
        script.write_text(
            "#!/bin/sh\n"
            f"cd {shlex.quote(str(self.classic_master))} || exit 111\n"
            f"cat {shlex.quote(str(self.zones))}/header {shlex.quote(str(self.zones))}/zones.* "
            "> data.tmp && mv data.tmp data || exit 111\n"
            f"{push}\n"
        )
        for s in self.slaves:
            (self.classic_dir(s) / "data").unlink(missing_ok=True)
        meter = Meter(self)
        proc = subprocess.run(["sh", str(script)], capture_output=True, check=False)
        run = meter.stop()
        if proc.returncode != 0 or b"failed" in proc.stderr:
            raise SystemExit(f"classic push failed: {proc.stderr.decode()[-2000:]}")
        expected = data.read_bytes()
        for s in self.slaves:
            if (self.classic_dir(s) / "data").read_bytes() != expected:
                raise SystemExit(f"classic push: {s.name} does not hold the data")
            if not (self.classic_dir(s) / "data.cdb").is_file():
                raise SystemExit(f"classic push: {s.name} has no data.cdb")
        return run


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall)


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def render(
    results: dict[str, dict[str, Run]], args: argparse.Namespace, size: int, *, markdown: bool
) -> str:
    """The table: one row per scenario and way, with dnsmaster's ratios to xargs."""
    head = ["scenario", "way", "time", "sent per slave", "back per slave", "time / xargs"]
    head.append("CPU pushing + rest")
    names = {"dnsmaster": "dnsmaster push", "loop": "classic loop"}
    names["xargs"] = f"xargs -P {args.slaves}"
    rows = []
    for scenario, runs in results.items():
        xargs = runs.get("xargs")
        for way, run in runs.items():
            wall = f"{run.wall:.2f} s"
            if run.build is not None:
                wall += f" (build {run.build:.2f} s)"
            ratio = f"{run.wall / xargs.wall:.3f}" if xargs is not None else "-"
            cpu = f"{run.master_cpu:.1f} + {run.rest_cpu:.1f} s"
            row = [scenario, names[way], wall, kib(run.sent_mean), kib(run.back_mean), ratio, cpu]
            rows.append(row)
    if markdown:
        out = ["| " + " | ".join(cells) + " |" for cells in [head, *rows]]
        out.insert(1, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    else:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        out = [
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in [head, *rows]
        ]
    proxy_cpu = sum(r.proxy_cpu for runs in results.values() for r in runs.values())
    change, full = results.get("change", {}), results.get("full", {})
    out.append("")
    if "dnsmaster" in change and "xargs" in change:
        d, x = change["dnsmaster"], change["xargs"]
        ok = d.wall <= 0.08 * x.wall and d.sent < 64 * 1024
        out.append(
            f"{'- ' if markdown else ''}one-line change: dnsmaster / xargs = "
            f"{d.wall / x.wall:.3f} (target <= 0.08), most sent to a slave {kib(d.sent)} "
            f"(target < 64 KiB): {'met' if ok else 'NOT met'}"
        )
    if "dnsmaster" in full and "xargs" in full:
        d, x = full["dnsmaster"], full["xargs"]
        ok = d.wall <= 0.5 * x.wall
        out.append(
            f"{'- ' if markdown else ''}full first push: dnsmaster / xargs = "
            f"{d.wall / x.wall:.3f} (target <= 0.5): {'met' if ok else 'NOT met'}; "
            f"bytes {d.sent_mean / x.sent_mean:.3f} of xargs'"
        )
    out.append(
        f"{'- ' if markdown else ''}data: {args.lines} lines in {args.files} files, "
        f"{size / 1e6:.1f} MB; {args.slaves} slaves, RTT {args.rtt:g} ms, "
        f"{args.rate:g} Mbit/s shared uplink, compress={args.compress}, "
        f"receiver={args.receiver}, best of {args.repeat}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; the proxies used {proxy_cpu:.1f} s of CPU"
    )
    return "\n".join(out)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slaves", type=int, default=10, help="default %(default)s")
    parser.add_argument("--lines", default="500k", help="data lines (default %(default)s)")
    parser.add_argument("--files", type=int, default=50, help="zones.* files (default 50)")
    parser.add_argument("--rtt", type=float, default=80.0, help="round trip, ms (default 80)")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="shared uplink, Mbit/s (default 50)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument(
        "--compress",
        choices=("on", "off", "auto", "unset"),
        default="on",
        help="each slave's compress key (default on: auto means off on loopback, where the "
        "lab's addresses are; unset: leave the key out, for code that predates it)",
    )
    parser.add_argument(
        "--scenarios", default="change,full", help="change, full (default %(default)s)"
    )
    parser.add_argument(
        "--ways",
        default="dnsmaster,loop,xargs",
        help="the ways the change scenario runs (default %(default)s; the loop takes as "
        "long as the slaves' number times one push, xargs runs in any case)",
    )
    parser.add_argument("--readme", action="store_true", help="print a markdown table")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument(
        "--receiver",
        choices=("installed", "bundle"),
        default="installed",
        help="the slaves' receiver: the package with its C accelerator (default), or the "
        "pure-Python bundle the README installs",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="print dnsmaster's log events, timed"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print the first slave's link during each dnsmaster push, read by read",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/wan.py needs root (sshd, tinydns)", file=sys.stderr)
        return 2
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    results: dict[str, dict[str, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="dnsmaster-wan-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        wan = Wan(
            workdir,
            args.slaves,
            rtt=args.rtt / 1000,
            rate=args.rate * 1e6 / 8,
            compress=None if args.compress == "unset" else args.compress,
            timeline=args.timeline,
            trace=args.trace,
            receiver=args.receiver,
        )
        try:
            wan.make_zones(parse_size(args.lines), args.files)
            started = time.monotonic()
            wan.dnsmaster_push(proxied=False)
            print(f"# seeded (proxy-free) in {time.monotonic() - started:.1f} s", flush=True)
            size = len((wan.master / "out" / "data").read_bytes())
            if "change" in scenarios:
                ways = {w.strip() for w in args.ways.split(",")} | {"xargs"}
                runs: dict[str, list[Run]] = {
                    w: [] for w in ("dnsmaster", "loop", "xargs") if w in ways
                }
                for n in range(1, args.repeat + 1):
                    wan.change_one_line(n)
                    if "dnsmaster" in runs:
                        runs["dnsmaster"].append(wan.dnsmaster_push())
                    if "loop" in runs:
                        runs["loop"].append(wan.classic(parallel=False))
                    runs["xargs"].append(wan.classic(parallel=True))
                    print(
                        "# change: "
                        + ", ".join(f"{k} {v[-1].wall:.2f} s" for k, v in runs.items()),
                        flush=True,
                    )
                results["change"] = {k: best(v) for k, v in runs.items()}
            if "full" in scenarios:
                runs = {"dnsmaster": [], "xargs": []}
                for _ in range(args.repeat):
                    wan.wipe_slaves()
                    runs["dnsmaster"].append(wan.dnsmaster_push())
                    runs["xargs"].append(wan.classic(parallel=True))
                    print(
                        "# full: " + ", ".join(f"{k} {v[-1].wall:.2f} s" for k, v in runs.items()),
                        flush=True,
                    )
                results["full"] = {k: best(v) for k, v in runs.items()}
        finally:
            wan.close()
    print(render(results, args, size, markdown=args.readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
