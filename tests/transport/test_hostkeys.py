"""The known_hosts policy without a server: entries found as asyncssh finds them, and
the verdict on a presented key. Against a real sshd: test_ssh.py and
tests/commands/test_doctor.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsmaster.config import Slave
from dnsmaster.errors import HostKeyChanged, HostKeyError, HostKeyUnknown
from dnsmaster.fsutil import file_signature
from dnsmaster.sshlib import asyncssh
from dnsmaster.transport.hostkeys import (
    HostKeyCheck,
    fingerprint,
    known_entries,
    known_hosts_name,
)

SLAVE = Slave(name="ns2", host="127.0.0.1", port=2222)


def public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


@pytest.fixture(scope="module")
def keys() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    return (
        asyncssh.generate_private_key("ssh-ed25519"),
        asyncssh.generate_private_key("ssh-ed25519"),
    )


def check(path: Path, presented: asyncssh.SSHKey | None) -> HostKeyCheck:
    entries, revoked = known_entries(path, SLAVE.host, SLAVE.port)
    return HostKeyCheck(SLAVE, path, entries, revoked, presented)


def test_known_hosts_name() -> None:
    """OpenSSH's spelling: the bare host on port 22, ``[host]:port`` elsewhere."""
    assert known_hosts_name("ns2", 22) == "ns2"
    assert known_hosts_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"


def test_known_key(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    """The presented key on line 2 is known there; comments and other hosts are skipped."""
    path = tmp_path / "known_hosts"
    path.write_text(f"# comment\n[127.0.0.1]:2222 {public(keys[0])}\nother {public(keys[1])}\n")
    assert check(path, keys[0]).known_lines == [2]


def test_changed_key(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    """Another key than the file's: CHANGED, naming the line and how to accept it."""
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:2222 {public(keys[0])}\n")
    found = check(path, keys[1])
    assert found.known_lines == []
    error = found.error()
    assert isinstance(error, HostKeyChanged)
    assert (error.line, error.presented) == (1, fingerprint(keys[1]))
    assert error.accept[0].startswith("ssh-keygen -R '[127.0.0.1]:2222'")


def test_unknown_key(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    """No entry for the slave: unknown, with the ssh-keyscan line that adds it."""
    path = tmp_path / "known_hosts"
    path.write_text("")
    error = check(path, keys[0]).error()
    assert isinstance(error, HostKeyUnknown)
    assert error.accept == (f"ssh-keyscan -p 2222 -t ed25519 127.0.0.1 >> {path}",)


def test_revoked_key(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    """A key marked @revoked is never known, even when also listed."""
    path = tmp_path / "known_hosts"
    key = public(keys[0])
    path.write_text(f"[127.0.0.1]:2222 {key}\n@revoked [127.0.0.1]:2222 {key}\n")
    found = check(path, keys[0])
    assert found.known_lines == []
    error = found.error()
    assert type(error) is HostKeyError
    assert "REVOKED" in error.reason


def test_file_signature(tmp_path: Path) -> None:
    """A rewrite changes the signature; a missing file has none."""
    path = tmp_path / "known_hosts"
    assert file_signature(path) is None
    path.write_text("a\n")
    before = file_signature(path)
    path.write_text("ab\n")
    assert file_signature(path) not in (None, before)
