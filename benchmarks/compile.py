"""Time dnsmaster's compiler against the real tinydns-data on the same data.

Two scenarios, each measured in the same run for both programs:

* full compile: ``data`` text to ``data.cdb``. ``python -m dnsmaster tinydns-data`` and
  ``tinydns-data`` each run in a fresh process in their own directory (same bytes, same
  mtime), best of ``--repeat`` runs; peak memory is the child's ``ru_maxrss`` (see
  :func:`run_child`). The in-process column is the compile alone (no interpreter
  start-up, no imports), best of the same number of runs; CPU is user + system time
  of each program's fastest run. Both data.cdb files are
  compared byte for byte. With ``--keep``, a size's data is generated once and reused
  by later runs (10M lines: 540 MB of data, 1.1 GB of data.cdb per program)::

      python benchmarks/compile.py --sizes 10M --cold-sizes "" --warm-sizes "" \
          --repeat 3 --keep /work/bench-dropin
* cold build: ``dnsmaster build`` (make-data, the checker and the compiler) in a new
  process on a zones directory of ``--cold-files`` files, into an empty output
  directory (no build cache, no earlier build), against ``tinydns-data`` compiling the
  ``data`` that build wrote; interleaved, best of ``--repeat`` wall times each, the
  CPU time (user + system) of that best run beside it (above the wall time: both
  cores at work), both peak RSS, and both data.cdb files compared byte for byte. This is what every
  ``dnsmaster push``, ``check`` and daemon start pays when nothing is cached.
  Then one line changes and ``dnsmaster build`` runs again in a new process (from the
  build cache that cold build left), against tinydns-data on the data it wrote, the
  same way: what ``dnsmaster push`` pays after an edit. At 10M lines (200 files)::

      python benchmarks/compile.py --sizes "" --warm-sizes "" --cold-sizes 10M \
          --cold-files 200 --repeat 2 --keep /work/bench-build
* warm rebuild: a zones directory of many ``zones.*`` files; a :class:`Builder` builds
  once, then one line changes in one file and the same Builder builds again (in
  process, as the daemon does). Compared with tinydns-data compiling the whole data
  that build wrote.

Run from the project root::

    python benchmarks/compile.py                      # 10k, 100k, 1M lines
    python benchmarks/compile.py --sizes "" --warm-sizes "" --repeat 5   # cold build only
    python benchmarks/compile.py --sizes 100k --repeat 5 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from datagen import write_data, write_zones  # noqa: E402

from dnsmaster.core import accel  # noqa: E402
from dnsmaster.core.compiler import compile_stream, default_serial  # noqa: E402
from dnsmaster.master.build import Builder  # noqa: E402

TINYDNS_DATA = shutil.which("tinydns-data") or "/usr/bin/tinydns-data"
DNSMASTER = [sys.executable, "-m", "dnsmaster", "tinydns-data"]
DNSMASTER_BUILD = [sys.executable, "-m", "dnsmaster", "build", "--log-format", "logfmt"]
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MTIME = 1_700_000_000  # every data file gets this mtime, so the default serials agree
MIB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    seconds: float
    maxrss_kib: int
    cpu: float = 0.0  # user + system seconds of the process and its children


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = 1
    if text.endswith("k"):
        scale, text = 1000, text[:-1]
    elif text.endswith("m"):
        scale, text = 1_000_000, text[:-1]
    return int(float(text) * scale)


def show_size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def run_child(argv: list[str], cwd: Path) -> Run:
    """Run ``argv`` in ``cwd``; its wall time and its own peak RSS (KiB).

    Linux carries the peak RSS of a process across exec, so a child forked from this
    (big) process would report our size. /usr/bin/time forks the program from a tiny
    process instead and writes its ru_maxrss to a file; without it the figure is
    taken from os.wait4 and may be inflated.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The package compiled once, as an install does (with PYTHONDONTWRITEBYTECODE
    # each process would compile it again).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with (
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss,
        tempfile.TemporaryFile("w+") as err,
    ):
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{argv} failed in {cwd} with status {proc.returncode}:\n{err.read()}")
        maxrss = int(rss.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    # wait4's usage counts what /usr/bin/time waited for too: the program's CPU.
    return Run(seconds, maxrss, usage.ru_utime + usage.ru_stime)


def best(runs: list[Run]) -> Run:
    """The fastest run's time and CPU, and the highest peak RSS of them all."""
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(fastest.seconds, max(r.maxrss_kib for r in runs), fastest.cpu)


def same_files(a: Path, b: Path) -> bool:
    """Byte for byte, a block at a time (a 10M-line data.cdb is over 1 GB)."""
    return filecmp.cmp(a, b, shallow=False)


def make_data(path: Path, size: int) -> None:
    """``size`` lines of data at ``path``, unless a run with --keep made them already."""
    marker = path.with_name(".lines")
    if path.exists() and marker.exists() and marker.read_text() == str(size):
        return
    write_data(path, size)
    marker.write_text(str(size))


def in_process(directory: Path) -> float:
    """The compile alone, in this process: read data, compile, write data.cdb (as the
    drop-in does, without its fsync)."""
    started = time.perf_counter()
    fd = os.open(directory / "data", os.O_RDONLY)
    out = os.open(directory / "inproc.cdb", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        compile_stream(lambda n: os.read(fd, n), out, default_serial(MTIME))
    finally:
        os.close(out)
        os.close(fd)
    return time.perf_counter() - started


def full_compile(base: Path, size: int, repeat: int) -> str:
    ours, theirs = base / "dnsmaster", base / "tinydns-data"
    for d in (ours, theirs):
        d.mkdir(parents=True, exist_ok=True)
    make_data(ours / "data", size)
    shutil.copyfile(ours / "data", theirs / "data")
    for d in (ours, theirs):
        os.utime(d / "data", (MTIME, MTIME))
    with (ours / "data").open("rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(MIB), b""))
    a_runs, b_runs, inproc = [], [], []
    for _ in range(repeat):  # interleaved, so both see the same machine state
        b_runs.append(run_child([TINYDNS_DATA], theirs))
        a_runs.append(run_child(DNSMASTER, ours))
        inproc.append(in_process(ours))
    a, b = best(a_runs), best(b_runs)
    same = same_files(ours / "data.cdb", theirs / "data.cdb")
    same = same and same_files(ours / "data.cdb", ours / "inproc.cdb")
    (ours / "inproc.cdb").unlink()
    return (
        f"full  {show_size(lines):>5} lines: dnsmaster {a.seconds:6.2f} s "
        f"(CPU {a.cpu:5.2f} s; in-process {min(inproc):5.2f} s), tinydns-data "
        f"{b.seconds:5.2f} s (CPU {b.cpu:5.2f} s), "
        f"ratio {a.seconds / b.seconds:5.2f}x; peak RSS {a.maxrss_kib / 1024:6.0f} MiB "
        f"vs {b.maxrss_kib / 1024:4.0f} MiB; identical: {'yes' if same else 'NO'}"
    )


def cold_build(base: Path, size: int, repeat: int, files: int) -> list[str]:
    zones, out, theirs = base / "zones", base / "out", base / "tinydns-data"
    theirs.mkdir(parents=True, exist_ok=True)
    written = write_zones(zones, size, files=files)
    build = [*DNSMASTER_BUILD, "--zones", str(zones), "--out", str(out)]
    a_runs, b_runs = [], []
    for _ in range(repeat):  # interleaved, so both see the same machine state
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()  # cold: no build cache, no earlier data
        a_runs.append(run_child(build, base))
        shutil.copyfile(out / "data", theirs / "data")
        os.utime(theirs / "data", (MTIME, MTIME))
        b_runs.append(run_child([TINYDNS_DATA], theirs))
    a, b = best(a_runs), best(b_runs)
    lines = sum(path.read_bytes().count(b"\n") for path in written)
    same = same_files(out / "data.cdb", theirs / "data.cdb")
    cold = (
        f"cold  {show_size(lines):>5} lines in {len(written)} files: dnsmaster build "
        f"{a.seconds:5.2f} s (CPU {a.cpu:5.2f} s), tinydns-data {b.seconds:5.2f} s "
        f"(CPU {b.cpu:5.2f} s), ratio {a.seconds / b.seconds:4.2f}x; peak RSS "
        f"{a.maxrss_kib / 1024:4.0f} MiB vs {b.maxrss_kib / 1024:3.0f} MiB; "
        f"identical: {'yes' if same else 'NO'}"
    )
    return [cold, one_line_build(base, build, written, repeat)]


def one_line_build(base: Path, build: list[str], written: list[Path], repeat: int) -> str:
    """``dnsmaster build`` in a new process after one line changed (the build cache of
    the cold build there), against tinydns-data compiling the data it wrote;
    interleaved, best of ``repeat``, both peak RSS, data.cdb compared."""
    out, theirs = base / "out", base / "tinydns-data"
    victim = written[len(written) // 2]
    original = victim.read_bytes()
    a_runs, b_runs = [], []
    try:
        for i in range(repeat):
            head, _, last = original.rstrip(b"\n").rpartition(b"\n")
            victim.write_bytes(head + b"\n" + last.rsplit(b".", 1)[0] + b".%d\n" % (200 + i))
            a_runs.append(run_child(build, base))
            shutil.copyfile(out / "data", theirs / "data")
            os.utime(theirs / "data", (MTIME, MTIME))
            b_runs.append(run_child([TINYDNS_DATA], theirs))
    finally:
        victim.write_bytes(original)
    a, b = best(a_runs), best(b_runs)
    same = same_files(out / "data.cdb", theirs / "data.cdb")
    return (
        f"one-line build, new process: dnsmaster build {a.seconds:5.2f} s (CPU {a.cpu:5.2f} s), "
        f"tinydns-data {b.seconds:5.2f} s (CPU {b.cpu:5.2f} s), ratio "
        f"{a.seconds / b.seconds:4.2f}x; peak RSS {a.maxrss_kib / 1024:4.0f} MiB vs "
        f"{b.maxrss_kib / 1024:3.0f} MiB; identical: {'yes' if same else 'NO'}"
    )


def warm_rebuild(base: Path, size: int, repeat: int, files: int) -> str:
    zones, out, theirs = base / "zones", base / "out", base / "tinydns-data"
    for d in (out, theirs):
        d.mkdir(parents=True, exist_ok=True)
    written = write_zones(zones, size, files=files)
    builder = Builder(zones, out)
    started = time.perf_counter()
    builder.build()
    cold = time.perf_counter() - started
    victim = written[len(written) // 2]
    original = victim.read_bytes()
    warm: list[float] = []
    result = None
    for i in range(repeat):
        # One line changes: the address of the last host of the file.
        head, _, last = original.rstrip(b"\n").rpartition(b"\n")
        changed = head + b"\n" + last.rsplit(b".", 1)[0] + b".%d\n" % (200 + i)
        victim.write_bytes(changed)
        started = time.perf_counter()
        result = builder.build()
        warm.append(time.perf_counter() - started)
        if result.recompiled != (victim.name,):
            raise SystemExit(f"warm build recompiled {result.recompiled}")
    assert result is not None
    shutil.copyfile(out / "data", theirs / "data")
    os.utime(theirs / "data", (MTIME, MTIME))
    b = best([run_child([TINYDNS_DATA], theirs) for _ in range(repeat)])
    same = (out / "data.cdb").read_bytes() == (theirs / "data.cdb").read_bytes()
    return (
        f"warm  {show_size(result.lines):>5} lines in {len(written)} files: "
        f"one-line rebuild {min(warm):5.2f} s (cold build {cold:5.2f} s), "
        f"tinydns-data full compile {b.seconds:5.2f} s, ratio {min(warm) / b.seconds:4.1f}x; "
        f"identical: {'yes' if same else 'NO'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="full-compile sizes (lines)")
    parser.add_argument("--cold-sizes", default="1M", help="cold-build sizes (source lines)")
    parser.add_argument("--cold-files", type=int, default=50, help="zones.* files for cold builds")
    parser.add_argument("--warm-sizes", default="100k,1M", help="warm-rebuild sizes (lines)")
    parser.add_argument("--files", type=int, default=200, help="zones.* files for warm builds")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--keep", type=Path, help="generate and keep the data in this dir")
    args = parser.parse_args(argv)
    if not Path(TINYDNS_DATA).exists():
        raise SystemExit("tinydns-data not found")
    base = args.keep or Path(tempfile.mkdtemp(prefix="dnsmaster-bench-"))
    compiler = "C accelerator" if accel.compiler() else "pure Python"
    print(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.repeat}, "
        f"compiler: {compiler}"
    )
    try:
        for text in filter(None, args.sizes.split(",")):
            size = parse_size(text)
            print(full_compile(base / f"full-{show_size(size)}", size, args.repeat), flush=True)
        for text in filter(None, args.cold_sizes.split(",")):
            size = parse_size(text)
            where = base / f"cold-{show_size(size)}"
            for line in cold_build(where, size, args.repeat, args.cold_files):
                print(line, flush=True)
        for text in filter(None, args.warm_sizes.split(",")):
            size = parse_size(text)
            where = base / f"warm-{show_size(size)}"
            print(warm_rebuild(where, size, args.repeat, args.files), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
