"""``dnsmaster service-conf``: what it makes, and every refusal, which makes nothing.

The scripts are checked as text; the rest runs the real command as root on a
:class:`tests.test_readme.Host` (a private mount namespace with /etc, /var, /usr
overlaid), so the accounts it needs (dnsmaster, dnslog) exist only there. That
the directory it makes really runs under supervise and runsv is
tests/test_readme.py's job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster.commands.serviceconf import scripts
from tests.conftest import require_root
from tests.lab.host import Host, install_dnsmaster, wait_for

CONFIG = "/etc/dnsmaster/dnsmaster.toml"


class TestScripts:
    def test_daemontools(self) -> None:
        """run: envdir, then setuidgid ACCT; log/run: multilog as LOGACCT into ./main."""
        texts = scripts("dnsmaster", "dnslog", runit=False)
        assert texts["run"].splitlines()[-2:] == [
            "exec 2>&1",
            "exec envdir ./env setuidgid dnsmaster dnsmaster run",
        ]
        assert texts["log/run"].splitlines()[-1] == (
            "exec setuidgid dnslog multilog t s1000000 n20 ./main"
        )

    def test_runit(self) -> None:
        """run: chpst -e ./env, then chpst -u ACCT (so env/PATH finds dnsmaster);
        log/run: svlogd -tt ./main as LOGACCT."""
        texts = scripts("dnsmaster", "dnslog", runit=True)
        assert texts["run"].splitlines()[-1] == (
            "exec chpst -e ./env chpst -u dnsmaster dnsmaster run"
        )
        assert texts["log/run"].splitlines()[-1] == "exec chpst -u dnslog svlogd -tt ./main"

    @pytest.mark.parametrize("runit", [False, True])
    def test_valid_sh(self, runit: bool) -> None:
        """Both scripts are valid sh with a #! line."""
        for text in scripts("dnsmaster", "dnslog", runit=runit).values():
            assert text.startswith("#!/bin/sh\n")
            check = subprocess.run(["sh", "-n", "-c", text], capture_output=True, check=False)
            assert check.returncode == 0, check.stderr


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, daemontools: None, runit_tools: None
) -> Iterator[Host]:
    """A machine with dnsmaster installed, the accounts and a config the daemon can use."""
    require_root("service-conf (accounts, chown)")
    the_host = Host(tmp_path_factory.mktemp("serviceconf"), "master")
    try:
        the_host.start()
        install_dnsmaster(the_host)
        the_host.sh(
            "adduser --system --group --no-create-home --home /var/lib/dnsmaster dnsmaster\n"
            "adduser --system --group --no-create-home --home /nonexistent dnslog\n"
            "install -d -o dnsmaster -g dnsmaster -m 755 /var/lib/dnsmaster\n"
            "install -d /etc/dnsmaster/zones\n"
            "echo '.example.com:127.0.0.1:a' > /etc/dnsmaster/zones/zones.example.com\n"
            "ssh-keygen -q -t ed25519 -N '' -f /etc/dnsmaster/id_ed25519\n"
            "chown dnsmaster: /etc/dnsmaster/id_ed25519\n"
            f"cat > {CONFIG} <<'EOF'\n"
            'zones = "/etc/dnsmaster/zones"\n'
            'output = "/var/lib/dnsmaster"\n'
            'key = "/etc/dnsmaster/id_ed25519"\n'
            "EOF\n"
        )
        yield the_host
    finally:
        the_host.close()


def service_conf(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    return host.sh(f"dnsmaster service-conf {' '.join(args)}", check=False)


class TestMake:
    @pytest.mark.parametrize("runit", [False, True])
    def test_makes_the_directory(self, host: Host, runit: bool) -> None:
        """run, log/run, env/, log/main owned by LOGACCT; PATH starts where dnsmaster is."""
        directory = f"/etc/dnsmaster/service-{'runit' if runit else 'daemontools'}"
        flag = ["--runit"] if runit else []
        proc = service_conf(host, *flag, "dnsmaster", "dnslog", directory, CONFIG)
        assert proc.returncode == 0, proc.stderr
        assert f"made {directory}" in proc.stdout
        made = host.path(directory)
        expected = scripts("dnsmaster", "dnslog", runit=runit)
        for name in ("run", "log/run"):
            assert (made / name).read_text() == expected[name]
            assert (made / name).stat().st_mode & 0o777 == 0o755
        assert (made / "env" / "DNSMASTER_CONFIG").read_text() == f"{CONFIG}\n"
        assert (made / "env" / "HOME").read_text() == "/var/lib/dnsmaster\n"
        path = (made / "env" / "PATH").read_text().strip().split(":")
        assert path[0] == "/usr/local/bin"
        assert {"/usr/bin", "/bin"} <= set(path)
        assert len(path) == len(set(path))
        assert (made / "log" / "main").stat().st_uid == host.uid("dnslog")

    def test_never_overwrites(self, host: Host) -> None:
        """An existing DIR is refused (exit 2) and left exactly as it was."""
        host.sh("mkdir -p /var/t/existing && echo mine > /var/t/existing/run")
        proc = service_conf(host, "dnsmaster", "dnslog", "/var/t/existing", CONFIG)
        assert proc.returncode == 2
        assert "never overwrites" in proc.stderr
        assert host.enter(["ls", "/var/t/existing"]).split() == ["run"]
        assert host.path("/var/t/existing/run").read_text() == "mine\n"

    @pytest.mark.parametrize(
        ("acct", "logacct", "role"),
        [
            ("nosuchacct", "dnslog", "ACCT"),
            ("dnsmaster", "nosuchlog", "LOGACCT"),
        ],
    )
    def test_missing_account(self, host: Host, acct: str, logacct: str, role: str) -> None:
        """A missing account is refused with the adduser line; nothing falls back to root."""
        proc = service_conf(host, acct, logacct, "/var/t/svc-missing", CONFIG)
        assert proc.returncode == 2
        assert f"{role} " in proc.stderr
        assert "adduser --system" in proc.stderr
        assert not host.path("/var/t/svc-missing").exists()

    def test_output_not_writable(self, host: Host) -> None:
        """ACCT cannot write the output: refused (111) with the chown that fixes it."""
        host.sh("install -d -m 755 /var/t/root-owned-out")
        config = "/etc/dnsmaster/bad-output.toml"
        host.sh(f"sed 's|^output = .*|output = \"/var/t/root-owned-out\"|' {CONFIG} > {config}")
        proc = service_conf(host, "dnsmaster", "dnslog", "/var/t/svc-out", config)
        assert proc.returncode == 111, proc.stderr
        assert "/var/t/root-owned-out" in proc.stderr
        assert "chown dnsmaster" in proc.stderr
        assert "nothing was created" in proc.stderr
        assert not host.path("/var/t/svc-out").exists()

    def test_key_not_readable(self, host: Host) -> None:
        """ACCT cannot read the private key: refused (111), naming the key."""
        host.sh(
            "cp /etc/dnsmaster/id_ed25519 /etc/dnsmaster/root_key\n"
            "chown root: /etc/dnsmaster/root_key && chmod 600 /etc/dnsmaster/root_key\n"
            f"sed 's|id_ed25519|root_key|' {CONFIG} > /etc/dnsmaster/bad-key.toml"
        )
        proc = service_conf(
            host, "dnsmaster", "dnslog", "/var/t/svc-key", "/etc/dnsmaster/bad-key.toml"
        )
        assert proc.returncode == 111, proc.stderr
        assert "root_key" in proc.stderr
        assert not host.path("/var/t/svc-key").exists()

    def test_config_not_readable(self, host: Host) -> None:
        """ACCT cannot read CONFIG itself: refused (111)."""
        host.sh(f"install -m 600 {CONFIG} /etc/dnsmaster/private.toml")
        proc = service_conf(
            host, "dnsmaster", "dnslog", "/var/t/svc-cfg", "/etc/dnsmaster/private.toml"
        )
        assert proc.returncode == 111, proc.stderr
        assert "private.toml" in proc.stderr
        assert not host.path("/var/t/svc-cfg").exists()

    def test_dnsmaster_not_runnable(self, host: Host) -> None:
        """A dnsmaster ACCT cannot execute (in a 0700 directory) is refused, not installed."""
        host.sh(
            "install -d -m 700 /var/t/private/bin\n"
            'ln -s "$(readlink -f /usr/local/bin/dnsmaster)" /var/t/private/bin/dnsmaster'
        )
        proc = host.sh(
            f"/var/t/private/bin/dnsmaster service-conf dnsmaster dnslog /var/t/svc-bin {CONFIG}",
            check=False,
        )
        assert proc.returncode == 111, proc.stderr
        assert "dnsmaster" in proc.stderr
        assert not host.path("/var/t/svc-bin").exists()

    def test_zones_missing(self, host: Host) -> None:
        """A zones directory that does not exist is named."""
        host.sh(f"sed 's|/etc/dnsmaster/zones|/var/t/no-zones|' {CONFIG} > /etc/dnsmaster/nz.toml")
        proc = service_conf(host, "dnsmaster", "dnslog", "/var/t/svc-nz", "/etc/dnsmaster/nz.toml")
        assert proc.returncode == 111, proc.stderr
        assert "/var/t/no-zones" in proc.stderr


class TestSupervised:
    """The directory it makes, run by the real svscan or runsvdir started with a
    PATH that lacks dnsmaster and root's HOME, as from a root shell."""

    @pytest.mark.parametrize("runit", [False, True])
    def test_starts_from_env_path(self, host: Host, runit: bool, tmp_path: Path) -> None:
        """dnsmaster is found through env/PATH alone; the daemon runs as ACCT with
        ACCT's HOME."""
        kind = "runit" if runit else "daemontools"
        directory, scan, output = f"/var/t/sv-{kind}", f"/var/t/scan-{kind}", f"/var/t/out-{kind}"
        config = f"/etc/dnsmaster/{kind}.toml"
        host.sh(
            f"install -d -o dnsmaster -g dnsmaster {output}\n"
            f"sed 's|^output = .*|output = \"{output}\"|' {CONFIG} > {config}\n"
            # The supervisor's PATH lacks it.
            "if PATH=/usr/bin:/bin command -v dnsmaster; then exit 1; fi"
        )
        flag = ["--runit"] if runit else []
        proc = service_conf(host, *flag, "dnsmaster", "dnslog", directory, config)
        assert proc.returncode == 0, proc.stderr
        host.sh(f"mkdir {scan} && ln -s {directory} {scan}/")
        scanner = ["runsvdir", "-P", scan] if runit else ["svscan", scan]
        log = tmp_path / "scanner.log"
        started = host.spawn(["env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", *scanner], log)
        current = host.path(f"{directory}/log/main/current")
        try:
            wait_for(
                "the daemon's first line in its log",
                lambda: current.exists() and "event=daemon.start" in current.read_text(),
                show=current,
            )
            pid = self.daemon_pid(host, directory, runit=runit)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"HOME=/var/lib/dnsmaster" in environ
            assert Path(f"/proc/{pid}").stat().st_uid == host.uid("dnsmaster")
        finally:
            started.kill()  # the scanner first, so that nothing starts the services again
            started.wait(10)
            stop = ["sv", "-w", "20", "exit"] if runit else ["svc", "-dx"]
            host.sh(" ".join([*stop, directory, f"{directory}/log"]), check=False)

    def daemon_pid(self, host: Host, directory: str, *, runit: bool) -> int:
        if runit:
            return int(host.path(f"{directory}/supervise/pid").read_text())
        status = host.enter(["svstat", directory])
        assert ": up (pid " in status, status
        return int(status.split("(pid ")[1].split(")")[0])


def test_probe_names_every_problem(tmp_path: Path) -> None:
    """probe() as the current user: each problem once, with its path."""
    from dnsmaster.commands.serviceconf import probe  # noqa: PLC0415

    config = tmp_path / "c.toml"
    config.write_text(f'zones = "{tmp_path}/zones"\noutput = "{tmp_path}/out"\n')
    problems = probe(config)
    assert any(f"{tmp_path}/zones" in p and "does not exist" in p for p in problems)
    # output and the state's default directory are the same: named once
    assert sum(f"{tmp_path}/out" in p for p in problems) == 1
    (tmp_path / "zones").mkdir()
    (tmp_path / "out").mkdir()
    assert probe(config) == []
