"""``dnsmaster service-conf --axfrdns``: the scripts and refusals, and (real) the
service it makes, run as a supervisor would run it, obeying the rules it wrote and
the rules it rewrites when run again."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path

import pytest

from dnsmaster import config
from dnsmaster.commands import axfrdnsconf
from dnsmaster.commands.main import parser
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.errors import ServiceConfError, TransferError
from dnsmaster.transport.axfr import transfer
from tests.conftest import require_root

TOOLS = {"tcpserver": "/usr/bin/tcpserver", "axfrdns": "/usr/sbin/axfrdns"}
ALLOWED = "127.0.2.7"  # source addresses of the secondaries' transfers (any 127.x is ours)
OTHER = "127.0.2.8"


def write_config(tmp_path: Path, ip: str, secondaries: str, extra: str = "") -> Path:
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        f'zones = "zones"\noutput = "out"\n{extra}[axfrdns]\nip = "{ip}"\n' + secondaries
    )
    return path


def secondary(name: str, address: str, zones: list[str], transfer_from: str = "") -> str:
    listed = ", ".join(f'"{z}"' for z in zones)
    text = f'[[secondary]]\nname = "{name}"\naddress = "{address}"\nzones = [{listed}]\n'
    return text + (f'transfer_from = ["{transfer_from}"]\n' if transfer_from else "")


def run_main(*argv: str) -> tuple[int, str, str]:
    """``dnsmaster service-conf --axfrdns ARGV``, in process; (status, stdout, stderr)."""
    args = parser("service-conf").parse_args(["service-conf", "--axfrdns", *argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = axfrdnsconf.main(args)
    return status, out.getvalue(), err.getvalue()


class TestScripts:
    @pytest.mark.parametrize("runit", [False, True])
    def test_valid_sh_with_mark(self, runit: bool) -> None:
        """Both scripts are sh; run carries the mark a second run knows it by."""
        texts = axfrdnsconf.run_scripts("axfrdns", "dnslog", TOOLS, runit=runit)
        assert axfrdnsconf.MARK in texts["run"]
        for text in texts.values():
            check = subprocess.run(["sh", "-n", "-c", text], capture_output=True, check=False)
            assert check.returncode == 0, check.stderr

    def test_daemontools(self) -> None:
        """tcpserver as axfrdns-conf runs it, on env/IP and env/PORT, as ACCT."""
        run = axfrdnsconf.run_scripts("axfrdns", "dnslog", TOOLS, runit=False)["run"]
        assert "exec envdir ./env sh -c '" in run
        assert (
            'exec envuidgid axfrdns /usr/bin/tcpserver -vDRHl0 -x tcp.cdb -- "$IP" "$PORT" '
            "/usr/sbin/axfrdns" in run
        )

    def test_runit(self) -> None:
        run = axfrdnsconf.run_scripts("axfrdns", "dnslog", TOOLS, runit=True)["run"]
        assert "exec chpst -e ./env -U axfrdns sh -c '" in run


class TestRefusals:
    def test_ipv6_transfer_address(self, tmp_path: Path) -> None:
        """tcpserver matches IPv4 only: an IPv6 transfer address is refused, named."""
        cfg = config.load(write_config(tmp_path, "192.0.2.53", secondary("p", "2001:db8::7", [])))
        with pytest.raises(ServiceConfError, match="IPv4 only"):
            axfrdnsconf.rules_for(cfg)

    def test_foreign_directory_untouched(self, tmp_path: Path) -> None:
        """A directory it did not make is never overwritten, nor given rules."""
        path = write_config(tmp_path, "192.0.2.53", secondary("n", "192.0.2.7", []))
        other = tmp_path / "sv"
        other.mkdir()
        (other / "run").write_text("#!/bin/sh\nexec something\n")
        status, _, err = run_main("nobody", "nobody", str(other), str(path))
        assert status != 0
        assert "never overwrites" in err
        assert sorted(p.name for p in other.iterdir()) == ["run"]

    def test_ip_required(self, tmp_path: Path) -> None:
        path = tmp_path / "dnsmaster.toml"
        path.write_text('zones = "zones"\noutput = "out"\n')
        status, _, err = run_main("nobody", "nobody", str(tmp_path / "sv"), str(path))
        assert status != 0
        assert "[axfrdns] ip" in err
        assert not (tmp_path / "sv").exists()


# -- the service, run ------------------------------------------------------------------


def start(directory: Path) -> subprocess.Popen[bytes]:
    """``DIR/run`` as supervise starts it; its PID ends as tcpserver's (each step execs)."""
    proc = subprocess.Popen(
        ["./run"],
        cwd=directory,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # tcpserver -v: "tcpserver: status: 0/40" once bound
    if b"status: 0/" not in line:
        stop(proc)
        pytest.fail(f"{directory}/run did not start tcpserver: {line!r}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def allowed(address: str, zone: str, source: str) -> bool:
    try:
        asyncio.run(transfer(address, 53, zone, source=source, timeout=5))
    except TransferError:
        return False
    return True


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o755)
    data = assemble(
        [
            compile_source("zones.example.com", b".example.com::ns1.example.com\n"),
            compile_source("zones.example.net", b".example.net::ns1.example.net\n"),
        ],
        1_700_000_000,
    ).data
    # The build the slaves were given, in the served root, where axfrdns reads it.
    served = out / "served"
    served.mkdir(mode=0o755)
    (served / "data.cdb").write_bytes(compile_data(data, 1_700_000_000))
    (served / "data.cdb").chmod(0o644)
    return out


def test_service_obeys_and_updates_its_rules(
    tmp_path: Path, output: Path, axfrdns_bin: str, tcpserver_bin: str, daemontools: None
) -> None:
    """The service lets the configured address transfer the configured zone and no
    other; run again after [[secondary]] changed, it rewrites only the rules, and the
    running tcpserver follows them at the next connection."""
    from tests.lab.realworld import release_dns_address, take_dns_address  # noqa: PLC0415

    require_root("axfrdns (binds port 53, chroots)")
    ip = take_dns_address()
    directory = tmp_path / "sv" / "axfrdns"
    try:
        path = write_config(tmp_path, ip, secondary("nsd1", ALLOWED, ["example.com"]))
        status, out, err = run_main("nobody", "nobody", str(directory), str(path))
        assert status == 0, err
        assert "made " in out
        assert (directory / "env" / "ROOT").read_text() == f"{output / 'served'}\n"
        run_before = (directory / "run").read_text()
        proc = start(directory)
        try:
            assert allowed(ip, "example.com", ALLOWED)
            assert not allowed(ip, "example.net", ALLOWED)
            assert not allowed(ip, "example.com", OTHER)

            write_config(
                tmp_path,
                ip,
                secondary("nsd1", ALLOWED, ["example.net"], transfer_from=OTHER),
            )
            status, out, err = run_main("nobody", "nobody", str(directory), str(path))
            assert status == 0, err
            assert "updated the rules" in out
            assert "note:" not in out
            assert (directory / "run").read_text() == run_before
            assert allowed(ip, "example.net", OTHER)
            assert not allowed(ip, "example.com", OTHER)
            assert not allowed(ip, "example.net", ALLOWED)
        finally:
            stop(proc)
    finally:
        release_dns_address(ip)


def test_second_run_names_stale_env(tmp_path: Path) -> None:
    """The address changed in the config: the rules are rewritten, and the note says
    which env file to change, since a second run touches nothing else."""
    directory = tmp_path / "sv"
    (directory / "env").mkdir(parents=True)
    (directory / "run").write_text(f"#!/bin/sh\n{axfrdnsconf.MARK}\n")
    path = write_config(tmp_path, "192.0.2.54", secondary("n", "192.0.2.7", []))
    cfg = config.load(path)
    for name, value in axfrdnsconf.env_for(cfg).items():
        (directory / "env" / name).write_text(f"{value}\n")
    (directory / "env" / "IP").write_text("192.0.2.53\n")
    assert axfrdnsconf.stale_env(directory, cfg) == [("IP", "192.0.2.53", "192.0.2.54")]


def test_second_run_names_a_root_still_on_the_output(tmp_path: Path) -> None:
    """A directory made when axfrdns served the output directory: the note says to
    point ROOT at the served root, where only the slaves' build is."""
    directory = tmp_path / "sv"
    (directory / "env").mkdir(parents=True)
    path = write_config(tmp_path, "192.0.2.54", secondary("n", "192.0.2.7", []))
    cfg = config.load(path)
    for name, value in axfrdnsconf.env_for(cfg).items():
        (directory / "env" / name).write_text(f"{value}\n")
    assert axfrdnsconf.env_for(cfg)["ROOT"] == str(tmp_path / "out" / "served")
    (directory / "env" / "ROOT").write_text(f"{tmp_path / 'out'}\n")
    stale = [(str(tmp_path / "out"), str(tmp_path / "out" / "served"))]
    assert [(have, want) for _, have, want in axfrdnsconf.stale_env(directory, cfg)] == stale
