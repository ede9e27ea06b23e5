"""SSH uses only the files the config names, whatever ``$HOME`` says.

svscan or runsvdir started from root's shell passes ``HOME=/root`` to the service,
and the daemon then runs as its own account (setuidgid, chpst -u). Left to its
defaults, asyncssh looked under that ``$HOME`` (``~/.ssh/config``, default keys and
identities, the agent, X.509 CA files); ``Path("/root/.ssh/crt").is_dir()`` raises
EACCES for any other account, and every slave failed with "cannot connect ...:
access denied". These tests push to a real lab slave as the lab's own (non-root)
account with ``HOME=/root``, and as root with a ``$HOME`` full of traps, traced with
strace; and they check that a local file the account cannot read is named, with the
account, as a local problem (phase ``local``), never as the slave's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import dnsmaster
from dnsmaster import config as configuration
from dnsmaster.commands import doctor
from dnsmaster.errors import SlaveError
from dnsmaster.transport.ssh import client_keys
from tests.conftest import require
from tests.lab.daemonrun import PROJECT, config_text

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


ZONES = ".example.com:127.0.0.1:a\n+www.example.com:192.0.2.1\n"

#: The venv's packages, for Debian's python3 run as the lab account: the master's own
#: interpreter (pyenv's, under /root, mode 0700) is out of that account's reach.
SITE = Path(dnsmaster.__file__).resolve().parents[1]
PACKAGES = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))

#: Run the CLI from the tree under test with the interpreter found in argv[0].
BOOT = (
    "import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; "
    "from dnsmaster.commands.main import main; sys.exit(main(sys.argv[1:]))"
)


@dataclass
class Master:
    """A master's files in the lab's directory, owned by the lab account."""

    lab: Lab
    slave: Slave
    base: Path

    @property
    def config(self) -> Path:
        return self.base / "dnsmaster.toml"

    @property
    def key(self) -> Path:
        return self.base / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    def write(self, *, key: Path | None = None) -> None:
        s = self.slave
        top: dict[str, object] = {
            "key": key or self.key,
            "known_hosts": self.known_hosts,
            "user": self.lab.user,
        }
        self.config.write_text(
            config_text(
                zones=self.base / "zones",
                output=self.base / "out",
                state=self.base / "out" / "state.json",
                slaves=[{"name": s.name, "host": s.address, "port": s.port, "dns": s.address}],
                top=top,
                push={"connect_timeout": 5.0, "timeout": 60.0},
            )
        )

    def argv(self, *argv: str) -> list[str]:
        """``dnsmaster ARGV`` as the lab account, by Debian's python3."""
        account = self.lab.account
        return [
            require("setpriv", "util-linux"),
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--init-groups",
            "--",
            "/usr/bin/python3",
            "-S",  # Debian's site-packages would mix in its own asyncssh or OpenSSL
            "-c",
            BOOT,
            str(SITE),
            str(PACKAGES),
            *argv,
        ]

    @staticmethod
    def env(home: str) -> dict[str, str]:
        """What a supervisor started from root's shell passes on."""
        return {"HOME": home, "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "USER": "root"}

    def as_account(self, *argv: str, home: str) -> subprocess.CompletedProcess[str]:
        """``dnsmaster ARGV`` as the lab account, with ``HOME``."""
        return subprocess.run(
            self.argv(*argv),
            env=self.env(home),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def master(lab: Lab) -> Master:
    (slave,) = lab(1)
    base = lab.workdir / "master"
    (base / "zones").mkdir(parents=True)
    (base / "out").mkdir()
    (base / "zones" / "zones.example.com").write_text(ZONES)
    the_master = Master(lab, slave, base)
    shutil.copyfile(lab.key, the_master.key)
    shutil.copyfile(lab.known_hosts, the_master.known_hosts)
    the_master.write()
    uid, gid = lab.account.pw_uid, lab.account.pw_gid
    for path in [base, *base.rglob("*")]:
        os.chown(path, uid, gid)
    the_master.key.chmod(0o600)
    return the_master


def test_push_as_another_account_with_roots_home(master: Master) -> None:
    """HOME=/root (mode 0700) and a non-root account: the push still logs in."""
    proc = master.as_account("push", "--config", str(master.config), home="/root")
    assert proc.returncode == 0, proc.stderr
    assert "access denied" not in proc.stderr
    installed = master.slave.installed()
    assert installed is not None
    assert b"+www.example.com:192.0.2.1" in installed


def test_daemon_as_another_account_with_roots_home(master: Master, tmp_path: Path) -> None:
    """The daemon as the lab account with HOME=/root, as under svscan from a root
    shell with setuidgid: it pushes to the slave."""
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            master.argv("run", "--config", str(master.config)),
            env=master.env("/root"),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "event=push.done" not in log.read_text():
            assert daemon.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        daemon.terminate()
        daemon.wait(30)
    text = log.read_text()
    assert "phase=connect" not in text, text
    installed = master.slave.installed()
    assert installed is not None
    assert b"+www.example.com:192.0.2.1" in installed


def test_push_never_reads_home(master: Master, tmp_path: Path, strace_bin: str) -> None:
    """A $HOME whose ~/.ssh would send asyncssh elsewhere or break it: never opened."""
    strace = strace_bin
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "config").write_text("Host *\n  Port 1\n  User nobody\n  IdentityFile ~/.ssh/bogus\n")
    for name in ("id_ed25519", "id_ed25519.pub", "id_rsa", "ca-bundle.crt"):
        (ssh / name).write_text("not a key\n")
    (ssh / "known_hosts").mkdir()  # a directory: reading it fails even for root
    (ssh / "crt").write_text("")  # asyncssh wants a directory here
    trace = tmp_path / "trace"
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}
    env["PYTHONPATH"] = str(PROJECT)
    env["SSH_AUTH_SOCK"] = str(home / "agent.sock")
    argv = [sys.executable, "-m", "dnsmaster", "push", "--config", str(master.config)]
    proc = subprocess.run(
        [strace, "-f", "-e", "trace=%file", "-o", str(trace), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    touched = [line for line in trace.read_text().splitlines() if str(home) in line]
    assert touched == [], "\n".join(touched[:20])


def test_unreadable_key_names_file_and_account(master: Master) -> None:
    """A key the account cannot read: the file, the account and errno, before any login."""
    theirs = master.base / "root_key"
    shutil.copyfile(master.key, theirs)  # root's, mode 0600
    theirs.chmod(0o600)
    master.write(key=theirs)
    proc = master.as_account("push", "--config", str(master.config), home="/root")
    account = master.lab.account
    assert proc.returncode != 0
    expected = f"cannot read {theirs} as user {account.pw_name} (uid {account.pw_uid}): "
    assert expected in proc.stderr, proc.stderr
    assert "sshd" not in proc.stderr
    assert master.slave.installed() is None


#: As the account: load the config, then lose read access to one file, then connect.
LATER = """
import asyncio, os, sys
from pathlib import Path
from dnsmaster import config
from dnsmaster.master import pushing
from dnsmaster.errors import SlaveError
cfg = config.load(Path(sys.argv[1]))
Path(sys.argv[2]).chmod(0)
async def main():
    channel = pushing.channel_for(cfg.slaves[0], cfg)
    try:
        await channel.run("status", None, lambda *a: None)
    except SlaveError as exc:
        print(exc.phase, exc.retryable, exc.reason)
    finally:
        await channel.close()
asyncio.run(main())
"""


@pytest.mark.parametrize("which", ["key", "known_hosts"])
def test_file_unreadable_after_start(master: Master, which: str) -> None:
    """Made unreadable after the config was loaded: phase local, named, retried."""
    file = master.key if which == "key" else master.known_hosts
    account = master.lab.account
    boot = f"import sys; sys.path[:0] = [{str(SITE)!r}, {str(PACKAGES)!r}]\n"
    as_account = [
        require("setpriv", "util-linux"),
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--init-groups",
        "--",
    ]
    proc = subprocess.run(
        [*as_account, "/usr/bin/python3", "-S", "-c", boot + LATER, str(master.config), str(file)],
        env={"HOME": "/root", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = f"local True cannot read {file} as user {account.pw_name} (uid {account.pw_uid}): "
    assert proc.stdout.startswith(expected), proc.stdout


def passwd_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """This account's passwd entry says its home is ``home``; $HOME says elsewhere."""
    real = pwd.getpwuid(os.geteuid())
    entry = pwd.struct_passwd((real.pw_name, "x", real.pw_uid, real.pw_gid, "", str(home), "/"))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: entry)
    monkeypatch.setenv("HOME", "/nonexistent/not-this-one")


async def test_doctor_says_local_file(
    master: Master, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key configured and the account's default key unreadable: doctor names the
    file and the account under "local files", and never sends anyone to the slave's
    sshd log."""
    home = tmp_path / "home"
    (home / ".ssh" / "id_ed25519").mkdir(parents=True)  # unreadable even for root
    passwd_home(monkeypatch, home)
    lines = master.config.read_text().splitlines()
    master.config.write_text("\n".join(x for x in lines if not x.startswith("key = ")) + "\n")
    cfg = configuration.load(master.config)
    assert cfg.key is None
    checks = await doctor.check_all(cfg, timeout=10)
    failed = [c for c in checks if c.failed]
    assert [c.what for c in failed] == ["local files"], [c.line() for c in checks]
    assert failed[0].why.startswith(f"cannot read {home / '.ssh' / 'id_ed25519'} as user ")
    assert failed[0].why.endswith(": is a directory")
    assert "sshd" not in failed[0].line()


class TestDefaultKeys:
    """No key in the config: the account's own ~/.ssh/id_*, found through passwd."""

    def passwd_home(self, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
        passwd_home(monkeypatch, home)

    def config(self, tmp_path: Path) -> configuration.Config:
        (tmp_path / "known_hosts").write_text("")
        path = tmp_path / "dnsmaster.toml"
        path.write_text(
            config_text(
                zones=tmp_path / "zones",
                output=tmp_path / "out",
                state=tmp_path / "state.json",
                slaves=[{"name": "ns2", "host": "192.0.2.2"}],
                top={"known_hosts": tmp_path / "known_hosts"},
            )
        )
        return configuration.load(path)

    def test_found_in_passwd_home(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        key = home / ".ssh" / "id_ed25519"
        keygen = require("ssh-keygen", "openssh-client")
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.passwd_home(monkeypatch, home)
        cfg = self.config(tmp_path)
        assert len(client_keys(cfg.slaves[0], cfg)) == 1

    def test_none_is_a_local_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        home = tmp_path / "home"
        home.mkdir()
        self.passwd_home(monkeypatch, home)
        cfg = self.config(tmp_path)
        with pytest.raises(SlaveError) as caught:
            client_keys(cfg.slaves[0], cfg)
        assert caught.value.phase == "local"
        assert "no private key: key is not set in" in caught.value.reason
        assert str(home / ".ssh" / "id_ed25519") in caught.value.reason
