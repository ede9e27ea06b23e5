"""Confined masters' installs killed or failed at every step, and two masters pushing
at once: the merged pair always holds what the sections hold, or the journal that
makes the next run merge again (as in test_receive_crash.py, under strace)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.fsutil import JOURNAL
from tests.lab.receiver import receiver_argv, receiver_env
from tests.slave.test_masters import (
    A1,
    A2,
    ALPHA,
    B1,
    BETA,
    ZONE_A,
    ZONE_B,
    build,
    merged_expected,
    pair_matches,
    run,
)

CRASH_POINTS = ("rename", "link", "unlink", "fsync", "write")
FAULTS = {"rename": "EIO", "link": "ENOSPC", "unlink": "EIO", "fsync": "EIO", "write": "ENOSPC"}
_LITTER = re.compile(r"\.(?:data|records|allow)\..*\.(?:tmp|link)|\.removed\..*", re.DOTALL)

#: What each operation is: the key (or operator options), the verb (None: run by
#: the slave's operator), and the stream.
OPERATIONS = {
    "push": (ALPHA, "push", A2),
    "remove": (("--remove-master", "beta"), None, b""),
}


def run_sub(
    root: Path,
    key: tuple[str, ...],
    verb: str | None,
    stdin: bytes = b"",
    strace: list[str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    env = receiver_env(verb or "")
    if verb is None:
        del env["SSH_ORIGINAL_COMMAND"]
    return subprocess.run(
        [*receiver_argv(root, strace=strace), *key],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def sections(root: Path) -> dict[str, bytes]:
    base = root / "masters"
    return {
        name: (base / name / "data").read_bytes()
        for name in sorted(os.listdir(base))
        if not name.startswith(".") and (base / name / "data").exists()
    }


def litter(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if _LITTER.fullmatch(p.name))


def check_merged(root: Path) -> None:
    """No journal, the merged pair exactly the sections' merge, nothing left behind."""
    assert not (root / JOURNAL).exists()
    assert (root / "data").read_bytes() == merged_expected(*sections(root).items())
    assert pair_matches(root)
    assert litter(root) == []


def fresh(root: Path) -> Path:
    root.mkdir()
    assert run(root, ALPHA, data=A1)[0] == 0
    assert run(root, BETA, data=B1)[0] == 0
    return root


def crash_points(scratch: Path, operation: str) -> list[tuple[str, int]]:
    key, verb, stdin = OPERATIONS[operation]
    fresh(scratch)
    trace = scratch.parent / "trace.txt"
    strace = ["-o", str(trace), "-e", f"trace={','.join(CRASH_POINTS)}"]
    proc = run_sub(scratch, key, verb, stdin, strace)
    assert proc.returncode == 0, proc.stderr
    text = trace.read_text()
    counts = {n: len(re.findall(rf"^(?:\d+ +)?{n}\(", text, re.MULTILINE)) for n in CRASH_POINTS}
    return [(name, n) for name in CRASH_POINTS for n in range(1, counts[name] + 1)]


class TestKilled:
    @pytest.mark.usefixtures("strace_bin")
    @pytest.mark.parametrize("operation", sorted(OPERATIONS))
    def test_kill_at_every_step(self, tmp_path: Path, operation: str) -> None:
        """SIGKILL at each step: old or new state, or the journal; the next run
        (another master's status) merges again from the sections."""
        key, verb, stdin = OPERATIONS[operation]
        points = crash_points(tmp_path / "scratch", operation)
        assert points
        for name, n in points:
            root = fresh(tmp_path / f"kill-{name}-{n}")
            inject = ["-o", "/dev/null", "-e", f"inject={name}:signal=SIGKILL:when={n}"]
            proc = run_sub(root, key, verb, stdin, inject)
            where = f"{operation} killed at {name} #{n}"
            if proc.returncode != 0:
                assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (where, proc)
            if not (root / JOURNAL).exists():
                assert (root / "data").read_bytes() == merged_expected(*sections(root).items())
                assert pair_matches(root), where
            status = run_sub(root, BETA if operation == "push" else ALPHA, "status")
            assert status.returncode == 0, (where, status.stderr)
            check_merged(root)
            again = run_sub(root, key, verb, stdin)
            if operation == "remove" and b"no master beta" in again.stderr:
                continue  # the killed run had removed it already
            assert again.returncode == 0, (where, again.stderr)
            check_merged(root)
            if operation == "push":
                assert sections(root) == {"alpha": A2, "beta": B1}, where
            else:
                assert sections(root) == {"alpha": A1}, where


class TestSystemErrors:
    @pytest.mark.usefixtures("strace_bin")
    def test_error_at_every_step(self, tmp_path: Path) -> None:
        """A failed write, fsync, rename, link or unlink at each step of a push: never
        a merged pair other than the sections' vouched for, and the next push succeeds."""
        key, verb, stdin = OPERATIONS["push"]
        for name, n in crash_points(tmp_path / "scratch", "push"):
            root = fresh(tmp_path / f"fail-{name}-{n}")
            inject = ["-o", "/dev/null", "-e", f"inject={name}:error={FAULTS[name]}:when={n}"]
            proc = run_sub(root, key, verb, stdin, inject)
            where = f"{FAULTS[name]} at {name} #{n}"
            assert proc.returncode in (0, protocol.EXIT_SYSTEM), (where, proc.stderr)
            if not (root / JOURNAL).exists():
                assert (root / "data").read_bytes() == merged_expected(*sections(root).items())
                assert pair_matches(root), where
            again = run_sub(root, key, verb, stdin)
            assert again.returncode == 0, (where, again.stderr)
            check_merged(root)
            assert sections(root) == {"alpha": A2, "beta": B1}, where


class TestTwoMastersAtOnce:
    @pytest.mark.usefixtures("strace_bin")
    def test_twenty_rounds(self, tmp_path: Path) -> None:
        """Both masters push at once, 20 times, renames and links delayed at random:
        every push succeeds, and the merged pair holds both masters' latest."""
        rng = random.Random(19)
        root = fresh(tmp_path / "root")
        for n in range(2, 22):
            pushes = [
                (ALPHA, build(ZONE_A + b"+r%d.a.example:192.0.2.1\n" % n, n)),
                (BETA, build(ZONE_B + b"+r%d.b.example:192.0.2.2\n" % n, n, "zones.b")),
            ]
            rng.shuffle(pushes)
            procs = []
            for key, stream in pushes:
                source = tmp_path / f"stream-{key[1]}-{n}"
                source.write_bytes(stream)
                delay = rng.random() < 0.7
                strace = ["-o", "/dev/null", "-e", "inject=rename,link:delay_enter=20000"]
                with source.open("rb") as stdin:
                    procs.append(
                        subprocess.Popen(
                            [*receiver_argv(root, strace=strace if delay else None), *key],
                            stdin=stdin,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=receiver_env("push"),
                        )
                    )
            for proc in procs:
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, (n, err)
            check_merged(root)
            assert sections(root) == {key[1]: stream for key, stream in pushes}, n
