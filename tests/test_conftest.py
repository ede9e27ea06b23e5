"""The order the workers run the suite in: the long tests at the heads of the shares;
and a command run in process, as a process would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnsmaster.fsutil import DirectoryLock
from tests.conftest import dnsmaster_here, long_first


def shares(nodeids: list[str], workers: int) -> list[list[str]]:
    """The contiguous shares xdist's worksteal hands out first, as it splits them."""
    out, left, at = [], len(nodeids), 0
    for worker in range(workers):
        size = left // (workers - worker)
        out.append(nodeids[at : at + size])
        left, at = left - size, at + size
    return out


def test_long_tests_head_the_shares_longest_first() -> None:
    ids = [f"t{i}" for i in range(20)]
    order = long_first(ids, ["t19", "t3", "t18", "t4", "t17"], 4)
    ordered = [ids[i] for i in order]
    assert sorted(ordered) == sorted(ids)
    # Dealt longest first across the shares, then the rest in their order.
    assert [share[:2] for share in shares(ordered, 4)] == [
        ["t19", "t17"],
        ["t3", "t5"],
        ["t18", "t9"],
        ["t4", "t13"],
    ]
    assert [n for n in ordered if n not in {"t19", "t3", "t18", "t4", "t17"}] == [
        f"t{i}" for i in range(20) if i not in {19, 3, 18, 4, 17}
    ]


def test_unknown_names_one_worker_and_tiny_collections() -> None:
    ids = ["a", "b", "c"]
    assert long_first(ids, ["gone"], 4) == [0, 1, 2]
    assert long_first(ids, ["c"], 1) == [0, 1, 2]
    # More long tests than a share holds: every test still runs, once.
    assert sorted(long_first(ids, ["c", "b", "a"], 2)) == [0, 1, 2]
    assert long_first(ids, ["c", "b", "a"], 2)[0] == 2


def zones(base: Path) -> tuple[Path, Path]:
    source, out = base / "zones", base / "out"
    source.mkdir()
    out.mkdir()
    (source / "zones.example").write_text(".example.com:127.0.0.1:a\n")
    return source, out


def test_in_process_command_gives_status_and_output(tmp_path: Path) -> None:
    """Exit status, stdout and stderr as a process's; argparse's exit is a status."""
    source, out = zones(tmp_path)
    ran = dnsmaster_here("build", "--zones", source, "--out", out, "--log-format", "json")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == ""
    assert [json.loads(line)["event"] for line in ran.stderr.splitlines()][-1] == "build.done"
    assert (out / "data.cdb").exists()
    ran = dnsmaster_here("build", "--no-such-option")
    assert ran.returncode == 2
    assert "unrecognized arguments: --no-such-option" in ran.stderr


def test_in_process_command_that_overruns_fails(tmp_path: Path) -> None:
    """A command that would wait for ever (here for the output's lock) fails the test."""
    source, out = zones(tmp_path)
    lock = DirectoryLock(out)
    assert lock.try_acquire()
    try:
        with pytest.raises(pytest.fail.Exception, match=r"still ran after 0\.3 s"):
            dnsmaster_here("build", "--zones", source, "--out", out, timeout=0.3)
    finally:
        lock.release()
