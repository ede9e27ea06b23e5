"""A slave that serves two masters, each confined to its own domains (issue 19),
with real components only: OpenSSH's sshd running each master's key line (its
forced command the receiver bundle, run by Debian's python3), Debian's tinydns
serving the merged pair, dnspython asking it, and each master ``dnsmaster push``
(or ``dnsmaster run``) with its own configuration and key.

The masters' commands run in the test's process (``dnsmaster.commands.main.main``,
what ``python -m dnsmaster`` runs and exits with), except where the process itself
is part of what is proved: each master's first push, the first round of pushes at
once, the daemon. Each test starts from the slave as the first pushes left it, put
back from a copy (:class:`TwoMasters`) rather than pushed again.

The two customers: master ``a`` may publish ``a.example``; master ``b`` owns the
parent ``example``, except ``a.example``, which the slave's operator declared a's
(``--except a.example`` on b's key line). So every question about a's names has
an answer from b's zone close by, and a master that read another's records as its
own would be caught.

"Nothing changed" is proved by the whole tree of the slave's root (every file's
name and bytes, the masters' sections included) and by tinydns' answers, before
and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.rcode
import pytest

from dnsmaster import config as configuration
from dnsmaster import log
from dnsmaster.commands.main import main as cli_main
from dnsmaster.commands.push import push_to_slaves
from dnsmaster.core.makedata import previous_serial
from dnsmaster.core.stream import seal
from dnsmaster.master import state as statefile
from tests.lab.daemonrun import PROJECT, DaemonProcess, config_text
from tests.lab.realworld import Sshd, second_lab_account, ssh_keygen, ssh_options

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab, Slave
    from tests.lab.shared import SharedLab


#: Every name either master publishes, and what the tests ask tinydns about them.
QUESTIONS = (
    ("a.example", "SOA"),
    ("www.a.example", "A"),
    ("example", "SOA"),
    ("www.example", "A"),
    ("www.bank.example", "A"),
    ("mail.a.example", "A"),
)

TIMEOUT = 60.0


def a_zones(www: str = "192.0.2.1", extra: str = "") -> str:
    return f".a.example:127.0.0.1:a\n+www.a.example:{www}\n{extra}"


def b_zones(www: str = "198.51.100.1", extra: str = "") -> str:
    return f".example:127.0.0.2:b\n+www.example:{www}\n{extra}"


# --------------------------------------------------------------------------- plumbing


@dataclass
class Run:
    """One ``dnsmaster`` command's exit status, output and JSON log events."""

    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def named(self, event: str, **match: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]


def json_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line is not JSON: {line!r}\n{stderr}")
        events.append(event)
    return events


def env() -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "DNSMASTER_CONFIG"},
        "PYTHONPATH": str(PROJECT),
    }


def in_process(*argv: str) -> tuple[int, str, str]:
    """``dnsmaster ARGV`` run in this process: its exit status, stdout and stderr.

    What the command does is the same as in its own process (``python -m dnsmaster``
    exits with what :func:`dnsmaster.commands.main.main` returns) for 0.5 s of CPU
    less in imports; the tests that are about the process (several masters at once,
    the first pushes, the daemon) still start one.
    """
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli_main(list(argv))
    finally:
        # The command set its log up to write to ``err``: the next one sets its own,
        # and code that logs before setting one up gets the defaults, as in
        # a new process.
        log.configure()
    return status, out.getvalue(), err.getvalue()


@dataclass
class Customer:
    """One master of the shared slave: its name there, its domains, its own key,
    zones, output and configuration (its slave ``ns``)."""

    name: str
    allow: tuple[str, ...]
    home: Path
    excepts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.zones.mkdir(exist_ok=True)
        self.output.mkdir(exist_ok=True)
        (self.zones / "header").write_text(f"# master {self.name}\n")
        ssh_keygen(self.key, f"master-{self.name}@test")

    @property
    def key(self) -> Path:
        return self.home / "key"

    @property
    def zones(self) -> Path:
        return self.home / "zones"

    @property
    def output(self) -> Path:
        return self.home / "out"

    @property
    def config(self) -> Path:
        return self.home / "dnsmaster.toml"

    @property
    def state(self) -> Path:
        return self.home / "state.json"

    @property
    def source(self) -> str:
        """The zones file, as the data's ``# zones.X:LINE`` comments name it."""
        return f"zones.{self.name}"

    def write_zones(self, text: str) -> None:
        (self.zones / self.source).write_text(text)

    def key_options(self) -> list[str]:
        options = ["--master", self.name]
        for domain in self.allow:
            options += ["--allow", domain]
        for domain in self.excepts:
            options += ["--except", domain]
        return options

    def key_line(self, lab: Lab, root: Path) -> str:
        """The slave's authorized_keys line for this master, from ``authorized-key``."""
        status, out, err = in_process(
            "authorized-key",
            "--pubkey",
            f"{self.key}.pub",
            "--root",
            str(root),
            "--command",
            str(lab.forced_command),
            *self.key_options(),
        )
        assert status == 0, err
        return out

    def configure(
        self, slave: Slave, known_hosts: Path, *, user: str, port: int | None = None, **daemon: Any
    ) -> None:
        options: dict[str, object] = {
            "debounce": 0.2,
            "retry_initial": 0.2,
            "retry_max": 1.0,
            "verify_timeout": 1.0,
            "stop_timeout": 20.0,
        }
        options.update(daemon)
        self.config.write_text(
            config_text(
                zones=self.zones,
                output=self.output,
                state=self.state,
                top={"key": self.key, "known_hosts": known_hosts, "user": user},
                daemon=options,
                push={"connect_timeout": 5.0, "timeout": 60.0},
                slaves=[
                    {
                        "name": "ns",
                        "host": slave.address,
                        "port": port or slave.port,
                        "dns": slave.address,
                    }
                ],
            )
            # A handful of records: any change is over the guard's share.
            + "\n[guard]\nmax_removed = 1.0\nzones = false\n"
        )

    def command(self, verb: str, *args: str, process: bool = False) -> Run:
        """``dnsmaster VERB --config ... ARGS`` (its log as JSON where it logs): in this
        process, or (``process``) as ``python -m dnsmaster``."""
        logs = ["--log-format", "json"] if verb in {"push", "wait"} else []
        argv = [verb, "--config", str(self.config), *logs, *args]
        if process:
            proc = subprocess.run(
                [sys.executable, "-m", "dnsmaster", *argv],
                capture_output=True,
                text=True,
                env=env(),
                timeout=120,
                check=False,
            )
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            returncode, stdout, stderr = in_process(*argv)
        assert "Traceback" not in stderr, stderr
        events = json_events(stderr) if logs else []
        return Run(returncode, stdout, stderr, events)

    def push(self, *args: str) -> Run:
        return self.command("push", *args)

    def popen_push(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dnsmaster",
                "push",
                "--config",
                str(self.config),
                "--log-format",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )

    def built(self) -> tuple[str, int]:
        """The sha256 and serial of this master's build on disk."""
        data = (self.output / "data").read_bytes()
        serial = previous_serial(data[:200])
        assert serial is not None
        return hashlib.sha256(data).hexdigest(), serial

    def ssh(
        self,
        lab: Lab,
        slave: Slave,
        *command: str,
        input: bytes = b"",
        options: Sequence[str] = (),
        user: str | None = None,
        port: int | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """The OpenSSH client with this master's key: ``ssh slave COMMAND < input``."""
        argv = [
            lab.ssh_binary,
            *ssh_options(self.key, lab.known_hosts),
            *options,
            "-p",
            str(port or slave.port),
            "--",  # a command that starts with "-" is the command, not an option
            f"{user or lab.user}@{slave.address}",
            *command,
        ]
        return subprocess.run(argv, input=input, capture_output=True, timeout=60, check=False)

    def status_fields(self, lab: Lab, slave: Slave, **how: Any) -> dict[str, str]:
        """The ``status`` verb's words through this master's key line."""
        proc = self.ssh(lab, slave, "status", **how)
        assert proc.returncode == 0, proc.stderr.decode()
        (line,) = proc.stdout.decode().splitlines()
        words = line.split()
        assert words[0] == "status", line
        return dict(w.split("=", 1) for w in words[1:] if "=" in w)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` by relative path: a file's bytes, None for a directory."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = None if path.is_dir() and not path.is_symlink() else path.read_bytes()
    return found


def answers(slave: Slave) -> dict[str, list[str] | str]:
    """What the slave's tinydns answers to :data:`QUESTIONS` (its answer section as
    text, or the rcode when it is not NOERROR, or ``timeout``)."""
    seen: dict[str, list[str] | str] = {}
    for name, rdtype in QUESTIONS:
        try:
            response = slave.tinydns.query(name, rdtype)
        except dns.exception.Timeout:
            seen[f"{name}/{rdtype}"] = "timeout"
            continue
        if response.rcode() != dns.rcode.NOERROR:
            seen[f"{name}/{rdtype}"] = dns.rcode.to_text(response.rcode())
            continue
        seen[f"{name}/{rdtype}"] = sorted(rrset.to_text() for rrset in response.answer)
    return seen


def served_serial(slave: Slave, zone: str) -> int | None:
    with contextlib.suppress(dns.exception.Timeout):
        return slave.tinydns.soa_serial(zone)
    return None


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Shared:
    """One slave (one account, two key lines) serving masters ``a`` and ``b``."""

    lab: Lab
    slave: Slave
    a: Customer
    b: Customer

    def unchanged(self, before: dict[str, bytes | None], heard: dict[str, Any]) -> None:
        self.slave.wait_receivers_gone()
        assert tree(self.slave.root) == before
        assert answers(self.slave) == heard

    def serves(self, who: Customer, zone: str) -> None:
        _, serial = who.built()
        assert served_serial(self.slave, zone) == serial


@dataclass
class TwoMasters:
    """The shared slave as both masters' first pushes left it, made once per lab and
    put back before each test (:meth:`get`) rather than pushed again: the slave's
    root (copied with ``cp -a``, so the receiver's hard links stay links), each
    customer's home (key, zones, output, state file, configuration) and the
    account's two key lines.

    The lab's own reset (tests/lab/shared.py) still runs after each test and empties
    the root and puts authorized_keys back; what is put back here is put back on top
    of a lab checked as new, so a test's leftovers are caught there as before.
    """

    home: Path
    made: Shared | None = None
    keys: str = ""

    @property
    def copies(self) -> Path:
        return self.home / "copies"

    def get(self, lab: Lab, slave: Slave) -> Shared:
        """The two masters on ``slave``, as right after their first pushes."""
        if self.made is None or self.made.lab is not lab or self.made.slave is not slave:
            self.made = None  # a make that fails leaves nothing to put back
            self.made = self.make(lab, slave)
        else:
            self.put_back(self.made)
        it = self.made
        it.serves(it.a, "a.example")
        it.serves(it.b, "example")
        return it

    def make(self, lab: Lab, slave: Slave) -> Shared:
        """Both customers new, each with a first push by ``python -m dnsmaster push``;
        then a copy of what that left."""
        for name in ("a", "b", "copies"):
            shutil.rmtree(self.home / name, ignore_errors=True)
        a = Customer("a", ("a.example",), self.home / "a")
        b = Customer("b", ("example",), self.home / "b", excepts=("a.example",))
        self.keys = a.key_line(lab, slave.root) + b.key_line(lab, slave.root)
        slave.sshd.set_authorized_keys(self.keys)
        for who, zones in ((a, a_zones()), (b, b_zones())):
            who.configure(slave, lab.known_hosts, user=lab.user)
            who.write_zones(zones)
            run = who.command("push", process=True)
            assert run.returncode == 0, run.stderr
        slave.wait_receivers_gone()
        self.copies.mkdir()
        cp_a(slave.root, self.copies / "root")
        cp_a(a.home, b.home, self.copies)
        return Shared(lab, slave, a, b)

    def put_back(self, it: Shared) -> None:
        it.slave.sshd.set_authorized_keys(self.keys)
        # "DIR/." (which a Path would drop): what is in DIR, into the root.
        cp_a(f"{self.copies / 'root'}/.", it.slave.root)
        for who in (it.a, it.b):
            shutil.rmtree(who.home)
        cp_a(self.copies / it.a.name, self.copies / it.b.name, self.home)


def cp_a(*paths: Path | str) -> None:
    """``cp -a SOURCE... DESTINATION``: owners, modes, times and hard links kept."""
    subprocess.run(["cp", "-a", "--", *map(str, paths)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def two_masters(tmp_path_factory: pytest.TempPathFactory) -> TwoMasters:
    return TwoMasters(tmp_path_factory.mktemp("two-masters"))


@pytest.fixture
def shared(lab: Lab, two_masters: TwoMasters) -> Shared:
    """A slave whose account has a key line for each master; each has pushed once."""
    (slave,) = lab(1)
    return two_masters.get(lab, slave)


def test_what_is_put_back_is_the_labs_to_undo(lab: SharedLab, shared: Shared) -> None:
    """All that :class:`TwoMasters` puts back on the lab (the root's files, the key
    lines) is what the lab's check looks at: a reset that left any of it would fail
    the next test, as a test's own leftovers do."""
    found = lab.differences()
    name = shared.slave.name
    assert f"{name}: authorized_keys differs from new (content, mode or owner)" in found
    assert any(f.startswith(f"{name}: its root is not empty: ") for f in found), found


# --------------------------------------------------------------------------- both served


def test_both_masters_served_each_its_own(shared: Shared) -> None:
    """Both sets of zones answer; each key's status reports its own master's build;
    each master's status --live, diff --slave and wait see their own part only."""
    lab, slave, a, b = shared.lab, shared.slave, shared.a, shared.b
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]
    assert slave.tinydns.answer("www.example", "A") == ["198.51.100.1"]
    lives: dict[str, str] = {}
    for who in (a, b):
        sha256, serial = who.built()
        fields = who.status_fields(lab, slave)
        assert (fields["sha256"], fields["serial"]) == (sha256, str(serial))
        assert fields["master"] == who.name
        assert int(fields["protocol"]) >= 3
        live = who.command("status", "--live")
        assert live.returncode == 0, live.stdout + live.stderr
        assert f"as master {who.name}" in live.stdout
        assert "has and serves the master's data" in live.stdout
        lives[who.name] = live.stdout
        diff = who.command("diff", "--slave", "ns")
        assert diff.returncode == 0, diff.stdout + diff.stderr
        wait = who.command("wait", "--timeout", "10")
        assert wait.returncode == 0, wait.stderr
        doctor = who.command("doctor")
        checks = [line for line in doctor.stdout.splitlines() if "slave ns:" in line]
        assert not [line for line in checks if line.startswith("FAIL")], doctor.stdout
        assert any(f"protocol 3, master {who.name})" in line for line in checks), checks
        assert any("answers SOA for 1 zones" in line for line in checks), checks
    # each master's live check asked its own zones only
    assert "a.example" in lives["a"]
    assert "  serves     example " in lives["b"]
    assert "a.example" not in lives["b"]
    # The slave's operator sees both, each with its domains.
    listing = operator(lab, slave, "--masters")
    assert listing.returncode == 0, listing.stderr
    lines = sorted(listing.stdout.splitlines())
    assert [line.split()[:2] for line in lines] == [["master", "a"], ["master", "b"]]
    assert "allow=a.example" in lines[0]
    assert "allow=example" in lines[1]
    assert "except=a.example" in lines[1]


def test_merged_pair_is_what_tinydns_data_makes(shared: Shared, tinydns_data_bin: str) -> None:
    """The merged data, compiled by Debian's tinydns-data, is the data.cdb tinydns serves."""
    work = shared.slave.root.parent / "td"
    work.mkdir()
    shutil.copy2(shared.slave.root / "data", work / "data")
    subprocess.run([tinydns_data_bin], cwd=work, check=True, capture_output=True)
    assert (work / "data.cdb").read_bytes() == (shared.slave.root / "data.cdb").read_bytes()
    merged = (shared.slave.root / "data").read_bytes()
    assert merged.startswith(b"# dnsmaster merged masters=a,b\n")


def test_each_master_pushes_on_its_own(shared: Shared) -> None:
    """A new build of b: b's serial and answers change, a's (sha256, serial, answers)
    do not; a's status --live still says a's data is had and served."""
    lab, slave, a, b = shared.lab, shared.slave, shared.a, shared.b
    a_before = a.status_fields(lab, slave)
    b.write_zones(b_zones("198.51.100.2"))
    run = b.push()
    assert run.returncode == 0, run.stderr
    shared.serves(b, "example")
    assert slave.tinydns.answer("www.example", "A") == ["198.51.100.2"]
    assert a.status_fields(lab, slave) == a_before
    shared.serves(a, "a.example")
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]
    assert a.command("status", "--live").returncode == 0
    # A delta of a's next build goes against a's own part there.
    a.write_zones(a_zones("192.0.2.2"))
    run = a.push()
    assert run.returncode == 0, run.stderr
    (done,) = run.named("push.done")
    assert done["mode"] == "delta", run.stderr
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.2"]


def operator(lab: Lab, slave: Slave, *args: str) -> subprocess.CompletedProcess[str]:
    """The slave operator's command, run on the slave as the slave's account."""
    return subprocess.run(
        [str(lab.forced_command), "receive", "--root", str(slave.root), *args],
        capture_output=True,
        text=True,
        check=False,
        user=lab.account.pw_uid,
        group=lab.account.pw_gid,
        extra_groups=[],
        cwd=slave.root,
        timeout=60,
    )


def test_removed_master_is_not_taken_for_the_parent(shared: Shared) -> None:
    """The slave's operator removes a: tinydns answers a's names from b's zone
    (NXDOMAIN under ``example``), and a's wait and status --live do not take that for
    a's own; b still serves. a's next push puts it back."""
    lab, slave, a = shared.lab, shared.slave, shared.a
    removed = operator(lab, slave, "--remove-master", "a")
    assert removed.returncode == 0, removed.stderr
    heard = answers(slave)
    assert heard["a.example/SOA"] == "NXDOMAIN"
    assert slave.tinydns.answer("www.example", "A") == ["198.51.100.1"]
    assert a.status_fields(lab, slave).get("sha256") is None
    _, serial = a.built()
    late = a.command("wait", str(serial), "--timeout", "1.5")
    assert late.returncode == 3, late.stderr
    (event,) = late.named("wait.late")
    assert event["zone"] == "a.example"
    assert event["serves"] == "no answer"
    assert "NXDOMAIN" in event["error"]
    live = a.command("status", "--live")
    assert live.returncode == 3, live.stdout
    assert "nothing installed" in live.stdout + live.stderr
    run = a.push("--no-build")
    assert run.returncode == 0, run.stderr
    assert a.command("wait", str(serial), "--timeout", "10").returncode == 0
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]


# --------------------------------------------------------------------------- confinement

#: A line from master a that publishes outside a.example (or, ``%``, for every master).
OUTSIDE = [
    pytest.param("+www.example:192.0.2.66", id="plus-the-other-masters-name"),
    pytest.param("+www.bank.example:192.0.2.66", id="plus"),
    pytest.param("=www.bank.example:192.0.2.66", id="equals"),
    pytest.param("=www.a.example:192.0.2.66", id="equals-ptr-outside"),
    pytest.param("'www.bank.example:hello", id="txt"),
    pytest.param("^66.2.0.192.in-addr.arpa:www.a.example", id="ptr"),
    pytest.param("@bank.example:192.0.2.66:mx.bank.example", id="mx"),
    pytest.param("@a.example:192.0.2.66:mx.bank.example", id="mx-x"),
    pytest.param("Cwww.bank.example:www.a.example", id="cname"),
    pytest.param(":www.bank.example:16:\\005hello", id="generic"),
    pytest.param("Zbank.example:ns.a.example:hostmaster.a.example:1", id="soa"),
    pytest.param("Zexample:ns.a.example:hostmaster.a.example:1", id="parent-soa"),
    pytest.param(".bank.example:192.0.2.66:a", id="dot"),
    pytest.param(".sub.a.example:192.0.2.66:ns.bank.example", id="dot-x"),
    pytest.param("&bank.example:192.0.2.66:a", id="ns"),
    pytest.param("3www.bank.example:20010db8000000000000000000000066", id="3"),
    pytest.param("6www.bank.example:20010db8000000000000000000000066", id="6"),
    pytest.param("+*.example:192.0.2.66", id="wildcard"),
    pytest.param("%lo:192.0.2", id="location"),
    pytest.param("+www.a\\056example:192.0.2.66", id="escaped-dot"),
    pytest.param("+WWW.Bank.EXAMPLE:192.0.2.66", id="mixed-case"),
]


@pytest.mark.parametrize("line", OUTSIDE)
def test_outside_the_allowlist_is_refused(shared: Shared, line: str) -> None:
    """A push with one line outside a's domains is refused whole: the line is one
    push.refused_line event with its zones.X:LINE, the error (status's reason) names
    it, and nothing changes on the slave: files and answers."""
    a, slave = shared.a, shared.slave
    before, heard = tree(slave.root), answers(slave)
    a.write_zones(a_zones("192.0.2.2", extra=line + "\n"))
    run = a.push()
    assert run.returncode == 3, run.stderr
    refused = run.named("push.refused_line", slave="ns")
    assert refused, run.stderr
    assert refused[0]["source"] == f"{a.source}:3", refused
    (failed,) = run.named("push.failed", slave="ns")
    assert f"{a.source}:3" in failed["error"]
    assert failed["exit_status"] == 1
    assert failed["retryable"] is False
    shared.unchanged(before, heard)
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]


def test_own_names_in_any_case_are_taken(shared: Shared) -> None:
    """Mixed case and a trailing dot in a's own names are a's: taken and served."""
    a, slave = shared.a, shared.slave
    a.write_zones(a_zones(extra="+Mail.A.Example.:192.0.2.67\n+*.A.example:192.0.2.68\n"))
    run = a.push()
    assert run.returncode == 0, run.stderr
    assert slave.tinydns.answer("mail.a.example", "A") == ["192.0.2.67"]
    assert slave.tinydns.answer("other.a.example", "A") == ["192.0.2.68"]
    assert slave.tinydns.answer("www.example", "A") == ["198.51.100.1"]


def test_the_parent_cannot_take_the_excepted_subtree(shared: Shared) -> None:
    """b owns example except a.example: b publishing www.a.example is refused."""
    b, slave = shared.b, shared.slave
    before, heard = tree(slave.root), answers(slave)
    b.write_zones(b_zones(extra="+www.a.example:198.51.100.66\n"))
    run = b.push()
    assert run.returncode == 3, run.stderr
    assert [e["source"] for e in run.named("push.refused_line")] == [f"{b.source}:3"]
    shared.unchanged(before, heard)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_pushes_from_both_masters(shared: Shared, tinydns_data_bin: str) -> None:
    """8 rounds of both masters pushing a new build at once: every push is taken, and
    after each round the merged pair matches (tinydns-data's data.cdb of the data) and
    serves both masters' latest.

    The first round is two ``dnsmaster push`` processes; the other 7 build in this
    process and push both builds from one event loop: two SSH connections and two
    receivers on the slave at once, as from two processes (the slave cannot tell),
    without 1 s of CPU a round in two Python start-ups. Every order of the two
    receivers, and every delay of their renames and links, is
    tests/slave/test_masters_crash.py's TestTwoMastersAtOnce (the same receiver, under
    strace); these rounds prove the path through sshd to tinydns with both at once
    (they were 20: 0.2 s of CPU and 1.5 s of wall a round)."""
    slave, a, b = shared.slave, shared.a, shared.b
    work = slave.root.parent / "td"
    work.mkdir()
    for n in range(2, 10):
        a.write_zones(a_zones(f"192.0.2.{n}"))
        b.write_zones(b_zones(f"198.51.100.{n}"))
        if n == 2:
            procs = [a.popen_push(), b.popen_push()]
            outs = [p.communicate(timeout=120) for p in procs]
            for proc, (_, err) in zip(procs, outs, strict=True):
                assert proc.returncode == 0, err
        else:
            for who in (a, b):
                built = who.command("build")
                assert built.returncode == 0, built.stderr
            statuses, logged = push_at_once(a, b)
            assert statuses == [0, 0], logged
        shutil.copy2(slave.root / "data", work / "data")
        subprocess.run([tinydns_data_bin], cwd=work, check=True, capture_output=True)
        assert (work / "data.cdb").read_bytes() == (slave.root / "data.cdb").read_bytes(), n
        assert slave.tinydns.answer("www.a.example", "A") == [f"192.0.2.{n}"]
        assert slave.tinydns.answer("www.example", "A") == [f"198.51.100.{n}"]
        shared.serves(a, "a.example")
        shared.serves(b, "example")


def push_at_once(*customers: Customer) -> tuple[list[int], str]:
    """Each customer's build on disk pushed to its slaves as ``dnsmaster push`` pushes
    it (:func:`dnsmaster.commands.push.push_to_slaves`), all in one event loop at
    once: their exit statuses, and the JSON log they wrote between them."""
    configs = [configuration.load(who.config) for who in customers]
    err = io.StringIO()
    log.configure(fmt="json", stream=err)

    async def push_all() -> list[int]:
        logger = log.get_logger()
        return list(
            await asyncio.gather(*(push_to_slaves(cfg, cfg.slaves, logger) for cfg in configs))
        )

    try:
        statuses = asyncio.run(push_all())
    finally:
        log.configure()
    return statuses, err.getvalue()


# --------------------------------------------------------------------------- one breaks


def _cut_stream(shared: Shared) -> None:
    a = shared.a
    a.write_zones(a_zones("192.0.2.99"))
    assert a.command("build").returncode == 0
    data = (a.output / "data").read_bytes()
    whole = data + seal(data)
    proc = a.ssh(shared.lab, shared.slave, "push", input=whole[: len(whole) // 2])
    assert proc.returncode == 1, proc.stderr.decode()
    assert b"incomplete data" in proc.stderr


def _refused_line(shared: Shared) -> None:
    a = shared.a
    # a tries b's own name
    a.write_zones(a_zones(extra="+www.example:192.0.2.99\n"))
    run = a.push()
    assert run.returncode == 3, run.stderr


def _killed_receiver(shared: Shared) -> None:
    a, slave = shared.a, shared.slave
    a.write_zones(a_zones("192.0.2.99"))
    assert a.command("build").returncode == 0
    data = (a.output / "data").read_bytes()
    whole = data + seal(data)
    argv = [
        shared.lab.ssh_binary,
        *ssh_options(a.key, shared.lab.known_hosts),
        "-p",
        str(slave.port),
        f"{shared.lab.user}@{slave.address}",
        "push",
    ]
    client = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert client.stdin is not None
        client.stdin.write(whole[: len(whole) - 10])
        client.stdin.flush()
        wait_for(slave.receivers, 30, "the receiver to start")
        for pid in slave.receivers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        client.communicate(timeout=30)
    assert client.returncode != 0


@pytest.mark.parametrize(
    "break_it",
    [_cut_stream, _refused_line, _killed_receiver],
    ids=["cut-stream", "refused-line", "killed-receiver"],
)
def test_one_masters_broken_push_leaves_the_other(
    shared: Shared, break_it: Callable[[Shared], None]
) -> None:
    """a's push breaks; b's names answer as before, b's status is b's, and b's next
    push goes through (repairing whatever a left)."""
    lab, slave, b = shared.lab, shared.slave, shared.b
    b_status = b.status_fields(lab, slave)
    b_heard = {k: v for k, v in answers(slave).items() if "a.example" not in k}
    a_serial = served_serial(slave, "a.example")
    break_it(shared)
    slave.wait_receivers_gone()
    assert {k: v for k, v in answers(slave).items() if "a.example" not in k} == b_heard
    assert b.status_fields(lab, slave) == b_status
    assert served_serial(slave, "a.example") == a_serial
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]
    b.write_zones(b_zones("198.51.100.7"))
    run = b.push()
    assert run.returncode == 0, run.stderr
    assert slave.tinydns.answer("www.example", "A") == ["198.51.100.7"]
    assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.1"]


# --------------------------------------------------------------------------- stolen key


STOLEN = [
    pytest.param(("rm", "-rf", "/"), id="other-verb"),
    pytest.param(("push; touch /tmp/dnsmaster-pwned",), id="shell"),
    pytest.param(("status", "--root", "/"), id="status-extra-args"),
    pytest.param(("push", "--master", "b"), id="push-as-b"),
    pytest.param(("push", "--allow", "example"), id="push-more-domains"),
    pytest.param(("push", "--except", "www.example"), id="push-except"),
    pytest.param(("push", "--allow-locations"), id="push-locations"),
    pytest.param(("--remove-master", "b"), id="remove-b"),
    pytest.param(("--masters",), id="list-masters"),
    pytest.param(("--adopt", "a"), id="adopt"),
    pytest.param(("delta", "--force", "--master", "b"), id="delta-as-b"),
]


@pytest.mark.parametrize("command", STOLEN)
def test_stolen_key_cannot_touch_the_other(shared: Shared, command: tuple[str, ...]) -> None:
    """a's key, in a thief's hands: another verb, extra arguments, the slave operator's
    commands are refused; nothing changes (files, answers)."""
    lab, slave, a = shared.lab, shared.slave, shared.a
    before, heard = tree(slave.root), answers(slave)
    data = b"+www.example:192.0.2.66\n"
    proc = a.ssh(lab, slave, *command, input=data + seal(data))
    assert proc.returncode == 2, proc.stderr.decode()
    assert b"refused: " in proc.stderr
    assert proc.stdout == b""
    shared.unchanged(before, heard)
    assert not Path("/tmp/dnsmaster-pwned").exists()


def test_stolen_key_environment_and_data(shared: Shared) -> None:
    """The environment a client may send (SetEnv: a PYTHONPATH, an LD_PRELOAD, a
    configuration) changes nothing; the key's own verbs with b's data are refused
    by the allowlist, and a delta against b's build is refused as another base."""
    lab, slave, a, b = shared.lab, shared.slave, shared.a, shared.b
    before, heard = tree(slave.root), answers(slave)
    poison = ["-o", "SetEnv=PYTHONPATH=/tmp LD_PRELOAD=/tmp/x.so DNSMASTER_CONFIG=/"]
    fields = a.status_fields(lab, slave, options=poison)
    assert fields["master"] == "a"
    b_data = (b.output / "data").read_bytes()
    proc = a.ssh(lab, slave, "push", input=b_data + seal(b_data), options=poison)
    assert proc.returncode == 1, proc.stderr.decode()
    assert b"outside this master's allowlist" in proc.stderr
    from dnsmaster.core import delta  # noqa: PLC0415

    # a delta whose base is b's build: a's part is not it
    changed = b_data.replace(b"198.51.100.1", b"192.0.2.66")
    stream = delta.make(b_data, changed) + seal(changed)
    proc = a.ssh(lab, slave, "delta", input=stream)
    assert proc.returncode == 3, proc.stderr.decode()
    shared.unchanged(before, heard)


# --------------------------------------------------------------------------- a daemon


def test_daemon_and_a_push_by_hand(shared: Shared) -> None:
    """a runs the daemon, b pushes by hand meanwhile: a's daemon sees its own part
    (installed, verified over DNS); a refused build is logged line by line, status
    shows its zones.X:LINE; b's names never change; a fixed build goes out."""
    slave, a, b = shared.slave, shared.a, shared.b
    a.write_zones(a_zones("192.0.2.3"))
    daemon = DaemonProcess(a.config).start()
    try:
        done = daemon.wait("build.done", timeout=TIMEOUT)
        daemon.wait("push.done", timeout=TIMEOUT, serial=done["serial"])
        installed = daemon.wait("status.installed", timeout=TIMEOUT)
        assert installed["master"] == "a"
        wait_for(
            lambda: any(s.verified == "ok" for s in statefile.read(a.state).slaves),
            TIMEOUT,
            "a's daemon to see its build served",
        )
        b.write_zones(b_zones("198.51.100.3"))
        run = b.push()
        assert run.returncode == 0, run.stderr
        assert slave.tinydns.answer("www.example", "A") == ["198.51.100.3"]
        assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.3"]
        ok = a.command("status")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        # a publishes b's name: refused, line by line, and status says where
        b_heard = {k: v for k, v in answers(slave).items() if "a.example" not in k}
        mark = daemon.mark()
        a.write_zones(a_zones("192.0.2.4", extra="+www.example:192.0.2.99\n"))
        refused = daemon.wait("push.refused_line", since=mark, timeout=TIMEOUT)
        assert refused["source"] == f"{a.source}:3"
        failed = daemon.wait("push.failed", since=mark, timeout=TIMEOUT)
        assert f"{a.source}:3" in failed["error"]
        wait_for(
            lambda: any(f"{a.source}:3" in (s.error or "") for s in statefile.read(a.state).slaves),
            TIMEOUT,
            "the refusal in a's state",
        )
        report = a.command("status")
        assert report.returncode == 3, report.stdout
        assert f"{a.source}:3" in report.stdout + report.stderr
        assert {k: v for k, v in answers(slave).items() if "a.example" not in k} == b_heard
        assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.3"]
        mark = daemon.mark()
        a.write_zones(a_zones("192.0.2.5"))
        daemon.wait("push.done", since=mark, timeout=TIMEOUT)
        assert slave.tinydns.answer("www.a.example", "A") == ["192.0.2.5"]
        assert slave.tinydns.answer("www.example", "A") == ["198.51.100.3"]
    finally:
        daemon.kill()


# --------------------------------------------------------------------------- two accounts


@pytest.fixture
def second_sshd(lab: Lab) -> Iterator[Callable[[Slave], Sshd]]:
    """Starts, for a slave, a second sshd on its address for the second account;
    stopped by PID at the end."""
    started: list[Sshd] = []

    def start(slave: Slave) -> Sshd:
        sshd = Sshd(
            slave.root.parent / "sshd2", host=slave.address, user=second_lab_account().pw_name
        )
        started.append(sshd)
        sshd.start()
        return sshd

    try:
        yield start
    finally:
        for sshd in started:
            sshd.stop()


def test_one_account_per_master(
    lab: Lab, tmp_path: Path, second_sshd: Callable[[Slave], Sshd]
) -> None:
    """The classic set-up: a's account and b's account share a group that may write
    the root (group-writable, setgid, no sticky bit); each pushes with its own login,
    each is confined, and each replaces the merged pair the other wrote."""
    (slave,) = lab(1)
    second = second_lab_account()
    os.chown(slave.root, lab.account.pw_uid, lab.account.pw_gid)
    slave.root.chmod(0o2775)
    assert second.pw_gid == lab.account.pw_gid
    a = Customer("a", ("a.example",), tmp_path / "a")
    b = Customer("b", ("example",), tmp_path / "b", excepts=("a.example",))
    slave.sshd.set_authorized_keys(a.key_line(lab, slave.root))
    sshd = second_sshd(slave)
    sshd.set_authorized_keys(b.key_line(lab, slave.root))
    known = tmp_path / "known_hosts"
    known.write_text(slave.sshd.host_key_line() + "\n" + sshd.host_key_line() + "\n")
    a.configure(slave, known, user=lab.user)
    b.configure(slave, known, user=second.pw_name, port=sshd.port)
    for n in range(1, 4):
        for who, zones in ((a, a_zones(f"192.0.2.{n}")), (b, b_zones(f"198.51.100.{n}"))):
            who.write_zones(zones)
            run = who.push()
            assert run.returncode == 0, run.stderr
        assert slave.tinydns.answer("www.a.example", "A") == [f"192.0.2.{n}"]
        assert slave.tinydns.answer("www.example", "A") == [f"198.51.100.{n}"]
    owners = {p.stat().st_uid for p in slave.root.rglob("*")}
    assert owners <= {lab.account.pw_uid, second.pw_uid}
    assert second.pw_uid in owners  # b's account wrote too
    # b is confined under its own login as well
    b.write_zones(b_zones(extra="+www.a.example:198.51.100.66\n"))
    before = tree(slave.root)
    run = b.push()
    assert run.returncode == 3, run.stderr
    assert run.named("push.refused_line")[0]["source"] == f"{b.source}:3"
    slave.wait_receivers_gone()
    assert tree(slave.root) == before
