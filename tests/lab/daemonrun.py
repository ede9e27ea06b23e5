"""``dnsmaster run`` as a subprocess, its JSON log read event by event.

Shared by the daemon tests, the service test and the propagation benchmark. The
daemon is started with ``--log-format json``; a reader thread parses every stderr
line into a dict (non-JSON lines, such as a traceback, become ``{"event": "raw",
"line": ...}``) and the test waits on them by event name and fields. The process
is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import dnsmaster
from dnsmaster import config as configuration
from dnsmaster.config import Config

__all__ = ["PROJECT", "DaemonProcess", "Event", "config_text", "in_process_config", "toml_value"]

#: The directory that holds the ``dnsmaster`` package under test.
PROJECT = Path(dnsmaster.__file__).resolve().parent.parent

Event = dict[str, Any]


class DaemonError(AssertionError):
    """The daemon did not log what the test waited for."""


def toml_value(value: object) -> str:
    """One TOML scalar (str, bool, int, float, Path)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_text(
    *,
    zones: Path,
    output: Path,
    state: Path,
    slaves: Sequence[dict[str, object]],
    top: dict[str, object] | None = None,
    daemon: dict[str, object] | None = None,
    push: dict[str, object] | None = None,
) -> str:
    """A dnsmaster.toml with these settings."""
    lines = [
        f"zones = {toml_value(zones)}",
        f"output = {toml_value(output)}",
        f"state = {toml_value(state)}",
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in (top or {}).items()]
    for name, table in (("daemon", daemon), ("push", push)):
        if table:
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for slave in slaves:
        lines.append("\n[[slave]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in slave.items()]
    return "\n".join(lines) + "\n"


def in_process_config(
    directory: Path, zones: Path, output: Path, slave: dict[str, object]
) -> Config:
    """The loaded configuration of a daemon run in process: one SSH ``slave``, an
    empty known_hosts, the state file in ``directory``."""
    known_hosts = directory / "known_hosts"
    known_hosts.write_text("")
    path = directory / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=zones,
            output=output,
            state=directory / "state.json",
            top={"known_hosts": known_hosts},
            slaves=[slave],
        )
    )
    return configuration.load(path)


def _matches(event: Event, name: str, fields: dict[str, object]) -> bool:
    return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())


class DaemonProcess:
    """One ``python -m dnsmaster run --config FILE --log-format json``."""

    def __init__(
        self,
        config: Path,
        *,
        argv: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        echo: bool = False,
    ) -> None:
        self.config = config
        self.argv = list(
            argv
            or [
                sys.executable,
                "-m",
                "dnsmaster",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ]
        )
        self.env = dict(os.environ, PYTHONPATH=str(PROJECT), **(env or {}))
        self.echo = echo
        self.events: list[Event] = []
        self.times: list[float] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._eof = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # the log is on stderr; a service's run script
            stderr=subprocess.STDOUT,  # sends it to stdout (exec 2>&1): read both
            env=self.env,
            cwd=self.config.parent,
        )
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="daemon-log", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at EOF: an open pipe is a ResourceWarning, an error here
            self._read_lines(self.proc.stdout)

    def _read_lines(self, stdout: Iterable[bytes]) -> None:
        for raw in stdout:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                event = json.loads(text)
                if not isinstance(event, dict):
                    raise ValueError(text)
            except ValueError:
                event = {"event": "raw", "line": text}
            if self.echo:
                sys.stderr.write(text + "\n")
            with self._cond:
                self.events.append(event)
                self.times.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_named(self, state: Path, timeout: float = 20.0) -> None:
        """Until the state file ``state`` names this daemon as running. A command
        finds the daemon to hand its request to there; a command run in process right
        after a start, before the daemon's first state write, found none and waited
        for the lock the daemon holds (a process's own start used to cover that)."""
        from dnsmaster.master import handoff  # noqa: PLC0415 - light: the suite's package

        deadline = time.monotonic() + timeout
        while handoff.daemon_pid(state) != self.pid:
            if time.monotonic() > deadline or not self.running:
                raise DaemonError(f"the state file never named pid {self.pid}\n{self.dump()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM by PID; the exit status (SIGKILL and raise if it does not go)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise DaemonError(f"daemon ignored SIGTERM for {timeout} s\n{self.dump()}") from None
        self._close_log()
        return status

    def kill(self) -> None:
        """Cleanup: whatever state it is in, it is gone afterwards."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        """After the reader saw EOF: an open pipe is a ResourceWarning, an error in tests."""
        if self._reader is not None:
            self._reader.join(10)
        if self.proc is not None and self.proc.stdout is not None and not self._reader_alive():
            self.proc.stdout.close()

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    # -- events ------------------------------------------------------------------

    def mark(self) -> int:
        """Where the log is now: pass as ``since`` to look only at what comes next."""
        with self._cond:
            return len(self.events)

    def find(self, name: str, since: int = 0, **fields: object) -> list[Event]:
        with self._cond:
            return [e for e in self.events[since:] if _matches(e, name, fields)]

    def wait_for(
        self,
        predicate: Callable[[list[Event]], bool],
        timeout: float,
        what: str,
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise DaemonError(f"waited {timeout} s for {what}\n{self._dump_locked()}")
                self._cond.wait(min(left, 0.5))

    def wait(self, name: str, since: int = 0, timeout: float = 20.0, **fields: object) -> Event:
        """The first ``name`` event (with these fields) at or after ``since``."""
        return self.wait_count(name, 1, since, timeout, **fields)[0]

    def wait_count(
        self, name: str, count: int, since: int = 0, timeout: float = 20.0, **fields: object
    ) -> list[Event]:
        """Wait for ``count`` such events; return them all (at least ``count``)."""

        def enough(events: list[Event]) -> bool:
            return sum(_matches(e, name, fields) for e in events[since:]) >= count

        self.wait_for(enough, timeout, f"{count} x {name} {fields or ''} after #{since}")
        return self.find(name, since, **fields)

    def wait_time(
        self, name: str, since: int = 0, timeout: float = 20.0, **fields: object
    ) -> float:
        """When (time.monotonic) the first such event was read."""
        self.wait(name, since, timeout, **fields)
        with self._cond:
            for event, at in zip(self.events[since:], self.times[since:], strict=True):
                if _matches(event, name, fields):
                    return at
        raise AssertionError("unreachable")

    def idle_after(self, event: Event, timeout: float = 20.0) -> Event:
        """The daemon's first ``daemon.idle`` after ``event`` (one of :attr:`events`).

        The daemon is at rest then (:mod:`dnsmaster.daemon.rest`): whatever led to
        ``event`` is done, so what it has not logged by then does not follow.
        """
        with self._cond:
            since = next(i for i, e in enumerate(self.events) if e is event) + 1
        return self.wait("daemon.idle", since, timeout)

    def settled(self, timeout: float = 20.0) -> Event:
        """Ask the daemon to answer once at rest, and wait for the answer.

        SIGUSR1 (a rescan: it builds only if the zones changed) is answered by a
        ``daemon.idle``: everything the daemon was asked before it is done.
        """
        mark = self.mark()
        self.signal(signal.SIGUSR1)
        return self.wait("daemon.idle", mark, timeout)

    def _dump_locked(self) -> str:
        tail = self.events[-60:]
        return "daemon log (last 60 events):\n" + "\n".join(json.dumps(e) for e in tail)

    def dump(self) -> str:
        with self._cond:
            return self._dump_locked()
