"""The receiver killed, or failed by the system, at every step: the next run repairs.

The receiver runs as sshd would run it (``python -m dnsmaster receive`` with
``SSH_ORIGINAL_COMMAND``), under strace, which kills it (``signal=SIGKILL``) or
fails a syscall (``error=ENOSPC``) at the Nth call of a syscall, for every N that a
clean push makes. Whatever the instant, the root must then hold the old pair, the
new pair, or the install journal; and after the next run (``status`` or a push)
data.cdb is exactly what compiling ``data`` gives, ``status`` reports that data's
sha256, and no temp file, link or copy of a failed push is left.

At every step, the run strace kills or fails is ``dnsmaster receive`` forked from one
interpreter that imported dnsmaster once (tests.lab.receiver.Receivers), strace
attached before it starts, the calls it makes checked against a receiver started as
sshd starts it; the runs after it, which must repair, are the same receiver in this
process. Every crash point starts from a copy of one root with OLD installed, and
the points are learned once per module.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.core.compiler import compile_data
from dnsmaster.fsutil import JOURNAL
from tests.conftest import require_root
from tests.lab.receiver import (
    Receivers,
    age_copies,
    build,
    check_repaired,
    copies,
    copy_root,
    data_sha,
    litter,
    pair_matches,
    push_in_process,
    receiver_argv,
    receiver_env,
    sealed,
    status_line,
)

#: What a clean push calls that can be a crash point, and what each may fail with.
CRASH_POINTS = ("rename", "link", "unlink", "fsync", "write")
FAULTS = {"rename": "EIO", "link": "ENOSPC", "unlink": "EIO", "fsync": "EIO", "write": "ENOSPC"}
TRACED = ["-e", f"trace={','.join(CRASH_POINTS)}"]


def run_receiver(
    root: Path, verb: str, stdin: bytes = b"", *, strace: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        receiver_argv(root, strace=strace),
        input=stdin,
        env=receiver_env(verb),
        capture_output=True,
        timeout=60,
        check=False,
    )


def check_crash_state(root: Path, allowed: list[bytes]) -> bool:
    """The state a crash may leave: a whole allowed data, and the pair or the journal.

    Returns whether the journal is there (the next run must repair).
    """
    assert (root / "data").read_bytes() in allowed
    journal = (root / JOURNAL).exists()
    if not journal:
        assert pair_matches(root), "no journal, yet data.cdb is not built from data"
    return journal


def count_calls(trace: str) -> dict[str, int]:
    """How often a run calls each syscall of CRASH_POINTS, from its trace."""
    return {n: len(re.findall(rf"^(?:\d+ +)?{n}\(", trace, re.MULTILINE)) for n in CRASH_POINTS}


OLD, NEW = build(0), build(1)


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A root with OLD installed."""
    root = tmp_path / "root"
    root.mkdir()
    assert push_in_process(root, sealed(OLD))[0] == 0
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with OLD installed, made once: each crash point copies it."""
    root = tmp_path_factory.mktemp("receive") / "old"
    root.mkdir()
    assert push_in_process(root, sealed(OLD))[0] == 0
    age_copies(root)
    return root


@pytest.fixture(scope="module")
def receivers(strace_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    server = Receivers(tmp_path_factory.mktemp("receivers"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def points(template: Path, receivers: Receivers) -> list[tuple[str, int]]:
    """Every crash point of pushing NEW over OLD, from one clean run under strace."""
    scratch = copy_root(template, template.parent / "scratch")
    proc = receivers.run(scratch, "push", sealed(NEW), TRACED)
    assert proc.returncode == 0, proc.stderr
    counts = count_calls(receivers.trace)
    # The forked receiver makes the calls one started as sshd starts it makes.
    started = copy_root(template, template.parent / "started")
    trace = template.parent / "started.trace"
    proc = run_receiver(started, "push", sealed(NEW), strace=["-o", str(trace), *TRACED])
    assert proc.returncode == 0, proc.stderr
    assert count_calls(trace.read_text()) == counts
    # data.cdb, then data: the two renames of the pair; then the kept sections
    # (dnsmaster.slave.sections), which a crash before or at only leaves stale
    assert counts["rename"] == 3
    return [(name, n) for name in CRASH_POINTS for n in range(1, counts[name] + 1)]


class TestKilled:
    @pytest.mark.usefixtures("strace_bin")
    def test_kill_at_every_step(
        self, tmp_path: Path, template: Path, receivers: Receivers, points: list[tuple[str, int]]
    ) -> None:
        """SIGKILL at each rename, link, unlink, fsync and write of a push; the next runs repair."""
        for name, n in points:
            root = copy_root(template, tmp_path / f"kill-{name}-{n}")
            inject = ["-e", f"inject={name}:signal=SIGKILL:when={n}"]
            proc = receivers.run(root, "push", sealed(NEW), [*TRACED, *inject])
            where = f"killed at {name} #{n}"
            # Every copied root makes the learned calls (no copy name of this second
            # is taken: age_copies): each point is reached.
            assert proc.returncode == -signal.SIGKILL, (where, proc)
            journal = check_crash_state(root, [sealed(OLD), sealed(NEW)])
            if (root / "data").read_bytes() == sealed(OLD):
                # Not installed: no copy of this push may stay.
                assert sealed(NEW) not in copies(root).values(), where
            # The next run, whatever its verb, repairs before anything else.
            status, out, err = push_in_process(root, b"", "status")
            assert status == 0, (where, err)
            if journal:
                assert "repaired: rebuilt data.cdb from data" in out, where
            check_repaired(root)
            assert out.splitlines()[-1] == status_line(root), where
            status, _, err = push_in_process(root, sealed(NEW))
            assert status == 0, (where, err)
            assert (root / "data").read_bytes() == sealed(NEW)
            check_repaired(root)

    @pytest.mark.usefixtures("strace_bin")
    def test_kill_during_repair(self, fresh: Path) -> None:
        """A run killed while repairing leaves the journal; the run after it repairs."""
        # Killed on entering the second rename: the new data.cdb beside the old data.
        between = ["-o", "/dev/null", "-e", "inject=rename:signal=SIGKILL:when=2"]
        assert run_receiver(fresh, "push", sealed(NEW), strace=between).returncode != 0
        assert check_crash_state(fresh, [sealed(OLD)])
        assert not pair_matches(fresh)
        repair = ["-o", "/dev/null", "-e", "inject=rename:signal=SIGKILL:when=1"]
        assert run_receiver(fresh, "status", strace=repair).returncode != 0
        assert check_crash_state(fresh, [sealed(OLD)])
        assert status_line(fresh).startswith(f"status sha256={data_sha(sealed(OLD))} ")
        check_repaired(fresh)

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_kill_at_random_moments(self, fresh: Path) -> None:
        """kill -9 at random moments of 10 pushes; then one good push leaves no litter.

        Every step of a push, killed, is test_kill_at_every_step's; these are moments
        of a real run between them (they were 20: 0.25 s of CPU and 1.5 s of wall a
        push, most of it the receiver's start, which the kill often lands in)."""
        rng = random.Random(1982)
        seen = {sealed(OLD)}
        for i in range(1, 11):
            stream = sealed(build(i, lines=20_000))
            proc = subprocess.Popen(
                receiver_argv(fresh),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=receiver_env("push"),
            )
            # Fed from a thread, so that the delay counts from the start of the run
            # (writing blocks until the receiver has read nearly all of it).
            feeder = threading.Thread(target=feed, args=(proc, stream))
            feeder.start()
            time.sleep(rng.uniform(0.02, 0.9))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            feeder.join(10)
            check_crash_state(fresh, [*seen, stream])
            seen.add((fresh / "data").read_bytes())
        last = sealed(build(30, lines=20_000))
        proc2 = run_receiver(fresh, "push", last)
        assert proc2.returncode == 0, proc2.stderr
        assert (fresh / "data").read_bytes() == last
        check_repaired(fresh)
        # Copies only of data that was installed at some point.
        assert set(copies(fresh).values()) <= seen | {last}


def feed(proc: subprocess.Popen[bytes], stream: bytes) -> None:
    assert proc.stdin is not None
    # The pipe is closed however the write ends: the receiver may be killed mid-stream.
    with contextlib.suppress(BrokenPipeError), proc.stdin:
        proc.stdin.write(stream)


class TestSystemErrors:
    @pytest.mark.usefixtures("strace_bin")
    def test_error_at_every_step(
        self, tmp_path: Path, template: Path, receivers: Receivers, points: list[tuple[str, int]]
    ) -> None:
        """A failed write, fsync, rename, link or unlink at each step: never a mismatched
        pair vouched for, nothing left behind, and the next push succeeds."""
        for name, n in points:
            root = copy_root(template, tmp_path / f"fail-{name}-{n}")
            before = copies(root)
            inject = ["-e", f"inject={name}:error={FAULTS[name]}:when={n}"]
            proc = receivers.run(root, "push", sealed(NEW), [*TRACED, *inject])
            where = f"{FAULTS[name]} at {name} #{n}"
            assert "(INJECTED)" in receivers.trace, where
            assert proc.returncode in (0, protocol.EXIT_SYSTEM), (where, proc.stderr)
            check_crash_state(root, [sealed(OLD), sealed(NEW)])
            assert litter(root) == [], where
            if proc.returncode != 0:
                assert b"dnsmaster receive: failed: " in proc.stderr, where
                if (root / "data").read_bytes() == sealed(OLD):
                    assert copies(root) == before, where
            status, _, err = push_in_process(root, sealed(NEW))
            assert status == 0, (where, err)
            check_repaired(root)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for the test and unmounted after."""
    require_root("mounting a tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)], check=True
    )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


class TestDiskFull:
    @pytest.mark.parametrize("what", ["data", "data.cdb"])
    def test_full_disk_leaves_nothing_and_heals(self, small_disk: Path, what: str) -> None:
        """A push that does not fit fails leaving nothing; the next one that fits goes in."""
        root = small_disk
        assert push_in_process(root, sealed(OLD))[0] == 0
        before = {p.name: p.read_bytes() for p in root.iterdir()}
        free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
        # data that does not fit at all, or data that fits but whose data.cdb does not.
        for lines in range(100, 50_000, 100):
            big = sealed(build(5, lines=lines if what == "data.cdb" else lines * 10))
            if what == "data" and len(big) > free:
                break
            size_cdb = len(compile_data(big, 1))
            if what == "data.cdb" and len(big) + 8192 < free < len(big) + size_cdb - 8192:
                break
        else:
            pytest.fail("no data of the size wanted")
        status, _, err = push_in_process(root, big)
        assert status == protocol.EXIT_SYSTEM
        assert "out of disk space" in err
        assert {p.name: p.read_bytes() for p in root.iterdir()} == before
        small = build(6)
        status, out, err = push_in_process(root, sealed(small))
        assert (status, err) == (0, ""), out
        check_repaired(root)
        assert (root / "data").read_bytes() == sealed(small)
