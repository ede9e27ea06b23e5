"""One lab per test process, put back as new between the tests that use it.

Starting a lab costs a client key and a run of ``dnsmaster authorized-key`` (a
Python start-up), and each slave a host key, ``sshd -t``, sshd and tinydns: about
1.5 s a test on this machine, and a module of 17 lab tests paid it 17 times. Here
the tests of one process (``-n 0``, or one xdist worker) share a :class:`SharedLab`:
``lab(n)`` hands out slaves already running (starting more only when a test wants
more than any test before it), and after each test :meth:`SharedLab.reset` puts back
everything a test may change: the slaves' roots emptied, authorized_keys, host keys
and sshd's config restored (sshd restarted if it did not start with the lab's), a
stopped sshd or tinydns started again, the client key, known_hosts and the forced
command restored, and every file a test left in the lab's directory removed.

A reset is checked, not trusted: before each test :meth:`SharedLab.differences`
compares the lab with what it was when new, and a difference fails that test,
naming it; the tests after it get a new lab. A change the reset does not know of
fails the next test loudly rather than letting it pass on a lab that is not what
it thinks.

A test that cannot share (it closes the lab, or changes what no reset can put back)
asks for ``private_lab`` instead: a fresh :class:`Lab` of its own, closed at its end.

Per process rather than per module: with pytest 9.2 and pytest-xdist 3.8,
``--dist loadgroup`` no longer keeps an ``xdist_group`` on one worker
(pytest-dev/pytest-xdist#1386: the group travels in the node ID, which pytest now
builds from a structured ID), so a module's tests are spread over the workers in
chunks, and a module-scoped lab would start again at every chunk. One lab per worker
needs no grouping and starts once.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.realworld import STOP_TIMEOUT, ComponentError, Lab, Slave, Sshd, Tinydns

__all__ = [
    "FileState",
    "SharedLab",
    "SlaveAsNew",
    "WorkerLab",
    "lab",
    "private_lab",
    "slaves",
    "worker_lab",
]


@dataclass(frozen=True)
class FileState:
    """What a file was: its bytes, permission bits and owner."""

    content: bytes
    mode: int
    uid: int
    gid: int

    @classmethod
    def of(cls, path: Path) -> FileState | None:
        try:
            st = path.stat()
            return cls(path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        except OSError:
            return None

    def put_back(self, path: Path) -> None:
        """Write the bytes back (by rename, so an open reader keeps the old file)."""
        temp = path.with_name(f".{path.name}.reset")
        temp.write_bytes(self.content)
        os.chown(temp, self.uid, self.gid)
        temp.chmod(self.mode)
        temp.replace(path)


@dataclass(frozen=True)
class SlaveAsNew:
    """One slave as it was when it started: its processes, port, files and root."""

    slave: Slave
    sshd: Sshd
    tinydns: Tinydns
    port: int
    started_with: tuple[str, str]
    files: dict[Path, FileState]
    root_owner: tuple[int, int]

    @classmethod
    def of(cls, slave: Slave) -> SlaveAsNew:
        sshd = slave.sshd
        files = {
            p: FileState.of(p)
            for p in (
                sshd.host_key,
                sshd.host_key.with_name(sshd.host_key.name + ".pub"),
                sshd.config,
                sshd.authorized_keys,
            )
        }
        assert None not in files.values(), f"{slave.name}: a file of sshd's is missing: {files}"
        assert sshd.started_with is not None, f"{slave.name}: sshd never started"
        st = slave.root.stat()
        return cls(
            slave=slave,
            sshd=sshd,
            tinydns=slave.tinydns,
            port=sshd.port,
            started_with=sshd.started_with,
            files={p: s for p, s in files.items() if s is not None},
            root_owner=(st.st_uid, st.st_gid),
        )

    def differences(self, processes: dict[int, tuple[int, bytes]]) -> list[str]:
        """What differs from new; ``processes`` is :func:`process_table`."""
        s, name = self.slave, self.slave.name
        found: list[str] = []
        if s.sshd is not self.sshd or s.tinydns is not self.tinydns:
            found.append(f"{name}: its sshd or tinydns was replaced by another object")
        if not self.sshd.running:
            found.append(f"{name}: sshd is not running")
        elif self.sshd.started_with != self.started_with:
            found.append(f"{name}: sshd runs with another config or host key than the lab's")
        if self.sshd.port != self.port:
            found.append(f"{name}: sshd's port is {self.sshd.port}, not {self.port}")
        if not self.tinydns.running:
            found.append(f"{name}: tinydns is not running")
        found += [
            f"{name}: {path.name} differs from new (content, mode or owner)"
            for path, was in self.files.items()
            if FileState.of(path) != was
        ]
        found += self.root_differences()
        if sessions := self.sessions(processes):
            found.append(f"{name}: sshd still has sessions open: pids {sessions}")
        if receivers := self.receivers(processes):
            found.append(f"{name}: receivers still running: pids {receivers}")
        return found

    def root_differences(self) -> list[str]:
        root, name = self.slave.root, self.slave.name
        if not root.is_dir():
            return [f"{name}: its root {root} is gone"]
        found = []
        if os.path.ismount(root):
            found.append(f"{name}: something is mounted on its root {root}")
        st = root.stat()
        if (st.st_uid, st.st_gid) != self.root_owner or stat.S_IMODE(st.st_mode) != 0o755:
            found.append(f"{name}: its root's owner or mode is not the lab's (0755)")
        if left := sorted(p.name for p in root.iterdir()):
            found.append(f"{name}: its root is not empty: {left}")
        return found

    def sessions(self, processes: dict[int, tuple[int, bytes]]) -> list[int]:
        """The listener's children: one per open SSH connection."""
        pid = self.sshd.pid
        return [p for p, (parent, _) in processes.items() if pid is not None and parent == pid]

    def receivers(self, processes: dict[int, tuple[int, bytes]]) -> list[int]:
        """As :meth:`Slave.receivers`, from one reading of /proc."""
        wanted = f"receive\0--root\0{self.slave.root}\0".encode()
        return [p for p, (_, cmdline) in processes.items() if wanted in cmdline]

    def wait_idle(self) -> None:
        """Wait until no session and no receiver is left: a push the test cut, or a
        daemon it killed, may still be ending; those write into the root, and their
        sessions would be the next test's."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            table = process_table()
            busy = self.sessions(table) + self.receivers(table)
            if not busy:
                return
            if time.monotonic() > deadline:
                raise ComponentError(f"{self.slave.name}: sessions or receivers do not end: {busy}")
            time.sleep(0.05)

    def reset(self) -> None:
        """Put this slave back as new; raises ComponentError when it cannot."""
        s = self.slave
        self.wait_idle()
        s.sshd, s.tinydns = self.sshd, self.tinydns
        for path, was in self.files.items():
            if FileState.of(path) != was:
                was.put_back(path)
        # sshd reads its config and host key when it starts (authorized_keys at each
        # login): one that started with others is started again.
        if self.sshd.port != self.port:
            self.sshd.port = self.port
            self.sshd.stop()
        if self.sshd.started_with != self.started_with:
            self.sshd.stop()
        if os.path.ismount(s.root):
            raise ComponentError(f"{s.name}: something is mounted on its root {s.root}")
        for entry in list(s.root.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        os.chown(s.root, *self.root_owner)
        s.root.chmod(0o755)
        self.tinydns.start()
        self.sshd.start()
        # The logs are read by tests (logins counted, refusals found): a new lab's
        # hold nothing of another test's. Both are opened for appending, so the
        # servers go on writing at the new end.
        for log in (self.sshd.log, self.tinydns.log):
            os.truncate(log, 0)


def process_table() -> dict[int, tuple[int, bytes]]:
    """Every process's parent PID and command line, by PID (gone ones left out)."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The parent is the second field after the command's name, which may hold
            # spaces and parentheses: read from the last ')'.
            parent = int((entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            table[int(entry.name)] = (parent, (entry / "cmdline").read_bytes())
        except (OSError, IndexError, ValueError):
            continue
    return table


def tree(directory: Path, skip: set[Path]) -> set[Path]:
    """Every path under ``directory``, not looking inside ``skip``."""
    found: set[Path] = set()
    for here, dirs, files in os.walk(directory):
        base = Path(here)
        dirs[:] = [d for d in dirs if base / d not in skip]
        found.update(base / name for name in (*dirs, *files))
    return found


class SharedLab(Lab):
    """A :class:`Lab` that many tests use in turn, each as if it were new.

    ``slaves`` holds the slaves the current test was given (what a new lab's would
    hold), ``pool`` every slave started; ``lab(n)`` gives the test the next ``n`` of
    the pool, in order and by the same names a new lab would give, starting one only
    when the pool has no more. ``known_hosts`` holds the given slaves' keys, as a new
    lab's does.
    """

    def __init__(self, link: Path | None = None) -> None:
        super().__init__(link)
        self.pool: list[SlaveAsNew] = []
        self.files = {p: FileState.of(p) for p in self.lab_files()}
        self.paths = tree(self.workdir, set())

    def lab_files(self) -> list[Path]:
        forced = self.forced_command
        return [self.key, self.pubkey, self.known_hosts, forced, *forced.parent.iterdir()]

    def add_slave(self, name: str | None = None) -> Slave:
        name = name or f"slave{len(self.slaves) + 1}"
        given = {id(s) for s in self.slaves}
        for was in self.pool:
            if was.slave.name == name and id(was.slave) not in given:
                self.slaves.append(was.slave)
                self.write_known_hosts()
                return was.slave
        slave = super().add_slave(name)
        was = SlaveAsNew.of(slave)
        self.pool.append(was)
        self.paths |= {slave.root.parent, *tree(slave.root.parent, {slave.root})}
        return slave

    def reset(self) -> None:
        """Put the lab back as new (see the module's doc); raises ComponentError, after
        trying every slave, if one cannot be."""
        self.slaves = []
        errors: list[ComponentError] = []
        for was in self.pool:
            try:
                was.reset()
            except ComponentError as exc:
                errors.append(exc)
        for path, state in self.files.items():
            if state is not None and FileState.of(path) != state:
                state.put_back(path)
        roots = {was.slave.root for was in self.pool}
        for extra in sorted(tree(self.workdir, roots) - self.paths, reverse=True):
            if extra.is_dir() and not extra.is_symlink():
                shutil.rmtree(extra)
            else:
                extra.unlink(missing_ok=True)
        if errors:
            raise errors[0]

    def differences(self) -> list[str]:
        """Everything that makes this lab not as new (empty when it is)."""
        if not self.workdir.is_dir():
            return [f"the lab's directory {self.workdir} is gone (closed?)"]
        found = [f"slaves still given out: {[s.name for s in self.slaves]}"] if self.slaves else []
        found += [
            f"{path.relative_to(self.workdir)} differs from new (content, mode or owner)"
            for path, state in self.files.items()
            if FileState.of(path) != state
        ]
        now = tree(self.workdir, {was.slave.root for was in self.pool})
        found += [f"left in the lab: {p}" for p in sorted(now - self.paths)]
        found += [f"gone from the lab: {p}" for p in sorted(self.paths - now)]
        processes = process_table()
        for was in self.pool:
            found += was.differences(processes)
        return found

    def close(self) -> None:
        self.slaves = [was.slave for was in self.pool]
        super().close()


@dataclass
class WorkerLab:
    """This process's shared lab, started by the first test that asks for it."""

    link: Path
    current: SharedLab | None = field(default=None)

    def get(self) -> SharedLab:
        if self.current is None:
            self.current = SharedLab(self.link)
        return self.current

    def discard(self) -> None:
        """Close the lab; the next test gets a new one."""
        if self.current is not None:
            try:
                self.current.close()
            finally:
                self.current = None


@pytest.fixture(scope="session")
def worker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerLab]:
    """This process's :class:`SharedLab`, through the ``lab`` fixture."""
    shared = WorkerLab(tmp_path_factory.mktemp("lab") / "lab")
    try:
        yield shared
    finally:
        shared.discard()


@pytest.fixture
def lab(worker_lab: WorkerLab) -> Iterator[SharedLab]:
    """The shared lab, as new; call it (``lab(3)``) for slaves. Reset after the test."""
    shared = worker_lab.get()
    wrong = shared.differences()
    if wrong:
        worker_lab.discard()
        pytest.fail(
            "the shared lab is not as new (a test before this one changed it and the "
            "reset did not put it back; the tests after this one get a new lab):\n  "
            + "\n  ".join(wrong),
            pytrace=False,
        )
    yield shared
    shared.reset()


@pytest.fixture
def private_lab(tmp_path: Path) -> Iterator[Lab]:
    """A :class:`Lab` of the test's own, closed when it ends: for a test that closes
    its lab, or changes what a reset cannot put back."""
    the_lab = Lab(tmp_path / "lab")
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def slaves(lab: SharedLab) -> list[Slave]:
    """Three running slaves (127.0.1.N, each its own sshd and tinydns)."""
    return lab(3)
