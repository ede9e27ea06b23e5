"""A short soak (benchmarks/soak.py): the supervised daemon, real slaves, every fault.

About a minute of saves and faults of every kind on three lab slaves; no invariant may
break (see the soak's module doc for what each checks), and every fault kind must have
happened at least once, or the run proved nothing about it. The soak runs in a process
of its own (in a private mount namespace, for the slaves' tmpfs roots) and reports one
JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.soak import FAULTS
from tests.conftest import require, require_root
from tests.lab.daemonrun import PROJECT

SECONDS = 60


@pytest.fixture
def components(sshd_bin: str, tinydns_data_bin: str, daemontools: None) -> None:
    """What the soak runs; the fixtures it takes mark the test ``real``."""
    require_root("the soak (sshd, tinydns, tmpfs)")
    require("tinydns")
    require("vim", "vim")
    require("sed", "sed")
    for program in ("unshare", "mount", "umount"):
        require(program, "util-linux mount")


@pytest.mark.usefixtures("components")
def test_short_soak(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.soak",
        "--minutes",
        str(SECONDS / 60),
        "--slaves",
        "3",
        "--seed",
        "17",
        "--grace",
        "20",
        "--fault-gap",
        "1",
        "--save-gap",
        "1.5",
        "--json",
        "--verbose",
    ]
    proc = subprocess.run(
        argv,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 400,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(PROJECT)),
    )
    # The report and the soak's own log (each fault, each violation), to read after a failure.
    (tmp_path / "soak.json").write_text(proc.stdout)
    (tmp_path / "soak.log").write_text(proc.stderr)
    assert proc.stdout.strip(), f"no report; exit {proc.returncode}\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    shown = json.dumps(
        {k: report[k] for k in ("violations", "examples", "faults", "fault_tries", "final")},
        indent=1,
    ) + "".join(f"\n{line}" for line in proc.stderr.splitlines() if "VIOLATION" in line)
    assert report["violations"] == {}, shown
    assert proc.returncode == 0, f"{shown}\n{proc.stderr[-4000:]}"
    assert set(report["faults"]) == set(FAULTS), shown
    missing = [kind for kind, n in report["faults"].items() if n < 1]
    assert not missing, f"faults that never happened: {missing}\n{shown}"
    assert report["saves"]["valid"] > 10, shown
    assert report["saves"]["invalid"] >= 1, shown
    assert report["status_samples"] >= 5, shown
    assert report["final"]["served_last_save_s"] is not None, shown
