"""A master's site for the daemon tests: a zones directory, its config and the daemon.

:class:`Local` has ``transport = "local"`` slaves (the receiver as a subprocess, no
sshd); :class:`Rig` has real slaves from :mod:`tests.lab.realworld`. Both run
``dnsmaster run`` through :class:`tests.lab.daemonrun.DaemonProcess`. A
:class:`Shared` daemon serves the tests of a class in turn, put back between them.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest

from dnsmaster.master import state as statefile
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess, config_text

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave
    from tests.lab.shared import SharedLab, WorkerLab


DEBOUNCE = 0.2


TIMEOUT = 30.0  # generous: the machine has two cores and other test runs


HEADER = "# test header\n"


NET = ".example.net:127.0.0.1:a:259200\n+www.example.net:198.51.100.1\n"


#: These zones are a few records each: one deleted file or zone is over any sensible
#: share, and the tests of saves and pushes delete some. The guard has tests of its own.
NO_GUARD = "\n[guard]\nmax_removed = 1.0\nzones = false\n"


def example_com(www: str = "192.0.2.80", extra: str = "") -> str:
    return (
        "# zones.example.com\n"
        ".example.com:127.0.0.1:a:259200\n"
        f"+www.example.com:{www}\n"
        "@example.com::mail.example.com:10\n"
        f"{extra}"
    )


def write(path: Path, text: str) -> None:
    """A plain overwrite: open('w'), write, close."""
    with path.open("w") as f:
        f.write(text)


def make_zones(base: Path) -> tuple[Path, Path]:
    zones, output = base / "zones", base / "out"
    zones.mkdir(parents=True)
    output.mkdir()
    write(zones / "header", HEADER)
    write(zones / "zones.example.com", example_com())
    write(zones / "zones.example.net", NET)
    return zones, output


def status(config: Path) -> subprocess.CompletedProcess[str]:
    """``dnsmaster status --config CONFIG`` in this process: its exit status and
    output, as a process's (tests/commands/test_status.py runs it as one)."""
    return dnsmaster_here("status", "--config", str(config), timeout=60)


def wait_state(path: Path, check: str, timeout: float = TIMEOUT) -> statefile.State:
    """Poll the state file until ``check`` (a predicate's name below) holds.

    Fails the test on timeout, with the last state read: returning it instead let
    callers go on with a state that never got there.
    """
    deadline = time.monotonic() + timeout
    while True:
        current = statefile.read(path)
        if CHECKS[check](current):
            return current
        if time.monotonic() > deadline:
            pytest.fail(f"state never {check!r} in {timeout} s; last read: {current}")
        time.sleep(0.05)


def verified(state: Path, daemon: DaemonProcess) -> statefile.State:
    """Wait until every slave has the build and was seen serving it, the daemon at rest.

    The daemon asks each slave's DNS once after a push (``verify_timeout``, a second
    here): on a loaded machine a tinydns may answer late, and the slave then stays
    ``dns-failed`` until the next push. One that did is pushed again (SIGALRM) and
    asked again, so a shared daemon's next test starts from a verified site as a new
    daemon's does."""
    current = wait_state(state, "ok")
    if all_verified(current):
        return current
    mark = daemon.mark()
    daemon.signal(signal.SIGALRM)
    daemon.wait("signal", mark, TIMEOUT, signal="SIGALRM")
    daemon.settled(TIMEOUT)
    return wait_state(state, "verified")


def all_ok(s: statefile.State) -> bool:
    return s.build is not None and all(
        x.result == "ok" and x.installed_sha256 == s.build.sha256 for x in s.slaves
    )


def all_verified(s: statefile.State) -> bool:
    return all_ok(s) and all(x.verified == "ok" for x in s.slaves)


CHECKS = {"ok": all_ok, "verified": all_verified}


class Rig:
    """A zones directory, three real slaves, a config and (once started) the daemon."""

    def __init__(self, base: Path, lab: Lab, slaves: list[Slave], **daemon: object) -> None:
        self.base = base
        self.lab = lab
        self.slaves = slaves
        self.zones, self.output = make_zones(base / "master")
        self.state = base / "master" / "state.json"
        self.config = base / "master" / "dnsmaster.toml"
        options: dict[str, object] = {
            "debounce": DEBOUNCE,
            "max_delay": 5.0,
            "retry_initial": 0.2,
            "retry_max": 1.0,
            "stop_timeout": 20.0,
            "verify_timeout": 1.0,
        }
        options.update(daemon)
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                top={"key": lab.key, "known_hosts": lab.known_hosts, "user": lab.user},
                daemon=options,
                push={"connect_timeout": 3.0, "timeout": 60.0},
                slaves=[
                    {"name": s.name, "host": s.address, "port": s.port, "dns": s.address}
                    for s in slaves
                ],
            )
            + NO_GUARD
        )
        self.daemons: list[DaemonProcess] = []

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.slaves}

    def start(self, *, initial_push: bool = True) -> DaemonProcess:
        daemon = DaemonProcess(self.config).start()
        self.daemons.append(daemon)
        if initial_push:
            done = daemon.wait("build.done", timeout=TIMEOUT)
            pushes = daemon.wait_count(
                "push.done", len(self.slaves), timeout=TIMEOUT, serial=done["serial"]
            )
            assert {p["slave"] for p in pushes} == self.names
            self.assert_served(done["serial"])
            # and every verify query answered, so later events are the test's own
            assert all_verified(wait_state(self.state, "verified")), daemon.dump()
        return daemon

    def assert_served(self, serial: int, zone: str = "example.com") -> None:
        for s in self.slaves:
            seen = s.tinydns.wait_serial(zone, serial, timeout=10)
            assert seen == serial, f"{s.name} serves {zone} serial {seen}, not {serial}"

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


class Local:
    """A zones directory and two ``transport = "local"`` slaves."""

    def __init__(self, base: Path, *, slaves: int = 2, extra: str = "", **daemon: object) -> None:
        self.zones, self.output = make_zones(base / "master")
        self.state = base / "state.json"
        self.config = base / "dnsmaster.toml"
        self.roots = [base / "slaves" / f"ns{i + 2}" for i in range(slaves)]
        for root in self.roots:
            root.mkdir(parents=True)
        options: dict[str, object] = {"debounce": DEBOUNCE, "retry_initial": 0.2, "retry_max": 1.0}
        options.update(daemon)
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                daemon=options,
                slaves=[{"name": r.name, "transport": "local", "root": r} for r in self.roots],
            )
            + extra
            + ("" if "[guard]" in extra else NO_GUARD)
        )
        self.daemon = DaemonProcess(self.config)

    def installed(self) -> list[bytes]:
        return [(r / "data").read_bytes() for r in self.roots]


@contextlib.contextmanager
def running(local: Local) -> Iterator[tuple[DaemonProcess, dict[str, Any]]]:
    """The daemon on ``local`` once every slave has its first build, and its
    ``build.done`` event; killed (by PID) when the block ends."""
    daemon = local.daemon.start()
    try:
        first = daemon.wait("build.done", timeout=TIMEOUT)
        daemon.wait_count("push.done", len(local.roots), timeout=TIMEOUT, serial=first["serial"])
        daemon.wait_named(local.state, TIMEOUT)  # a command by hand hands off to it
        yield daemon, first
    finally:
        local.daemon.kill()


# -- one daemon for a class's tests -------------------------------------------------------


def files_of(directory: Path) -> dict[str, bytes]:
    """The regular files directly in ``directory``, by name."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def put_back(directory: Path, files: dict[str, bytes]) -> bool:
    """Make ``directory`` hold ``files`` and nothing else (each by a plain overwrite,
    as a save is); whether anything had to change."""
    changed = False
    for entry in list(directory.iterdir()):
        if entry.name in files and entry.is_file() and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        changed = True
    for name, content in files.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            with path.open("wb") as f:
                f.write(content)
            changed = True
    return changed


Site = TypeVar("Site")


class Shared(Generic[Site]):
    """One ``dnsmaster run`` that the tests of a class use in turn, each as if new.

    A daemon's start costs a Python start with the daemon's imports (0.6-0.7 s of CPU)
    and a first round of receivers (a status and a push for each slave); a test that
    only saves and watches what follows need not pay it again. Before each test,
    :meth:`reset` puts back what a test may change: a stopped sshd or tinydns of the
    slaves started again, the zones directory as it was at the start, and the daemon
    brought to rest on it (SIGUSR1: it builds and pushes what the put-back changed,
    retries a slave that was down, and says ``daemon.idle`` once all is done), so a
    test's events begin at a daemon at rest on known zones. A test that stopped or
    killed the daemon (its point may be the stop) leaves the next a new one, started
    on what the stopped one left.

    ``start(first)`` starts a daemon and waits until it has served the slaves
    (``first``: nothing installed yet, a first push to wait for); ``settle`` waits for
    what "served" means beyond the daemon's rest (the slaves' DNS verified).
    ``site`` is the :class:`Rig` or :class:`Local` it runs on, for the tests.
    """

    def __init__(
        self,
        site: Site,
        zones: Path,
        start: Callable[[bool], DaemonProcess],
        *,
        slaves: Sequence[Slave] = (),
        settle: Callable[[DaemonProcess], object] = lambda daemon: None,
    ) -> None:
        self.site = site
        self.zones = zones
        self.as_new = files_of(zones)
        self.slaves = list(slaves)
        self._start = start
        self._settle = settle
        self.daemons: list[DaemonProcess] = []
        self.daemon = self.start(first=True)

    def start(self, *, first: bool = False) -> DaemonProcess:
        """A new daemon (after the last one ended), the one the next tests use."""
        daemon = self._start(first)
        self.daemons.append(daemon)
        self.daemon = daemon
        if not first:
            # What a start does before it rests: asks every slave, pushes if behind.
            daemon.wait("daemon.idle", 0, TIMEOUT)
        return daemon

    def reset(self) -> DaemonProcess:
        """Put the site back as the class's first test found it (see the class doc)."""
        for s in self.slaves:
            if not s.sshd.running:
                s.sshd.start()
            if not s.tinydns.running:
                s.tinydns.start()
        put_back(self.zones, self.as_new)
        if self.daemon.running:
            self.daemon.signal(signal.SIGCONT)  # a test that stopped it and failed
            self.daemon.settled(TIMEOUT)
        else:
            self.daemon.kill()
            self.start()
        self._settle(self.daemon)
        return self.daemon

    def close(self) -> None:
        """Stop the daemon (SIGTERM: it must exit 0, as a test's own daemon is checked
        to), then kill whatever is left."""
        try:
            if self.daemon.running:
                status = self.daemon.stop()
                assert status == 0, f"SIGTERM: exit {status}\n{self.daemon.dump()}"
        finally:
            for daemon in self.daemons:
                daemon.kill()


@contextlib.contextmanager
def lab_slaves(worker_lab: WorkerLab, count: int) -> Iterator[tuple[SharedLab, list[Slave]]]:
    """``count`` slaves of this process's shared lab for a class's tests, which do not
    ask for ``lab`` (each would check and reset it, under a daemon that holds SSH
    connections open): checked as new first, as ``lab`` does, and reset at the end."""
    shared = worker_lab.get()
    wrong = shared.differences()
    if wrong:
        worker_lab.discard()
        pytest.fail("the shared lab is not as new:\n  " + "\n  ".join(wrong), pytrace=False)
    try:
        yield shared, shared(count)
    finally:
        shared.reset()


@contextlib.contextmanager
def shared_rig(
    base: Path, worker_lab: WorkerLab, count: int, **daemon: object
) -> Iterator[Shared[Rig]]:
    """A :class:`Rig` of ``count`` real slaves and its daemon, :class:`Shared`."""
    with lab_slaves(worker_lab, count) as (lab, slaves):
        rig = Rig(base, lab, slaves, **daemon)
        try:
            shared = Shared(
                rig,
                rig.zones,
                lambda first: rig.start(initial_push=first),
                slaves=slaves,
                settle=lambda daemon: verified(rig.state, daemon),
            )
            try:
                yield shared
            finally:
                shared.close()
        finally:
            rig.close()


@contextlib.contextmanager
def shared_local(base: Path, **options: Any) -> Iterator[Shared[Local]]:
    """A :class:`Local` (``options`` as it takes them) and its daemon, :class:`Shared`."""
    local = Local(base, **options)
    started: list[DaemonProcess] = []  # killed at the end, whatever failed on the way

    def start(first: bool) -> DaemonProcess:
        daemon = DaemonProcess(local.config)
        started.append(daemon)
        daemon.start()
        if first:
            done = daemon.wait("build.done", timeout=TIMEOUT)
            daemon.wait_count("push.done", len(local.roots), timeout=TIMEOUT, serial=done["serial"])
        daemon.wait_named(local.state, TIMEOUT)  # a command by hand hands off to it
        return daemon

    try:
        shared = Shared(local, local.zones, start)
        try:
            yield shared
        finally:
            shared.close()
    finally:
        for daemon in started:
            daemon.kill()
