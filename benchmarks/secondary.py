"""Time a small master's push into a slave that also serves a big one (issue 19).

One slave root serves two confined masters: ``big`` (``--big`` lines, 1M by default,
zones from datagen.py under ``example`` with their reverse names under
``10.in-addr.arpa``) and ``small`` (``--small`` lines, 100 by default, under
``small.test``). What is timed, in the same run, interleaved, each in a fresh
process:

* **shared push**: the small master pushes a new build (one line changed) into
  the shared root: ``python -m dnsmaster receive --root ROOT --master small --allow
  small.test`` with ``SSH_ORIGINAL_COMMAND=push`` and the sealed data on stdin,
  exactly as sshd (or a local slave) runs it. It checks the small data against the
  allowlist, compiles the small data, and writes the merged data and data.cdb from
  the big master's kept records: it must not recompile the big master's data;
* **tinydns-data**: Debian's compiler on the merged ``data`` that push installed
  (same bytes, same mtime, in a directory of its own): what a receiver that
  compiled the whole merged text would pay at the least;
* **single push**: the same small data pushed into a root of its own by an
  unconfined key (``receive --root ROOT2``): what the small master's push costs
  on a slave that serves nobody else.

Each figure is the median of ``--repeat`` runs (min and max beside it), wall time
and peak RSS (``/usr/bin/time``'s ``%M``: the child's own, not the benchmark's);
the ratios are of medians, taken in the same run. Every run's result is checked:
the push exits 0, the merged data.cdb is byte for byte tinydns-data's, and it holds
both masters' SOA serials.

The receiver is the installed package (its C accelerator when it was built);
``DNSMASTER_PURE_PYTHON=1`` runs the pure-Python receiver instead, as the bundle
without C does. Run from the project root::

    python benchmarks/secondary.py                          # 1M + 100 lines, 5 runs
    python benchmarks/secondary.py --big 100k --repeat 3
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
from dnsmaster.core.cdb import CdbReader  # noqa: E402
from dnsmaster.core.stream import seal  # noqa: E402
from dnsmaster.master.build import Builder  # noqa: E402

TINYDNS_DATA = shutil.which("tinydns-data") or "/usr/bin/tinydns-data"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RECEIVE = [sys.executable, "-m", "dnsmaster", "receive"]
BIG = ["--master", "big", "--allow", "example", "--allow", "10.in-addr.arpa"]
SMALL = ["--master", "small", "--allow", "small.test"]


@dataclass(frozen=True)
class Run:
    seconds: float
    maxrss_kib: int


@dataclass(frozen=True)
class Figure:
    """The runs of one command: median, min and max of each measure."""

    runs: tuple[Run, ...]

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def mib(self) -> float:
        return statistics.median(r.maxrss_kib for r in self.runs) / 1024

    def text(self) -> str:
        low = min(r.seconds for r in self.runs)
        high = max(r.seconds for r in self.runs)
        return f"{self.seconds:6.3f} s ({low:.3f}-{high:.3f}), peak {self.mib:5.0f} MiB"


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = 1
    if text.endswith("k"):
        scale, text = 1000, text[:-1]
    elif text.endswith("m"):
        scale, text = 1_000_000, text[:-1]
    return int(float(text) * scale)


def run_child(argv: list[str], *, cwd: Path, stdin: Path | None = None, verb: str = "") -> Run:
    """Run ``argv``; its wall time and its own peak RSS (KiB), through /usr/bin/time
    (a child forked from this big process would report this process's peak)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if verb:
        env["SSH_ORIGINAL_COMMAND"] = verb
    with (
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss,
        tempfile.TemporaryFile("w+") as err,
        open(stdin or os.devnull, "rb") as source,
    ):
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapped, cwd=cwd, env=env, stdin=source, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"{argv} failed with status {code}:\n{err.read()}")
        maxrss = int(rss.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    return Run(seconds, maxrss)


def small_zones(directory: Path, lines: int, generation: int) -> None:
    """The small master's zones: one zone of ``lines`` lines; ``generation`` changes
    one address, so each push is a new build."""
    directory.mkdir(parents=True, exist_ok=True)
    text = [".small.test:192.0.2.1:a:259200", "@small.test:192.0.2.25:mx:10"]
    text += [f"+h{i}.small.test:192.0.2.{i % 250 + 1}" for i in range(len(text), lines - 1)]
    text.append(f"+changing.small.test:198.51.100.{generation % 250 + 1}")
    (directory / "zones.small").write_text("\n".join(text) + "\n")


def sealed(builder: Builder, where: Path) -> Path:
    """Build; the sealed data (what a push sends) written to ``where``."""
    builder.build()
    data = (builder.output / "data").read_bytes()
    where.write_bytes(data + seal(data))
    return where


def holds(cdb_path: Path, names: list[bytes]) -> list[bool]:
    """Whether data.cdb holds records for each name (wire form)."""
    reader = CdbReader(cdb_path.read_bytes())
    return [bool(reader.get_all(name)) for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", default="1M", help="the big master's lines (default 1M)")
    parser.add_argument("--small", type=int, default=100, help="the small master's lines")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (median shown)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args(argv)
    if not Path(TINYDNS_DATA).exists():
        raise SystemExit("tinydns-data not found")
    base = args.keep or Path(tempfile.mkdtemp(prefix="dnsmaster-bench-"))
    compiler = "C accelerator" if accel.compiler() else "pure Python"
    print(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeat}, "
        f"receiver's compiler: {compiler}",
        flush=True,
    )
    try:
        print(measure(base, parse_size(args.big), args.small, args.repeat), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def measure(base: Path, big_lines: int, small_lines: int, repeat: int) -> str:
    shared, single, td = base / "shared", base / "single", base / "tinydns-data"
    for d in (shared, single, td):
        d.mkdir(parents=True, exist_ok=True)
    big = Builder(base / "big-zones", base / "big-out")
    write_zones(big.zones, big_lines, files=50)
    (base / "big-out").mkdir(exist_ok=True)
    started = time.perf_counter()
    big_data = sealed(big, base / "big.push")
    built = time.perf_counter() - started
    big_push = run_child(
        [*RECEIVE, "--root", str(shared), *BIG], cwd=base, stdin=big_data, verb="push"
    )
    small = Builder(base / "small-zones", base / "small-out")
    (base / "small-out").mkdir(exist_ok=True)
    shared_runs, single_runs, td_runs = [], [], []
    for n in range(repeat + 1):  # the first round only installs: not counted
        small_zones(small.zones, small_lines, n)
        data = sealed(small, base / "small.push")
        a = run_child([*RECEIVE, "--root", str(shared), *SMALL], cwd=base, stdin=data, verb="push")
        c = run_child([*RECEIVE, "--root", str(single)], cwd=base, stdin=data, verb="push")
        shutil.copy2(shared / "data", td / "data")  # the same mtime: the same default serial
        b = run_child([TINYDNS_DATA], cwd=td)
        if (td / "data.cdb").read_bytes() != (shared / "data.cdb").read_bytes():
            raise SystemExit(f"round {n}: the merged data.cdb is not tinydns-data's")
        if n:
            shared_runs.append(a)
            single_runs.append(c)
            td_runs.append(b)
    found = holds(shared / "data.cdb", [b"\x05small\x04test\x00", b"\x09customer0\x07example\x00"])
    if not all(found):
        raise SystemExit(f"the merged data.cdb lacks a master's zone: {found}")
    a, b, c = Figure(tuple(shared_runs)), Figure(tuple(td_runs)), Figure(tuple(single_runs))
    merged_lines = (shared / "data").read_bytes().count(b"\n")
    return "\n".join(
        [
            f"big master {big_lines} lines (built in {built:.1f} s, first push "
            f"{big_push.seconds:.2f} s, peak {big_push.maxrss_kib / 1024:.0f} MiB), "
            f"small master {small_lines} lines; merged data {merged_lines} lines",
            f"small master's push, shared root     {a.text()}",
            f"tinydns-data, the merged data        {b.text()}",
            f"small master's push, a root its own  {c.text()}",
            f"ratios (medians): shared push / tinydns-data {a.seconds / b.seconds:.2f}x, "
            f"shared / own root {a.seconds / c.seconds:.2f}x; "
            f"peak {a.mib / b.mib:.1f}x / {a.mib / c.mib:.1f}x",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
