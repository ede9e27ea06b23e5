"""Two receivers at once on one root: one writer at a time, and the newer build wins.

Two masters, a retry after a timeout, a manual push beside the daemon: receivers
overlap. Each trial starts two ``dnsmaster receive`` runs on the same root (each
forked from a server that imported dnsmaster once: tests.lab.receiver.at_once)
with different builds, either one first, each traced by strace, which delays
(or not) every rename and link (``delay_enter``) to widen the windows between checking what
is installed and renaming the new pair in, and between the two renames. Every such
meeting is tried, each at two seeded random gaps between the starts. However they
interleave, the root must end with ``data`` and data.cdb from the same push, that push the
newer build, every exit 0 or a clear refusal of the older build, no litter, and no
two pushes sharing a copy name.
"""

from __future__ import annotations

import itertools
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster import protocol
from tests.lab.receiver import (
    Receivers,
    at_once,
    build,
    check_repaired,
    copies,
    push_in_process,
    sealed,
)

if TYPE_CHECKING:
    from tests.lab.realworld import Lab


#: Which receiver starts first, and whether each one's renames and links are delayed.
MEETINGS = list(itertools.product(("older", "newer"), (False, True), (False, True)))
#: Microseconds strace holds each rename and link before it runs.
DELAY = "inject=rename,link:delay_enter=30000"


@pytest.fixture(scope="module")
def servers(strace_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Receivers]]:
    """Two receiver servers (tests.lab.receiver.Receivers), one for each of two
    receivers at once: each receiver a fork of an interpreter that imported dnsmaster,
    not a Python start of its own (0.25 s of CPU each, 48 of them in this module)."""
    started = [Receivers(tmp_path_factory.mktemp(f"receivers{i}")) for i in (1, 2)]
    try:
        yield started
    finally:
        for server in started:
            server.close()


def traced(delayed: bool) -> list[str]:
    """A receiver's strace options: its renames and links delayed, or only traced."""
    return ["-e", DELAY] if delayed else ["-e", "trace=none"]


def ended(proc: subprocess.CompletedProcess[bytes]) -> tuple[int, str, str]:
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode()


class TestTwoReceivers:
    def test_newer_build_wins(self, tmp_path: Path, servers: list[Receivers]) -> None:
        """Every meeting of an older and a newer build, twice: the pair is whole and
        the newer one."""
        rng = random.Random(2026)
        for trial, (first, *delayed) in enumerate(MEETINGS * 2):
            root = tmp_path / f"trial{trial}"
            root.mkdir()
            assert push_in_process(root, sealed(build(3 * trial)))[0] == 0
            older, newer = sealed(build(3 * trial + 1)), sealed(build(3 * trial + 2))
            order = [(older, "older"), (newer, "newer")]
            if first == "newer":
                order.reverse()
            runs = [
                (stream, traced(delay), ())
                for (stream, _), delay in zip(order, delayed, strict=True)
            ]
            procs = at_once(servers, root, runs, gaps=[rng.uniform(0, 0.05)])
            results = {name: ended(proc) for (_, name), proc in zip(order, procs, strict=True)}
            where = f"trial {trial}: {results}"
            assert results["newer"][0] == 0, where
            status, _, err = results["older"]
            if status != 0:
                assert status == protocol.EXIT_REFUSED, where
                assert "is older than the installed serial" in err, where
            assert (root / "data").read_bytes() == newer, where
            check_repaired(root)
            kept = copies(root)
            assert newer in kept.values(), where
            assert (older in kept.values()) == (status == 0), where

    def test_same_push_twice_at_once(self, tmp_path: Path, servers: list[Receivers]) -> None:
        """A retry racing the push it retries, neither, one or both delayed: both
        succeed, one install, one copy."""
        for trial, delayed in enumerate(itertools.product((False, True), repeat=2)):
            root = tmp_path / f"trial{trial}"
            root.mkdir()
            assert push_in_process(root, sealed(build(0)))[0] == 0
            stream = sealed(build(1))
            procs = at_once(servers, root, [(stream, traced(delay), ()) for delay in delayed])
            results = [ended(proc) for proc in procs]
            assert [r[0] for r in results] == [0, 0], results
            outs = [r[1] for r in results]
            assert sum("installed data and data.cdb" in out for out in outs) == 1, outs
            assert sum("unchanged:" in out for out in outs) == 1, outs
            assert list(copies(root).values()).count(stream) == 1
            check_repaired(root)


class TestThroughSshd:
    def test_two_masters_at_once(self, lab: Lab) -> None:
        """Two pushes at once through real sshd: tinydns answers with the newer serial.

        Twice, the second over the first's newer build; every order and delay of the
        two receivers is TestTwoReceivers' (the same receiver), here the path through
        sshd and on to tinydns is what is proved."""
        (slave,) = lab(1)
        assert lab.push(slave, build(0)).returncode == 0
        for trial in range(1, 3):
            older, newer = build(2 * trial - 1), build(2 * trial)
            procs = []
            for i, data in enumerate((older, newer)):
                source = lab.workdir / f"push{trial}.{i}"
                source.write_bytes(sealed(data))
                with source.open("rb") as stdin:
                    procs.append(
                        subprocess.Popen(
                            lab.ssh_argv(slave, "push"),
                            stdin=stdin,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        )
                    )
            statuses = [finish(proc)[0] for proc in procs]
            assert statuses[1] == 0
            assert statuses[0] in (0, protocol.EXIT_REFUSED)
            assert slave.installed() == sealed(newer)
            check_repaired(slave.root)
            assert slave.tinydns.wait_serial("example.com", 1_700_000_000 + 2 * trial) == (
                1_700_000_000 + 2 * trial
            )
