"""The manual's set-up blocks, run as written on a master and a slave of their own.

Every block between ``.. NAME-begin`` and ``.. NAME-end`` markers in the manual's
set-up pages (``docs/install.rst``, ``docs/slaves.rst``, ``docs/supervised.rst``:
:data:`BLOCK_PAGES` says which page holds which block) is extracted (as ``.ci/run``
extracts the README's test command) and run with ``bash -euo pipefail``; the only
change is the values of the variables on a block's first line (``SLAVE=192.0.2.2
PORT=22`` becomes the lab's 127.0.1.N and a high port). So the manual cannot drift
from the code: a step that stops working fails here.

Each "machine" is a :class:`Host`: a private mount namespace in which /etc, /var,
/usr, /opt, /srv, /home, /run and /root are overlays on the real directories. The blocks write
/etc/dnsmaster, /etc/sv/tinydns, /etc/service, /usr/local and create accounts
(dnsmaster, dnslog, dnsslave) exactly as on a real machine, and all of it lands in
the test's temp directory and vanishes with the namespace. The network is shared:
the slave's sshd and tinydns listen on a 127.0.1.N address (sshd on a high port)
and nothing else; a second slave, added while the daemon runs, has its own. Every
process started in a namespace is stopped by its PID.

What the lab itself does, standing in for what an operator does outside the
blocks: it checks (rather than runs) the install block — the packages are installed
and ``/usr/local/bin/dnsmaster`` points at the dnsmaster under test; it copies the
two files the manual says to ``scp`` from the master to the slave; it puts the
example zones in the zones directory; it starts what boot starts (the slave's sshd,
``runsvdir``/``svscan`` on ``/etc/service``), after removing the container's own
services from ``/etc/service`` and its ``policy-rc.d`` (which forbids starting
services, and which a real machine does not have).
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.conftest import missing, require, require_root
from tests.lab.daemonrun import PROJECT
from tests.lab.host import Host, install_dnsmaster, wait_for
from tests.lab.host import read_text as _read

# Its helpers are imported where used, after pytest has loaded (and rewritten) it.

README = PROJECT / "README.rst"
DOCS = PROJECT / "docs"

#: Each set-up block, by marker name, and the page of the manual that holds it. A
#: block moved to another page, or a marked block no test knows, fails
#: :func:`test_blocks_are_found`: every marked block is executed, none is decoration.
BLOCK_PAGES = {
    "install-master": "install.rst",
    "setup-master": "install.rst",
    "setup-slave": "slaves.rst",
    "setup-slave-runit": "slaves.rst",
    "setup-add-slave": "slaves.rst",
    "setup-add-slave-running": "slaves.rst",
    "setup-add-slave-hup-daemontools": "slaves.rst",
    "setup-add-slave-hup-runit": "slaves.rst",
    "setup-daemontools": "supervised.rst",
    "setup-runit": "supervised.rst",
    "setup-makefile": "supervised.rst",
}


# -- the manual's blocks ---------------------------------------------------------


def readme_blocks(text: str) -> dict[str, str]:
    """Every marked block's literal text, by marker name, with its indent removed."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^\.\. ([a-z0-9-]+)-begin\n(.*?)^\.\. \1-end$", text, re.M | re.S):
        name, body = match.group(1), match.group(2)
        assert "::" in body, f"block {name}: no literal block between its markers"
        lines = []
        for line in body.split("::", 1)[1].splitlines():
            if line.strip() and not line.startswith("    "):
                break  # the literal block ends at the first line that is not indented
            lines.append(line[4:])
        found[name] = "\n".join(lines).strip("\n") + "\n"
    return found


def with_values(block: str, **values: str | int) -> str:
    """``block`` with its first line's variables set to ``values`` (all of them, only them)."""
    first, _, rest = block.partition("\n")
    assigned = dict(word.split("=", 1) for word in shlex.split(first))
    assert set(assigned) == set(values), (
        f"the block sets {sorted(assigned)} on its first line; the test sets {sorted(values)}"
    )
    line = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())
    return f"{line}\n{rest}"


def manual_blocks() -> dict[str, str]:
    """Every marked block of the manual's set-up pages, by marker name."""
    found: dict[str, str] = {}
    for page in sorted(set(BLOCK_PAGES.values())):
        for name, block in readme_blocks((DOCS / page).read_text()).items():
            assert BLOCK_PAGES.get(name) == page, (
                f"docs/{page} has a block {name!r}, which BLOCK_PAGES places in "
                f"{BLOCK_PAGES.get(name)!r}: a marked block no test runs, or a moved one"
            )
            found[name] = block
    return found


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    return manual_blocks()


def test_blocks_are_found(blocks: dict[str, str]) -> None:
    """Each set-up block is on its page of the manual, and each is valid bash."""
    for name, page in BLOCK_PAGES.items():
        assert name in blocks, f"docs/{page} has no {name}-begin/-end block"
        check = subprocess.run(
            ["bash", "-n", "-c", blocks[name]], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, f"{name}: {check.stderr}"


def test_readme_blocks_extracted_literally() -> None:
    """Extraction keeps a heredoc's lines and blank lines, drops only the indent."""
    text = (
        "x\n\n.. demo-begin\n\n::\n\n    A=1 B=2\n    cat <<EOF\n\n    a\n    EOF\n\n.. demo-end\n"
    )
    assert readme_blocks(text) == {"demo": "A=1 B=2\ncat <<EOF\n\na\nEOF\n"}
    assert with_values("A=1 B=2\necho\n", A="x y", B=3) == "A='x y' B=3\necho\n"
    with pytest.raises(AssertionError):
        with_values("A=1\necho\n", B=1)


def test_readme_holds_only_the_test_command() -> None:
    """The set-up blocks live in the manual alone: a copy in README.rst would drift.

    The README keeps one marked block, the test command ``.ci/run`` extracts.
    """
    assert set(readme_blocks(README.read_text())) == {"test-command"}


# -- a machine of its own ---------------------------------------------------------


def _installed(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return proc.stdout.endswith(" installed")


# -- the lab: what an operator does outside the blocks -----------------------------


class Lab:
    """A master and a slave, each a :class:`Host`, set up by the manual's blocks; more
    slaves (:meth:`add_slave_host`) for the blocks that add one to the running daemon."""

    def __init__(self, tmp_path: Path, blocks: dict[str, str]) -> None:
        from tests.lab import realworld  # noqa: PLC0415 - loaded by pytest_plugins

        self.realworld = realworld
        self.blocks = blocks
        self.tmp = tmp_path
        self.master = Host(tmp_path, "master")
        self.slave = Host(tmp_path, "slave")
        self.address = realworld.take_dns_address()
        self.port = realworld.free_port(self.address)
        #: The slaves added to the running daemon: each Host, its address and port.
        self.more: list[tuple[Host, str, int]] = []

    def close(self) -> None:
        try:
            self.master.close()
        finally:
            try:
                self.slave.close()
            finally:
                try:
                    for host, _, _ in self.more:
                        host.close()
                finally:
                    self.realworld.release_dns_address(self.address)
                    for _, address, _ in self.more:
                        self.realworld.release_dns_address(address)

    def check_install_block(self) -> None:
        """The install block, checked: its packages are installed (CI installs them)."""
        block = self.blocks["install-master"]
        packages = re.search(r"apt-get install -y ([^\n]+)", block)
        assert packages, "the install block names no packages"
        absent = [p for p in packages.group(1).split() if not _installed(p)]
        if absent:
            missing(f"not installed: apt-get install -y {' '.join(absent)}")
        assert "ln -s /opt/dnsmaster/bin/dnsmaster /usr/local/bin/dnsmaster" in block

    def prepare(self, host: Host, *, sshd: bool = True) -> None:
        """A clean machine: no services but the manual's, no policy-rc.d, none of this
        machine's sshd host keys; a slave (``sshd``) gets a host key of its own.

        Only an ed25519 one, the kind the manual's ssh-keyscan asks for: ``ssh-keygen
        -A`` would make an RSA key too, 1.5 s of CPU a machine for a key never used."""
        host.start()
        keygen = "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key\n"
        host.sh(
            "rm -f /usr/sbin/policy-rc.d\n"
            "mkdir -p /etc/service /run/sshd\n"
            "find -L /etc/service/ -mindepth 1 -maxdepth 1 -exec rm -rf {} +\n"
            "rm -f /etc/ssh/ssh_host_*\n" + (keygen if sshd else "")
        )

    def install_dnsmaster(self) -> None:
        install_dnsmaster(self.master)

    def setup(self) -> None:
        """Install check; the master's once-only block; the slave from scratch; a push."""
        for tool, package in (
            ("sshd", "openssh-server"),
            ("tinydns", "tinydns"),
            ("runsvdir", "runit"),
            ("dig", "bind9-dnsutils"),
            ("svscan", "daemontools"),
        ):
            require(tool, package)
        self.check_install_block()
        self.prepare(self.master, sshd=False)
        self.prepare(self.slave)
        self.install_dnsmaster()
        # The master, once (in root's home: the bundle and authorized_keys land there).
        self.master.sh(self.blocks["setup-master"])
        self.master.sh(
            "cp "
            + " ".join(
                shlex.quote(str(PROJECT / "contrib" / "zones" / name))
                for name in ("header", "zones.example.com", "zones.example.net")
            )
            + " /etc/dnsmaster/zones/"
        )
        self.setup_slave(self.slave, self.address, self.port)
        # Back on the master: record the slave, push, dig, doctor.
        self.add_slave = self.master.sh(
            with_values(
                self.blocks["setup-add-slave"],
                NAME="ns2",
                SLAVE=self.address,
                PORT=self.port,
                ZONE="example.com",
            )
        )

    def setup_slave(self, slave: Host, address: str, port: int) -> None:
        """A slave from scratch by the manual's blocks; then boot starts its sshd and
        runsvdir, and its tinydns runs."""
        # "scp" the bundle and the authorized_keys line to the slave's root home.
        for name in ("dnsmaster-receive.pyz", "authorized_keys"):
            shutil.copyfile(self.master.path(f"/root/{name}"), slave.path(f"/root/{name}"))
        slave.sh(with_values(self.blocks["setup-slave"], SLAVE=address))
        slave.sh(self.blocks["setup-slave-runit"])
        self.start_sshd(slave, address, port)
        slave.spawn(["runsvdir", "-P", "/etc/service"], self.tmp / f"{slave.name}-runsvdir.log")
        log = slave.path("/var/log/runit/tinydns/current")
        wait_for(f"tinydns under runit on {slave.name}", lambda: "starting tinydns" in _read(log))

    def add_slave_host(self) -> tuple[str, int]:
        """Another slave, its own Host, address and port, set up like the first: its
        address and its sshd's port."""
        address = self.realworld.take_dns_address()
        host = Host(self.tmp, f"slave{len(self.more) + 2}")
        self.more.append((host, address, self.realworld.free_port(address)))
        port = self.more[-1][2]
        self.prepare(host)
        self.setup_slave(host, address, port)
        return address, port

    def start_sshd(self, slave: Host, address: str, port: int) -> None:
        """The slave's own sshd (its /etc/ssh, fresh host keys, UsePAM no) on loopback."""
        options = [
            "-o",
            f"ListenAddress={address}:{port}",
            "-o",
            "UsePAM=no",
            "-o",
            "PidFile=none",
        ]
        config = slave.enter(["/usr/sbin/sshd", "-T", *options])
        listen = [line for line in config.splitlines() if line.startswith("listenaddress")]
        assert listen == [f"listenaddress {address}:{port}"], listen
        slave.spawn(["/usr/sbin/sshd", "-D", "-e", *options], self.tmp / f"{slave.name}-sshd.log")

        def banner() -> bool:
            try:
                with socket.create_connection((address, port), timeout=1) as s:
                    return s.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False

        wait_for(f"the sshd of {slave.name}", banner)

    def serial(self, address: str | None = None) -> int:
        """The SOA serial a slave's tinydns (the first's by default) serves for example.com."""
        address = address or self.address
        query = dns.message.make_query("example.com", "SOA")
        answer = dns.query.udp(query, address, port=53, timeout=2)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        raise AssertionError(f"no SOA for example.com from {address}: {answer}")

    def master_serial(self) -> int:
        """The serial of the build on the master's disk (its data's first line)."""
        from dnsmaster.core.banner import previous_serial  # noqa: PLC0415

        serial = previous_serial(self.master.path("/var/lib/dnsmaster/data").read_bytes()[:200])
        assert serial is not None, "the master's data has no dnsmaster banner"
        return serial

    def output_owners(self) -> set[int]:
        """The uids owning anything in the master's output directory."""
        out = self.master.path("/var/lib/dnsmaster")
        return {out.stat().st_uid} | {p.stat().st_uid for p in out.iterdir()}


@pytest.fixture
def lab(tmp_path: Path, blocks: dict[str, str]) -> Iterator[Lab]:
    require_root("the manual's set-up (accounts, sshd, tinydns on port 53)")
    the_lab = Lab(tmp_path, blocks)
    try:
        yield the_lab
    finally:
        the_lab.close()


def _check_slave(lab: Lab) -> int:
    """The slave serves what the master built, and the manual's checks said so."""
    slave_data = _read(lab.slave.path("/etc/sv/tinydns/root/data"))
    master_data = _read(lab.master.path("/var/lib/dnsmaster/data"))
    assert master_data, "the push left no data on the master"
    # The slave keeps the stream's trailer line (a comment tinydns-data ignores).
    assert slave_data.startswith(master_data), (slave_data[-300:], master_data[-300:])
    serial = lab.serial()
    # dig's SOA line: "ns... hostmaster... SERIAL ..."
    assert f" {serial} " in lab.add_slave.stdout, lab.add_slave.stdout
    # the slave account's files, not root's
    root = lab.slave.path("/etc/sv/tinydns/root")
    dnsslave = lab.slave.uid("dnsslave")
    assert (root / "data.cdb").stat().st_uid == dnsslave
    assert lab.output_owners() == {lab.master.uid("dnsmaster")}
    return serial


def _logged(path: Path, *needles: str) -> Callable[[], bool]:
    return lambda: any(all(n in line for n in needles) for line in _read(path).splitlines())


def _add_slave_while_running(lab: Lab, log: Path, hup_block: str, name: str) -> None:
    """Another slave set up as the first, then added to the running daemon by the
    manual's blocks: recorded and checked, SIGHUP, wait until it serves, dig."""
    address, port = lab.add_slave_host()
    lab.master.sh(
        with_values(lab.blocks["setup-add-slave-running"], NAME=name, SLAVE=address, PORT=port)
    )
    added = lab.master.sh(
        with_values(lab.blocks[hup_block], NAME=name, SLAVE=address, ZONE="example.com")
    )
    assert _logged(log, "event=config.reloaded", f"added={name}")(), _read(log)[-3000:]
    serial = lab.master_serial()
    assert lab.serial(address) == serial
    # dig's SOA line: "ns... hostmaster... SERIAL ..."
    assert f" {serial} " in added.stdout, added.stdout


def test_readme_walkthrough(lab: Lab) -> None:
    """The whole walk-through on one master: the slave from scratch and a push, then the
    service under daemontools, then the same master moved to runit.

    Under svscan: multilog as dnslog, svc -h, a second slave added to the running
    daemon by svc -h, the Makefile's targets. Then svscan's service is taken down
    (the lab, as an operator would) and the runit block run on the same master:
    svlogd as dnslog, sv hup, a third slave added by sv hup, make hup. The set-up
    blocks before the supervisor are the same for both, and run once: each
    supervisor's blocks are what the two halves prove apart."""
    lab.setup()
    _check_slave(lab)
    svscan = _daemontools(lab)
    _leave_daemontools(lab, svscan)
    _runit(lab)


def _daemontools(lab: Lab) -> subprocess.Popen[bytes]:
    """The service under svscan: multilog as dnslog, svc -h; a second slave added to the
    running daemon by svc -h; the Makefile. svscan's process."""
    lab.master.sh(lab.blocks["setup-daemontools"])
    svscan = lab.master.spawn(["svscan", "/etc/service"], lab.tmp / "svscan.log")
    service = "/etc/service/dnsmaster"
    current = lab.master.path(f"{service}/log/main/current")
    wait_for(
        "the daemon's first lines in multilog's log",
        _logged(current, "event=daemon.start"),
        show=current,
    )
    status = lab.master.enter(["svstat", service, f"{service}/log"])
    assert status.count(": up (pid ") == 2, status
    main = lab.master.path(f"{service}/log/main")
    dnslog = lab.master.uid("dnslog")
    assert main.stat().st_uid == dnslog
    assert current.stat().st_uid == dnslog
    # The daemon runs as dnsmaster, multilog as dnslog.
    daemon_pid = int(status.split("(pid ")[1].split(")")[0])
    assert Path(f"/proc/{daemon_pid}").stat().st_uid == lab.master.uid("dnsmaster")
    lab.master.enter(["svc", "-h", service])
    wait_for("a rebuild on svc -h", _logged(current, "event=build.start", "reason=sighup"))
    wait_for("a push after it", _logged(current, "event=build.done"))
    _add_slave_while_running(lab, current, "setup-add-slave-hup-daemontools", "ns3")
    _check_makefile(lab, current)
    return svscan


def _leave_daemontools(lab: Lab, svscan: subprocess.Popen[bytes]) -> None:
    """What an operator does to move the service off daemontools: unlink it from
    /etc/service, stop it and its logger (svc -dx), stop svscan; then nothing of it
    runs (the daemon's lock on the output is free for runit's)."""
    lab.master.sh(
        "rm /etc/service/dnsmaster\nsvc -dx /etc/dnsmaster/service /etc/dnsmaster/service/log\n"
    )
    svscan.terminate()
    svscan.wait(30)

    def stopped() -> bool:
        """No supervise, multilog or dnsmaster process left in the master's namespace."""
        for pid in lab.master.members():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv[0] in {b"supervise", b"multilog"} or any(b"dnsmaster" in a for a in argv):
                    return False
        return True

    try:
        wait_for("daemontools' service to stop", stopped)
    except pytest.fail.Exception:
        left = []
        for pid in lab.master.members():
            with contextlib.suppress(OSError):
                left.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
                left.append(signal_state(pid))
        raise AssertionError(f"still running: {left}") from None


def signal_state(pid: int) -> str:
    """What a process left running was doing: its signal masks (is a SIGTERM
    pending, blocked, caught?) and where each of its threads waits in the kernel.
    Seen twice in loaded runs, a daemon that outlived svc -dx; this says why."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    said = [line for line in lines if line.startswith(("State", "Sig", "ShdPnd"))]
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        with contextlib.suppress(OSError):
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            said.append(f"task {task.name} {state} {(task / 'wchan').read_text()}")
    return "; ".join(said)


def _runit(lab: Lab) -> None:
    """The same master under runsvdir: svlogd as dnslog, sv hup; a third slave added to
    the running daemon by sv hup; make hup."""
    lab.master.sh(lab.blocks["setup-runit"])
    lab.master.spawn(["runsvdir", "-P", "/etc/service"], lab.tmp / "runsvdir.log")
    current = lab.master.path("/etc/sv/dnsmaster/log/main/current")
    wait_for(
        "the daemon's first lines in svlogd's log",
        _logged(current, "event=daemon.start"),
        show=current,
    )
    status = lab.master.enter(["sv", "status", "/etc/service/dnsmaster"])
    assert status.startswith("run: "), status
    assert "run: log:" in status, status
    dnslog = lab.master.uid("dnslog")
    assert lab.master.path("/etc/sv/dnsmaster/log/main").stat().st_uid == dnslog
    assert current.stat().st_uid == dnslog
    lab.master.enter(["sv", "hup", "/etc/service/dnsmaster"])
    wait_for("a rebuild on sv hup", _logged(current, "event=build.start", "reason=sighup"))
    _add_slave_while_running(lab, current, "setup-add-slave-hup-runit", "ns4")
    _check_makefile(lab, current, targets=False)


def _check_makefile(lab: Lab, log: Path, *, targets: bool = True) -> None:
    """The Makefile block, then make as root: no root-owned output, hup fails loudly.

    ``targets``: also ``make``, ``make data`` and ``make status``, which do the same
    under either supervisor (run under daemontools, not again under runit);
    the block's ``make check`` finds dnsmaster through the service's env/PATH in both.
    """
    lab.master.sh(lab.blocks["setup-makefile"], cwd=str(PROJECT))
    zones = "/etc/dnsmaster/zones"
    if not targets:
        before = _read(log).count("reason=sighup")
        lab.master.sh(f"make -C {zones} hup")
        wait_for("make hup's rebuild", lambda: _read(log).count("reason=sighup") > before)
        proc = lab.master.sh(f"make -C {zones} hup SERVICE=/etc/service/nothing", check=False)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        return
    # A change saved, then `make` as root: the build happens, by the daemon's account.
    lab.master.sh(f"echo '+new.example.com:192.0.2.7' >> {zones}/zones.example.com")
    lab.master.sh(f"make -C {zones}")
    lab.master.sh(f"make -C {zones} data")
    assert lab.output_owners() == {lab.master.uid("dnsmaster")}
    wait_for(
        "the new record on the slave",
        lambda: "+new.example.com:192.0.2.7" in _read(lab.slave.path("/etc/sv/tinydns/root/data")),
    )
    before = _read(log).count("reason=sighup")
    lab.master.sh(f"make -C {zones} hup")
    wait_for("make hup's rebuild", lambda: _read(log).count("reason=sighup") > before)
    proc = lab.master.sh(f"make -C {zones} hup SERVICE=/etc/service/nothing", check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "nothing supervises" in proc.stderr or "fail" in proc.stdout + proc.stderr
    # Once the slave has it and serves it, make status says so (exit 0). The manual's
    # dnsmaster wait first: each poll of make status is a dnsmaster start.
    lab.master.sh(
        "runuser -u dnsmaster -- dnsmaster wait --config /etc/dnsmaster/dnsmaster.toml",
        check=False,  # make status below judges; this only spares its polls
    )
    wait_for(
        "make status to say ok",
        lambda: lab.master.sh(f"make -C {zones} status", check=False).returncode == 0,
    )
