"""Confined masters' installs killed or failed at every step, and two masters pushing
at once: the merged pair always holds what the sections hold, or the journal that
makes the next run merge again (as in test_receive_crash.py, under strace).

The run strace kills or fails is ``dnsmaster receive`` forked from one interpreter
that imported dnsmaster once (tests.lab.receiver.Receivers), strace attached before
it starts; the runs after it, which must repair, are the same receiver in this
process. Every crash point starts from a copy of one root made once, and the points
are learned once per operation. Two masters at once are two such runs, each
forked by a server of its own (tests.lab.receiver.at_once).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.fsutil import JOURNAL
from tests.lab.receiver import (
    Receivers,
    age_copies,
    at_once,
    copy_root,
    pair_matches,
    receiver_argv,
    receiver_env,
)
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
    run,
)

CRASH_POINTS = ("rename", "link", "unlink", "fsync", "write")
FAULTS = {"rename": "EIO", "link": "ENOSPC", "unlink": "EIO", "fsync": "EIO", "write": "ENOSPC"}
TRACED = ["-e", f"trace={','.join(CRASH_POINTS)}"]
_LITTER = re.compile(r"\.(?:data|records|allow)\..*\.(?:tmp|link)|\.removed\..*", re.DOTALL)

#: What each operation is: the key (or operator options), the verb (None: run by
#: the slave's operator), and the stream.
OPERATIONS = {
    "push": (ALPHA, "push", A2),
    "remove": (("--remove-master", "beta"), None, b""),
}


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


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root serving alpha (A1) and beta (B1), made once: each test copies it."""
    root = tmp_path_factory.mktemp("masters") / "fresh"
    root.mkdir()
    assert run(root, ALPHA, data=A1)[0] == 0
    assert run(root, BETA, data=B1)[0] == 0
    age_copies(root)
    return root


@pytest.fixture(scope="module")
def receivers(strace_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    server = Receivers(tmp_path_factory.mktemp("receivers"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def another(strace_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    """A second server, for a second receiver at once (at_once: one server each)."""
    server = Receivers(tmp_path_factory.mktemp("receivers"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def learned(template: Path, receivers: Receivers) -> Callable[[str], list[tuple[str, int]]]:
    """The crash points of an operation, from one clean run under strace per module."""
    found: dict[str, list[tuple[str, int]]] = {}

    def points(operation: str) -> list[tuple[str, int]]:
        if operation not in found:
            found[operation] = crash_points(template, receivers, operation)
        return found[operation]

    return points


def crash_points(template: Path, receivers: Receivers, operation: str) -> list[tuple[str, int]]:
    key, verb, stdin = OPERATIONS[operation]
    proc = receivers.run(
        copy_root(template, template.parent / f"learn-{operation}"), verb, stdin, TRACED, *key
    )
    assert proc.returncode == 0, proc.stderr
    counts = count_calls(receivers.trace)
    # The forked receiver makes the calls one started as sshd starts it makes.
    started = copy_root(template, template.parent / f"started-{operation}")
    trace = template.parent / f"started-{operation}.trace"
    env = receiver_env(verb or "")
    if verb is None:
        del env["SSH_ORIGINAL_COMMAND"]
    proc = subprocess.run(
        [*receiver_argv(started, strace=["-o", str(trace), *TRACED]), *key],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert count_calls(trace.read_text()) == counts
    return [(name, n) for name in CRASH_POINTS for n in range(1, counts[name] + 1)]


def count_calls(trace: str) -> dict[str, int]:
    return {n: len(re.findall(rf"^(?:\d+ +)?{n}\(", trace, re.MULTILINE)) for n in CRASH_POINTS}


class TestKilled:
    @pytest.mark.usefixtures("strace_bin")
    @pytest.mark.parametrize("operation", sorted(OPERATIONS))
    def test_kill_at_every_step(
        self,
        tmp_path: Path,
        template: Path,
        receivers: Receivers,
        learned: Callable[[str], list[tuple[str, int]]],
        operation: str,
    ) -> None:
        """SIGKILL at each step: old or new state, or the journal; the next run
        (another master's status) merges again from the sections."""
        key, verb, stdin = OPERATIONS[operation]
        points = learned(operation)
        assert points
        for name, n in points:
            root = copy_root(template, tmp_path / f"kill-{name}-{n}")
            inject = ["-e", f"inject={name}:signal=SIGKILL:when={n}"]
            proc = receivers.run(root, verb, stdin, [*TRACED, *inject], *key)
            where = f"{operation} killed at {name} #{n}"
            # Every copied root makes the learned calls: each point is reached.
            assert proc.returncode == -signal.SIGKILL, (where, proc)
            if not (root / JOURNAL).exists():
                assert (root / "data").read_bytes() == merged_expected(*sections(root).items())
                assert pair_matches(root), where
            status, _, err = run(root, BETA if operation == "push" else ALPHA, "status")
            assert status == 0, (where, err)
            check_merged(root)
            status, _, err = run(root, key, verb, stdin)
            if operation == "remove" and "no master beta" in err:
                continue  # the killed run had removed it already
            assert status == 0, (where, err)
            check_merged(root)
            if operation == "push":
                assert sections(root) == {"alpha": A2, "beta": B1}, where
            else:
                assert sections(root) == {"alpha": A1}, where


class TestSystemErrors:
    @pytest.mark.usefixtures("strace_bin")
    def test_error_at_every_step(
        self,
        tmp_path: Path,
        template: Path,
        receivers: Receivers,
        learned: Callable[[str], list[tuple[str, int]]],
    ) -> None:
        """A failed write, fsync, rename, link or unlink at each step of a push: never
        a merged pair other than the sections' vouched for, and the next push succeeds."""
        key, verb, stdin = OPERATIONS["push"]
        for name, n in learned("push"):
            root = copy_root(template, tmp_path / f"fail-{name}-{n}")
            inject = ["-e", f"inject={name}:error={FAULTS[name]}:when={n}"]
            proc = receivers.run(root, verb, stdin, [*TRACED, *inject], *key)
            where = f"{FAULTS[name]} at {name} #{n}"
            assert "(INJECTED)" in receivers.trace, where
            assert proc.returncode in (0, protocol.EXIT_SYSTEM), (where, proc.stderr)
            if not (root / JOURNAL).exists():
                assert (root / "data").read_bytes() == merged_expected(*sections(root).items())
                assert pair_matches(root), where
            status, _, err = run(root, key, verb, stdin)
            assert status == 0, (where, err)
            check_merged(root)
            assert sections(root) == {"alpha": A2, "beta": B1}, where


class TestTwoMastersAtOnce:
    def test_every_order_and_delay(
        self, tmp_path: Path, template: Path, receivers: Receivers, another: Receivers
    ) -> None:
        """Both masters push at once, either one started first, the renames and links
        of neither, one or both delayed: every push succeeds, and the merged pair
        holds both masters' latest. Each receiver is forked by a server of its own
        (tests.lab.receiver.at_once), traced, its renames and links delayed or not."""
        root = copy_root(template, tmp_path / "root")
        meetings = itertools.product((False, True), repeat=3)
        for n, (beta_first, *delayed) in enumerate(meetings, start=2):
            pushes = [
                (ALPHA, build(ZONE_A + b"+r%d.a.example:192.0.2.1\n" % n, n)),
                (BETA, build(ZONE_B + b"+r%d.b.example:192.0.2.2\n" % n, n, "zones.b")),
            ]
            if beta_first:
                pushes.reverse()
            delay = ["-e", "inject=rename,link:delay_enter=20000"]
            runs = [
                (stream, delay if slow else ["-e", "trace=none"], key)
                for (key, stream), slow in zip(pushes, delayed, strict=True)
            ]
            for proc in at_once([receivers, another], root, runs):
                assert proc.returncode == 0, (n, proc.stderr)
            check_merged(root)
            assert sections(root) == {key[1]: stream for key, stream in pushes}, n
