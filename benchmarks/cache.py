"""Time a new process's build after a one-line change, with the build cache.

The scenario of issue 11: a zones directory of many ``zones.*`` files (1M lines in
50 files by default), built once; then one line changes in one file and a *new*
``python -m dnsmaster build`` runs, as ``dnsmaster push``, ``build`` or a daemon
restart would. It copies the other files' text and records from the last build's
``data`` and ``data.cdb``, which ``OUTPUT/.dnsmaster-cache/index`` describes
(:mod:`dnsmaster.master.buildcache`), and compiles only the changed one. Compared,
in the same run, with the real tinydns-data compiling the whole ``data`` that build
wrote (each warm build is followed at once by a
tinydns-data run, so each pair shares the machine's load), and with the cold
builds (cache empty, and cache off) for scale. Every figure is a child process's
wall time and CPU time (user + system, all threads), best of ``--repeat``; on a
shared machine the CPU times are the steadier comparison.

Run from the project root::

    python benchmarks/cache.py                   # 1M lines in 50 files
    python benchmarks/cache.py --size 100k --files 20 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datagen import write_zones  # noqa: E402

from dnsmaster.core import accel  # noqa: E402
from dnsmaster.master import buildcache  # noqa: E402
from dnsmaster.master.build import Builder  # noqa: E402

TINYDNS_DATA = shutil.which("tinydns-data") or "/usr/sbin/tinydns-data"
MTIME = 1_700_000_000
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
# Compiled once, as an install compiles them: with PYTHONDONTWRITEBYTECODE every
# build started here would compile the package again.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
NO_CACHE = (
    "import sys; from pathlib import Path; from dnsmaster.master.build import Builder; "
    "Builder(Path(sys.argv[1]), Path(sys.argv[2]), cache=False).build()"
)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """The wall time and the CPU time (user + system) of one child process."""
    cpu = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return seconds, children_cpu() - cpu


def build_argv(zones: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dnsmaster", "build", "--zones", str(zones), "--out", str(out)]


def change_one_line(victim: Path, original: bytes, i: int) -> None:
    """The address of the file's last host: one line, a new value each time."""
    head, _, last = original.rstrip(b"\n").rpartition(b"\n")
    victim.write_bytes(head + b"\n" + last.rsplit(b".", 1)[0] + b".%d\n" % (200 + i % 50))


def load_index(out: Path) -> tuple[float, int]:
    """In this process: the time to read and check the index and open the pair, and
    how many sources it describes."""
    cache = buildcache.BuildCache(out / buildcache.DIRECTORY)
    started = time.perf_counter()
    found = cache.load()
    seconds = time.perf_counter() - started
    if not isinstance(found, buildcache.Index):
        raise SystemExit(f"index not used: {found}")
    found.close()
    return seconds, len(found.sources)


def run(base: Path, size: int, files: int, repeat: int) -> list[str]:
    zones, out, theirs, plain = base / "zones", base / "out", base / "tinydns", base / "plain"
    for d in (zones, out, theirs, plain):
        d.mkdir(parents=True, exist_ok=True)
    written = write_zones(zones, size, files=files)
    cold_plain = timed([sys.executable, "-c", NO_CACHE, str(zones), str(plain)])
    cold = timed(build_argv(zones, out))  # compiles everything and fills the cache
    cache_bytes = sum(p.stat().st_size for p in (out / buildcache.DIRECTORY).iterdir())
    pair_bytes = (out / "data").stat().st_size + (out / "data.cdb").stat().st_size
    victim = written[len(written) // 2]
    original = victim.read_bytes()
    warm: list[tuple[float, float]] = []
    reference: list[tuple[float, float]] = []
    same = True
    for i in range(repeat):
        change_one_line(victim, original, i)
        warm.append(timed(build_argv(zones, out)))
        shutil.copyfile(out / "data", theirs / "data")
        os.utime(theirs / "data", (MTIME, MTIME))
        reference.append(timed([TINYDNS_DATA], cwd=theirs))
        same = same and (out / "data.cdb").read_bytes() == (theirs / "data.cdb").read_bytes()
    # What the CLI runs wrote is taken back whole: nothing to compile now.
    check = Builder(zones, out).build()
    if check.recompiled or len(check.cached) != len(check.sources):
        raise SystemExit(f"cache not used: recompiled {check.recompiled}")
    load, loaded = load_index(out)
    wall, cpu = (min(w for w, _ in warm), min(c for _, c in warm))
    ref_wall, ref_cpu = (min(w for w, _ in reference), min(c for _, c in reference))
    paired = statistics.median(w / r for (w, _), (r, _) in zip(warm, reference, strict=True))
    return [
        f"new process, one line changed in 1 of {len(written)} files ({check.lines} lines): "
        f"{wall:5.2f} s wall, {cpu:5.2f} s CPU; tinydns-data full compile {ref_wall:5.2f} s "
        f"wall, {ref_cpu:5.2f} s CPU; ratio {wall / ref_wall:4.2f}x wall, {cpu / ref_cpu:4.2f}x "
        f"CPU, median of the paired runs' wall ratios {paired:4.2f}x; "
        f"data.cdb identical: {'yes' if same else 'NO'}",
        f"cold build filling the cache {cold[0]:5.2f} s ({cold[1]:5.2f} s CPU), cold build "
        f"without cache {cold_plain[0]:5.2f} s ({cold_plain[1]:5.2f} s CPU); "
        f"cache {cache_bytes / 2**20:5.1f} MiB (data and data.cdb {pair_bytes / 2**20:5.1f} MiB)",
        f"in process: reading the index of {loaded} sources and opening the pair takes "
        f"{load:5.3f} s",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M", help="lines in all (default 1M)")
    parser.add_argument("--files", type=int, default=50, help="zones.* files (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--keep", type=Path, help="generate and keep the data in this dir")
    args = parser.parse_args(argv)
    if not Path(TINYDNS_DATA).exists():
        raise SystemExit("tinydns-data not found")
    base = args.keep or Path(tempfile.mkdtemp(prefix="dnsmaster-cache-bench-"))
    compiler = "C accelerator" if accel.compiler() else "pure Python"
    print(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.repeat}, "
        f"compiler: {compiler}"
    )
    try:
        for line in run(base, parse_size(args.size), args.files, args.repeat):
            print(line, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
