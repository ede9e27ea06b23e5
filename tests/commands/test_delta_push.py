"""Delta and compressed pushes on real slaves: OpenSSH's sshd, ``dnsmaster receive``,
tinydns.

The master is the real command line (``dnsmaster push`` and ``doctor`` by their
main() in process, ``dnsmaster run`` as a process); what a slave installs from a
delta is compared byte for byte with what a full push installs on another, and with
the master's own build. The pushes and builds that
only set a test up run in process (:mod:`tests.lab.recorder`), through the code the
command runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dnsmaster.config import Config
from dnsmaster.config import Slave as SlaveConfig
from dnsmaster.core import delta
from dnsmaster.core.stream import seal
from dnsmaster.master.payload import Offer
from dnsmaster.master.pushing import push_one
from dnsmaster.protocol import PROTOCOL
from dnsmaster.transport.ssh import SshChannel
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, DaemonProcess, config_text
from tests.lab.recorder import build_here, push_here

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


ZONE = "example.com"
NO_GUARD = "\n[guard]\nmax_removed = 1.0\nzones = false\n"


def zones_text(www: str = "192.0.2.1", zones: int = 200) -> str:
    """example.com (its www changes), and many other zones that do not."""
    lines = [f".{ZONE}:127.0.0.1:a\n+www.{ZONE}:{www}\n"]
    lines += [f".z{i}.example:127.0.0.1:a\n+www.z{i}.example:192.0.2.9\n" for i in range(zones)]
    return "".join(lines)


class Master:
    """A zones directory, its output, and a config naming some of the lab's slaves."""

    def __init__(self, lab: Lab, home: Path) -> None:
        self.lab = lab
        self.home = home
        self.zones = home / "zones"
        self.output = home / "out"
        self.config = home / "dnsmaster.toml"
        self.zones.mkdir(parents=True)
        self.output.mkdir()
        (self.zones / "header").write_text("# test zones\n")
        self.write()

    def write(self, www: str = "192.0.2.1") -> None:
        (self.zones / "zones.example").write_text(zones_text(www))

    def configure(self, slaves: Sequence[Slave], compress: str = "auto", **daemon: object) -> None:
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.home / "state.json",
                top={
                    "key": self.lab.key,
                    "known_hosts": self.lab.known_hosts,
                    "user": self.lab.user,
                },
                push={"connect_timeout": 5.0, "timeout": 60.0},
                daemon=daemon or None,
                slaves=[
                    {
                        "name": s.name,
                        "host": s.address,
                        "port": s.port,
                        "dns": s.address,
                        "compress": compress,
                    }
                    for s in slaves
                ],
            )
            + NO_GUARD
        )

    def push(self, *extra: str) -> list[dict[str, Any]]:
        """``dnsmaster push``; its log events (it must succeed). In this process, but
        from a test's running event loop (the command starts its own), as a process."""
        argv = ["push", "--config", str(self.config), "--log-format", "json", *extra]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            proc = dnsmaster_here(*argv)
        else:
            proc = subprocess.run(
                [sys.executable, "-m", "dnsmaster", *argv],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=str(PROJECT)),
                timeout=120,
                check=False,
            )
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        return [json.loads(line) for line in proc.stderr.splitlines()]

    def build(self) -> bytes:
        """A build, done in process as ``dnsmaster build`` does it (set-up, not under
        test); the new data (not pushed)."""
        build_here(self.config)
        return self.data()

    def data(self) -> bytes:
        return (self.output / "data").read_bytes()

    def serial(self) -> int:
        from dnsmaster.core.banner import previous_serial  # noqa: PLC0415

        serial = previous_serial(self.data()[:200])
        assert serial is not None
        return serial


def done(events: list[dict[str, Any]], slave: str) -> dict[str, Any]:
    found = [e for e in events if e["event"] == "push.done" and e["slave"] == slave]
    assert len(found) == 1, events
    return found[0]


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == name]


def pair(slave: Slave) -> tuple[bytes, bytes]:
    return (slave.root / "data").read_bytes(), (slave.root / "data.cdb").read_bytes()


@pytest.fixture
def master(lab: Lab, tmp_path: Path) -> Master:
    return Master(lab, tmp_path / "master")


def nothing(slave: str, stream: str, line: str, truncated: int = 0) -> None:
    pass


def channel(lab: Lab, master: Master, slave: Slave, compress: str = "on") -> SshChannel:
    config = Config(
        path=master.config,
        zones=master.zones,
        output=master.output,
        state=master.home / "state.json",
        key=lab.key,
        known_hosts=lab.known_hosts,
        slaves=(
            SlaveConfig(
                name=slave.name,
                host=slave.address,
                port=slave.port,
                user=lab.user,
                compress=compress,  # type: ignore[arg-type]
            ),
        ),
    )
    return SshChannel(config.slaves[0], config)


# --------------------------------------------------------------------------- dnsmaster push


@pytest.mark.parametrize("compress", ["on", "off"])
def test_delta_installs_what_a_full_push_installs(lab: Lab, master: Master, compress: str) -> None:
    """A one-line change: the first slave gets a delta from ``dnsmaster push`` (its
    build found in the master's archive), the second the full data by hand; both
    install the same data and data.cdb, and tinydns serves the new serial."""
    a, b = lab(2)
    master.configure([a, b], compress=compress)
    first = master.push()
    assert {done(first, s.name)["mode"] for s in (a, b)} == {"full"}
    assert done(first, a.name)["compressed"] is (compress == "on")

    master.write("192.0.2.2")
    events = master.push("--slave", a.name)
    pushed = done(events, a.name)
    assert (pushed["mode"], pushed["compressed"]) == ("delta", compress == "on")
    assert pushed["bytes"] < 2000 < len(master.data()) // 10
    assert not named(events, "push.delta_refused")
    assert any("rebuilt bytes=" in e.get("line", "") for e in named(events, "push.line"))

    data = master.data()
    proc = lab.push(b, data)
    assert proc.returncode == 0, proc.stderr
    assert pair(a) == pair(b)
    assert pair(a)[0] == data + seal(data)
    assert a.tinydns.wait_serial(ZONE, master.serial()) == master.serial()
    assert a.tinydns.answer(f"www.{ZONE}") == ["192.0.2.2"]


def test_hand_edited_slave_gets_a_full_push(lab: Lab, master: Master) -> None:
    """Data edited on the slave is no build the master kept: a full push repairs it."""
    (a,) = lab(1)
    master.configure([a])
    push_here(master.config)
    data = a.root / "data"
    data.write_bytes(data.read_bytes().replace(b"192.0.2.9", b"192.0.2.10", 1))
    master.write("192.0.2.2")
    events = master.push()
    assert done(events, a.name)["mode"] == "full"
    assert pair(a)[0] == master.data() + seal(master.data())


def test_unknown_build_gets_a_full_push(lab: Lab, master: Master) -> None:
    """A slave holding a build the master never made (another master's, older)."""
    (a,) = lab(1)
    master.configure([a])
    push_here(master.config)
    other = (
        b"# dnsmaster serial 1000 sources=" + b"0" * 64 + b" - elsewhere\n+x.example:192.0.2.5\n"
    )
    proc = lab.ssh(a, "push", "--force", input=other + seal(other))
    assert proc.returncode == 0, proc.stderr
    master.write("192.0.2.2")
    events = master.push()
    assert done(events, a.name)["mode"] == "full"
    assert pair(a)[0] == master.data() + seal(master.data())


def test_protocol_1_receiver_gets_plain_data(lab: Lab, master: Master) -> None:
    """A receiver that reports protocol 1 is served full, uncompressed, and named in a
    log line that suggests the upgrade; it is not parked."""
    (a,) = lab(1)
    # protocol 1 as an older receiver spoke it: this one's status line, rewritten.
    wrapper = lab.workdir / "bin" / "receiver-p1"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$SSH_ORIGINAL_COMMAND" = status ]; then\n'
        f'  "{lab.forced_command}" "$@" | sed "s/ protocol={PROTOCOL} / protocol=1 /"\n'
        "  exit 0\n"
        "fi\n"
        'case "$SSH_ORIGINAL_COMMAND" in push|"push --force") ;; *) exit 2 ;; esac\n'
        f'exec "{lab.forced_command}" "$@"\n'
    )
    wrapper.chmod(0o755)
    line = lab.authorized_key(a.root)
    a.sshd.set_authorized_keys(line.replace(str(lab.forced_command), str(wrapper)))
    master.configure([a], compress="on")
    push_here(master.config)
    master.write("192.0.2.2")
    events = master.push()
    pushed = done(events, a.name)
    assert (pushed["mode"], pushed["compressed"]) == ("full", False)
    (old,) = named(events, "push.receiver_old")
    assert (old["slave"], old["protocol"]) == (a.name, 1)
    assert "upgrade its receiver to protocol 2" in old["hint"]
    assert pair(a)[0] == master.data() + seal(master.data())
    doctor = dnsmaster_here("doctor", "--config", str(master.config))
    warned = [line for line in doctor.stdout.splitlines() if "receiver protocol" in line]
    assert len(warned) == 1, doctor.stdout
    assert warned[0].startswith("WARN")
    assert "protocol 1: it takes full pushes only" in warned[0]


# --------------------------------------------------------------------------- the push record


def debug_log(master: Master) -> None:
    """Log at debug level, where the receiver's ``status`` lines are logged."""
    with master.config.open("a") as f:
        f.write('\n[log]\nlevel = "debug"\n')


def asked(events: list[dict[str, Any]], slave: Slave) -> bool:
    """Whether the push asked the slave's receiver ``status``."""
    return any(e["slave"] == slave.name for e in named(events, "status.line"))


def test_next_push_sends_its_delta_without_asking(lab: Lab, master: Master) -> None:
    """``dnsmaster push`` records what it installed; the next one sends the delta
    against it at once (no ``status`` session), and the slave serves the build."""
    (a,) = lab(1)
    master.configure([a], compress="on")
    debug_log(master)
    first = master.push()
    assert asked(first, a)
    record = json.loads((master.output / ".dnsmaster-builds" / "pushed").read_text())
    sha256 = hashlib.sha256(master.data()).hexdigest()
    assert record["slaves"] == {a.name: {"sha256": sha256, "protocol": PROTOCOL}}
    for www in ("192.0.2.2", "192.0.2.3"):
        master.write(www)
        events = master.push()
        pushed = done(events, a.name)
        assert (pushed["mode"], pushed["compressed"]) == ("delta", True)
        assert not asked(events, a)
        assert not named(events, "push.record_stale")
        assert pair(a)[0] == master.data() + seal(master.data())
        assert a.tinydns.wait_serial(ZONE, master.serial()) == master.serial()


def test_stale_record_asks_the_slave(lab: Lab, master: Master) -> None:
    """The slave got another kept build since (pushed by other means): the recorded
    base is refused, the slave is asked, and the delta goes against what it holds."""
    (a,) = lab(1)
    master.configure([a], compress="on")
    debug_log(master)
    push_here(master.config)
    master.write("192.0.2.2")
    other = master.build()
    proc = lab.push(a, other)
    assert proc.returncode == 0, proc.stderr
    master.write("192.0.2.3")
    events = master.push()
    (stale,) = named(events, "push.record_stale")
    assert stale["slave"] == a.name
    assert stale["error"].startswith("delta: base mismatch"), stale
    assert asked(events, a)
    pushed = done(events, a.name)
    assert (pushed["mode"], pushed["compressed"]) == ("delta", True)
    assert not named(events, "push.delta_refused")
    assert pair(a)[0] == master.data() + seal(master.data())


def test_receiver_that_lost_the_delta_verb_is_asked(lab: Lab, master: Master) -> None:
    """A slave recorded as protocol 2 whose receiver now speaks protocol 1 refuses the
    delta verb (exit 2): it is asked, named as old, and gets the plain data."""
    (a,) = lab(1)
    master.configure([a], compress="on")
    push_here(master.config)
    wrapper = lab.workdir / "bin" / "receiver-p1-later"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$SSH_ORIGINAL_COMMAND" = status ]; then\n'
        f'  "{lab.forced_command}" "$@" | sed "s/ protocol={PROTOCOL} / protocol=1 /"\n'
        "  exit 0\n"
        "fi\n"
        'case "$SSH_ORIGINAL_COMMAND" in push|"push --force") ;; *) exit 2 ;; esac\n'
        f'exec "{lab.forced_command}" "$@"\n'
    )
    wrapper.chmod(0o755)
    line = lab.authorized_key(a.root)
    a.sshd.set_authorized_keys(line.replace(str(lab.forced_command), str(wrapper)))
    master.write("192.0.2.2")
    events = master.push()
    (stale,) = named(events, "push.record_stale")
    assert stale["error"] == "receiver exited with status 2", stale
    (old,) = named(events, "push.receiver_old")
    assert (old["slave"], old["protocol"]) == (a.name, 1)
    pushed = done(events, a.name)
    assert (pushed["mode"], pushed["compressed"]) == ("full", False)
    assert pair(a)[0] == master.data() + seal(master.data())
    # Not recorded as protocol 2 any more: the next push asks first.
    master.write("192.0.2.3")
    assert not named(master.push(), "push.record_stale")


# --------------------------------------------------------------------------- the stream itself


async def test_refused_delta_falls_back_to_full(lab: Lab, master: Master) -> None:
    """The master believes the slave holds a build it does not (edited under it):
    the delta is refused with its reason, and the full data follows at once."""
    (a,) = lab(1)
    master.configure([a])
    master.push()
    base = master.data()
    data = a.root / "data"
    data.write_bytes(data.read_bytes().replace(b"192.0.2.9", b"192.0.2.10", 1))
    master.write("192.0.2.2")
    master.build()
    refused: list[tuple[str, str]] = []
    ch = channel(lab, master, a)
    try:
        result = await push_one(
            ch,
            master.data(),
            "x",
            60,
            nothing,
            offer=Offer(2, base),
            on_delta_refused=lambda slave, why: refused.append((slave, why)),
        )
    finally:
        await ch.close()
    assert result.ok, result.error
    assert (result.mode, result.compressed) == ("full", True)
    assert refused == [(a.name, result.delta_refused)]
    assert result.delta_refused is not None
    assert result.delta_refused.startswith("delta: base mismatch: the installed data is ")
    assert pair(a)[0] == master.data() + seal(master.data())
    # what crossed: the refused delta and the full data, both compressed
    full = zlib.compress(master.data() + seal(master.data()), 6)
    assert result.bytes > len(full)


def test_cut_delta_installs_nothing(lab: Lab, master: Master) -> None:
    """A delta stream cut in its base reference, its body or its trailer, plain or
    compressed, installs nothing: the root is byte for byte the same. Over SSH, one
    cut in each region and one of the compressed stream (each an SSH login and a
    receiver); the cuts at every byte are tests/slave/test_delta_receive.py's, in
    process."""
    (a,) = lab(1)
    master.configure([a])
    push_here(master.config)
    base = master.data()
    master.write("192.0.2.2")
    new = master.build()
    stream = delta.make(base, new)
    header = stream.index(b"\n") + 1
    trailer = stream.rindex(b"#dnsmaster-end")
    before = a.snapshot()
    cuts = {
        "base reference": [header // 2],
        "body": [(header + trailer) // 2],
        "trailer": [len(stream) - 1],
    }
    for region, at in cuts.items():
        for cut in at:
            proc = lab.ssh(a, "delta", input=stream[:cut])
            assert proc.returncode in (1, 3), (region, cut, proc.stderr)
            assert proc.stderr.startswith(b"dnsmaster receive: refused: "), proc.stderr
            assert a.snapshot() == before, (region, cut)
    zipped = zlib.compress(stream)
    for cut in (len(zipped) // 2,):
        proc = lab.ssh(a, "delta --zlib", input=zipped[:cut])
        assert proc.returncode == 1, proc.stderr
        assert a.snapshot() == before
    proc = lab.ssh(a, "delta", input=stream)
    assert proc.returncode == 0, proc.stderr
    assert pair(a)[0] == new + seal(new)


async def test_compression_round_trips_binary_unsafe_bytes(lab: Lab, master: Master) -> None:
    """NUL, 0xff, CR, lone high bytes in the data: compressed full push and compressed
    delta install exactly those bytes."""
    (a,) = lab(1)
    master.configure([a])
    hostile = b"'bin.example.com:\x00\xff\r\x80\xc3(\xfe:300\n#\r\x00\xff\x80 a comment\n"
    one = b"# dnsmaster serial 5 sources=" + b"1" * 64 + b" - x\n.example.com:127.0.0.1:a\n"
    two = one.replace(b"serial 5", b"serial 6") + hostile
    ch = channel(lab, master, a)
    try:
        first = await push_one(ch, two, "x", 60, nothing, offer=Offer(2))
        assert (first.ok, first.mode, first.compressed) == (True, "full", True), first.error
        assert pair(a)[0] == two + seal(two)
        three = two.replace(b"serial 6", b"serial 7") + b"+www.example.com:192.0.2.1\n"
        second = await push_one(ch, three, "x", 60, nothing, offer=Offer(2, two))
        assert (second.ok, second.mode, second.compressed) == (True, "delta", True), second.error
        assert pair(a)[0] == three + seal(three)
    finally:
        await ch.close()
    assert a.tinydns.answer("bin.example.com", "TXT") != []


# --------------------------------------------------------------------------- the daemon


def test_daemon_sends_deltas_after_its_first_push(lab: Lab, master: Master) -> None:
    """``dnsmaster run``: the first push is full (nothing installed), every later one
    a delta against what it pushed last; the slave serves each build."""
    (a,) = lab(1)
    master.configure(
        [a], compress="on", debounce=0.2, max_delay=2.0, retry_initial=0.2, retry_max=1.0
    )
    daemon = DaemonProcess(master.config).start()
    try:
        built = daemon.wait("build.done", timeout=60)
        first = daemon.wait("push.done", timeout=60, serial=built["serial"])
        assert (first["mode"], first["compressed"]) == ("full", True)
        for www in ("192.0.2.2", "192.0.2.3"):
            mark = daemon.mark()
            master.write(www)
            built = daemon.wait("build.done", since=mark, timeout=60)
            pushed = daemon.wait("push.done", timeout=60, serial=built["serial"])
            assert (pushed["mode"], pushed["compressed"]) == ("delta", True), daemon.dump()
            assert pushed["bytes"] < 2000
            assert a.tinydns.wait_serial(ZONE, built["serial"]) == built["serial"]
            assert pair(a)[0] == master.data() + seal(master.data())
    finally:
        daemon.kill()


def test_push_by_hand_after_the_daemon_sends_a_delta(lab: Lab, master: Master) -> None:
    """The daemon records what it installed, as ``dnsmaster push`` does: a push by
    hand after the daemon's sends its delta against the daemon's build at once, with
    no ``base mismatch`` refusal on the way."""
    (a,) = lab(1)
    master.configure(
        [a], compress="on", debounce=0.2, max_delay=2.0, retry_initial=0.2, retry_max=1.0
    )
    debug_log(master)
    push_here(master.config)  # the record names this build; the daemon then replaces it
    daemon = DaemonProcess(master.config).start()
    try:
        mark = daemon.mark()
        master.write("192.0.2.2")
        built = daemon.wait("build.done", since=mark, timeout=60)
        daemon.wait("push.done", timeout=60, serial=built["serial"])
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    record = json.loads((master.output / ".dnsmaster-builds" / "pushed").read_text())
    assert record["slaves"][a.name]["sha256"] == hashlib.sha256(master.data()).hexdigest()
    master.write("192.0.2.3")
    events = master.push()
    assert not named(events, "push.record_stale")
    assert not named(events, "push.delta_refused")
    assert not asked(events, a)
    pushed = done(events, a.name)
    assert (pushed["mode"], pushed["compressed"]) == ("delta", True)
    assert pair(a)[0] == master.data() + seal(master.data())
