"""The receiver run by itself on a slave root: builds to push, the receiver's command line
(under strace for fault injection) and the checks of a root after a crash.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dnsmaster
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split
from dnsmaster.fsutil import JOURNAL
from dnsmaster.slave import receive
from tests.conftest import require

PROJECT = Path(dnsmaster.__file__).resolve().parent.parent


_LITTER = re.compile(r"\.data\..*\.(tmp|link)", re.DOTALL)


def build(n: int, lines: int = 1) -> bytes:
    """A dnsmaster build with serial 1700000000 + n and ``lines`` address records."""
    zone = b".example.com:127.0.0.1:a\n" + b"".join(
        b"+h%d.example.com:192.0.2.%d\n" % (i, (n + i) % 250 + 1) for i in range(lines)
    )
    return assemble([compile_source("zones.x", zone)], 1_700_000_000 + n).data


def sealed(data: bytes) -> bytes:
    return data + seal(data)


def receiver_argv(root: Path, *, strace: list[str] | None = None) -> list[str]:
    """``dnsmaster receive`` as the forced command runs it, under strace if asked."""
    argv = [sys.executable, "-m", "dnsmaster", "receive", "--root", str(root)]
    if strace is None:
        return argv
    return [require("strace"), "-f", "-qq", *strace, *argv]


def receiver_env(verb: str) -> dict[str, str]:
    # No .pyc writes: they rename, and would shift the count of renames.
    return dict(
        os.environ,
        SSH_ORIGINAL_COMMAND=verb,
        PYTHONPATH=str(PROJECT),
        PYTHONDONTWRITEBYTECODE="1",
    )


def push_in_process(root: Path, data: bytes, verb: str = "push") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = receive.main(
        ["--root", str(root)],
        environ={"SSH_ORIGINAL_COMMAND": verb},
        stdin=io.BytesIO(data),
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


def status_line(root: Path) -> str:
    status, out, err = push_in_process(root, b"", "status")
    assert status == 0, err
    return out.splitlines()[-1]


def data_sha(content: bytes) -> str:
    return hashlib.sha256(split(content)[0]).hexdigest()


def pair_matches(root: Path) -> bool:
    """Whether data.cdb is exactly what tinydns-data would make of ``data``."""
    data = root / "data"
    expected = compile_data(data.read_bytes(), int(data.stat().st_mtime))
    return (root / "data.cdb").read_bytes() == expected


def copy_root(template: Path, root: Path) -> Path:
    """``root``, a copy of the slave root ``template`` (``cp -a``: owners, modes, times
    and the kept copies' hard links), checked to be a matching pair."""
    subprocess.run(["cp", "-a", "--", str(template), str(root)], check=True, capture_output=True)
    assert pair_matches(root)
    return root


def litter(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if _LITTER.fullmatch(p.name))


def copies(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.name.startswith("data.2")}


def age_copies(root: Path) -> None:
    """Rename the timestamped copies under ``root`` (data.YYYY-MM-DD.HHMMSS) to names of
    the year 2000, so that no later push in this second finds its copy name taken
    (one more ``link``): a root copied for every crash point then makes the same
    syscalls whenever it is pushed to."""
    stamp = re.compile(r"data\.\d{4}-\d\d-\d\d\.\d{6}(?:\.\d{6})?")
    for n, path in enumerate(sorted(p for p in root.rglob("data.*") if stamp.fullmatch(p.name))):
        path.rename(path.with_name(f"data.2000-01-01.{n:06d}"))


def check_repaired(root: Path) -> None:
    """After a run under the lock: the pair matches, status vouches for it, nothing left."""
    assert not (root / JOURNAL).exists()
    assert pair_matches(root)
    assert status_line(root).startswith(f"status sha256={data_sha((root / 'data').read_bytes())} ")
    assert litter(root) == []


class Receivers:
    """Receivers forked from one interpreter that has imported dnsmaster, each run under
    ``strace -p``: a crash point costs a fork, not an interpreter start and its imports.

    The server (:func:`serve`, in a process of its own) forks a child per request, and
    the child forks the receiver, then becomes ``strace -f -p RECEIVER``. The receiver
    waits until the server has read strace's word that it is attached, then runs
    ``dnsmaster receive`` as ``python -m dnsmaster`` does (the same entry point, its own
    stdin, stdout, stderr and environment) and exits. strace sees every syscall from
    there on, the ones a started receiver makes after its imports (tests compare the
    two), and its last line is the receiver's fate: its exit status or the signal.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.runs = 0
        self.trace = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.lab.receiver import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=receiver_env(""),
            cwd=PROJECT,
        )

    def run(
        self, root: Path, verb: str | None, stdin: bytes, strace: list[str], *extra: str
    ) -> subprocess.CompletedProcess[bytes]:
        """``dnsmaster receive --root ROOT EXTRA...`` with ``SSH_ORIGINAL_COMMAND=verb``
        (None: unset), reading ``stdin``, under ``strace STRACE``; the trace, with
        ``-e trace=...`` in ``strace``, is in :attr:`trace`."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.runs += 1
        base = self.workdir / f"run{self.runs}"
        env = receiver_env(verb or "")
        if verb is None:
            del env["SSH_ORIGINAL_COMMAND"]
        Path(f"{base}.in").write_bytes(stdin)
        request = {
            "argv": ["receive", "--root", str(root), *extra],
            "env": env,
            "base": str(base),
            "strace": [require("strace"), "-f", "-o", f"{base}.trace", *strace],
        }
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, f"no answer from the receiver server in 60 s: {request}"
        answer = self.proc.stdout.readline().strip()
        assert answer == b"done", answer
        self.trace = Path(f"{base}.trace").read_text()
        fate = self.trace.rstrip("\n").rsplit("\n", 1)[-1]
        if found := re.fullmatch(r"(?:\d+ +)?\+\+\+ exited with (\d+) \+\+\+", fate):
            status = int(found[1])
        elif found := re.fullmatch(r"(?:\d+ +)?\+\+\+ killed by (SIG\w+)(?: .*)? \+\+\+", fate):
            status = -signal.Signals[found[1]].value
        else:
            raise AssertionError(f"the receiver's end is not strace's last line: {fate!r}")
        out, err = Path(f"{base}.out").read_bytes(), Path(f"{base}.err").read_bytes()
        return subprocess.CompletedProcess(request["argv"], status, out, err)

    def close(self) -> None:
        """End the server: it ends when its stdin does."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        status = self.proc.wait(30)
        self.proc.stdout.close()
        assert status == 0


def at_once(
    servers: Sequence[Receivers],
    root: Path,
    runs: Sequence[tuple[bytes, list[str], tuple[str, ...]]],
    gaps: Sequence[float] = (),
) -> list[subprocess.CompletedProcess[bytes]]:
    """``dnsmaster receive --root ROOT`` pushes running at once on one root: each of
    ``runs`` (its stdin, its strace options, its extra arguments) by a server of its
    own, started ``gaps[i]`` seconds after the one before it (none: at once). What
    each ended with, in ``runs``' order.

    Each server forks its receiver from an interpreter that imported dnsmaster once,
    so the starts are a fork apart, not two interpreters' starts and imports."""
    assert len(servers) >= len(runs), "one server a receiver: each run() waits for its own"
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        started = []
        for i, (stdin, strace, extra) in enumerate(runs):
            if i and i - 1 < len(gaps):
                time.sleep(gaps[i - 1])
            started.append(pool.submit(servers[i].run, root, "push", stdin, strace, *extra))
        return [future.result(timeout=120) for future in started]


def serve() -> None:
    """The server's loop (see :class:`Receivers`): one JSON request a line on stdin,
    ``done`` on stdout when its strace has ended."""
    from dnsmaster.commands import receive  # noqa: F401, PLC0415 - imported once, here
    from dnsmaster.commands.main import main  # noqa: PLC0415

    for line in sys.stdin:
        request = json.loads(line)
        go_read, go_write = os.pipe()
        said_read, said_write = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(go_write)
                os.close(said_read)
                traced(main, request, go_read, said_write)
            finally:
                os._exit(70)
        os.close(go_read)
        os.close(said_write)
        # strace says it has attached once it has also asked the receiver to stop;
        # the receiver, blocked reading ``go`` until now, stops before it returns
        # from that read, and every syscall it makes after it is traced.
        said = b""
        with os.fdopen(said_read, "rb") as strace_says:
            while b"attached" not in said:
                chunk = strace_says.read1(4096)
                if not chunk:
                    break
                said += chunk
            if b"attached" in said:
                os.write(go_write, b"g")
            os.close(go_write)  # not attached: the receiver reads nothing, and gives up
            said += strace_says.read()
        os.waitpid(child, 0)
        sys.stdout.write("done\n" if b"attached" in said else f"failed {said!r}\n")
        sys.stdout.flush()


def traced(main: Callable[[list[str]], int], request: dict[str, Any], go: int, said: int) -> None:
    """In the server's child: fork the receiver, then become strace attached to it,
    its messages (not its trace) on ``said``."""
    receiver = os.fork()
    if receiver == 0:
        os.close(said)
        status = 70
        try:
            status = receive_when_traced(main, request, go)
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(go)
    os.dup2(said, 2)
    os.execv(request["strace"][0], [*request["strace"], "-p", str(receiver)])


def receive_when_traced(main: Callable[[list[str]], int], request: dict[str, Any], go: int) -> int:
    """The receiver: its stdin, stdout and stderr the request's files, its environment
    the request's; once told strace is attached, ``dnsmaster ARGV``."""
    base = request["base"]
    for fd, suffix, flags in (
        (0, "in", os.O_RDONLY),
        (1, "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, "err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(f"{base}.{suffix}", flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    # New streams on the new descriptors, as an interpreter's start makes them (the
    # old ones stay referenced by sys.__stdin__ and the others, so never closed).
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(request["env"])
    if os.read(go, 1) != b"g":
        sys.stderr.write("strace did not attach\n")
        return 71
    os.close(go)
    return main(request["argv"])
