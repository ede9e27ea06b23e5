"""Time builds of a zones directory of one-line files, one file per customer.

The classic set-up of issue 21: 100,000 ``zones.*`` files of one line each (the
lines of :mod:`datagen`, in its order). Measured, each beside tinydns-data
compiling the ``data`` that build wrote (same run, interleaved, best of
``--repeat``, peak RSS of both, both data.cdb files compared byte for byte):

* cold: ``dnsmaster build`` in a new process into an empty output directory,
  and beside it the classic make-data too: ``cat header zones.* > data;
  tinydns-data`` (the
  files' lines as they are, so its data.cdb is not compared: no serial stamped);
* one file changed, in process: one line of one file changes and the same
  :class:`~dnsmaster.master.build.Builder` builds again, as the daemon does;
* one file changed, in process, name told: the same, the Builder told which
  file changed (``build(changed=...)``), as a daemon's watcher can;
* one file changed, new process: the same, with a new ``dnsmaster build``, as
  ``push``, ``build`` or a daemon start would.

Then the size of the build cache (``OUTPUT/.dnsmaster-cache``) beside the size of
``data`` and ``data.cdb``, which hold what it caches.

Run from the project root::

    python benchmarks/manyfiles.py --base /work/bench-cache       # 100,000 files, kept
    python benchmarks/manyfiles.py --files 10000 --repeat 3        # in a temp directory
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compile import TINYDNS_DATA, Run, best, run_child  # noqa: E402
from datagen import LINES_PER_ZONE, zone_lines  # noqa: E402

from dnsmaster.master import buildcache  # noqa: E402
from dnsmaster.master.build import Builder  # noqa: E402

MTIME = 1_700_000_000
MIB = 1024 * 1024


def write_files(zones: Path, files: int) -> list[Path]:
    """``files`` zones files of one line each (kept when already there)."""
    zones.mkdir(parents=True, exist_ok=True)
    paths = [zones / f"zones.c{i:06d}" for i in range(files)]
    if (zones / "header").exists() and all(p.exists() for p in (paths[0], paths[-1])):
        return paths
    rng = random.Random(1)
    lines = (line for n in range(files // LINES_PER_ZONE + 1) for line in zone_lines(n, rng))
    for path, line in zip(paths, lines, strict=False):
        path.write_text(line + "\n")
    (zones / "header").write_text("# dnsmaster benchmark data, one line per file\n")
    # The build trusts only stats older than two seconds (git's racy-clean rule).
    time.sleep(2.1)
    return paths


def build_argv(zones: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dnsmaster",
        "build",
        "--log-format",
        "logfmt",
        "--zones",
        str(zones),
        "--out",
        str(out),
    ]


def reference(out: Path, theirs: Path) -> tuple[Run, bool]:
    """tinydns-data compiling the ``data`` in ``out``; whether its data.cdb is ours."""
    shutil.copyfile(out / "data", theirs / "data")
    os.utime(theirs / "data", (MTIME, MTIME))
    run = run_child([TINYDNS_DATA], theirs)
    same = (out / "data.cdb").read_bytes() == (theirs / "data.cdb").read_bytes()
    return run, same


def classic(zones: Path, theirs: Path) -> Run:
    """``cat header zones.* > data; tinydns-data``, the classic make-data (the names
    are handed to cat by xargs: 100,000 of them exceed one command line)."""
    into = theirs / "classic"
    into.mkdir(exist_ok=True)
    script = (
        f"{{ cat header && printf '%s\\0' zones.* | xargs -0 cat; }} "
        f"> {shlex.quote(str(into / 'data'))} && "
        f"cd {shlex.quote(str(into))} && exec {TINYDNS_DATA}"
    )
    return run_child(["sh", "-c", script], zones)


def change(victim: Path, original: bytes, i: int) -> None:
    """One more line in one file, another each time."""
    victim.write_bytes(original.rstrip(b"\n") + b"\n+changed%d.example:192.0.2.%d\n" % (i, i % 250))


def size_of(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def show(label: str, ours: Run, theirs: Run, same: bool) -> str:
    cpu = f" (CPU {ours.cpu:.3f} s)" if ours.cpu else ""
    theirs_cpu = f" (CPU {theirs.cpu:.3f} s)" if theirs.cpu else ""
    return (
        f"{label}: {ours.seconds:6.3f} s{cpu}, {ours.maxrss_kib / 1024:6.1f} MiB; "
        f"tinydns-data {theirs.seconds:6.3f} s{theirs_cpu}, "
        f"{theirs.maxrss_kib / 1024:5.1f} MiB; "
        f"ratio {ours.seconds / theirs.seconds:5.2f}x; data.cdb identical: "
        f"{'yes' if same else 'NO'}"
    )


def in_process(
    builder: Builder, edits: list[tuple[Path, bytes, int]], theirs: Path, *, told: bool
) -> tuple[Run, Run, bool]:
    """Each edit, then a build by ``builder`` (told the file's name when ``told``, as
    a daemon's watcher can tell it: ``Builder.build(changed=...)``); the best of
    the builds, of tinydns-data beside them, and whether every data.cdb was its."""
    warm: list[Run] = []
    ref: list[Run] = []
    same = True
    for victim, original, i in edits:
        change(victim, original, i)
        started, cpu = time.perf_counter(), time.process_time()
        result = builder.build(changed={victim.name} if told else None)
        warm.append(Run(time.perf_counter() - started, 0, time.process_time() - cpu))
        assert result.recompiled == (victim.name,), result.recompiled
        r, ok = reference(builder.output, theirs)
        ref.append(r)
        same = same and ok
    return best(warm), best(ref), same


def run(base: Path, files: int, repeat: int) -> list[str]:
    zones, out, theirs = base / "zones", base / "out", base / "tinydns"
    paths = write_files(zones, files)
    theirs.mkdir(parents=True, exist_ok=True)
    victim = paths[len(paths) // 2]
    original = victim.read_bytes()
    lines = []
    same = True
    cold: list[Run] = []
    ref: list[Run] = []
    make_data: list[Run] = []
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        cold.append(run_child(build_argv(zones, out), base))
        r, ok = reference(out, theirs)
        ref.append(r)
        same = same and ok
        make_data.append(classic(zones, theirs))
    lines.append(show(f"cold build, {files} files", best(cold), best(ref), same))
    m = best(make_data)
    lines.append(
        f"  classic make-data (cat header zones.* > data; tinydns-data): {m.seconds:6.3f} s "
        f"(CPU {m.cpu:.3f} s), {m.maxrss_kib / 1024:5.1f} MiB; "
        f"cold build / make-data {best(cold).seconds / m.seconds:5.2f}x"
    )

    # One file changed, the same Builder (the daemon's way); its RSS is this process's.
    builder = Builder(zones, out)
    builder.build()
    for k, (label, told) in enumerate((("", False), (", name told", True))):
        edits = [(victim, original, (k + 1) * repeat + i) for i in range(repeat)]
        warm, ref_run, same = in_process(builder, edits, theirs, told=told)
        lines.append(show(f"one file changed, in process{label}", warm, ref_run, same))

    fresh: list[Run] = []
    ref, same = [], True
    for i in range(repeat):
        change(victim, original, 3 * repeat + i)
        fresh.append(run_child(build_argv(zones, out), base))
        r, ok = reference(out, theirs)
        ref.append(r)
        same = same and ok
    lines.append(show("one file changed, new process", best(fresh), best(ref), same))
    victim.write_bytes(original)

    cache = size_of(out / buildcache.DIRECTORY)
    data, data_cdb = (out / "data").stat().st_size, (out / "data.cdb").stat().st_size
    lines.append(
        f"build cache {cache / MIB:6.1f} MiB; data {data / MIB:6.1f} MiB, data.cdb "
        f"{data_cdb / MIB:6.1f} MiB: {cache / data:4.2f}x data, "
        f"{cache / (data + data_cdb):4.2f}x data and data.cdb"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="one-line files")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--base", type=Path, help="generate and keep the files in this dir")
    args = parser.parse_args(argv)
    if not Path(TINYDNS_DATA).exists():
        raise SystemExit("tinydns-data not found")
    base = args.base or Path(tempfile.mkdtemp(prefix="dnsmaster-manyfiles-"))
    print(
        f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {args.repeat}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    try:
        for line in run(base, args.files, args.repeat):
            print(line, flush=True)
    finally:
        print(f"# load average {os.getloadavg()[0]:.2f}")
        if args.base is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
