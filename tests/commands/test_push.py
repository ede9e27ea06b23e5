"""``dnsmaster push`` against real slaves: OpenSSH's sshd, ``dnsmaster receive``, tinydns.

Every test runs the real command line (``dnsmaster push``: its main() in process, or
``python -m dnsmaster push`` where the test needs a process, to stop it or to see
its logfmt whole) on a zones directory, with the lab's client key and known_hosts,
and reads the result back from each slave's tinydns over DNS. What sets a test up
(the first push to the slaves, a build to push next) is done in process
(:mod:`tests.lab.recorder`): a command start costs half a second of CPU. Faults
prove that the installed data did not change: the slave's root is byte-for-byte the
same and tinydns serves the old serial.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster.sshlib import asyncssh
from tests.conftest import dnsmaster_here
from tests.lab.recorder import build_here, push_here

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


PROJECT = Path(__file__).resolve().parents[2]
ZONE = "example.com"
ZONES = f".{ZONE}:127.0.0.1:a\n+www.{ZONE}:192.0.2.1\n"


# --------------------------------------------------------------------------- plumbing


@dataclass
class Run:
    """One ``dnsmaster push`` run: exit status and its log events."""

    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]

    def named(self, event: str, **match: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]

    def one(self, event: str, **match: object) -> dict[str, Any]:
        found = self.named(event, **match)
        assert len(found) == 1, (event, match, self.stderr)
        return found[0]

    def lines(self, slave: str, stream: str | None = None) -> list[str]:
        return [
            str(e["line"])
            for e in self.named("push.line", slave=slave)
            if stream is None or e["stream"] == stream
        ]


def parse_json_log(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line is one JSON object with an event name and a level."""
    events = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {line!r}\n{stderr}")
        assert isinstance(event, dict), line
        assert isinstance(event.get("event"), str), line
        assert event.get("level") in ("debug", "info", "warning", "error", "critical"), line
        events.append(event)
    return events


@dataclass
class Master:
    """A master directory: zones/, out/, dnsmaster.toml for some of the lab's slaves."""

    lab: Lab
    home: Path

    @property
    def zones(self) -> Path:
        return self.home / "zones"

    @property
    def output(self) -> Path:
        return self.home / "out"

    @property
    def config(self) -> Path:
        return self.home / "dnsmaster.toml"

    def configure(
        self,
        slaves: Sequence[Slave],
        *,
        legacy: Sequence[Slave] = (),
        push: str = "",
        log: str = "",
    ) -> None:
        text = [
            f'zones = "{self.zones}"',
            f'output = "{self.output}"',
            f'key = "{self.lab.key}"',
            f'known_hosts = "{self.lab.known_hosts}"',
            f'user = "{self.lab.user}"',
            "[push]",
            "connect_timeout = 5",
            "timeout = 60",
            push,
            "[log]",
            log,
        ]
        for s in slaves:
            text += [
                "[[slave]]",
                f'name = "{s.name}"',
                f'host = "{s.address}"',
                f"port = {s.port}",
                f'dns = "{s.address}"',
                f'protocol = "{"legacy" if s in legacy else "dnsmaster"}"',
            ]
        self.config.write_text("\n".join(text) + "\n")

    def write_zones(self, text: str = ZONES) -> None:
        self.zones.mkdir(exist_ok=True)
        (self.zones / "header").write_text("# test zones\n")
        (self.zones / "zones.example").write_text(text)

    def argv(self, *extra: str, fmt: str = "json") -> list[str]:
        return [
            sys.executable,
            "-m",
            "dnsmaster",
            "push",
            "--config",
            str(self.config),
            "--log-format",
            fmt,
            *extra,
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DNSMASTER_CONFIG"}
        env["PYTHONPATH"] = str(PROJECT)
        return env

    def push(self, *extra: str, timeout: float = 120) -> Run:
        """``dnsmaster push`` in this process, with the argv :meth:`argv` gives a
        process (the logfmt test and the cut connection run it as one)."""
        proc = dnsmaster_here(*self.argv(*extra)[3:], timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        return Run(proc.returncode, proc.stdout, proc.stderr, parse_json_log(proc.stderr))

    def built_serial(self) -> int:
        from dnsmaster.core.makedata import previous_serial  # noqa: PLC0415

        serial = previous_serial((self.output / "data").read_bytes()[:200])
        assert serial is not None
        return serial


@pytest.fixture
def master(lab: Lab, tmp_path: Path) -> Master:
    m = Master(lab, tmp_path / "master")
    m.home.mkdir()
    m.output.mkdir()
    m.write_zones()
    return m


def serving(lab: Lab, master: Master, count: int) -> list[Slave]:
    """``count`` slaves, configured, each serving the first build."""
    slaves = lab(count)
    master.configure(slaves)
    push_here(master.config)
    serial = master.built_serial()
    for s in slaves:
        assert s.tinydns.wait_serial(ZONE, serial) == serial
    return slaves


@pytest.fixture
def three(lab: Lab, master: Master) -> list[Slave]:
    """Three slaves, configured, each serving the first build."""
    return serving(lab, master, 3)


@pytest.fixture
def one(lab: Lab, master: Master) -> Slave:
    """One slave, configured, serving the first build: for a push cut on its way, which
    is between the master and that slave alone."""
    (slave,) = serving(lab, master, 1)
    return slave


def bump(master: Master, www: str = "192.0.2.2") -> int:
    """Change the zones and build; the new serial (not yet pushed)."""
    old = master.built_serial()
    master.write_zones(ZONES.replace("192.0.2.1", www))
    build_here(master.config)
    new = master.built_serial()
    assert new > old
    return new


def served(slave: Slave) -> int | None:
    return slave.tinydns.soa_serial(ZONE)


def sshd_children(slave: Slave) -> list[int]:
    """The PIDs of every descendant of the slave's sshd listener (its sessions)."""
    assert slave.sshd.pid is not None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [slave.sshd.pid]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found += kids
        frontier += kids
    return found


def accepted_logins(slave: Slave) -> int:
    return slave.sshd.log_text().count("Accepted publickey")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def forced_command(lab: Lab, root: Path, command: Path, *extra: str) -> str:
    """An authorized_keys line whose forced command is ``command`` instead of dnsmaster."""
    line = lab.authorized_key(root, *extra)
    assert str(lab.forced_command) in line
    return line.replace(str(lab.forced_command), str(command))


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- success


def test_push_to_three_slaves(lab: Lab, master: Master) -> None:
    """Build, push to all three in parallel, each tinydns serves the new serial."""
    slaves = lab(3)
    master.configure(slaves)
    run = master.push()
    assert run.returncode == 0, run.stderr
    serial = master.built_serial()
    data = (master.output / "data").read_bytes()

    assert run.one("build.done")["serial"] == serial
    start = run.one("push.start")
    assert start["slaves"] == 3
    assert start["bytes"] == len(data)
    for s in slaves:
        assert s.tinydns.soa_serial(ZONE) == serial
        assert s.tinydns.answer(f"www.{ZONE}", "A") == ["192.0.2.1"]
        assert s.installed() is not None
        assert s.installed().startswith(data)  # type: ignore[union-attr]
        done = run.one("push.done", slave=s.name)
        assert done["serial"] == serial
        assert done["bytes"] > len(data)  # data and the trailer
        lines = run.lines(s.name, "stdout")
        assert lines[0].startswith("received bytes=")
        assert lines[-1].startswith("done sha256=")
        assert f"serial={serial}" in lines[-1]
        # Every line of the slave is its own event, before that slave's result.
        pos = run.events.index(done)
        assert all(run.events.index(e) < pos for e in run.named("push.line", slave=s.name))
        assert all(e["stream"] in ("stdout", "stderr") for e in run.named("push.line"))
    assert run.one("push.end") == {"event": "push.end", "level": "info", "ok": 3, "failed": 0}
    assert run.events[-1]["event"] == "push.end"
    assert not run.named("push.failed")


def test_push_again_changes_serial_only_on_change(
    lab: Lab, master: Master, three: list[Slave]
) -> None:
    """Unchanged zones: no rebuild (build.current), the same serial pushed again."""
    serial = master.built_serial()
    run = master.push()
    assert run.returncode == 0, run.stderr
    run.one("build.current")
    assert master.built_serial() == serial
    new = bump(master)
    run = master.push("--no-build")
    assert run.returncode == 0, run.stderr
    assert not run.named("build.done")
    for s in three:
        assert served(s) == new
        assert s.tinydns.answer(f"www.{ZONE}", "A") == ["192.0.2.2"]


def test_logfmt_is_one_event_per_line(lab: Lab, master: Master) -> None:
    slaves = lab(2)
    master.configure(slaves)
    proc = subprocess.run(
        master.argv(fmt="logfmt"),
        capture_output=True,
        text=True,
        env=master.env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines
    for line in lines:
        words = shlex.split(line)
        assert words[0].split("=")[0] == "level", line
        assert words[1].startswith("event="), line
        assert all("=" in w for w in words), line
    pushed = [line for line in lines if "event=push.line" in line]
    assert pushed
    assert all(" slave=" in line and " stream=" in line for line in pushed)
    for s in slaves:
        assert sum(f"event=push.done slave={s.name} " in line for line in lines) == 1


def test_only_named_slaves(lab: Lab, master: Master, three: list[Slave]) -> None:
    old = master.built_serial()
    new = bump(master)
    run = master.push("--no-build", "--slave", three[1].name)
    assert run.returncode == 0, run.stderr
    assert [e["slave"] for e in run.named("push.done")] == [three[1].name]
    assert [served(s) for s in three] == [old, new, old]


# --------------------------------------------------------------------------- faults


def test_data_that_does_not_compile_changes_nothing(
    lab: Lab, master: Master, three: list[Slave]
) -> None:
    """A data file that does not compile (pushed with --no-build) never leaves the
    master: the guard compiles it to judge it and refuses it, naming the line."""
    serial = master.built_serial()
    before = [s.snapshot() for s in three]
    bump(master)
    data = master.output / "data"
    good = data.read_bytes()
    data.write_bytes(good + b"!www2.example.com:1.2.3.4\n")
    bad_line = good.count(b"\n") + 1
    run = master.push("--no-build")
    assert run.returncode == 1, run.stderr
    failed = run.one("push.failed")
    assert failed["path"] == str(data)
    assert failed["error"] == (
        f"not valid data: unable to parse data line {bad_line}: unrecognized leading character"
    )
    assert not run.named("push.start")
    for s, snap in zip(three, before, strict=True):
        assert s.snapshot() == snap
        assert served(s) == serial


def test_data_without_final_newline(lab: Lab, master: Master, three: list[Slave]) -> None:
    """A hand-edited data file that lacks its last newline is a clear error, no traceback."""
    before = [s.snapshot() for s in three]
    data = master.output / "data"
    data.write_bytes(data.read_bytes() + b"+www3.example.com:192.0.2.3")
    run = master.push("--no-build")
    assert run.returncode == 1, run.stderr
    assert "newline" in run.one("push.failed")["error"]
    assert [s.snapshot() for s in three] == before


def test_oversize_data_refused(lab: Lab, master: Master, three: list[Slave]) -> None:
    """A slave whose receiver runs with --max-size refuses a bigger push; the others take it."""
    small = three[0]
    small.sshd.set_authorized_keys(lab.authorized_key(small.root, "--max-size", "100"))
    old = master.built_serial()
    before = small.snapshot()
    new = bump(master)
    run = master.push("--no-build")
    assert run.returncode == 3, run.stderr
    failed = run.one("push.failed", slave=small.name)
    assert failed["exit_status"] == 1
    assert any("over the size cap of 100 bytes" in x for x in run.lines(small.name, "stderr"))
    assert small.snapshot() == before
    assert served(small) == old
    for s in three[1:]:
        run.one("push.done", slave=s.name)
        assert served(s) == new


def test_unknown_verb_refused(lab: Lab, master: Master, three: list[Slave]) -> None:
    """A dnsmaster receiver configured as legacy gets the verb update-dns, and refuses it."""
    serial = master.built_serial()
    master.configure(three, legacy=three[:1])
    before = three[0].snapshot()
    bump(master)
    run = master.push("--no-build")
    assert run.returncode == 3, run.stderr
    failed = run.one("push.failed", slave=three[0].name)
    assert failed["exit_status"] == 2
    assert any(
        "refused: unknown command 'update-dns'" in line
        for line in run.lines(three[0].name, "stderr")
    )
    assert three[0].snapshot() == before
    assert served(three[0]) == serial
    assert len(run.named("push.done")) == 2


def test_changed_host_key_sends_nothing(lab: Lab, master: Master, three: list[Slave]) -> None:
    """A slave whose host key changed is never logged in to; the others are pushed to."""
    moved = three[2]
    old = master.built_serial()
    moved.sshd.regenerate_host_key()
    before = moved.snapshot()
    logins = accepted_logins(moved)
    new = bump(master)
    run = master.push("--no-build")
    assert run.returncode == 3, run.stderr
    failed = run.one("push.failed", slave=moved.name)
    assert failed["level"] == "critical"
    assert failed["phase"] == "hostkey"
    assert failed["retryable"] is False
    error = failed["error"]
    # Not "unknown": known_hosts has a key for it, on line 3, and that key is not this one.
    assert error.startswith(f"host key CHANGED: [{moved.address}]:{moved.port} now presents ")
    assert f"{lab.known_hosts}:3 holds ssh-ed25519 SHA256:" in error
    assert "exit_status" not in failed
    assert not run.named("push.line", slave=moved.name)
    assert accepted_logins(moved) == logins  # never authenticated: nothing was sent
    assert moved.snapshot() == before
    assert served(moved) == old
    for s in three[:2]:
        assert served(s) == new
    # The operator accepts the new key exactly as the message says: the next push reaches it.
    accept = error.split("accept it with `", 1)[1].split("`", 1)[0]
    subprocess.run(accept, shell=True, check=True, capture_output=True, timeout=60)
    run = master.push("--no-build")
    assert run.returncode == 0, run.stderr
    assert served(moved) == new


def test_one_slave_down(lab: Lab, master: Master, three: list[Slave]) -> None:
    """sshd stopped on one slave: exit 3, the two others take the push."""
    down = three[1]
    old = master.built_serial()
    down.sshd.stop()
    before = down.snapshot()
    new = bump(master)
    run = master.push("--no-build")
    assert run.returncode == 3, run.stderr
    failed = run.one("push.failed", slave=down.name)
    # Refused at once, not a timeout: a down slave costs the push no waiting.
    assert (
        failed["error"] == f"cannot connect to {down.address} port {down.port}: connection refused"
    )
    assert failed["phase"] == "connect"
    assert failed["retryable"] is True
    assert "timed out" not in failed["error"], failed
    for s in (three[0], three[2]):
        run.one("push.done", slave=s.name)
        assert served(s) == new
    assert run.one("push.end")["ok"] == 2
    assert down.snapshot() == before
    assert served(down) == old  # tinydns still up, serving what it had
    down.sshd.start()
    run = master.push("--no-build", "--slave", down.name)
    assert run.returncode == 0, run.stderr
    assert served(down) == new


#: How long the gated slave waits for the others before it gives up and fails the push
#: (below the configured push timeout of 60 s, so the failure is the gate's own words).
GATE_SECONDS = 45

GATE = """#!/bin/sh
# Start the receiver only once both other slaves have installed the new build:
# possible only if the master pushes to them while this slave is still waiting.
tries=0
until grep -qsF {mark} {first} && grep -qsF {mark} {second}; do
    tries=$((tries + 1))
    if [ "$tries" -gt {tries} ]; then
        echo "gate: the other slaves did not get the build while this one waited" >&2
        exit 1
    fi
    sleep 0.1
done
exec {command} "$@"
"""


def test_slow_slave_does_not_delay_the_others(lab: Lab, master: Master, three: list[Slave]) -> None:
    """A slave that cannot finish until the other two have installed the build.

    Proven by the order of events, not by timing: a master that pushed one slave
    after another, or waited for the slow one, would never open its gate.
    """
    slow, others = three[0], three[1:]  # first in the config: a sequential push starts there
    www = "192.0.2.123"
    gate = script(
        lab.workdir / "gated-dnsmaster",
        GATE.format(
            mark=shlex.quote(f"+www.{ZONE}:{www}"),
            first=shlex.quote(str(others[0].root / "data")),
            second=shlex.quote(str(others[1].root / "data")),
            tries=GATE_SECONDS * 10,
            command=shlex.quote(str(lab.forced_command)),
        ),
    )
    slow.sshd.set_authorized_keys(forced_command(lab, slow.root, gate))
    new = bump(master, www)
    run = master.push("--no-build")
    assert run.returncode == 0, run.stderr
    assert not run.lines(slow.name, "stderr"), run.lines(slow.name, "stderr")
    assert {e["slave"] for e in run.named("push.done")} == {s.name for s in three}
    for s in three:
        assert served(s) == new
        assert s.tinydns.answer(f"www.{ZONE}", "A") == [www]


def receivers_of(slave: Slave, verb: str) -> list[int]:
    """The receivers on ``slave`` that run ``verb`` (their forced command's request)."""
    found = []
    for pid in slave.receivers():
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if any(e.startswith(f"SSH_ORIGINAL_COMMAND={verb}".encode()) for e in environ):
                found.append(pid)
    return found


def test_cut_connection_installs_nothing(
    lab: Lab, master: Master, one: Slave, tmp_path: Path
) -> None:
    """A large push; the slave's sshd sessions are killed mid-transfer: nothing installed."""
    victim = one
    old = master.built_serial()
    before = victim.snapshot()
    master.configure([victim])
    data = master.output / "data"
    # 80 MB of comment lines after the real data: a transfer that takes a while.
    filler = b"#" + b"x" * 1022 + b"\n"
    with data.open("ab") as f:
        for _ in range(80 * 1024):
            f.write(filler)
    proc = subprocess.Popen(
        master.argv("--no-build"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=master.env(),
    )
    try:
        # The receiver of the data: the push may have started another verb ahead (a
        # delta, which this one is too large for), closed unfed.
        wait_for(lambda: receivers_of(victim, "push"), 60, "the receiver to start")
        # The push is stopped while its sessions are killed: on a quiet machine the
        # 80 MB cross loopback in well under a second, and the receiver must not get
        # to the end of the stream (where it would judge the data) before the cut.
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for pid in sshd_children(victim):
                if pid not in victim.receivers():
                    # The session may end between the listing and the kill.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaped, and its pipes closed on every path
    victim.wait_receivers_gone()
    assert "Traceback" not in stderr, stderr
    events = parse_json_log(stderr)
    assert proc.returncode == 3, stderr
    failed = [e for e in events if e["event"] == "push.failed"]
    assert [e["slave"] for e in failed] == [victim.name]
    # Lost (a FIN) or reset (an RST: the killed sshd left the stream's bytes unread).
    # A broken pipe too: the push was writing when the peer went.
    cuts = ("connection lost", "reset", "broken pipe")
    assert any(cut in failed[0]["error"].lower() for cut in cuts)
    assert not [e for e in events if e["event"] == "push.done"]
    assert victim.snapshot() == before
    assert served(victim) == old


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_truncated_stream_over_asyncssh(
    lab: Lab, master: Master, one: Slave, fraction: float
) -> None:
    """Part of a sealed stream, then the connection aborted: the receiver installs nothing."""
    from dnsmaster.core.stream import seal  # noqa: PLC0415

    victim = one
    old = master.built_serial()
    before = victim.snapshot()
    bump(master)
    data = (master.output / "data").read_bytes()
    whole = data + seal(data)

    async def cut() -> None:
        async with asyncssh.connect(
            victim.address,
            port=victim.port,
            username=lab.user,
            client_keys=[str(lab.key)],
            known_hosts=str(lab.known_hosts),
            agent_path=None,
            config=[],
        ) as conn:
            proc = await conn.create_process("push", encoding=None)
            proc.stdin.write(whole[: int(len(whole) * fraction)])
            await proc.stdin.drain()
            wait_for(victim.receivers, 10, "the receiver to start")
            conn.abort()

    asyncio.run(cut())
    victim.wait_receivers_gone()
    assert victim.snapshot() == before
    assert served(victim) == old


# --------------------------------------------------------------------------- legacy


UPDATE_DNS = """#!/bin/sh
# The classic update-dns forced command: plain data on stdin, compiled in place.
cd {root} || exit 111
cat > data.new && mv data.new data && PATH=/usr/sbin:/usr/bin:/sbin:/bin exec tinydns-data
"""


def test_legacy_slave_gets_plain_data(lab: Lab, master: Master, three: list[Slave]) -> None:
    old_style = three[2]
    update_dns = script(lab.workdir / "update-dns", UPDATE_DNS.format(root=old_style.root))
    pubkey = lab.pubkey.read_text().strip()
    old_style.sshd.set_authorized_keys(f'restrict,command="{update_dns}" {pubkey}')
    master.configure(three, legacy=[old_style])
    new = bump(master)
    run = master.push("--no-build")
    assert run.returncode == 0, run.stderr
    data = (master.output / "data").read_bytes()
    assert old_style.installed() == data  # no trailer line
    assert served(old_style) == new
    assert old_style.tinydns.answer(f"www.{ZONE}", "A") == ["192.0.2.2"]
    assert run.one("push.done", slave=old_style.name)["bytes"] == len(data)
    for s in three[:2]:
        assert served(s) == new
        assert s.installed() != data  # the dnsmaster receivers keep the trailer
