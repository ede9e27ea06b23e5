"""Smoke tests of the real-slave plumbing: OpenSSH client -> sshd -> dnsmaster receive -> tinydns.

Each slave is a real sshd (forced command from ``dnsmaster authorized-key``) and a
real tinydns on its own 127.0.1.N; the pushes go through the real ``ssh`` client with
the host key checked, and the result is read back over DNS with dnspython.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import pytest

from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


SERIAL = 1_700_000_000


def sealed(data: bytes) -> bytes:
    return data + seal(data)


def zone_data(serial: int, www: str = "192.0.2.1", zone: str = "example.com") -> bytes:
    source = f".{zone}:127.0.0.1:a\n+www.{zone}:{www}\n".encode()
    return assemble([compile_source("zones.x", source)], serial).data


@pytest.fixture
def slave(lab: Lab) -> Slave:
    """One running slave with zone_data(SERIAL) installed."""
    (one,) = lab(1)
    proc = lab.push(one, zone_data(SERIAL))
    assert proc.returncode == 0, proc.stderr.decode()
    assert one.tinydns.soa_serial("example.com") == SERIAL
    return one


def test_fresh_slave_serves_nothing(lab: Lab) -> None:
    """Before the first push there is no data.cdb, and tinydns stays silent."""
    (one,) = lab(1)
    assert one.snapshot() == {}
    with pytest.raises(dns.exception.Timeout):
        one.tinydns.query("example.com", "SOA", timeout=0.5)


def test_push_installs_and_tinydns_serves_it(lab: Lab, slave: Slave) -> None:
    """ssh ... push < sealed data: data and data.cdb installed, the new serial served at once."""
    newer = zone_data(SERIAL + 1, www="192.0.2.2")
    proc = lab.push(slave, newer)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("received bytes=")
    assert lines[-1].startswith("done sha256=")
    assert f"serial={SERIAL + 1}" in lines[-1]
    assert slave.installed() == sealed(newer)
    assert (slave.root / "data.cdb").read_bytes() == compile_data(sealed(newer), 1)
    assert slave.tinydns.soa_serial("example.com") == SERIAL + 1
    assert slave.tinydns.answer("www.example.com", "A") == ["192.0.2.2"]


def test_status_verb(lab: Lab, slave: Slave) -> None:
    proc = lab.ssh(slave, "status")
    assert proc.returncode == 0, proc.stderr.decode()
    line = proc.stdout.decode().strip()
    assert line.startswith("status sha256=")
    assert f"serial={SERIAL}" in line.split()


@pytest.mark.parametrize(
    "command",
    [("rm", "-rf", "/"), ("push; touch /tmp/dnsmaster-pwned",), ("status", "--root", "/")],
)
def test_unknown_verb_refused(lab: Lab, slave: Slave, command: tuple[str, ...]) -> None:
    """The forced command runs whatever is asked; only a known verb gets anywhere."""
    before = slave.snapshot()
    proc = lab.ssh(slave, *command, input=sealed(zone_data(SERIAL + 5)))
    assert proc.returncode == 2
    assert b"refused: unknown command" in proc.stderr
    assert proc.stdout == b""
    assert slave.snapshot() == before
    assert slave.tinydns.soa_serial("example.com") == SERIAL


def test_no_command_refused(lab: Lab, slave: Slave) -> None:
    before = slave.snapshot()
    proc = lab.ssh(slave)
    assert proc.returncode == 2
    assert b"no command given" in proc.stderr
    assert slave.snapshot() == before


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])
def test_truncated_stream_installs_nothing(lab: Lab, slave: Slave, fraction: float) -> None:
    before = slave.snapshot()
    whole = sealed(zone_data(SERIAL + 1))
    proc = lab.ssh(slave, "push", input=whole[: int(len(whole) * fraction)])
    assert proc.returncode == 1
    assert b"incomplete data" in proc.stderr
    assert slave.snapshot() == before
    assert slave.tinydns.soa_serial("example.com") == SERIAL


def test_cut_connection_installs_nothing(lab: Lab, slave: Slave) -> None:
    """The ssh client killed mid-stream: the receiver sees EOF and installs nothing."""
    before = slave.snapshot()
    whole = sealed(zone_data(SERIAL + 1))
    client = subprocess.Popen(
        lab.ssh_argv(slave, "push"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert client.stdin is not None
        client.stdin.write(whole[: len(whole) // 2])
        client.stdin.flush()
        # Wait for the receiver to be running, then cut the connection.
        for _ in range(200):
            if slave.receivers():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert slave.receivers(), "the receiver never started"
        client.send_signal(signal.SIGKILL)
    finally:
        client.communicate(timeout=10)
    slave.wait_receivers_gone()
    assert slave.snapshot() == before
    assert slave.tinydns.soa_serial("example.com") == SERIAL


def test_changed_host_key_refused(lab: Lab, slave: Slave) -> None:
    """A slave whose host key changed is not pushed to (StrictHostKeyChecking=yes)."""
    before = slave.snapshot()
    port = slave.port
    slave.sshd.regenerate_host_key()
    assert slave.sshd.port == port
    proc = lab.push(slave, zone_data(SERIAL + 1))
    assert proc.returncode == 255
    assert b"REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr
    assert slave.snapshot() == before
    lab.write_known_hosts()  # the operator accepts the new key
    assert lab.push(slave, zone_data(SERIAL + 1)).returncode == 0
    assert slave.tinydns.soa_serial("example.com") == SERIAL + 1


def test_slave_comes_back(lab: Lab, slave: Slave) -> None:
    """A stopped slave refuses connections; started again (same port and key) it takes pushes."""
    port, key = slave.port, slave.sshd.host_key_line()
    slave.stop()
    assert slave.sshd.pid is None
    assert slave.tinydns.pid is None
    proc = lab.push(slave, zone_data(SERIAL + 1))
    assert proc.returncode == 255
    slave.start()
    assert (slave.port, slave.sshd.host_key_line()) == (port, key)
    proc = lab.push(slave, zone_data(SERIAL + 1))
    assert proc.returncode == 0, proc.stderr.decode()
    assert slave.tinydns.soa_serial("example.com") == SERIAL + 1


def test_three_slaves_each_serve_their_own(lab: Lab, slaves: list[Slave]) -> None:
    assert len({s.address for s in slaves}) == 3  # each its own 127.0.1.N
    assert all(s.address.startswith("127.0.1.") for s in slaves)
    for i, s in enumerate(slaves):
        proc = lab.push(s, zone_data(SERIAL + i, www=f"192.0.2.{10 + i}"))
        assert proc.returncode == 0, proc.stderr.decode()
    for i, s in enumerate(slaves):
        assert s.tinydns.soa_serial("example.com") == SERIAL + i
        assert s.tinydns.answer("www.example.com", "A") == [f"192.0.2.{10 + i}"]


def test_master_logs_in_as_the_slave_account(lab: Lab, slave: Slave) -> None:
    """Not root: the receiver runs as the lab's account with a plain shell, owns what it
    installs, and root itself may not log in."""
    account = lab.account
    assert account.pw_uid != 0
    assert account.pw_shell == "/bin/sh"
    assert lab.user == account.pw_name
    installed = sorted(slave.root.iterdir())
    assert {p.name for p in installed} >= {"data", "data.cdb"}
    assert {(p.stat().st_uid, p.stat().st_gid) for p in installed} == {
        (account.pw_uid, account.pw_gid)
    }
    as_root = lab.ssh_argv(slave, "status")
    as_root[as_root.index(f"{lab.user}@{slave.address}")] = f"root@{slave.address}"
    proc = subprocess.run(as_root, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 255
    assert b"Permission denied" in proc.stderr
    assert "User root from 127.0.0.1 not allowed" in slave.sshd.log_text()


def test_lab_removes_its_directory(private_lab: Lab) -> None:
    """close() removes the lab's directory, which the account could reach."""
    lab = private_lab  # closed here: not the module's shared lab
    lab(1)
    assert lab.workdir.stat().st_mode & 0o005 == 0o005
    lab.close()
    assert not lab.workdir.exists()


@pytest.mark.usefixtures("accelerator")
def test_installed_receiver(tmp_path: Path) -> None:
    """receiver="installed": Debian's python3 runs a copy of the package with the C
    accelerator (the lab checks that it loads), and it installs what the bundle does."""
    from tests.lab.realworld import Lab  # noqa: PLC0415

    lab = Lab(tmp_path / "lab", receiver="installed")
    try:
        (one,) = lab(1)
        assert str(lab.workdir / "receiver") in lab.forced_command.read_text()
        data = zone_data(SERIAL)
        proc = lab.push(one, data)
        assert proc.returncode == 0, proc.stderr.decode()
        assert (one.root / "data.cdb").read_bytes() == compile_data(sealed(data), 1)
        assert one.tinydns.soa_serial("example.com") == SERIAL
    finally:
        lab.close()


def test_lab_stops_everything(private_lab: Lab) -> None:
    """close() stops every process it started, by PID."""
    lab = private_lab  # closed here: not the module's shared lab
    two = lab(2)
    procs = [p for s in two for p in (s.sshd.proc, s.tinydns.proc)]
    assert all(p is not None and p.poll() is None for p in procs)
    lab.close()
    assert all(p is not None and p.poll() is not None for p in procs)


@pytest.mark.usefixtures("sshd_bin")
def test_standalone_sshd(tmp_path: Path) -> None:
    """Sshd on its own: 127.0.0.1 by default, port and host key kept across stop/start."""
    from tests.lab.realworld import Sshd  # noqa: PLC0415

    sshd = Sshd(tmp_path / "sshd")
    try:
        sshd.start()
        line = sshd.host_key_line()
        assert line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")
        sshd.stop()
        assert not sshd.running
        sshd.start()
        assert sshd.host_key_line() == line
        sshd.regenerate_host_key()
        assert sshd.running
        assert sshd.host_key_line() != line
        assert "Server listening on 127.0.0.1" in sshd.log_text()
    finally:
        sshd.stop()
