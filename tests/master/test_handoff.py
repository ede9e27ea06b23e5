"""Hand-off files: a request is carried out only by the daemon asked, while its
asker waits (#17).

On the real daemon (:mod:`tests.lab.daemonrun`) with local slaves, stopped and killed
by PID: a ``dnsmaster rollback`` whose daemon never answered must not be carried
out later, by a restarted daemon, on another operator's SIGUSR2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dnsmaster.master import handoff
from dnsmaster.master import state as statefile
from dnsmaster.master.handoff import ACCEPT_FILE, ROLLBACK_FILE
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, DaemonProcess
from tests.lab.site import TIMEOUT, Local, example_com, status, write

ENV = dict(os.environ, PYTHONPATH=str(PROJECT))


def command(config: Path, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dnsmaster", *argv, "--config", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    """Its exit status and JSON log events (a traceback's lines left out)."""
    _, err = proc.communicate(timeout=120)
    return proc.returncode, events(err)


def here(config: Path, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    """A command that waits for the daemon, run in this process (no interpreter's
    start to pay): its exit status and JSON log events. The tests that signal or
    kill the asker run it as a process (:func:`command`)."""
    proc = dnsmaster_here(*argv, "--config", str(config), "--log-format", "json")
    return proc.returncode, events(proc.stderr)


def events(err: str) -> list[dict[str, Any]]:
    found = []
    for line in err.splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def named(found: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in found if e.get("event") == name]


def appears(path: Path) -> str:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


# One slave in each site: a hand-off is between a command and the daemon, on the
# master; each slave a round reaches is a receiver's start, and nothing here is judged
# by how many there are.


def guarded(tmp_path: Path) -> Local:
    return Local(tmp_path, slaves=1, extra="\n[guard]\n")


@pytest.mark.usefixtures("daemon_process")
def test_a_request_nobody_waits_for_is_never_carried_out(tmp_path: Path) -> None:
    """The issue's repro: rollback asked of a stopped daemon; the asker interrupted
    (it withdraws its request) or killed (the request stays), the daemon killed and
    started again: nothing is rolled back, and a later guard hold is released by
    ``push --accept`` as asked."""
    local = guarded(tmp_path)
    flag = local.output / ROLLBACK_FILE
    daemon = local.daemon.start()
    try:
        two_builds(daemon, local)
        daemon.signal(signal.SIGSTOP)

        # An operator gives up waiting (^C): the request goes with the asker.
        asker = command(local.config, "rollback", "--to", "-1")
        request = handoff.parse_request(appears(flag))
        assert request is not None, "a request that names no daemon"
        assert request["daemon"] == statefile.read(local.state).instance
        assert request["asker"] == str(asker.pid)
        asker.send_signal(signal.SIGINT)
        _, found = finish(asker)
        assert named(found, "handoff.withdrawn"), found
        assert not flag.exists()

        # An asker killed outright leaves its request behind ...
        asker = command(local.config, "rollback", "--to", "-1")
        appears(flag)
        asker.kill()
        finish(asker)
        assert flag.exists()
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.proc.wait(10)  # type: ignore[union-attr]
    finally:
        local.daemon.kill()

    # ... and the daemon started again discards it: nobody waits for it.
    daemon = DaemonProcess(local.config).start()
    try:
        accept_after_restart(daemon, local)
    finally:
        daemon.kill()


def two_builds(daemon: DaemonProcess, local: Local) -> tuple[int, int]:
    """The first build and a second one, each on every slave: their serials."""
    slaves = len(local.roots)
    first = daemon.wait("build.done", timeout=TIMEOUT)
    daemon.wait_count("push.done", slaves, timeout=TIMEOUT, serial=first["serial"])
    mark = daemon.mark()
    write(local.zones / "zones.example.com", example_com("192.0.2.55"))
    second = daemon.wait("build.done", mark, timeout=TIMEOUT)
    daemon.wait_count("push.done", slaves, mark, timeout=TIMEOUT, serial=second["serial"])
    return first["serial"], second["serial"]


def accept_after_restart(daemon: DaemonProcess, local: Local) -> None:
    """The restarted daemon discards the request left behind; a guard hold is then
    released by ``push --accept``, and nothing is rolled back."""
    flag = local.output / ROLLBACK_FILE
    discarded = daemon.wait("handoff.discarded", timeout=TIMEOUT)
    assert discarded["file"] == ROLLBACK_FILE
    assert not flag.exists()
    daemon.wait("build.current", timeout=TIMEOUT)
    daemon.wait_count("status.installed", len(local.roots), timeout=TIMEOUT)
    mark = daemon.mark()
    (local.zones / "zones.example.net").unlink()
    held = daemon.wait("guard.held", mark, timeout=TIMEOUT)
    code, found = here(local.config, "push", "--accept")
    assert code == 0, found
    names = {root.name for root in local.roots}
    assert {e["slave"] for e in named(found, "push.done")} == names, found
    pushes = daemon.wait_count(
        "push.done", len(names), mark, timeout=TIMEOUT, serial=held["serial"]
    )
    daemon.idle_after(pushes[-1], TIMEOUT)  # and whatever else SIGUSR2 set going
    assert not daemon.find("rollback.done")
    assert not daemon.find("guard.dropped")
    assert not (local.output / ACCEPT_FILE).exists()
    assert statefile.read(local.state).rollback is None
    assert not any(b"example.net" in d for d in local.installed())
    assert status(local.config).returncode == 0
    assert daemon.stop() == 0


def test_refusal_names_why() -> None:
    """What the daemon checks in a request file, and says when it will not act."""
    me = str(os.getpid())
    later, earlier = f"{time.monotonic() + 60:.3f}", f"{time.monotonic() - 1:.3f}"
    mine = handoff.parse_request(f"daemon=d1 asker={me} until={later} request=release id=x")
    assert mine is not None
    assert handoff.refusal(mine, "d1") is None
    assert "another daemon" in str(handoff.refusal(mine, "d2"))
    assert handoff.parse_request("to " + "a" * 64 + " x") is None  # the old format
    assert "not a request" in str(handoff.refusal(None, "d1"))
    late = handoff.parse_request(f"daemon=d1 asker={me} until={earlier}")
    assert "gave up" in str(handoff.refusal(late, "d1"))
    odd = handoff.parse_request("daemon=d1 asker=me until=soon")
    assert "no number" in str(handoff.refusal(odd, "d1"))


def test_withdraw_removes_only_its_own(tmp_path: Path) -> None:
    flag = tmp_path / ROLLBACK_FILE
    mine = handoff.write_request(flag, daemon="d1", timeout=60, request="release", id="a")
    flag.write_text(mine.replace("id=a", "id=b"))  # another asker's since
    assert not handoff.withdraw(flag, mine)
    assert flag.exists()
    mine = handoff.write_request(flag, daemon="d1", timeout=60, request="release", id="a")
    assert handoff.withdraw(flag, mine)
    assert not flag.exists()


@pytest.mark.usefixtures("daemon_process")
def test_the_running_daemon_acts_only_on_its_own_requests(tmp_path: Path) -> None:
    """A request for another daemon, or whose asker is gone, is discarded on SIGUSR2;
    one for this daemon, from a command that waits, is carried out."""
    local = Local(tmp_path, slaves=1)
    flag = local.output / ROLLBACK_FILE
    daemon = local.daemon.start()
    try:
        first, _ = two_builds(daemon, local)
        instance = statefile.read(local.state).instance
        assert instance is not None
        kept = "0" * 64

        mark = daemon.mark()
        handoff.write_request(flag, daemon="another", timeout=60, request="to", kept=kept, id="x")
        daemon.signal(signal.SIGUSR2)
        gone = daemon.wait("handoff.discarded", mark, timeout=TIMEOUT)
        assert gone["file"] == ROLLBACK_FILE
        assert "another daemon" in gone["reason"]

        dead = subprocess.Popen(["true"])
        dead.wait()
        mark = daemon.mark()
        flag.write_text(
            f"daemon={instance} asker={dead.pid} until={time.monotonic() + 60} "
            f"request=to kept={kept} id=y\n"
        )
        daemon.signal(signal.SIGUSR2)
        gone = daemon.wait("handoff.discarded", mark, timeout=TIMEOUT)
        assert f"its asker (pid {dead.pid}) is gone" in gone["reason"]
        assert not flag.exists()
        daemon.idle_after(gone, TIMEOUT)  # a signal is answered, whatever it did
        assert not daemon.find("rollback.done")
        assert not daemon.find("rollback.failed")

        # A command that waits is answered, as before.
        mark = daemon.mark()
        code, found = here(local.config, "rollback", "--to", "-1")
        assert code == 0, found
        assert daemon.wait("rollback.done", mark, timeout=TIMEOUT)["kept_serial"] == first
        assert not flag.exists()
        code, found = here(local.config, "rollback", "--release")
        assert code == 0, found
        assert not flag.exists()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
