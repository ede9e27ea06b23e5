"""``dnsmaster wait``, ``push --wait`` and the ACME hooks, against real slaves.

Each test starts slaves from :mod:`tests.lab.realworld` (OpenSSH's sshd with the
``dnsmaster receive`` forced command, Debian's tinydns on 127.0.1.N:53), runs
``python -m dnsmaster`` as a subprocess with a JSON log, and judges it by its exit
status, its events and what every slave's tinydns answers the moment it returns.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster.core.banner import previous_serial
from dnsmaster.master.wait import build_zones, is_live
from dnsmaster.transport.dns import SoaCheck
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, DaemonProcess, config_text
from tests.lab.recorder import push_here

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


ZONE = "example.com"
ZONES = f".{ZONE}:127.0.0.1:a:259200\n+www.{ZONE}:192.0.2.1\n"
HOOKS = PROJECT / "contrib" / "acme"

Event = dict[str, Any]


class Master:
    """A zones directory, an output directory and a config naming the lab's slaves."""

    def __init__(self, base: Path, lab: Lab, slaves: list[Slave]) -> None:
        self.lab = lab
        self.zones = base / "zones"
        self.output = base / "out"
        self.config = base / "dnsmaster.toml"
        self.state = base / "state.json"
        self.zones.mkdir(parents=True)
        self.output.mkdir()
        # The hooks' DNSMASTER: one program path, so a wrapper running the package under
        # test (the lab's forced command is the slaves' receiver, not this).
        self.command = base / "dnsmaster"
        self.command.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={shlex.quote(str(PROJECT))} export PYTHONPATH\n"
            f'exec {shlex.quote(sys.executable)} -m dnsmaster "$@"\n'
        )
        self.command.chmod(0o755)
        (self.zones / "header").write_text("# test zones\n")
        (self.zones / "zones.example").write_text(ZONES)
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                top={"key": lab.key, "known_hosts": lab.known_hosts, "user": lab.user},
                daemon={"verify_timeout": 0.5},
                push={"connect_timeout": 5.0, "timeout": 60.0},
                slaves=[
                    {"name": s.name, "host": s.address, "port": s.port, "dns": s.address}
                    for s in slaves
                ],
            )
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DNSMASTER_CONFIG"}
        env["PYTHONPATH"] = str(PROJECT)
        env.update(extra)
        return env

    def run(self, *argv: str, timeout: float = 120) -> tuple[int, list[Event], float]:
        """``dnsmaster ARGV --config C --log-format json`` in this process: status,
        events, seconds. (``push --wait`` followed as it runs, and the ACME hooks,
        are the processes here.)"""
        start = time.monotonic()
        proc = dnsmaster_here(*argv, *self.options, timeout=timeout)
        seconds = time.monotonic() - start
        assert "Traceback" not in proc.stderr, proc.stderr
        events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        return proc.returncode, events, seconds

    @property
    def options(self) -> list[str]:
        return ["--config", str(self.config), "--log-format", "json"]

    def serial(self) -> int:
        serial = previous_serial((self.output / "data").read_bytes()[:200])
        assert serial is not None
        return serial


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


def txt(slave: Slave, name: str) -> list[str]:
    return slave.tinydns.answer(name, "TXT")


@pytest.fixture
def two(lab: Lab) -> list[Slave]:
    return lab(2)


@pytest.fixture
def master(tmp_path: Path, lab: Lab, two: list[Slave]) -> Master:
    return Master(tmp_path / "master", lab, two)


def test_build_zones_and_rfc1982() -> None:
    """The build's zones are those stamped with its serial; a newer serial is live."""
    data = b"# zones.a:1\nZa.test:ns:hm:7\nZb.test:ns:hm:9\n.c.test::x:::\n"
    assert build_zones(data, 7) == {b"\x01a\x04test\x00": 7}
    assert is_live(SoaCheck("a", 7, 7))
    assert is_live(SoaCheck("a", 0xFFFFFFFF, 3))  # past the wrap
    assert not is_live(SoaCheck("a", 7, 6))
    assert not is_live(SoaCheck("a", 3, 0xFFFFFFFF))
    assert not is_live(SoaCheck("a", 7, None, "no answer (timeout)"))


def test_push_wait_returns_after_the_last_slave_serves(master: Master, two: list[Slave]) -> None:
    """One tinydns comes up only during the wait: push --wait returns after it serves."""
    late = two[1]
    late.tinydns.stop()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsmaster", "push", "--wait", "--timeout", "30", *master.options],
        stderr=subprocess.PIPE,
        text=True,
        env=master.env(),
    )
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:  # the push is done: the wait begins
            lines.append(line)
            if '"wait.start"' in line:
                break
        time.sleep(1.0)
        late.tinydns.start()
        lines += proc.stderr.readlines()
        status = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()  # left open, it is a ResourceWarning: an error in tests
    seconds = time.monotonic() - start
    events = [json.loads(line) for line in lines if line.startswith("{")]
    # asked right after the return, with no polling: every slave serves the build
    serial = master.serial()
    assert [s.tinydns.soa_serial(ZONE) for s in two] == [serial, serial]
    assert status == 0, events
    assert named(events, "wait.start")[0]["serial"] == serial
    turned = {e["slave"]: e["seconds"] for e in named(events, "wait.live")}
    assert set(turned) == {s.name for s in two}
    assert turned[late.name] >= 1.0 > turned[two[0].name]
    assert seconds >= 1.0
    end = named(events, "wait.end")[0]
    assert (end["live"], end["late"], end["laggards"]) == (2, 0, [])
    assert events[-1]["event"] == "wait.end"


def test_wait_times_out_naming_the_stopped_tinydns(master: Master, two: list[Slave]) -> None:
    """A stopped tinydns: wait and push --wait exit 3 after the timeout, naming it."""
    push_here(master.config)  # set-up, in process: the waits are under test
    serial = master.serial()
    down, up = two[1], two[0]
    down.tinydns.stop()

    status, events, seconds = master.run("wait", str(serial), "--timeout", "2")
    assert status == 3, events
    assert 2.0 <= seconds < 10
    assert [e["slave"] for e in named(events, "wait.live")] == [up.name]
    (late,) = named(events, "wait.late")
    assert (late["slave"], late["zone"], late["expected"]) == (down.name, ZONE, serial)
    assert late["serves"] == "no answer"
    end = named(events, "wait.end")[0]
    assert (end["level"], end["live"], end["late"], end["laggards"]) == ("error", 1, 1, [down.name])

    (master.zones / "zones.example").write_text(ZONES.replace("192.0.2.1", "192.0.2.2"))
    status, events, _ = master.run("push", "--wait", "--timeout", "2")
    assert status == 3, events
    assert master.serial() != serial
    assert [e["slave"] for e in named(events, "wait.late")] == [down.name]
    assert up.tinydns.soa_serial(ZONE) == master.serial()


def test_push_wait_through_the_running_daemon(master: Master, two: list[Slave]) -> None:
    """With the daemon running, push --wait hands off, then waits for its build."""
    daemon = DaemonProcess(master.config).start()
    try:
        daemon.wait("build.done", timeout=30)
        daemon.wait_count("push.done", 2, timeout=30)
        daemon.wait_named(master.state, 30)  # the push below hands off to it
        (master.zones / "zones.example").write_text(ZONES.replace("192.0.2.1", "192.0.2.9"))
        status, events, _ = master.run("push", "--wait", "--timeout", "30")
    finally:
        daemon.kill()
    assert status == 0, events
    assert named(events, "handoff.start")
    serial = master.serial()
    assert named(events, "wait.start")[0]["serial"] == serial
    assert {e["slave"] for e in named(events, "wait.live")} == {s.name for s in two}
    for s in two:
        assert s.tinydns.soa_serial(ZONE) == serial
        assert s.tinydns.answer(f"www.{ZONE}") == ["192.0.2.9"]


def test_wait_serial_choices(master: Master, two: list[Slave]) -> None:
    """An older serial is served by a newer build; a serial of no zone is a usage error."""
    push_here(master.config)  # set-up, in process: the waits are under test
    serial = master.serial()
    assert master.run("wait", str(serial - 5), "--zone", ZONE, "--timeout", "5")[0] == 0
    assert master.run("wait", str(serial), "--slave", two[0].name, "--timeout", "5")[0] == 0
    # Without SERIAL: the build on disk's, for every zone that carries it.
    status, events, _ = master.run("wait", "--slave", two[0].name, "--timeout", "5")
    assert status == 0, events
    assert named(events, "wait.start")[0]["serial"] == serial
    assert master.run("wait", "--zone", ZONE)[0] == 2
    status, events, _ = master.run("wait", str(serial + 1000), "--zone", ZONE, "--timeout", "1")
    assert status == 3
    assert {e["serves"] for e in named(events, "wait.late")} == {serial}
    assert master.run("wait", str(serial + 1000), "--timeout", "1")[0] == 2
    assert master.run("wait", "not-a-serial")[0] == 2


def test_acme_hook_serves_the_challenge_everywhere(master: Master, two: list[Slave]) -> None:
    """deploy: every slave answers the TXT when the hook returns; clean: it is gone.

    With a value that is written byte by byte; lego's script, which runs this hook
    under its own names, has the test below."""
    push_here(master.config)  # set-up, in process: the waits are under test
    env = master.env(
        DNSMASTER=str(master.command),
        DNSMASTER_CONFIG=str(master.config),
        DNSMASTER_TIMEOUT="30",
    )
    value = "odd:value\\"
    argv = [str(HOOKS / "dehydrated-hook.sh"), "deploy_challenge", ZONE, "tok", value]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "event=wait.end live=2 late=0" in proc.stderr
    zones_file = master.zones / f"zones.acme-{ZONE}"
    # anything but a plain ACME value is written byte by byte as \ooo
    field = "".join(f"\\{b:03o}" for b in value.encode())
    assert zones_file.read_text().splitlines()[1:] == [f"'_acme-challenge.{ZONE}:{field}:60"]
    quoted = '"' + value.replace("\\", "\\\\") + '"'  # dnspython's text form
    for s in two:  # asked right after the return, with no polling
        assert txt(s, f"_acme-challenge.{ZONE}") == [quoted]

    clean = [argv[0], "clean_challenge", *argv[2:]]
    proc = subprocess.run(clean, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not zones_file.exists()
    for s in two:
        assert txt(s, f"_acme-challenge.{ZONE}") == []


def test_lego_script_is_the_hook_under_lego_names(tmp_path: Path) -> None:
    """present and cleanup: the hook's deploy and clean for the FQDN's domain, with a
    plain value written as it is, and its push (``--wait`` after present). What the
    push does then is the test above's: here DNSMASTER only records its arguments,
    so the lego names cost no pushes to real slaves."""
    zones, calls = tmp_path / "zones", tmp_path / "calls"
    zones.mkdir()
    recorder = tmp_path / "dnsmaster"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{shlex.quote(str(calls))}\n')
    recorder.chmod(0o755)
    env = dict(os.environ, DNSMASTER_ZONES=str(zones), DNSMASTER=str(recorder))
    env.pop("DNSMASTER_CONFIG", None)
    value = "gfj9Xq-_Kbq1"
    script = str(HOOKS / "lego-exec.sh")
    present = [script, "present", f"_acme-challenge.{ZONE}.", value]
    proc = subprocess.run(present, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    zones_file = zones / f"zones.acme-{ZONE}"
    assert zones_file.read_text().splitlines()[1:] == [f"'_acme-challenge.{ZONE}:{value}:60"]
    assert calls.read_text() == "push --wait --timeout 120\n"
    cleanup = [script, "cleanup", *present[2:]]
    proc = subprocess.run(cleanup, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not zones_file.exists()
    assert calls.read_text() == "push --wait --timeout 120\npush\n"
    # Not a challenge name: refused, nothing written, nothing pushed.
    wrong = [script, "present", f"www.{ZONE}.", value]
    proc = subprocess.run(wrong, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "not an _acme-challenge name" in proc.stderr
    assert list(zones.iterdir()) == []
    assert calls.read_text().count("push") == 2


def test_hook_ignores_other_hooks(tmp_path: Path) -> None:
    """dehydrated calls the hook for every event; the others do nothing and succeed."""
    env = dict(os.environ, DNSMASTER_ZONES=str(tmp_path), DNSMASTER="false")
    for argv in (["startup_hook"], ["deploy_cert", ZONE, "k", "c", "f", "ch", "1"], []):
        proc = subprocess.run(
            [str(HOOKS / "dehydrated-hook.sh"), *argv], env=env, capture_output=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
