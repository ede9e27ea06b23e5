"""Errors that say what to do: host keys, the receiver's reason, a slave that floods.

The real tests drive :class:`dnsmaster.transport.ssh.SshChannel` in this process, one channel
for several pushes as the daemon does, against the lab's OpenSSH sshd; the flood
and the pure pieces also run without root; one test runs the daemon and reads the
receiver's reason back from ``dnsmaster status``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster import errors
from dnsmaster.config import Config, Slave
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.errors import (
    DnsmasterError,
    HostKeyChanged,
    HostKeyError,
    HostKeyUnknown,
    SlaveError,
)
from dnsmaster.master.payload import Offer
from dnsmaster.master.pushing import PushResult, push_one
from dnsmaster.protocol import NEEDED, receiver_reason
from dnsmaster.sshlib import asyncssh
from dnsmaster.transport.channel import (
    MAX_LINE,
    MAX_OUTPUT_BYTES,
    MAX_OUTPUT_LINES,
    fetch_receiver,
    fetch_status,
)
from dnsmaster.transport.hostkeys import classify_host_key, known_entries
from dnsmaster.transport.local import LocalChannel
from dnsmaster.transport.ssh import SshChannel
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import DaemonProcess, config_text

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab
    from tests.lab.realworld import Slave as LabSlave


PROJECT = Path(__file__).resolve().parents[2]
ZONE = "example.com"


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local receivers (subprocesses) import this checkout of dnsmaster."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{PROJECT}:{path}" if path else str(PROJECT))


def zone_data(serial: int, www: str = "192.0.2.1") -> bytes:
    source = f".{ZONE}:127.0.0.1:a\n+www.{ZONE}:{www}\n".encode()
    return assemble([compile_source("zones.x", source)], serial).data


class Lines:
    """An on_line sink that remembers every line, and the bytes cut from each."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.truncated: list[int] = []

    def __call__(self, slave: str, stream: str, line: str, truncated: int = 0) -> None:
        self.seen.append((slave, stream, line))
        self.truncated.append(truncated)

    def on(self, stream: str) -> list[tuple[str, int]]:
        """The lines seen on ``stream``, each with the bytes cut from it."""
        cuts = zip(self.seen, self.truncated, strict=True)
        return [(line, cut) for (_, s, line), cut in cuts if s == stream]


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- the tree


class TestTree:
    def test_every_error_is_a_dnsmaster_error(self) -> None:
        """Every exported class derives from DnsmasterError: nothing lives outside the tree."""
        classes = [getattr(errors, name) for name in errors.__all__]
        for cls in classes:
            if inspect.isclass(cls):
                assert issubclass(cls, DnsmasterError), cls

    def test_slave_errors_apart_from_data_errors(self) -> None:
        """A slave's failure is never a data error, and the reverse."""
        for cls in (HostKeyChanged, HostKeyUnknown, HostKeyError):
            assert issubclass(cls, SlaveError)
        for data in (errors.DataError, errors.DataErrors, errors.TinydnsDataError):
            assert not issubclass(data, SlaveError)

    def test_slave_error_defaults(self) -> None:
        """SlaveError(slave, reason, exit_status): a receiver's refusal, retryable by default."""
        exc = SlaveError("s1", "bad data (exit 1)", 1)
        assert isinstance(exc, SlaveError)
        assert (exc.slave, exc.reason, exc.exit_status) == ("s1", "bad data (exit 1)", 1)
        assert (exc.phase, exc.retryable) == ("receive", True)
        assert str(exc) == "slave s1: bad data (exit 1)"

    def test_host_key_errors_are_never_retryable(self) -> None:
        changed = HostKeyChanged(
            "s1", "changed", host="h", port=22, known_hosts="/kh", line=3, known="k"
        )
        unknown = HostKeyUnknown("s1", "unknown", host="h", port=22, known_hosts="/kh")
        for exc in (changed, unknown):
            assert exc.phase == "hostkey"
            assert not exc.retryable
        assert changed.lines == (3,)


# --------------------------------------------------------------------------- the reason


@pytest.mark.parametrize(
    ("last", "status", "expected"),
    [
        (
            "dnsmaster receive: refused: data does not compile: line 3: bad",
            1,
            "data does not compile: line 3: bad (exit 1)",
        ),
        (
            "dnsmaster receive: failed: /srv/dns: access denied",
            111,
            "/srv/dns: access denied (exit 111)",
        ),
        ("tinydns-data: fatal: unable to parse data line 4", 111, None),
        (None, 111, "receiver exited with status 111"),
        ("", 2, "receiver exited with status 2"),
        (None, -9, "receiver killed by signal 9"),
        ("oops", -9, "oops (receiver killed by signal 9)"),
        (None, None, "receiver ended without an exit status"),
    ],
)
def test_receiver_reason(last: str | None, status: int | None, expected: str | None) -> None:
    """The last stderr line without the receiver's prefix, and the exit status."""
    want = expected if expected is not None else f"{last} (exit {status})"
    assert receiver_reason(last, status) == want


def test_receiver_reason_is_capped() -> None:
    reason = receiver_reason("x" * 10_000, 1)
    assert len(reason) < 600
    assert reason.endswith("... (exit 1)")


# --------------------------------------------------------------------------- known_hosts


def _key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def _line(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key().decode().split()[:2])


def _hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _lab_slave(host: str, port: int) -> Slave:
    return Slave(name="s1", host=host, port=port, user="root")


class TestKnownHosts:
    """Unknown and changed keys, told apart by reading known_hosts as asyncssh does."""

    @pytest.fixture
    def keys(self) -> dict[str, asyncssh.SSHKey]:
        return {name: _key() for name in ("other", "old", "hashed", "plain", "revoked", "new")}

    @pytest.fixture
    def known_hosts(self, tmp_path: Path, keys: dict[str, asyncssh.SSHKey]) -> Path:
        path = tmp_path / "known_hosts"
        path.write_text(
            "# the slaves\n"
            f"other.example {_line(keys['other'])}\n"
            f"[10.0.0.9]:2222 {_line(keys['old'])}\n"
            f"{_hashed('[10.0.0.9]:2222')} {_line(keys['hashed'])}\n"
            f"10.0.0.9 {_line(keys['plain'])}\n"
            f"@revoked [10.0.0.9]:2222 {_line(keys['revoked'])}\n"
            "this is not a key line\n"
        )
        return path

    def test_entries_for_host_and_port(self, known_hosts: Path) -> None:
        """``[host]:port`` entries, plain and hashed; the port-less one only as a fallback."""
        found, revoked = known_entries(known_hosts, "10.0.0.9", 2222)
        assert [n for n, _ in found] == [3, 4]
        assert [n for n, _ in revoked] == [6]
        found, _ = known_entries(known_hosts, "10.0.0.9", 2223)
        assert [n for n, _ in found] == [5]
        assert known_entries(known_hosts, "10.0.0.8", 2222) == ([], [])
        assert known_entries(known_hosts.with_name("missing"), "10.0.0.9", 22) == ([], [])

    def test_changed(self, known_hosts: Path, keys: dict[str, asyncssh.SSHKey]) -> None:
        entries, revoked = known_entries(known_hosts, "10.0.0.9", 2222)
        exc = classify_host_key(
            _lab_slave("10.0.0.9", 2222),
            known_hosts,
            entries=entries,
            revoked=revoked,
            presented=keys["new"],
            reason="Host key is not trusted",
        )
        assert isinstance(exc, HostKeyChanged)
        assert (exc.line, exc.lines) == (3, (3, 4))
        assert exc.known_hosts == str(known_hosts)
        new = keys["new"].get_fingerprint("sha256")
        assert exc.presented == f"ssh-ed25519 {new}"
        assert exc.known == f"ssh-ed25519 {keys['old'].get_fingerprint('sha256')}"
        assert exc.reason.startswith(
            f"host key CHANGED: [10.0.0.9]:2222 now presents ssh-ed25519 {new}"
        )
        assert f"{known_hosts}:3 (also line 4) holds" in exc.reason
        assert exc.accept == (
            f"ssh-keygen -R '[10.0.0.9]:2222' -f {known_hosts}",
            f"ssh-keyscan -p 2222 -t ed25519 10.0.0.9 >> {known_hosts}",
        )
        assert f"`{exc.accept[0]} && {exc.accept[1]}`" in exc.reason

    def test_changed_without_the_presented_key(self, known_hosts: Path) -> None:
        entries, revoked = known_entries(known_hosts, "10.0.0.9", 2222)
        exc = classify_host_key(
            _lab_slave("10.0.0.9", 2222),
            known_hosts,
            entries=entries,
            revoked=revoked,
            presented=None,
            reason="Host key is not trusted",
        )
        assert isinstance(exc, HostKeyChanged)
        assert "presents another key" in exc.reason
        assert exc.presented is None

    def test_unknown(self, known_hosts: Path, keys: dict[str, asyncssh.SSHKey]) -> None:
        exc = classify_host_key(
            _lab_slave("10.0.0.8", 22),
            known_hosts,
            entries=[],
            revoked=[],
            presented=keys["new"],
            reason="Host key is not trusted",
        )
        assert isinstance(exc, HostKeyUnknown)
        assert exc.reason.startswith(f"host key unknown: {known_hosts} holds no key for 10.0.0.8,")
        assert exc.accept == (f"ssh-keyscan -t ed25519 10.0.0.8 >> {known_hosts}",)

    def test_revoked(self, known_hosts: Path, keys: dict[str, asyncssh.SSHKey]) -> None:
        entries, revoked = known_entries(known_hosts, "10.0.0.9", 2222)
        exc = classify_host_key(
            _lab_slave("10.0.0.9", 2222),
            known_hosts,
            entries=entries,
            revoked=revoked,
            presented=keys["revoked"],
            reason="Host key is revoked",
        )
        assert type(exc) is HostKeyError
        assert f"marked @revoked at {known_hosts}:6" in exc.reason
        assert not exc.retryable


# --------------------------------------------------------------------------- connect


async def test_refused_connect_says_connection_refused(tmp_path: Path) -> None:
    """Nothing listens: "connection refused", retryable, at once."""
    from tests.lab.realworld import free_port  # noqa: PLC0415

    port = free_port()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    key = tmp_path / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(key)
    config = Config(
        path=tmp_path / "c.toml",
        zones=tmp_path,
        output=tmp_path,
        state=tmp_path / "state",
        key=key,
        known_hosts=known_hosts,
    )
    channel = SshChannel(Slave(name="s1", host="127.0.0.1", port=port), config)
    result = await push_one(channel, b"", "x", 30, Lines())
    assert result.error == f"cannot connect to 127.0.0.1 port {port}: connection refused"
    assert (result.phase, result.retryable, result.exit_status) == ("connect", True, None)
    with pytest.raises(SlaveError) as raised:
        await fetch_status(channel, 30, Lines())
    assert raised.value.phase == "connect"

    # A recorded delta connects while the delta is computed: the same failure,
    # reported the same way, and no reason to ask the slave (it cannot be reached).
    async def never(why: str) -> PushResult | Offer:
        raise AssertionError(f"asked: {why}")

    base = b"".join(b"+h%d.example:192.0.2.1\n" % i for i in range(200))
    offer = Offer(2, base, recorded=True)
    data = base + b"+new.example:192.0.2.2\n"
    recorded = await push_one(channel, data, "x", 30, Lines(), offer=offer, ask=never)
    assert (recorded.error, recorded.phase, recorded.mode) == (result.error, "connect", "delta")


# --------------------------------------------------------------------------- flood, locally

FLOOD = """#!/bin/sh
# A receiver that never stops talking: {size} bytes of short lines on stdout, one
# line of {long} bytes without end on stderr, then its reason, and a failure.
head -c {size} /dev/zero | tr '\\0' '\\n' | sed 's/^/chatter/'
head -c {long} /dev/zero | tr '\\0' x >&2
printf '\\ndnsmaster receive: refused: too chatty\\n' >&2
exit 1
"""


async def test_flooding_local_slave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Millions of lines: at most the caps logged, the rest drained and counted, memory
    bounded, and the exit status and the reason still arrive; stderr's budget is its
    own, so its 3 MB line is shown cut, and its reason."""
    flood = script(tmp_path / "flood", FLOOD.format(size=4_000_000, long=3_000_000))
    monkeypatch.setattr(sys, "executable", str(flood))  # LocalChannel runs sys.executable
    root = tmp_path / "root"
    root.mkdir()
    channel = LocalChannel(Slave(name="l1", transport="local", root=root))
    lines = Lines()
    tracemalloc.start()
    try:
        async with asyncio.timeout(120):  # a guard against a hang, not a measurement
            result = await push_one(channel, zone_data(1), "x", 120, lines)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.ok
    assert result.exit_status == 1
    assert result.error == "too chatty (exit 1)"
    assert result.output_cut
    out = [line for _, stream, line in lines.seen if stream == "stdout"]
    assert 0 < len(out) <= MAX_OUTPUT_LINES
    assert sum(len(line) for line in out) <= MAX_OUTPUT_BYTES
    assert set(out) == {"chatter"}
    assert result.output_dropped == 4_000_000 - len(out)
    err = lines.on("stderr")
    assert err == [
        ("x" * MAX_LINE, 3_000_000 - MAX_LINE),
        ("dnsmaster receive: refused: too chatty", 0),
    ]
    assert peak < 8 * 1024 * 1024, peak  # 4 MB of lines and a 3 MB line went through


async def test_long_lines_are_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line longer than MAX_LINE is shown cut; the next line is whole."""
    talk = script(
        tmp_path / "talk",
        "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x\necho\necho next\nexit 0\n",
    )
    monkeypatch.setattr(sys, "executable", str(talk))
    root = tmp_path / "root"
    root.mkdir()
    channel = LocalChannel(Slave(name="l1", transport="local", root=root))
    lines = Lines()
    result = await channel.run("status", None, lines)
    assert result.exit_status == 0
    assert [line for _, _, line in lines.seen] == ["x" * MAX_LINE, "next"]
    assert lines.truncated == [100_000 - MAX_LINE, 0]
    assert not result.cut


# --------------------------------------------------------------------------- the lab


def _config(lab: Lab, tmp_path: Path, slaves: list[LabSlave]) -> Config:
    return Config(
        path=tmp_path / "dnsmaster.toml",
        zones=tmp_path,
        output=tmp_path,
        state=tmp_path / "state",
        key=lab.key,
        known_hosts=lab.known_hosts,
        slaves=tuple(_ssh_slave(s) for s in slaves),
    )


def _ssh_slave(s: LabSlave) -> Slave:
    return Slave(name=s.name, host=s.address, port=s.port, user=s.sshd.user)


def _logins(slave: LabSlave) -> int:
    return slave.sshd.log_text().count("Accepted publickey")


def _fingerprint(slave: LabSlave) -> str:
    pub = slave.sshd.host_key.with_name(slave.sshd.host_key.name + ".pub")
    return asyncssh.read_public_key(str(pub)).get_fingerprint("sha256")


def _known_hosts_line(lab: Lab, slave: LabSlave) -> int:
    lines = lab.known_hosts.read_text().splitlines()
    return 1 + next(i for i, line in enumerate(lines) if line.startswith(f"[{slave.address}]:"))


async def test_rekeyed_slave_is_a_changed_host_key(lab: Lab, tmp_path: Path) -> None:
    """A slave re-keyed under a kept connection: the next push fails with the changed-key
    message naming known_hosts and its line, is not retryable, and drops the old session;
    once known_hosts holds the new key the same channel pushes again."""
    other, slave = lab(2)
    config = _config(lab, tmp_path, [other, slave])
    # recheck=0: check the host key before every reuse, not only after a minute.
    channel = SshChannel(_ssh_slave(slave), config, recheck=0)
    lines = Lines()
    try:
        first = await push_one(channel, zone_data(1_700_000_000), "a", 60, lines)
        assert first.ok, lines.seen
        kept = channel._conn
        assert kept is not None
        before = slave.snapshot()
        logins = _logins(slave)

        slave.sshd.regenerate_host_key()  # sshd restarts; the kept session lives on
        assert not kept.is_closed()
        failed = await push_one(channel, zone_data(1_700_000_001), "b", 60, lines)

        assert not failed.ok
        assert (failed.phase, failed.retryable, failed.exit_status) == ("hostkey", False, None)
        line = _known_hosts_line(lab, slave)
        assert failed.error is not None
        assert failed.error.startswith(
            f"host key CHANGED: [{slave.address}]:{slave.port} now presents "
            f"ssh-ed25519 {_fingerprint(slave)}, but {lab.known_hosts}:{line} holds "
        )
        assert "ssh-keygen -R" in failed.error
        assert kept.is_closed()  # the old session is dropped, not pushed to
        assert channel._conn is None
        assert _logins(slave) == logins  # the new sshd never saw a login
        assert slave.snapshot() == before

        # Asked for its status, it fails the same way, with the fields a daemon needs.
        with pytest.raises(HostKeyChanged) as raised:
            await fetch_status(channel, 60, lines)
        assert raised.value.known_hosts == str(lab.known_hosts)
        assert raised.value.line == line
        assert not raised.value.retryable

        lab.write_known_hosts()  # the operator accepts the new key
        again = await push_one(channel, zone_data(1_700_000_002), "c", 60, lines)
        assert again.ok, again.error
        assert _logins(slave) == logins + 1
        assert slave.tinydns.wait_serial(ZONE, 1_700_000_002) == 1_700_000_002
    finally:
        await channel.close()


async def test_kept_connection_until_known_hosts_changes(lab: Lab, tmp_path: Path) -> None:
    """A kept connection is reused (no new login, even with a host-key check before
    each reuse) until known_hosts changes; then it is dropped and verified anew."""
    (slave,) = lab(1)
    config = _config(lab, tmp_path, [slave])
    channel = SshChannel(_ssh_slave(slave), config, recheck=0)
    try:
        logins = _logins(slave)
        for serial in (1_700_000_000, 1_700_000_001):
            result = await push_one(channel, zone_data(serial), "a", 60, Lines())
            assert result.ok, result.error
        assert _logins(slave) == logins + 1  # one connection, checked but not logged in again
        kept = channel._conn
        assert kept is not None

        time.sleep(0.01)  # a new mtime, whatever the file system's clock granularity
        lab.known_hosts.write_text(lab.known_hosts.read_text())
        result = await push_one(channel, zone_data(1_700_000_002), "b", 60, Lines())
        assert result.ok, result.error
        assert kept.is_closed()
        assert _logins(slave) == logins + 2
    finally:
        await channel.close()


async def test_a_verb_begun_ahead(lab: Lab, tmp_path: Path) -> None:
    """begin() connects and starts a verb: a run of another verb closes it unfed (its
    receiver refuses an empty stream; the root is untouched), a run of the same verb
    feeds the process begun, on the one connection."""
    (slave,) = lab(1)
    config = _config(lab, tmp_path, [slave])
    channel = SshChannel(_ssh_slave(slave), config)
    try:
        logins = _logins(slave)
        before = slave.snapshot()
        channel.begin("push")
        await channel.warm()
        status = await channel.run("status", None, Lines())
        assert status.exit_status == 0, status
        slave.wait_receivers_gone()
        assert slave.snapshot() == before

        sessions = slave.sshd.log_text().count("Starting session")
        channel.begin("status")
        await channel.warm()
        assert channel._ready is not None
        again = await channel.run("status", None, Lines())
        assert again == status
        assert channel._ready is None
        # The run read the session begun ahead: no other was opened.
        assert slave.sshd.log_text().count("Starting session") == sessions + 1
        assert _logins(slave) == logins + 1
    finally:
        await channel.close()


async def test_unknown_host_key_says_how_to_add_it(lab: Lab, tmp_path: Path) -> None:
    """No entry for the slave: "unknown", not "changed"; its command adds the key."""
    (slave,) = lab(1)
    lab.known_hosts.write_text("")
    config = _config(lab, tmp_path, [slave])
    channel = SshChannel(_ssh_slave(slave), config)
    try:
        with pytest.raises(HostKeyUnknown) as raised:
            await fetch_status(channel, 60, Lines())
        exc = raised.value
        assert exc.presented == f"ssh-ed25519 {_fingerprint(slave)}"
        assert exc.reason.startswith(
            f"host key unknown: {lab.known_hosts} holds no key for [{slave.address}]:{slave.port}"
        )
        result = await push_one(channel, zone_data(1_700_000_000), "a", 60, Lines())
        assert (result.phase, result.retryable) == ("hostkey", False)

        for command in exc.accept:
            subprocess.run(command, shell=True, check=True, capture_output=True, timeout=60)
        result = await push_one(channel, zone_data(1_700_000_000), "a", 60, Lines())
        assert result.ok, result.error
    finally:
        await channel.close()


FLOOD_OVER_SSH = """#!/bin/sh
# The forced command of a slave that floods: 24 MB of "y" lines (half again the
# master's memory bound below; kept as lines, a tenth of them would pass it), then
# its reason.
yes | head -c 24000000
echo "dnsmaster receive: refused: cannot stop talking" >&2
exit 1
"""


async def test_flooding_slave_over_ssh(lab: Lab, tmp_path: Path) -> None:
    """24 MB of output over SSH: the push ends with the slave's exit status and reason,
    at most the caps are passed on, and the master's memory stays small."""
    (slave,) = lab(1)
    flood = script(lab.workdir / "flood", FLOOD_OVER_SSH)
    slave.sshd.set_authorized_keys(
        lab.authorized_key(slave.root).replace(str(lab.forced_command), str(flood))
    )
    config = _config(lab, tmp_path, [slave])
    channel = SshChannel(_ssh_slave(slave), config)
    lines = Lines()
    tracemalloc.start()
    try:
        async with asyncio.timeout(300):  # a guard against a hang, not a measurement
            result = await push_one(channel, zone_data(1_700_000_000), "a", 300, lines)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await channel.close()
    assert not result.ok
    assert result.exit_status == 1
    assert result.error == "cannot stop talking (exit 1)"
    assert result.output_cut
    assert result.output_dropped == 12_000_000 - MAX_OUTPUT_LINES
    out = [line for _, stream, line in lines.seen if stream == "stdout"]
    assert len(out) == MAX_OUTPUT_LINES
    assert set(out) == {"y"}
    assert ("stderr", "dnsmaster receive: refused: cannot stop talking") in {
        (stream, line) for _, stream, line in lines.seen
    }
    assert peak < 16 * 1024 * 1024, peak


NOISY_WRAPPER = """#!/bin/sh
# A forced command that talks on stderr before it runs the receiver, as a login
# banner, a wrapper's tracing or a motd would: {noise}
{noise}
exec {receiver} "$@"
"""

NOISE = {
    # More lines than a stream's budget, all before the status line on stdout.
    "lines": "seq 1 1500 | sed 's/^/noise /' >&2",
    # One line longer than asyncssh's and asyncio's 64 KiB buffer limits.
    "long": "head -c 100000 /dev/zero | tr '\\0' e >&2; echo >&2",
}


@pytest.mark.parametrize("noise", sorted(NOISE))
async def test_stderr_noise_does_not_hide_the_receiver(
    lab: Lab, tmp_path: Path, noise: str
) -> None:
    """1,500 lines, or one 100 KB line, on stderr before the receiver speaks: its status
    line is still read (stdout has a budget of its own), the push installs, and the
    noise is logged within stderr's budget, a long line cut with what was cut."""
    (slave,) = lab(1)
    wrapper = script(
        lab.workdir / "noisy",
        NOISY_WRAPPER.format(noise=NOISE[noise], receiver=lab.forced_command),
    )
    slave.sshd.set_authorized_keys(
        lab.authorized_key(slave.root).replace(str(lab.forced_command), str(wrapper))
    )
    channel = SshChannel(_ssh_slave(slave), _config(lab, tmp_path, [slave]))
    lines = Lines()
    try:
        receiver = await fetch_receiver(channel, 60, lines)
        assert receiver.protocol is not None
        assert receiver.protocol >= NEEDED
        result = await push_one(
            channel, zone_data(1_700_000_000), "a", 60, lines, offer=Offer(receiver.protocol)
        )
    finally:
        await channel.close()
    assert result.ok, result.error
    assert slave.tinydns.wait_serial(ZONE, 1_700_000_000) == 1_700_000_000
    err = lines.on("stderr")
    if noise == "lines":
        assert result.output_cut
        assert len(err) == 2 * MAX_OUTPUT_LINES  # a budget each run: status, push
        assert err[0] == ("noise 1", 0)
        assert result.output_dropped == 1500 - MAX_OUTPUT_LINES
    else:
        shown = [(len(line), set(line), cut) for line, cut in err]
        assert shown == [(MAX_LINE, {"e"}, 100_000 - MAX_LINE)] * 2
        assert not result.output_cut


# --------------------------------------------------------------------------- status


def _dnsmaster_status(config: Path) -> str:
    """``dnsmaster status``'s output, run by its main() in this process: it is polled,
    and what it shows is read from the state file either way."""
    proc = dnsmaster_here("status", "--config", str(config), timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout + proc.stderr


def _daemon_config(lab: Lab, tmp_path: Path, slave: LabSlave) -> Path:
    """A config for the daemon with ``slave`` alone, retries far apart."""
    zones, output = tmp_path / "zones", tmp_path / "out"
    for d in (zones, output):
        d.mkdir()
    (zones / "header").write_text("# test\n")
    (zones / f"zones.{ZONE}").write_text(f".{ZONE}:127.0.0.1:a\n+www.{ZONE}:192.0.2.1\n")
    config = tmp_path / "dnsmaster.toml"
    config.write_text(
        config_text(
            zones=zones,
            output=output,
            state=tmp_path / "state.json",
            top={"key": lab.key, "known_hosts": lab.known_hosts, "user": lab.user},
            daemon={"debounce": 0.1, "retry_initial": 30.0, "retry_max": 60.0, "verify": False},
            push={"connect_timeout": 5.0, "timeout": 60.0},
            slaves=[{"name": slave.name, "host": slave.address, "port": slave.port}],
        )
    )
    return config


def test_daemon_pushes_through_stderr_noise(lab: Lab, tmp_path: Path) -> None:
    """The daemon's first contact with a slave whose forced command prints 1,500 lines on
    stderr first: the receiver is recognised and the push installs (it is not held as
    "not dnsmaster receive"); the log says how many noise lines it dropped."""
    (slave,) = lab(1)
    wrapper = script(
        lab.workdir / "noisy",
        NOISY_WRAPPER.format(noise=NOISE["lines"], receiver=lab.forced_command),
    )
    slave.sshd.set_authorized_keys(
        lab.authorized_key(slave.root).replace(str(lab.forced_command), str(wrapper))
    )
    daemon = DaemonProcess(_daemon_config(lab, tmp_path, slave)).start()
    try:
        done = daemon.wait("push.done", timeout=60.0, slave=slave.name)
        assert not daemon.find("push.failed"), daemon.dump()
        cut = daemon.wait("push.output_cut", timeout=10.0, slave=slave.name)
        assert cut["dropped_lines"] == 1500 - MAX_OUTPUT_LINES
        assert slave.tinydns.wait_serial(ZONE, done["serial"]) == done["serial"]
    finally:
        daemon.kill()


def test_receiver_reason_reaches_status(lab: Lab, tmp_path: Path) -> None:
    """The daemon pushes to a slave whose receiver refuses the data (over its size cap):
    the receiver's reason, not "exited with status 1", is the push.failed error and
    what ``dnsmaster status`` shows for that slave."""
    (slave,) = lab(1)
    slave.sshd.set_authorized_keys(lab.authorized_key(slave.root, "--max-size", "100"))
    config = _daemon_config(lab, tmp_path, slave)
    daemon = DaemonProcess(config).start()
    try:
        failed = daemon.wait("push.failed", timeout=60.0, slave=slave.name)
        reason = "data over the size cap of 100 bytes (--max-size)"
        assert failed["error"] == f"{reason} (exit 1)", failed
        assert (failed["phase"], failed["retryable"]) == ("receive", False)
        deadline = time.monotonic() + 20
        shown = _dnsmaster_status(config)
        while reason not in shown and time.monotonic() < deadline:
            time.sleep(0.2)
            shown = _dnsmaster_status(config)
        assert reason in shown, shown
        assert "exited with status" not in shown
    finally:
        daemon.kill()
