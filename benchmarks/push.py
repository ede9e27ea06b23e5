"""Time ``dnsmaster push`` against the classic ``ssh slave < data`` loop, same run, same slaves.

Every slave is a real OpenSSH sshd on its own 127.0.1.N (from tests/lab/realworld.py, which
also starts a tinydns there). Its authorized_keys holds two keys:

* dnsmaster's key, forced to the receiver run by ``/usr/bin/python3``: a copy of the
  package with its C accelerator (``--receiver installed``, the default), or the
  pure-Python bundle the README installs (``--receiver bundle``); either compiles
  data.cdb itself;
* the classic key, forced to an ``update-dns`` shell script:
  ``cat > data.new && mv data.new data && tinydns-data`` in a directory of its own.

Both log in as the lab's slave account (``dnsmaster-lab``, see tests/lab/realworld.py), not
root: its shell is ``/bin/sh``, which reads no start-up file, as on a real slave.

Measured, for each slave count and data size:

* classic loop: ``for s in ...; do ssh s < data; done`` (the old push-changes);
* classic parallel: the same ssh commands all started at once with ``&`` and ``wait``;
* dnsmaster push: ``python -m dnsmaster push --no-build`` as a fresh process, to all
  slaves in parallel (interpreter start, N SSH handshakes, N receivers);
* dnsmaster warm: a second :func:`dnsmaster.master.pushing.push_all` on SSH connections that are
  already open, as the daemon pushes (no handshakes).

Each is the best of ``--repeat`` runs; every run's result is checked (every slave holds
the data). With each best run goes where its CPU went: the pushing side (the ssh clients,
or the dnsmaster process) and the slaves' side (every sshd with what it ran: the session
shell and the receiver), read from the sshd listeners' reaped children in /proc.

Needs root, sshd, tinydns and tinydns-data. Run from the project root::

    python benchmarks/push.py                          # 1, 10, 30 slaves; 10k, 100k lines
    python benchmarks/push.py --slaves 30 --sizes 100k --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datagen import write_data  # noqa: E402

from dnsmaster import config as dconfig  # noqa: E402
from dnsmaster.master import pushing  # noqa: E402
from tests.lab.realworld import Lab, Receiver, Slave, ssh_keygen  # noqa: E402

UPDATE_DNS = """#!/bin/sh
# The classic update-dns forced command: plain data on stdin, compiled in place.
cd "$1" || exit 111
cat > data.new && mv data.new data && PATH=/usr/sbin:/usr/bin:/sbin:/bin exec tinydns-data
"""


@dataclass(frozen=True)
class Run:
    """One timed run: wall time, CPU of the pushing side, CPU of the slaves' side."""

    wall: float
    client: float
    slaves: float


@dataclass
class Row:
    slaves: int
    lines: str
    size: int
    loop: Run
    parallel: Run
    push: Run
    warm: Run


def parse_size(text: str) -> int:
    text = text.strip().lower()
    for suffix, factor in (("m", 1_000_000), ("k", 1_000)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * factor)
    return int(text)


def best(runs: int, once: Callable[[], Run]) -> Run:
    return min((once() for _ in range(runs)), key=lambda r: r.wall)


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, int]]:
    """PID -> (parent PID, clock ticks of it and its reaped children), for every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            # state ppid ... utime stime cutime cstime (stat fields 3, 4, 14-17)
            found[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return found


def sshd_cpu(slaves: list[Slave]) -> float:
    """CPU seconds of the sshd listeners and all they started, ended or still running.

    A process that ended is in its parent's reaped-children time; one still running
    (the per-connection sshd of a kept connection) counts its own, children included.
    """
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total = 0
    todo = [s.sshd.pid for s in slaves if s.sshd.pid is not None]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo.extend(children.get(pid, ()))
    return total / _TICK


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def settle(slaves: list[Slave], before: float) -> float:
    """The slaves' CPU since ``before``, once sshd has reaped the sessions that just ended."""
    time.sleep(0.3)
    return sshd_cpu(slaves) - before


class Bench:
    def __init__(self, workdir: Path, count: int, receiver: Receiver = "installed") -> None:
        self.workdir = workdir
        self.lab = Lab(workdir / "lab", receiver=receiver)
        self.classic_key = workdir / "classic_ed25519"
        ssh_keygen(self.classic_key, "classic-push@bench")
        # Where the slave account can run it (workdir may be a private temporary directory).
        self.update_dns = self.lab.workdir / "update-dns"
        self.update_dns.write_text(UPDATE_DNS)
        self.update_dns.chmod(0o755)
        self.master = workdir / "master"
        (self.master / "out").mkdir(parents=True)
        (self.master / "zones").mkdir()
        pubkey = self.classic_key.with_name(self.classic_key.name + ".pub").read_text().strip()
        started = time.monotonic()
        for _ in range(count):
            slave = self.lab.add_slave()
            classic = self.classic_dir(slave)
            classic.mkdir()
            os.chown(classic, self.lab.account.pw_uid, self.lab.account.pw_gid)
            line = f'restrict,command="{self.update_dns} {classic}" {pubkey}\n'
            slave.sshd.set_authorized_keys(self.lab.authorized_key(slave.root) + line)
        print(f"# {count} slaves up in {time.monotonic() - started:.1f} s", file=sys.stderr)

    def classic_dir(self, slave: Slave) -> Path:
        return slave.root.parent / "classic"

    def classic_argv(self, slave: Slave) -> list[str]:
        argv = self.lab.ssh_argv(slave)
        argv[argv.index(str(self.lab.key))] = str(self.classic_key)
        return argv

    def set_data(self, data: Path) -> bytes:
        target = self.master / "out" / "data"
        target.write_bytes(data.read_bytes())
        return target.read_bytes()

    def write_config(self, slaves: list[Slave]) -> Path:
        path = self.master / f"dnsmaster-{len(slaves)}.toml"
        lines = [
            f'zones = "{self.master / "zones"}"',
            f'output = "{self.master / "out"}"',
            f'key = "{self.lab.key}"',
            f'known_hosts = "{self.lab.known_hosts}"',
            f'user = "{self.lab.user}"',
            "[push]",
            f"parallel = {max(1, len(slaves))}",
            "timeout = 600",
        ]
        for s in slaves:
            lines += [
                "[[slave]]",
                f'name = "{s.name}"',
                f'host = "{s.address}"',
                f"port = {s.port}",
            ]
        path.write_text("\n".join(lines) + "\n")
        return path

    # ------------------------------------------------------------------ the classic way

    def classic(self, slaves: list[Slave], data: Path, *, parallel: bool) -> Run:
        for s in slaves:
            (self.classic_dir(s) / "data").unlink(missing_ok=True)
        lines = ["#!/bin/sh"]
        for s in slaves:
            command = " ".join(shlex.quote(a) for a in self.classic_argv(s))
            lines.append(
                f"{command} < {shlex.quote(str(data))} || echo failed {s.name} >&2"
                + (" &" if parallel else "")
            )
        if parallel:
            lines.append("wait")
        script = self.workdir / "push-changes"
        script.write_text("\n".join(lines) + "\n")
        server, client = sshd_cpu(slaves), children_cpu()
        started = time.perf_counter()
        proc = subprocess.run(["sh", str(script)], capture_output=True, check=False)
        took = time.perf_counter() - started
        client, server = children_cpu() - client, settle(slaves, server)
        if proc.returncode != 0 or b"failed" in proc.stderr:
            raise SystemExit(f"classic push failed: {proc.stderr.decode()[-2000:]}")
        expected = data.read_bytes()
        for s in slaves:
            if (self.classic_dir(s) / "data").read_bytes() != expected:
                raise SystemExit(f"classic push: {s.name} does not hold the data")
            if not (self.classic_dir(s) / "data.cdb").is_file():
                raise SystemExit(f"classic push: {s.name} has no data.cdb")
        return Run(took, client, server)

    # ------------------------------------------------------------------ dnsmaster

    def check_installed(self, slaves: list[Slave], data: bytes) -> None:
        for s in slaves:
            installed = s.installed() or b""
            if not installed.startswith(data) or not (s.root / "data.cdb").is_file():
                raise SystemExit(f"dnsmaster push: {s.name} does not hold the data")

    def clear(self, slaves: list[Slave]) -> None:
        for s in slaves:
            (s.root / "data").unlink(missing_ok=True)

    def dnsmaster_push(self, slaves: list[Slave], data: bytes) -> Run:
        cfg = self.write_config(slaves)
        self.clear(slaves)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        server, client = sshd_cpu(slaves), children_cpu()
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "dnsmaster",
                "push",
                "--config",
                str(cfg),
                "--no-build",
                "--log-format",
                "json",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        took = time.perf_counter() - started
        client, server = children_cpu() - client, settle(slaves, server)
        done = [
            e for e in map(json.loads, proc.stderr.splitlines()) if e.get("event") == "push.done"
        ]
        if proc.returncode != 0 or len(done) != len(slaves):
            raise SystemExit(f"dnsmaster push failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        self.check_installed(slaves, data)
        return Run(took, client, server)

    def dnsmaster_warm(self, slaves: list[Slave], data: bytes, runs: int) -> Run:
        cfg = dconfig.load(self.write_config(slaves))
        sha = hashlib.sha256(data).hexdigest()

        def quiet(slave: str, stream: str, line: str) -> None:
            return None

        async def run() -> Run:
            channels = [pushing.channel_for(s, cfg) for s in cfg.slaves]
            try:
                # The first push opens the connections, as the daemon's first push does.
                results = await pushing.push_all(
                    channels, data, sha, parallel=len(channels), timeout=600, on_line=quiet
                )
                if not all(r.ok for r in results):
                    raise SystemExit(f"warm-up push failed: {results}")
                took = []
                for _ in range(runs):
                    self.clear(slaves)
                    server, client = sshd_cpu(slaves), self_cpu()
                    started = time.perf_counter()
                    results = await pushing.push_all(
                        channels, data, sha, parallel=len(channels), timeout=600, on_line=quiet
                    )
                    wall = time.perf_counter() - started
                    client = self_cpu() - client
                    # The sessions' CPU is reaped when they end; the connections stay.
                    await asyncio.sleep(0.3)
                    took.append(Run(wall, client, sshd_cpu(slaves) - server))
                    if not all(r.ok for r in results):
                        raise SystemExit(f"warm push failed: {results}")
                    self.check_installed(slaves, data)
                return min(took, key=lambda r: r.wall)
            finally:
                for channel in channels:
                    await channel.close()

        return asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slaves", default="1,10,30", help="slave counts (default %(default)s)")
    parser.add_argument("--sizes", default="10k,100k", help="data lines (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument(
        "--receiver",
        choices=["installed", "bundle"],
        default="installed",
        help="dnsmaster's receiver: the package with its C accelerator (default), or the "
        "pure-Python bundle the README installs",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/push.py needs root (sshd, tinydns)", file=sys.stderr)
        return 2
    counts = sorted({int(n) for n in args.slaves.split(",")})
    sizes = [s.strip() for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="dnsmaster-push-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir, max(counts), args.receiver)
        rows: list[Row] = []
        try:
            for size in sizes:
                data_path = workdir / f"data-{size}"
                write_data(data_path, parse_size(size))
                data = bench.set_data(data_path)
                for n in counts:
                    slaves = bench.lab.slaves[:n]
                    classic = partial(bench.classic, slaves, data_path)
                    loop = best(args.repeat, partial(classic, parallel=False))
                    par = best(args.repeat, partial(classic, parallel=True))
                    cold = best(args.repeat, partial(bench.dnsmaster_push, slaves, data))
                    warm = bench.dnsmaster_warm(slaves, data, args.repeat)
                    row = Row(n, size, len(data), loop, par, cold, warm)
                    rows.append(row)
                    print(
                        f"# {n} slaves, {size}: loop {loop.wall:.2f} s, "
                        f"parallel {par.wall:.2f} s, push {cold.wall:.2f} s, "
                        f"warm {warm.wall:.2f} s",
                        file=sys.stderr,
                    )
        finally:
            bench.lab.close()
    shell = f"slaves logged in to as {bench.lab.user} (/bin/sh), receiver {args.receiver}"
    print(f"cores: {os.cpu_count()}, best of {args.repeat}, {shell}\n")
    print(
        "| slaves | lines | data | classic loop | classic parallel | dnsmaster push "
        "| dnsmaster warm | loop / push | loop / warm |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.slaves} | {r.lines} | {r.size / 1e6:.1f} MB | {r.loop.wall:.2f} s "
            f"| {r.parallel.wall:.2f} s | {r.push.wall:.2f} s | {r.warm.wall:.2f} s "
            f"| {r.loop.wall / r.push.wall:.1f}x | {r.loop.wall / r.warm.wall:.1f}x |"
        )
    print("\nCPU seconds, pushing side + slaves' side (sshd, session shell, receiver):\n")
    print("| slaves | lines | classic loop | classic parallel | dnsmaster push | dnsmaster warm |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        cells = " | ".join(
            f"{x.client:.2f} + {x.slaves:.2f}" for x in (r.loop, r.parallel, r.push, r.warm)
        )
        print(f"| {r.slaves} | {r.lines} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
