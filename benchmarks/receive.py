"""Time the slave's receiver installing a one-line delta, beside tinydns-data.

The scenario of issue 21: a zones directory (1M lines in 50 files by default) is
built with ``dnsmaster build`` and installed as a full push into a slave root (a
fresh ``python -m dnsmaster receive --root ROOT`` with ``SSH_ORIGINAL_COMMAND=push``
and the data plus its trailer on stdin, as the master sends it). Then, ``--repeat``
times: one line changes in one file, ``dnsmaster build`` runs again, and the delta
the master would send (:func:`dnsmaster.core.delta.make`, what
``dnsmaster.master.payload`` sends a protocol-2 slave) goes to a fresh receiver with
``SSH_ORIGINAL_COMMAND=delta``. Each install is followed at once by tinydns-data
compiling the whole new ``data`` (same bytes, same mtime) in its own directory, so
each pair shares the machine's load; the two data.cdb files are compared byte for
byte. Each child runs under ``/usr/bin/time`` for its wall time, CPU (user + system)
and peak RSS; the best of the runs is shown for each, and the median of the paired
wall ratios.

``--full`` times full pushes of the new data instead of deltas (the receiver reads
the whole stream). ``-S`` runs the receiver as ``python -S`` (no site-packages, the
package found by PYTHONPATH), as a slave's isolated forced command starts: this
development venv's site (the editable install's finder, the .pth files) costs each
receiver some 25 ms of CPU (``python -c pass`` against ``python -S -c pass``). The
receiver's modules
are compiled once, as an install compiles them: PYTHONDONTWRITEBYTECODE is not passed
on (with it, every receiver compiled its 6,000 lines of source again).

``--size 10M`` is the memory run: generate it once into a directory of your own with
``--keep DIR`` (it is reused when it is there).

Run from the project root::

    python benchmarks/receive.py                       # 1M lines, deltas, best of 5
    python benchmarks/receive.py --full --repeat 3
    python benchmarks/receive.py --size 10M --repeat 2 --keep /work/bench-NAME
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datagen import write_zones  # noqa: E402

from dnsmaster.core import accel  # noqa: E402
from dnsmaster.core import delta as deltas  # noqa: E402
from dnsmaster.core.stream import seal  # noqa: E402

TINYDNS_DATA = shutil.which("tinydns-data") or "/usr/sbin/tinydns-data"
GNU_TIME = "/usr/bin/time"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
#: The receiver's interpreter flags (["-S"] with -S).
FLAGS: list[str] = []
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Run:
    wall: float
    cpu: float
    maxrss_kib: int


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def timed(argv: list[str], *, cwd: Path | None = None, stdin: Path | None = None) -> Run:
    """One child under /usr/bin/time: wall, user + system CPU, and its own peak RSS
    (Linux carries a parent's peak across fork + exec, so the child is forked from
    /usr/bin/time, not from this process)."""
    env = dict(ENV)
    with (
        tempfile.NamedTemporaryFile("r", suffix=".time") as report,
        tempfile.TemporaryFile("w+") as err,
        open(stdin or os.devnull, "rb") as source,
    ):
        wrapped = [GNU_TIME, "-q", "-f", "%U %S %M", "-o", report.name, *argv]
        started = time.perf_counter()
        proc = subprocess.run(
            wrapped,
            cwd=cwd,
            env=env,
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=False,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        user, system, rss = report.read().split()[-3:]
    return Run(wall, float(user) + float(system), int(rss))


def receive(root: Path, stream: Path, verb: str, max_size: int) -> Run:
    argv = [sys.executable, *FLAGS, "-m", "dnsmaster", "receive", "--root", str(root)]
    argv += ["--max-size", str(max_size)]
    old = ENV.get("SSH_ORIGINAL_COMMAND")
    ENV["SSH_ORIGINAL_COMMAND"] = verb
    try:
        return timed(argv, stdin=stream)
    finally:
        if old is None:
            ENV.pop("SSH_ORIGINAL_COMMAND", None)
        else:
            ENV["SSH_ORIGINAL_COMMAND"] = old


def build(zones: Path, out: Path) -> bytes:
    argv = [sys.executable, "-m", "dnsmaster", "build", "--zones", str(zones), "--out", str(out)]
    subprocess.run(argv, env=ENV, check=True, capture_output=True)
    return (out / "data").read_bytes()


def change_one_line(victim: Path, original: bytes, i: int) -> None:
    """The address of the file's last host: one line, a new value each time."""
    head, _, last = original.rstrip(b"\n").rpartition(b"\n")
    victim.write_bytes(head + b"\n" + last.rsplit(b".", 1)[0] + b".%d\n" % (200 + i % 50))


def reference(where: Path, data: bytes, mtime_ns: int) -> Run:
    """tinydns-data compiling ``data`` with the installed file's mtime (default serials)."""
    (where / "data").write_bytes(data)
    os.utime(where / "data", ns=(mtime_ns, mtime_ns))
    return timed([TINYDNS_DATA], cwd=where)


def same_files(a: Path, b: Path) -> bool:
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            p, q = x.read(1 << 20), y.read(1 << 20)
            if p != q:
                return False
            if not p:
                return True


def run(base: Path, size: int, files: int, repeat: int, full: bool) -> list[str]:
    zones, out, slave, theirs = base / "zones", base / "out", base / "slave", base / "tinydns"
    if not zones.is_dir():
        write_zones(zones, size, files=files)
    for d in (out, theirs):
        d.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(slave, ignore_errors=True)
    slave.mkdir()
    victim = sorted(zones.glob("zones.*"))[len(list(zones.glob("zones.*"))) // 2]
    original = victim.read_bytes()
    data = build(zones, out)
    max_size = 4 * len(data) + MIB
    stream = base / "stream"
    stream.write_bytes(data + seal(data))
    first = receive(slave, stream, "push", max_size)
    ours: list[Run] = []
    refs: list[Run] = []
    same = True
    sent = 0
    try:
        for i in range(repeat):
            change_one_line(victim, original, i)
            new = build(zones, out)
            if full:
                stream.write_bytes(new + seal(new))
            else:
                stream.write_bytes(deltas.make(data, new))
            sent = stream.stat().st_size
            ours.append(receive(slave, stream, "push" if full else "delta", max_size))
            installed = (slave / "data").stat().st_mtime_ns
            refs.append(reference(theirs, new, installed))
            same = same and same_files(slave / "data.cdb", theirs / "data.cdb")
            data = new
    finally:
        victim.write_bytes(original)
    wall, cpu = min(r.wall for r in ours), min(r.cpu for r in ours)
    rss = max(r.maxrss_kib for r in ours) / 1024
    ref_wall, ref_cpu = min(r.wall for r in refs), min(r.cpu for r in refs)
    ref_rss = max(r.maxrss_kib for r in refs) / 1024
    paired = statistics.median(o.wall / r.wall for o, r in zip(ours, refs, strict=True))
    what = "full push" if full else "one-line delta"
    lines = data.count(b"\n")
    return [
        f"first full push into an empty root: {first.wall:5.2f} s wall, {first.cpu:5.2f} s CPU, "
        f"peak {first.maxrss_kib / 1024:6.1f} MiB",
        f"{what} ({sent} bytes sent, data {len(data) / MIB:.0f} MiB, {lines} lines): "
        f"receive {wall:5.2f} s wall, {cpu:5.2f} s CPU, peak {rss:6.1f} MiB; "
        f"tinydns-data {ref_wall:5.2f} s wall, {ref_cpu:5.2f} s CPU, peak {ref_rss:6.1f} MiB; "
        f"ratio {wall / ref_wall:4.2f}x wall, {cpu / ref_cpu:4.2f}x CPU, median paired wall "
        f"ratio {paired:4.2f}x; data.cdb identical: {'yes' if same else 'NO'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M", help="lines in all (default 1M)")
    parser.add_argument("--files", type=int, default=50, help="zones.* files (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--full", action="store_true", help="full pushes instead of deltas")
    parser.add_argument("--keep", type=Path, help="generate into this dir and keep it")
    parser.add_argument("-S", dest="nosite", action="store_true", help="run the receiver -S")
    args = parser.parse_args(argv)
    if args.nosite:
        FLAGS.append("-S")
    for tool in (TINYDNS_DATA, GNU_TIME):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} not found")
    base = args.keep or Path(tempfile.mkdtemp(prefix="dnsmaster-receive-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    compiler = "C accelerator" if accel.compiler() else "pure Python"
    load = os.getloadavg()[0]
    print(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.repeat}, "
        f"compiler: {compiler}, receiver: python {' '.join(FLAGS) or '(site)'}, "
        f"load average {load:.2f}"
    )
    try:
        for line in run(base, parse_size(args.size), args.files, args.repeat, args.full):
            print(line, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
