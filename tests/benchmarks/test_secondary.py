"""benchmarks/secondary.py runs, checks what it measures, and prints its ratios (at a
size that takes seconds, not the 1M lines of the real run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.usefixtures("tinydns_data_bin")
def test_small_run(tmp_path: Path) -> None:
    """Two rounds at 2,000 + 50 lines: every check passes (exit 0), every figure and
    both ratios are printed."""
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "benchmarks" / "secondary.py"),
            "--big",
            "2k",
            "--small",
            "50",
            "--repeat",
            "2",
            "--keep",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# python ")
    assert "big master 2000 lines" in lines[1]
    assert [line.split(" s ")[0].rsplit(None, 1)[0] for line in lines[2:5]] == [
        "small master's push, shared root",
        "tinydns-data, the merged data",
        "small master's push, a root its own",
    ]
    assert lines[5].startswith("ratios (medians): shared push / tinydns-data ")
    assert (tmp_path / "shared" / "masters" / "small" / "data").is_file()
