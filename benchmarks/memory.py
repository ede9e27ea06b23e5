"""The master's memory: a real ``dnsmaster run`` daemon, and the commands at 10M lines.

The daemon part starts ``python -m dnsmaster run`` on a zones directory of 1M lines
in 50 files (:mod:`datagen`) with ``--slaves`` local slaves (``transport =
"local"``: the receiver runs as a child process, no SSH), and reads the daemon's
``VmRSS`` and ``VmHWM`` from ``/proc/PID/status``:

- *idle*: resident after the first build and its pushes, once the daemon says it
  is at rest (``daemon.idle``): between builds;
- *peak*: the high-water mark during one rebuild after a one-line change (the mark
  is reset by writing 5 to ``/proc/PID/clear_refs`` just before the change), with
  the resident size once it is pushed and the daemon at rest;
- *over N rebuilds* (``--rebuilds``, 1000 by default): one one-line change at a
  time, each built before the next, the slaves pushed the newest build whenever
  they are done with the one before; every ``--every`` rebuilds (and after the
  last) that build's push is awaited and the resident size read at rest, with the
  high-water mark over them all so far.

Beside it, same run: tinydns-data's peak (``/usr/bin/time -f %M``) and time
compiling the daemon's own ``data``, and both data.cdb files compared.

``--big DIR`` measures instead, at ``--big-size`` lines (10M by default, 200
files), generated once into DIR: the peak RSS of ``dnsmaster build`` (cold), of
``dnsmaster push --no-build`` sending the full data to a local slave root, of
``dnsmaster build`` after a one-line change (a new process, the build cache warm)
and of the push of its delta, beside tinydns-data's time and peak on the same
data. Each peak is the command's own VmHWM, sampled from /proc as it runs: GNU
time's %M would include the local receiver it starts (the slave's side, measured
by ``benchmarks/receive.py``). DIR is removed at the end unless ``--keep``.

Run from the project root::

    python benchmarks/memory.py                      # 1M lines, 1000 rebuilds
    python benchmarks/memory.py --size 100k --rebuilds 50 --every 10
    python benchmarks/memory.py --big /work/bench-memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from datagen import write_zones  # noqa: E402

TINYDNS_DATA = shutil.which("tinydns-data") or "/usr/sbin/tinydns-data"
GNU_TIME = "/usr/bin/time"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
DNSMASTER = [sys.executable, "-m", "dnsmaster"]
#: How long one build and its pushes may take before the benchmark gives up.
WAIT = 600.0


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def mib(kib: int) -> str:
    return f"{kib / 1024:6.0f} MiB"


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> None:
    """The high-water mark starts again from the resident size (proc(5): clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    maxrss_kib: int
    returncode: int
    stderr: bytes


def measured(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """One child's wall time and peak RSS (GNU time's %M)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *argv],
            cwd=cwd,
            env=ENV if env is None else env,
            capture_output=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        kib = int(rss.read().split()[-1])
    return Run(seconds, kib, proc.returncode, proc.stderr)


def measured_own(argv: list[str], env: dict[str, str]) -> Run:
    """One child's wall time and its own peak RSS: its VmHWM, read from /proc as it
    runs (GNU time's %M would count a local receiver it starts, the slave's side)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    chunks: list[bytes] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # it may have just ended
            peak = max(peak, status_kib(proc.pid).get("VmHWM", 0))
        time.sleep(0.05)
    reader.join()
    return Run(time.perf_counter() - started, peak, proc.returncode, b"".join(chunks))


def tinydns_data(data: Path, workdir: Path, repeat: int) -> tuple[Run, Path]:
    """tinydns-data compiling ``data`` (a copy in ``workdir``): best time, worst peak."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data, workdir / "data")
    runs = [measured([TINYDNS_DATA], cwd=workdir) for _ in range(repeat)]
    for run in runs:
        if run.returncode != 0:
            raise SystemExit(f"tinydns-data failed: {run.stderr.decode()[-2000:]}")
    best = Run(min(r.seconds for r in runs), max(r.maxrss_kib for r in runs), 0, b"")
    return best, workdir / "data.cdb"


def same_file(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


class Changer:
    """One-line changes to one zones file: line ``k`` of its last zone gets a new
    address each time, so every build has something to push."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim
        self.original = victim.read_bytes()
        self.count = 0

    def change(self) -> None:
        self.count += 1
        n = self.count
        extra = f"+bench-{n % 7}.memory.example:10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}\n"
        tmp = self.victim.with_name(".bench.tmp")
        tmp.write_bytes(self.original + extra.encode())
        os.replace(tmp, self.victim)

    def restore(self) -> None:
        self.victim.write_bytes(self.original)


def config_text(zones: Path, output: Path, state: Path, roots: list[Path]) -> str:
    lines = [
        f'zones = "{zones}"',
        f'output = "{output}"',
        f'state = "{state}"',
        "",
        "[daemon]",
        "debounce = 0.05",
        "rescan = 0",
        "retry_initial = 0.2",
        "retry_max = 1.0",
        "",
        "[guard]",
        "max_removed = 1.0",
    ]
    for root in roots:
        lines += [
            "",
            "[[slave]]",
            f'name = "{root.name}"',
            'transport = "local"',
            f'root = "{root}"',
        ]
    return "\n".join(lines) + "\n"


class Daemon:
    """``python -m dnsmaster run --log-format json``, its events read in a thread."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dnsmaster",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log.write(raw)
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put({"event": "bench.exited"})

    def wait(self, name: str, **fields: object) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"no {name} within {WAIT:g} s; see {self.log.name}")
            event = self.events.get(timeout=left)
            if event.get("event") == "bench.exited":
                raise SystemExit(f"the daemon exited; see {self.log.name}")
            if event.get("event") in ("build.failed", "push.failed"):
                raise SystemExit(f"{event}; see {self.log.name}")
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event

    def built_and_pushed(self, slaves: int) -> int:
        """The next build's serial, once every slave has it and the daemon is at rest."""
        serial = self.wait("build.done")["serial"]
        self.pushed(serial, slaves)
        return int(serial)

    def pushed(self, serial: object, slaves: int) -> None:
        """Once every slave has build ``serial`` and the daemon is at rest: what it
        holds between builds (a push ends before the daemon frees what it needed)."""
        for _ in range(slaves):
            self.wait("push.done", serial=serial)
        self.wait("daemon.idle")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        self.log.close()


def daemon_run(args: argparse.Namespace, work: Path) -> None:
    lines = parse_size(args.size)
    zones, output = work / "zones", work / "output"
    roots = [work / "slaves" / f"ns{i + 1}" for i in range(args.slaves)]
    for root in roots:
        root.mkdir(parents=True)
    output.mkdir()
    files = write_zones(zones, lines, files=args.files)
    config = work / "dnsmaster.toml"
    config.write_text(config_text(zones, output, work / "state.json", roots))
    changer = Changer(files[len(files) // 2])
    print(
        f"daemon: {lines:,} lines in {len(files)} files, {args.slaves} local slave(s), "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    daemon = Daemon(config, work / "daemon.log")
    pid = daemon.proc.pid
    try:
        started = time.monotonic()
        daemon.built_and_pushed(args.slaves)
        first = status_kib(pid)
        print(
            f"  first build and push  {time.monotonic() - started:6.1f} s; "
            f"idle {mib(first['VmRSS'])}, peak so far {mib(first['VmHWM'])}",
            flush=True,
        )
        reset_peak(pid)
        changer.change()
        daemon.built_and_pushed(args.slaves)
        one = status_kib(pid)
        print(
            f"  one-line rebuild      peak {mib(one['VmHWM'])}; idle after it {mib(one['VmRSS'])}",
            flush=True,
        )
        tiny, cdb = tinydns_data(output / "data", work / "tinydns", args.repeat)
        same = same_file(cdb, output / "data.cdb")
        print(
            f"  tinydns-data (same data) {tiny.seconds:5.2f} s, peak {mib(tiny.maxrss_kib)}; "
            f"data.cdb identical: {'yes' if same else 'NO'}",
            flush=True,
        )
        reset_peak(pid)
        started = time.monotonic()
        samples = [one["VmRSS"]]
        for n in range(1, args.rebuilds + 1):
            changer.change()
            # The slaves get the newest build when they are done with the one before
            # (as they would): the rebuilds go at the builds' pace; the last is awaited.
            serial = daemon.wait("build.done")["serial"]
            if n % args.every == 0 or n == args.rebuilds:
                # Sampled between builds: this build pushed, the daemon at rest.
                daemon.pushed(serial, args.slaves)
                now = status_kib(pid)
                samples.append(now["VmRSS"])
                print(
                    f"  after {n:5d} rebuilds  resident {mib(now['VmRSS'])}, "
                    f"peak since the first {mib(now['VmHWM'])}, "
                    f"{(time.monotonic() - started) / n:5.2f} s each, "
                    f"load {os.getloadavg()[0]:.2f}, {time.strftime('%H:%M:%S')}",
                    flush=True,
                )
        if args.rebuilds:
            growth = samples[-1] - samples[0]
            print(f"  growth over {args.rebuilds} rebuilds: {growth / 1024:+.1f} MiB", flush=True)
    finally:
        daemon.stop()
        changer.restore()


def big_run(args: argparse.Namespace, big: Path) -> None:
    lines = parse_size(args.big_size)
    zones, output, root = big / "zones", big / "output", big / "slave"
    if not (zones / "header").exists():
        print(f"generating {lines:,} lines in {args.big_files} files into {zones}", flush=True)
        write_zones(zones, lines, files=args.big_files)
    shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    output.mkdir()
    config = big / "dnsmaster.toml"
    config.write_text(config_text(zones, output, big / "state.json", [root]))
    # A local slave's receiver takes --max-size's default (256 MiB); 10M lines are
    # some 590 MB. The receiver, started by the push with this environment, gets a
    # larger cap from this sitecustomize (the benchmark's only; a real slave sets
    # --max-size in its forced command).
    site = big / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('SSH_ORIGINAL_COMMAND'):\n"
        "    from dnsmaster.slave import receive\n"
        "    receive.DEFAULT_MAX_SIZE = 8 << 30\n"
    )
    env = dict(ENV, PYTHONPATH=f"{ROOT}:{site}")
    victim = Changer(sorted(zones.glob("zones.*"))[0])
    dm = DNSMASTER
    print(f"10M: {lines:,} lines, load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        steps = [
            ("dnsmaster build (cold)", [*dm, "build", "--config", str(config)], None),
            ("dnsmaster push (full)", [*dm, "push", "--no-build", "--config", str(config)], None),
            ("dnsmaster build (1 line)", [*dm, "build", "--config", str(config)], victim.change),
            ("dnsmaster push (delta)", [*dm, "push", "--no-build", "--config", str(config)], None),
        ]
        for label, argv, before in steps:
            print(f"  {label}: running, load {os.getloadavg()[0]:.2f}", flush=True)
            if before is not None:
                before()
            run = measured_own(argv, env)
            if run.returncode != 0:
                raise SystemExit(f"{label} failed: {run.stderr.decode()[-2000:]}")
            mode = ""
            for raw in run.stderr.splitlines():
                if b"push.done" in raw:
                    mode = " mode=" + raw.split(b"mode=", 1)[-1].split()[0].decode()
            print(
                f"  {label:24s} {run.seconds:6.2f} s, peak {mib(run.maxrss_kib)}{mode}", flush=True
            )
        tiny, cdb = tinydns_data(output / "data", big / "tinydns", args.repeat)
        same = same_file(cdb, output / "data.cdb")
        print(
            f"  {'tinydns-data':24s} {tiny.seconds:6.2f} s, peak {mib(tiny.maxrss_kib)}; "
            f"data.cdb identical: {'yes' if same else 'NO'}",
            flush=True,
        )
    finally:
        victim.restore()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M", help="lines of the daemon's zones (1M)")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--slaves", type=int, default=1, help="local slaves (1)")
    parser.add_argument("--rebuilds", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="report every N rebuilds")
    parser.add_argument("--repeat", type=int, default=3, help="tinydns-data runs, best kept")
    parser.add_argument("--big", type=Path, help="measure the commands at --big-size here")
    parser.add_argument("--big-size", default="10M")
    parser.add_argument("--big-files", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep --big's directory")
    args = parser.parse_args(argv)
    if args.big is not None:
        args.big.mkdir(parents=True, exist_ok=True)
        try:
            big_run(args, args.big)
        finally:
            if not args.keep:
                shutil.rmtree(args.big, ignore_errors=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        try:
            daemon_run(args, Path(tmp))
        except SystemExit:
            print((Path(tmp) / "daemon.log").read_text()[-3000:], file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
