"""A host of its own for tests of the manual's set-up: a private mount namespace whose
system directories are overlays, so the manual's blocks run as written and the machine
is never touched; and dnsmaster installed there.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require
from tests.lab.daemonrun import PROJECT

TIMEOUT = 60.0


#: Where the blocks write: overlaid in each Host, so the machine is never touched.
OVERLAID = ("/etc", "/var", "/usr", "/opt", "/srv", "/home", "/run", "/root")


#: root's environment for the blocks: a login's PATH, nothing from this process.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "USER": "root",
    "LOGNAME": "root",
}


class Host:
    """A private mount namespace whose OVERLAID directories are overlays.

    A ``sleep`` started by ``unshare --mount`` holds the namespace; commands enter it
    with ``nsenter`` (which execs them: a spawned process's PID is its own). Files
    inside are reached from the test through ``/proc/PID/root``.
    """

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        self.holder: subprocess.Popen[bytes] | None = None
        self.spawned: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        ours = os.readlink("/proc/self/ns/mnt")
        self.holder = subprocess.Popen(
            [
                require("unshare", "util-linux"),
                "--mount",
                "--propagation",
                "private",
                "sleep",
                "1000000",
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == ours:
            assert time.monotonic() < deadline, "unshare did not make a mount namespace"
            time.sleep(0.01)
        for directory in OVERLAID:
            if not os.path.isdir(directory):
                continue
            upper = self.workdir / "upper" / directory.strip("/")
            work = self.workdir / "work" / directory.strip("/")
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            self.enter(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={directory},upperdir={upper},workdir={work}",
                    directory,
                ]
            )

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def _argv(self, argv: list[str]) -> list[str]:
        return [require("nsenter", "util-linux"), "-t", str(self.pid), "-m", "--", *argv]

    def enter(self, argv: list[str]) -> str:
        """Run ``argv`` in the namespace; its stdout. Fails on a non-zero exit."""
        proc = subprocess.run(
            self._argv(argv), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        assert proc.returncode == 0, f"{self.name}: {argv}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def sh(
        self, script: str, *, cwd: str = "/root", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``bash -euo pipefail -c SCRIPT`` as root with a login's environment, in ``cwd``."""
        env = [f"{k}={v}" for k, v in ROOT_ENV.items()]
        proc = subprocess.run(
            self._argv(
                [
                    "env",
                    "-i",
                    *env,
                    "bash",
                    "-euo",
                    "pipefail",
                    "-c",
                    f"cd {shlex.quote(cwd)}\n{script}",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            check=False,
        )
        if check:
            assert proc.returncode == 0, (
                f"{self.name}: exit {proc.returncode}\n--- script\n{script}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running ``argv`` in the namespace (stopped by PID at close)."""
        env = dict(ROOT_ENV)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self._argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
            )
        self.spawned.append(proc)
        return proc

    def path(self, path: str) -> Path:
        """``path`` as seen inside the namespace.

        Resolved there first: an absolute symlink on the way (Debian's /etc/service is
        one) would otherwise be followed from this process's root, not the namespace's.
        """
        resolved = self.enter(["realpath", "-m", path]).strip()
        return Path(f"/proc/{self.pid}/root") / resolved.lstrip("/")

    def uid(self, account: str) -> int:
        return int(self.enter(["id", "-u", account]))

    def members(self) -> list[int]:
        """PIDs of every process in this namespace but the holder."""
        if self.holder is None or self.holder.poll() is not None:
            return []
        ns = os.readlink(f"/proc/{self.pid}/ns/mnt")
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.pid:
                try:
                    if os.readlink(entry / "ns" / "mnt") == ns:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        """Stop every process in the namespace by PID (TERM, then KILL), then the holder."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            pids = self.members()
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    continue
            deadline = time.monotonic() + 10
            while self.members() and time.monotonic() < deadline:
                time.sleep(0.05)
        for proc in self.spawned:
            proc.wait(10)
        if self.holder is not None and self.holder.poll() is None:
            os.kill(self.holder.pid, signal.SIGKILL)
            self.holder.wait(10)


def wait_for(
    what: str, check: Callable[[], object], timeout: float = TIMEOUT, show: Path | None = None
) -> object:
    """Poll ``check`` until it returns something true; fail naming ``what`` (and ``show``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = "\n".join(read_text(show).splitlines()[-30:]) if show else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def read_text(path: Path) -> str:
    """The file's text, or "" while it does not exist (yet)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def install_dnsmaster(host: Host) -> None:
    """Stand-in for the install block: /usr/local/bin/dnsmaster is the one under test."""
    program = Path(sys.executable).parent / "dnsmaster"
    if not program.is_file():
        require("dnsmaster-in-venv", f"pip install -e . (no {program})")
    host.sh(f"ln -s {shlex.quote(str(program))} /usr/local/bin/dnsmaster")
    # The daemon's account must be able to run it. A venv made from pyenv's Python
    # under /root (0700) is not; on a machine like that, open /root in this
    # namespace only (the manual tells operators not to install that way).
    for parent in [*Path(sys.executable).resolve().parents, *PROJECT.parents, PROJECT]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            assert str(parent).startswith(OVERLAID), f"{parent} is not searchable by others"
            host.sh(f"chmod o+x {shlex.quote(str(parent))}")
