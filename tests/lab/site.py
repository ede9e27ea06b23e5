"""A master's site for the daemon tests: a zones directory, its config and the daemon.

:class:`Local` has ``transport = "local"`` slaves (the receiver as a subprocess, no
sshd); :class:`Rig` has real slaves from :mod:`tests.lab.realworld`. Both run
``dnsmaster run`` through :class:`tests.lab.daemonrun.DaemonProcess`.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster.master import state as statefile
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess, config_text

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


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
