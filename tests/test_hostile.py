"""A hostile zones directory and crashes at any instant, on the master.

Each test is one way the master's build used to hang, crash, lose an edit or
leave a mismatched pair: a FIFO or /dev/zero among the zones files, a file name
with a newline, a label of 256 bytes, SIGKILL between the two renames of an
install. They run the real command (``python -m dnsmaster``) or the real daemon
with local slaves, and judge by exit status, messages, and the files left.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnsmaster import fsutil
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.stream import seal
from dnsmaster.errors import BuildError
from dnsmaster.master import buildcache
from dnsmaster.master.archive import DIRECTORY
from dnsmaster.master.build import Builder
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT
from tests.lab.site import TIMEOUT, Local, example_com, running, write

LONG_LABEL = "a" * 256
ENV = dict(os.environ, PYTHONPATH=str(PROJECT))


def dnsmaster(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command by its main() in this process (the builds to kill or trace are
    processes: :func:`build_argv`)."""
    return dnsmaster_here(*argv, timeout=timeout)


def build_argv(zones: Path, out: Path) -> list[str]:
    """``dnsmaster build`` of ``zones`` into ``out``, to run under strace or kill."""
    return [sys.executable, "-m", "dnsmaster", "build", "--zones", str(zones), "--out", str(out)]


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    directory = tmp_path / "zones"
    directory.mkdir()
    write(directory / "zones.example.com", example_com())
    return directory


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def listing(directory: Path) -> list[str]:
    """The output directory's names but the kept builds and the build cache, whose
    directories hold no litter (no temp file of a killed writer)."""
    kept = directory / DIRECTORY
    if kept.is_dir():
        names = [p.name for p in kept.iterdir()]
        assert all(n.endswith((".build", ".meta")) for n in names), names
    cache = directory / buildcache.DIRECTORY
    if cache.is_dir():
        assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")], list(cache.iterdir())
    ours = {DIRECTORY, buildcache.DIRECTORY}
    return sorted(p.name for p in directory.iterdir() if p.name not in ours)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


class TestNotRegularFiles:
    """A FIFO or a device among the zones files is an error, at once."""

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_fifo_check_returns_with_an_error(self, zones: Path) -> None:
        """check names the FIFO instead of blocking on its open for ever."""
        os.mkfifo(zones / "zones.x")
        proc = dnsmaster("check", "--zones", str(zones), timeout=30)
        assert proc.returncode == 111
        assert f"{zones / 'zones.x'}: not a regular file (a FIFO)" in proc.stderr

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_dev_zero_symlink_build_writes_nothing(self, zones: Path, out: Path) -> None:
        """A symlink to /dev/zero is refused before a byte is read; nothing is written."""
        (zones / "zones.y").symlink_to("/dev/zero")
        proc = dnsmaster("build", "--zones", str(zones), "--out", str(out), timeout=30)
        assert proc.returncode == 111
        assert "not a regular file (a device)" in proc.stderr
        assert files(out) == {}

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_symlink_to_a_regular_file_is_read(
        self, zones: Path, out: Path, tmp_path: Path
    ) -> None:
        """Operators symlink zones files from elsewhere: that stays allowed."""
        target = tmp_path / "elsewhere"
        target.write_text("+linked.example.com:192.0.2.9\n")
        (zones / "zones.z").symlink_to(target)
        proc = dnsmaster("build", "--zones", str(zones), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert b"+linked.example.com:192.0.2.9" in (out / "data").read_bytes()

    def test_size_cap(self, zones: Path, out: Path) -> None:
        """A file over the cap is refused with the cap in the message."""
        write(zones / "zones.big", "+big.example.com:192.0.2.1\n" * 100)
        builder = Builder(zones, out, max_file_size=1000)
        with pytest.raises(BuildError, match="larger than the cap of 1000 bytes") as info:
            builder.build()
        assert info.value.path == str(zones / "zones.big")
        assert files(out) == {}


@pytest.mark.usefixtures("dnsmaster_cli")
class TestFileNames:
    def test_newline_in_a_name_is_refused(self, zones: Path, out: Path) -> None:
        """A name that would inject a line through its "# zones.X:LINE" comment."""
        (zones / "zones.a\n+evil.example.com:192.0.2.66").write_text("")
        for argv in (
            ["check", "--zones", str(zones)],
            ["build", "--zones", str(zones), "--out", str(out)],
        ):
            proc = dnsmaster(*argv)
            assert proc.returncode == 111, proc.stderr
            assert "zones.a\\n+evil.example.com:192.0.2.66" in proc.stderr
            assert "file name contains a control character" in proc.stderr
            assert "\n+evil" not in proc.stderr
        assert files(out) == {}

    def test_skipped_names_are_shown_escaped(self, zones: Path) -> None:
        """An editor-style hidden name with an ESC in it cannot reach the terminal raw."""
        (zones / ".zones.x\x1b[2J.swp").write_text("")
        proc = dnsmaster("check", "--zones", str(zones))
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stderr
        assert ".zones.x\\x1b[2J.swp: skipped" in proc.stderr


@pytest.mark.usefixtures("dnsmaster_cli")
class TestLongLabel:
    """A label of 256 bytes used to raise IndexError: it is a data error with a line."""

    def test_check_and_build(self, zones: Path, out: Path) -> None:
        write(
            zones / "zones.example.com", example_com(extra=f"+{LONG_LABEL}.example.com:192.0.2.1\n")
        )
        check = dnsmaster("check", "--zones", str(zones))
        assert check.returncode == 1, check.stderr
        assert f"{zones / 'zones.example.com'}:5: error: " in check.stderr
        assert "label longer than 63 bytes" in check.stderr
        assert "Traceback" not in check.stderr
        build = dnsmaster("build", "--zones", str(zones), "--out", str(out))
        assert build.returncode == 1, build.stderr
        assert "file=zones.example.com line=5" in build.stderr
        assert "Traceback" not in build.stderr
        assert files(out) == {}

    def test_receive(self, tmp_path: Path) -> None:
        """The receiver refuses it as data that does not compile, naming the line."""
        data = f"Zexample.com:a::1\n+{LONG_LABEL}.example.com:192.0.2.1\n".encode()
        sealed = data + seal(data)
        proc = subprocess.run(
            [sys.executable, "-m", "dnsmaster", "receive", "--root", str(tmp_path)],
            input=sealed,
            capture_output=True,
            check=False,
            env=dict(ENV, SSH_ORIGINAL_COMMAND="push"),
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert b"data does not compile: line 2: " in proc.stderr
        assert b"label longer than 63 bytes" in proc.stderr
        assert not (tmp_path / "data").exists()


class TestCrashBetweenRenames:
    """SIGKILL at each rename of an install, by strace fault injection; the next run repairs."""

    @pytest.mark.parametrize("when", [1, 2])
    def test_build_killed_at_rename(
        self, zones: Path, out: Path, when: int, strace_bin: str
    ) -> None:
        strace = strace_bin
        first = dnsmaster("build", "--zones", str(zones), "--out", str(out))
        assert first.returncode == 0, first.stderr
        old = files(out)
        write(zones / "zones.example.com", example_com("192.0.2.99"))
        killed = subprocess.run(
            [
                strace,
                "-f",
                "-o",
                "/dev/null",
                "-e",
                "trace=rename",
                "-e",
                f"inject=rename:signal=SIGKILL:when={when}",
                *build_argv(zones, out),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=ENV,
            timeout=60,
        )
        assert killed.returncode == 128 + signal.SIGKILL or killed.returncode < 0, killed.stderr
        # Killed inside the install: the journal says so, and is_current cannot be fooled.
        assert fsutil.interrupted_install(out)
        assert not Builder(zones, out).is_current()
        if when == 2:  # data.cdb is renamed first: new data.cdb, old data
            assert (out / "data").read_bytes() == old["data"]
            assert (out / "data.cdb").read_bytes() != old["data.cdb"]
        # The next run (what push and the daemon do at start) repairs the pair.
        assert Builder(zones, out).build().serial > 0
        assert not fsutil.interrupted_install(out)
        data = (out / "data").read_bytes()
        assert b"192.0.2.99" in data
        assert (out / "data.cdb").read_bytes() == compile_data(data, 0)
        assert listing(out) == ["data", "data.cdb"]

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_litter_of_a_killed_build_is_swept(self, zones: Path, out: Path) -> None:
        """Temp files a killed build left are removed by the next one."""
        for name in (".data.abc123.tmp", ".data.cdb.xyz789.tmp", ".data.4242.link"):
            (out / name).write_bytes(b"half written")
        (out / "keep-me").write_text("not ours")
        assert dnsmaster("build", "--zones", str(zones), "--out", str(out)).returncode == 0
        assert listing(out) == ["data", "data.cdb", "keep-me"]


def master(tmp_path: Path, **daemon: object) -> Local:
    """A master with one local slave: what these tests prove is the master's (its
    watcher, its builds); the pushes to several slaves are tests/daemon's, and a
    second slave cost a receiver's start at every push."""
    return Local(tmp_path, slaves=1, **daemon)


@pytest.mark.usefixtures("daemon_process")
class TestDaemonKeepsBuilding:
    """The daemon after a hostile edit: the error is logged and the next edit builds."""

    def test_long_label_then_a_good_edit(self, tmp_path: Path) -> None:
        local = master(tmp_path)
        with running(local) as (daemon, _first):
            mark = daemon.mark()
            bad = example_com(extra=f"+{LONG_LABEL}.example.com:192.0.2.1\n")
            write(local.zones / "zones.example.com", bad)
            error = daemon.wait("build.error", mark, timeout=TIMEOUT)
            assert (error["file"], error["line"]) == ("zones.example.com", 5)
            daemon.wait("build.failed", mark, timeout=TIMEOUT)
            mark = daemon.mark()
            write(local.zones / "zones.example.com", example_com("192.0.2.77"))
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=done["serial"])
            assert all(b"192.0.2.77" in d for d in local.installed())
            mark = daemon.mark()
            daemon.signal(signal.SIGHUP)
            daemon.wait("build.done", mark, timeout=TIMEOUT)
            assert not daemon.find("daemon.crash")
            assert daemon.stop() == 0

    def test_fifo_does_not_hang_the_daemon(self, tmp_path: Path) -> None:
        """A FIFO saved among the zones: build.error, and SIGTERM still stops it."""
        local = master(tmp_path)
        with running(local) as (daemon, _first):
            mark = daemon.mark()
            os.mkfifo(local.zones / "zones.fifo")
            error = daemon.wait("build.error", mark, timeout=TIMEOUT)
            assert error["path"] == str(local.zones / "zones.fifo")
            assert "FIFO" in error["error"]
            assert daemon.stop() == 0


def stopped(pid: int, timeout: float = TIMEOUT) -> None:
    """Until every thread of ``pid`` is stopped (SIGSTOP is delivered, not done, when
    kill() returns): state ``T`` in each thread's stat."""
    deadline = time.monotonic() + timeout
    while True:
        states = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                states.add((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        if states == {"T"}:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"daemon {pid} not stopped after {timeout} s: {states}")
        time.sleep(0.01)


@pytest.mark.usefixtures("daemon_process")
class TestDaemonMissesNothing:
    """Edits the watcher could not see are built all the same."""

    def test_inotify_overflow(self, tmp_path: Path) -> None:
        """SIGSTOP the daemon, flood the directory past the inotify queue, edit a zone,
        SIGCONT: the overflow makes it rescan, and the edit is built."""
        local = master(tmp_path, rescan=0)  # no periodic check: the overflow alone must do it
        with running(local) as (daemon, _first):
            queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
            mark = daemon.mark()
            daemon.signal(signal.SIGSTOP)
            try:
                # The flood below is one event past the queue by a thousand only: the
                # daemon must read none of it.
                stopped(daemon.pid)
                # Past the queue at one system call an event: a new time (IN_ATTRIB)
                # on two files in turn, since the kernel merges an event into an
                # identical one still unread, never into one about another file.
                noise = [local.zones / "noise.0", local.zones / "noise.1"]
                for path in noise:
                    path.write_bytes(b"")
                for i in range(queue + 1000):
                    os.utime(noise[i % 2])
                write(local.zones / "zones.example.com", example_com("192.0.2.44"))
            finally:
                daemon.signal(signal.SIGCONT)
            daemon.wait("watch.rescan", mark, timeout=TIMEOUT, reason="overflow")
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=done["serial"])
            assert all(b"192.0.2.44" in d for d in local.installed())
            assert daemon.stop() == 0

    def test_zones_directory_swapped_by_rename(self, tmp_path: Path) -> None:
        """``mv z z.old && mv z.new z``: the new directory is built, then watched."""
        local = master(tmp_path, rescan=0)
        with running(local) as (daemon, _first):
            new = local.zones.with_name("zones.new")
            new.mkdir()
            write(new / "zones.example.com", example_com("192.0.2.45"))
            mark = daemon.mark()
            local.zones.rename(local.zones.with_name("zones.old"))
            new.rename(local.zones)
            daemon.wait("watch.rescan", mark, timeout=TIMEOUT, reason="rewatched")
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=done["serial"])
            assert all(b"192.0.2.45" in d for d in local.installed())
            mark = daemon.mark()  # and the live directory is the one watched now
            write(local.zones / "zones.example.com", example_com("192.0.2.46"))
            daemon.wait("watch.change", mark, timeout=TIMEOUT, file="zones.example.com")
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            assert b"192.0.2.46" in (local.output / "data").read_bytes()
            assert daemon.running
            assert daemon.stop() == 0

    def test_periodic_rescan_catches_an_unwatched_change(self, tmp_path: Path) -> None:
        """A zones file symlinked from elsewhere changes with no event in the zones
        directory; the periodic fingerprint check builds it."""
        target = tmp_path / "elsewhere" / "zones.linked"
        target.parent.mkdir()
        target.write_text("+linked.example.com:192.0.2.1\n")
        local = master(tmp_path, rescan=0.5)
        (local.zones / "zones.linked").symlink_to(target)
        with running(local) as (daemon, _first):
            mark = daemon.mark()
            target.write_text("+linked.example.com:192.0.2.2\n")
            daemon.wait("rescan.changed", mark, timeout=TIMEOUT)
            done = daemon.wait("build.done", mark, timeout=TIMEOUT)
            assert not daemon.find("watch.change", mark)
            daemon.wait_count("push.done", 1, mark, timeout=TIMEOUT, serial=done["serial"])
            assert all(b"192.0.2.2" in d for d in local.installed())
            assert daemon.stop() == 0


@pytest.mark.usefixtures("dnsmaster_cli")
class TestMasterFullDiskAndKills:
    def test_full_disk_changes_nothing_and_a_build_that_fits_goes_through(
        self, zones: Path, tmp_path: Path
    ) -> None:
        """A build that fills the disk fails with the reason, leaves the old pair and
        no temp file; once it fits again, the next build is written."""
        out = tmp_path / "small"
        out.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(out)], check=True)
        try:
            first = dnsmaster("build", "--zones", str(zones), "--out", str(out))
            assert first.returncode == 0, first.stderr
            old = files(out)
            big = "".join(f"+host{i}.example.com:192.0.2.{i % 250}\n" for i in range(20000))
            write(zones / "zones.big", big)
            full = dnsmaster("build", "--zones", str(zones), "--out", str(out))
            assert full.returncode == 111, full.stderr
            assert "out of disk space" in full.stderr
            assert files(out) == old  # the old pair, and nothing else
            (zones / "zones.big").unlink()
            write(zones / "zones.example.com", example_com("192.0.2.98"))
            fits = dnsmaster("build", "--zones", str(zones), "--out", str(out))
            assert fits.returncode == 0, fits.stderr
            data = (out / "data").read_bytes()
            assert b"192.0.2.98" in data
            assert (out / "data.cdb").read_bytes() == compile_data(data, 0)
            assert listing(out) == ["data", "data.cdb"]
        finally:
            subprocess.run(["umount", str(out)], check=True)

    def test_kill_at_random_moments(self, zones: Path, out: Path) -> None:
        """SIGKILL a build at random moments, many times; the next build leaves a
        matching pair and no litter."""
        big = "".join(f"+host{i}.example.com:192.0.2.{i % 250}\n" for i in range(30000))
        write(zones / "zones.big", big)
        rng = random.Random(8)
        for i in range(12):
            write(zones / "zones.example.com", example_com(f"192.0.2.{i + 1}"))
            proc = subprocess.Popen(
                build_argv(zones, out),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=ENV,
            )
            time.sleep(rng.uniform(0.05, 1.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert dnsmaster("build", "--zones", str(zones), "--out", str(out)).returncode == 0
        data = (out / "data").read_bytes()
        assert b"192.0.2.12" in data
        assert (out / "data.cdb").read_bytes() == compile_data(data, 0)
        assert listing(out) == ["data", "data.cdb"]
