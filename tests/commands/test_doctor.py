"""``dnsmaster doctor`` against real slaves (OpenSSH's sshd, the receiver, tinydns).

A healthy lab first: two slaves, a real config, the data pushed once; doctor must
say OK on every line and exit 0. Then each way a push can be broken, one at a time
on that lab: doctor must name the problem and its fix on a FAIL line and exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import dnsmaster
from dnsmaster import config
from dnsmaster.commands.doctor import check_all, summary
from dnsmaster.commands.doctor import main as doctor_main
from dnsmaster.commands.main import parser
from dnsmaster.master.checkup import Check
from tests.conftest import dnsmaster_here
from tests.lab.daemonrun import PROJECT, config_text
from tests.lab.recorder import push_here

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave


ZONES = ".example.com:127.0.0.1:a\n+www.example.com:192.0.2.1\n.example.net:127.0.0.1:a\n"


@dataclass
class Doctor:
    """One ``dnsmaster doctor`` run."""

    returncode: int
    lines: list[str]
    stderr: str

    def failed(self) -> list[str]:
        return [line for line in self.lines if line.startswith("FAIL")]

    def one_failure(self, *words: str) -> str:
        """The only FAIL line; it must hold every one of ``words``."""
        failed = self.failed()
        assert len(failed) == 1, "\n".join(self.lines)
        for word in words:
            assert word in failed[0], (word, failed[0])
        assert "; fix: " in failed[0], failed[0]
        assert self.returncode == 1, "\n".join(self.lines)
        assert self.lines[-1].startswith("doctor: 1 FAILED"), self.lines[-1]
        return failed[0]


@dataclass
class Master:
    """A master directory with a config for the lab's slaves; data pushed once."""

    lab: Lab
    home: Path
    slaves: list[Slave]

    @property
    def config(self) -> Path:
        return self.home / "dnsmaster.toml"

    @property
    def output(self) -> Path:
        return self.home / "out"

    @property
    def zones(self) -> Path:
        return self.home / "zones"

    def configure(self, *, hosts: dict[str, str] | None = None, extra: str = "") -> None:
        hosts = hosts or {}
        slaves: list[dict[str, object]] = [
            {
                "name": s.name,
                "host": hosts.get(s.name, s.address),
                "port": s.port,
                "dns": s.address,
            }
            for s in self.slaves
        ]
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.home / "state.json",
                slaves=slaves,
                top={
                    "key": self.lab.key,
                    "known_hosts": self.lab.known_hosts,
                    "user": self.lab.user,
                },
                daemon={"verify_timeout": 1.0},
                push={"connect_timeout": 3.0, "timeout": 60.0},
            )
            + extra
        )
        self.config.chmod(0o644)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DNSMASTER_CONFIG"}
        env["PYTHONPATH"] = str(PROJECT)
        return env

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dnsmaster", *argv, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
            check=False,
        )

    def doctor(self) -> Doctor:
        """doctor run here: what the process prints, at none of its start's cost
        (asyncssh and dnspython, half a second of CPU); :meth:`doctor_process` for
        the command as a process."""
        out, err = io.StringIO(), io.StringIO()
        args = parser("doctor").parse_args(["doctor", "--config", str(self.config)])
        returncode = doctor_main(args, out=out, err=err)
        return Doctor(returncode, out.getvalue().splitlines(), err.getvalue())

    def doctor_process(self) -> Doctor:
        proc = self.run("doctor")
        assert "Traceback" not in proc.stderr, proc.stderr
        return Doctor(proc.returncode, proc.stdout.splitlines(), proc.stderr)


@pytest.fixture
def master(lab: Lab, tmp_path: Path) -> Master:
    """Two healthy slaves, configured, each holding the master's first build."""
    m = Master(lab, tmp_path / "master", lab(2))
    m.zones.mkdir(parents=True)
    m.output.mkdir()
    (m.zones / "header").write_text("# test zones\n")
    (m.zones / "zones.example").write_text(ZONES)
    m.configure()
    push_here(m.config)  # in process: this is set-up, not the command under test
    return m


@contextlib.contextmanager
def read_only_mount(directory: Path) -> Iterator[None]:
    """A read-only tmpfs over ``directory``: the one place root cannot write."""
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True, capture_output=True)


@contextlib.contextmanager
def babbler(size: int) -> Iterator[int]:
    """A TCP server on 127.0.0.1, at a free high port (yielded), that sends each client
    ``size`` bytes without a newline: no sshd, and a banner line longer than any limit."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):  # the client may hang up at any time
                conn.settimeout(5)
                conn.sendall(b"A" * size)
                conn.recv(1)  # until the client hangs up

    thread = threading.Thread(target=serve, name="babbler", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        server.close()


class TestCheck:
    """The line format and the summary (no I/O)."""

    def test_lines(self) -> None:
        """OK names what was checked; FAIL adds why and the fix."""
        assert Check("output", "OK", "directory /x writable").line() == (
            "OK   output: directory /x writable"
        )
        assert Check("slave a", "FAIL", "login", "refused", "add the key").line() == (
            "FAIL slave a: login: refused; fix: add the key"
        )

    def test_summary(self) -> None:
        """Failures first; warnings do not fail."""
        checks = [Check("g", "OK", "x"), Check("g", "WARN", "y", "z"), Check("g", "FAIL", "w")]
        assert summary(checks) == "doctor: 1 FAILED, 1 warning, 1 OK"
        assert summary(checks[:2]) == "doctor: all good, 1 warning, 1 OK"

    def test_secondaries_follow_the_slaves(self, tmp_path: Path) -> None:
        """Each [[secondary]] has its own group, after the master's (here: nothing
        built yet, so a warning and nothing asked over the network)."""
        (tmp_path / "zones").mkdir()
        path = tmp_path / "dnsmaster.toml"
        path.write_text(
            'zones = "zones"\noutput = "out"\n[axfrdns]\nip = "192.0.2.53"\n'
            '[[secondary]]\nname = "nsd1"\naddress = "192.0.2.7"\n'
        )
        (tmp_path / "out").mkdir()
        checks = asyncio.run(check_all(config.load(path), timeout=5))
        assert [c.group for c in checks][-1] == "secondary nsd1"
        assert checks[-1].status == "WARN"


class TestDoctor:
    """Against a lab of real slaves: healthy, then each broken case alone."""

    def test_healthy(self, master: Master) -> None:
        """Every line OK, one group per slave, exit 0, nothing on stderr: the command
        as a process, as an operator runs it (the other cases run it in process)."""
        run = master.doctor_process()
        assert run.returncode == 0, "\n".join(run.lines)
        assert run.stderr == ""
        *checks, last = run.lines
        for line in checks:
            # The accelerator may be turned off on purpose in a pure-Python CI run.
            assert line.startswith("OK   ") or "C accelerator" in line, line
        assert last.startswith("doctor: all good"), last
        for slave in master.slaves:
            mine = [line for line in checks if f"slave {slave.name}:" in line]
            assert any("host key ssh-ed25519" in line for line in mine), mine
            assert any(f"known ({master.lab.known_hosts}:" in line for line in mine), mine
            assert any(f"login as {master.lab.user} accepted" in line for line in mine), mine
            assert any("dnsmaster receive answers status" in line for line in mine), mine
            assert any("the master's build" in line for line in mine), mine
            dns = f"tinydns on {slave.address} port 53 answers SOA for 2 zones"
            assert any(dns in line for line in mine), mine

    def test_unknown_host_key(self, master: Master) -> None:
        """known_hosts without the slave: the keyscan command that adds it."""
        a, b = master.slaves
        master.lab.known_hosts.write_text(b.sshd.host_key_line() + "\n")
        line = master.doctor().one_failure(
            f"slave {a.name}: host key unknown",
            f"ssh-keyscan -p {a.port} -t ed25519 {a.address} >> {master.lab.known_hosts}",
        )
        assert "SHA256:" in line

    def test_changed_host_key(self, master: Master) -> None:
        """A re-keyed slave: the stale known_hosts line, and how to replace it."""
        a, _ = master.slaves
        a.sshd.regenerate_host_key()
        master.doctor().one_failure(
            f"slave {a.name}: host key CHANGED",
            f"{master.lab.known_hosts}:1 holds",
            f"ssh-keygen -R '[{a.address}]:{a.port}' -f {master.lab.known_hosts}",
            "ssh-keyscan",
        )

    def test_sshd_down(self, master: Master) -> None:
        """Nothing listens: connection refused, start sshd."""
        _, b = master.slaves
        b.sshd.stop()
        master.doctor().one_failure(
            f"slave {b.name}: ssh {b.address} port {b.port}: cannot connect",
            "refused",
            "start sshd",
        )

    def test_unresolvable(self, master: Master) -> None:
        """A host name that does not resolve: where to correct it."""
        a, _ = master.slaves
        master.configure(hosts={a.name: "no-such-slave.invalid"})
        master.doctor().one_failure(
            f"slave {a.name}: name no-such-slave.invalid: cannot resolve", "/etc/hosts"
        )

    def test_key_not_authorized(self, master: Master) -> None:
        """authorized_keys without the master's key: the authorized-key command."""
        a, _ = master.slaves
        a.sshd.set_authorized_keys("")
        master.doctor().one_failure(
            f"slave {a.name}: login as {master.lab.user}: refused",
            "authorized_keys does not hold this key",
            f"dnsmaster authorized-key --pubkey {master.lab.key}.pub",
        )

    def test_forced_command_not_receiver(self, master: Master) -> None:
        """A key whose forced command is something else: say so, and how to fix it."""
        a, _ = master.slaves
        pub = master.lab.pubkey.read_text().strip()
        a.sshd.set_authorized_keys(f'restrict,command="/bin/echo hi" {pub}')
        line = master.doctor().one_failure(
            f"slave {a.name}: receiver: the key's forced command is not dnsmaster receive",
            "'hi'",
            "dnsmaster authorized-key",
        )
        assert f"login as {master.lab.user} accepted" in "\n".join(master.doctor().lines), line

    def test_slave_root_missing(self, master: Master) -> None:
        """The forced command's --root is gone: the receiver's reason, and create it."""
        a, _ = master.slaves
        gone = master.lab.workdir / "gone"  # where the account could see it if it were there
        a.sshd.set_authorized_keys(master.lab.authorized_key(gone))
        master.doctor().one_failure(
            f"slave {a.name}: receiver: status failed",
            f"{gone}",
            "does not exist",
            "create the slave's root",
        )

    def test_tinydns_stopped(self, master: Master) -> None:
        """The slave's tinydns does not answer: start it."""
        _, b = master.slaves
        b.tinydns.stop()
        master.doctor().one_failure(
            f"slave {b.name}: tinydns on {b.address} port 53", "timeout", "start tinydns"
        )

    def test_slave_root_not_writable(self, master: Master) -> None:
        """The receiver cannot write its root (read-only here): chown it to the account."""
        _, b = master.slaves
        with read_only_mount(b.root):
            master.doctor().one_failure(
                f"slave {b.name}: root", "the receiver cannot write its root", "chown"
            )

    @pytest.mark.parametrize("what", ["config", "zones"])
    def test_world_writable(self, master: Master, what: str) -> None:
        """A config or zones directory anyone may write fails, with the chmod."""
        path = master.config if what == "config" else master.zones
        path.chmod(0o666 if what == "config" else 0o777)
        master.doctor().one_failure(
            "config: permissions", f"{path}:", "writable by anyone", f"chmod o-w {path}"
        )

    def test_key_readable_by_others(self, master: Master) -> None:
        """A private key group or others may read fails, with the chmod."""
        master.lab.key.chmod(0o640)
        master.doctor().one_failure(
            "config: permissions", f"{master.lab.key}", "mode 0640", f"chmod 600 {master.lab.key}"
        )

    def test_output_not_writable(self, master: Master) -> None:
        """A read-only output directory (root writes anywhere else)."""
        with read_only_mount(master.output):
            run = master.doctor()
        line = run.one_failure(
            f"output: directory: cannot write in {master.output}", "read-only", "remount"
        )
        assert "Read-only file system" in line or "read-only file system" in line

    def test_local_root_missing(self, master: Master, tmp_path: Path) -> None:
        """A local slave whose root does not exist: mkdir it."""
        missing = tmp_path / "nowhere" / "root"
        master.configure(
            extra=f'\n[[slave]]\nname = "local"\ntransport = "local"\nroot = "{missing}"\n'
        )
        master.doctor().one_failure(
            "slave local: root", "missing", f"mkdir -p {shlex.quote(str(missing))}"
        )


@pytest.mark.usefixtures("dnsmaster_cli")
class TestCommand:
    """The command line around the checks."""

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The command in this process; as a process when it is given an environment
        (``--version`` reads DNSMASTER_PURE_PYTHON when the accelerator is loaded)."""
        if not env:
            return dnsmaster_here(*argv, timeout=60)
        environ = {k: v for k, v in os.environ.items() if k != "DNSMASTER_PURE_PYTHON"}
        return subprocess.run(
            [sys.executable, "-m", "dnsmaster", *argv],
            capture_output=True,
            text=True,
            env={**environ, "PYTHONPATH": str(PROJECT), **env},
            timeout=60,
            check=False,
        )

    def test_version_names_the_accelerator(self) -> None:
        """--version says whether the C accelerator is active, and why not."""
        from dnsmaster.core import accel  # noqa: PLC0415

        plain = self.run("--version", DNSMASTER_PURE_PYTHON="")
        assert plain.returncode == 0, plain.stderr
        state = "active" if accel.compiler() else "not built"
        assert plain.stdout.startswith(f"dnsmaster {dnsmaster.__version__} (C accelerator: {state}")
        off = self.run("--version", DNSMASTER_PURE_PYTHON="1")
        why = "disabled by DNSMASTER_PURE_PYTHON"
        assert off.stdout == f"dnsmaster {dnsmaster.__version__} (C accelerator: {why})\n"

    def test_counts_the_files_check_counts(self, tmp_path: Path) -> None:
        """An editor's backup is no zones file for doctor either: the build's selection."""
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "header").write_text("# header\n")
        for name in ("zones.a", "zones.b", "zones.b~"):
            (zones / name).write_text("+a.example.com:192.0.2.1\n")
        (zones / "zones.dir").mkdir()
        config = tmp_path / "dnsmaster.toml"
        config.write_text(
            config_text(
                zones=zones,
                output=tmp_path,
                state=tmp_path / "state.json",
                slaves=[{"name": "l", "transport": "local", "root": str(tmp_path / "l")}],
            )
        )
        check = self.run("check", "--config", str(config))
        assert check.stdout.startswith("ok: 3 files,"), check
        doctor = self.run("doctor", "--config", str(config))
        line = next(x for x in doctor.stdout.splitlines() if x.startswith("OK   zones:"))
        assert line == (
            f"OK   zones: {zones} readable: 3 files (header, zones.*); "
            "skipped zones.b~ (editor backup or temp file)"
        )

    def test_banner_line_too_long(self, tmp_path: Path) -> None:
        """A port that sends 70 KiB without a newline: a failed check with the reason push
        gives ("Banner line too long"), never a traceback."""
        zones = tmp_path / "zones"
        zones.mkdir()
        (zones / "zones.example").write_text(ZONES)
        known_hosts = tmp_path / "known_hosts"
        known_hosts.touch()
        config = tmp_path / "dnsmaster.toml"
        with babbler(70 * 1024) as port:
            config.write_text(
                config_text(
                    zones=zones,
                    output=tmp_path,
                    state=tmp_path / "state.json",
                    top={"known_hosts": known_hosts},
                    slaves=[{"name": "babbler", "host": "127.0.0.1", "port": port}],
                )
            )
            run = self.run("doctor", "--config", str(config), "--timeout", "20")
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode == 1, run
        (line,) = [x for x in run.stdout.splitlines() if x.startswith("FAIL slave babbler:")]
        assert line.startswith(
            f"FAIL slave babbler: ssh 127.0.0.1 port {port}: Banner line too long: "
            "what answers there is not sshd"
        ), line
        assert "; fix: correct the slave's port in the config" in line

    def test_bad_config_is_a_usage_error(self, tmp_path: Path) -> None:
        """A config that cannot be loaded: exit 2 and the loader's message, no checks."""
        config = tmp_path / "dnsmaster.toml"
        config.write_text('zones = "zones"\n')
        run = self.run("doctor", "--config", str(config))
        assert run.returncode == 2, run
        assert "output: missing" in run.stderr
        assert run.stdout == ""
