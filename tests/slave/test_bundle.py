"""The receiver as one file: built byte for byte the same every time, run by Debian's
own python3 with nothing but its standard library, reached through a real sshd; and
the master's check, on first contact, that a slave's receiver speaks its protocol."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import dnsmaster
from dnsmaster import __version__
from dnsmaster.config import Config, Slave
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.errors import SlaveError
from dnsmaster.master.pushing import push_one
from dnsmaster.protocol import (
    EXIT_REFUSED,
    NEEDED,
    PROTOCOL,
    ReceiverOutdated,
    SlaveVersion,
    check_receiver,
    parse_status,
)
from dnsmaster.slave import bundle
from dnsmaster.transport.channel import LineSink, RunResult, fetch_status
from dnsmaster.transport.ssh import SshChannel
from tests.conftest import VECTORS, dnsmaster_here
from tests.lab.receiver import copy_root

if TYPE_CHECKING:  # imported by pytest_plugins, so that pytest rewrites its asserts
    from tests.lab.realworld import Lab
    from tests.lab.realworld import Slave as LabSlave


#: The directory holding the package under test.
PROJECT = Path(dnsmaster.__file__).resolve().parent.parent
#: Debian's own interpreter, without dnsmaster or anything else installed for it.
DEBIAN_PYTHON = "/usr/bin/python3"
SPEAKS = f"protocol={PROTOCOL} version={__version__}"
SERIAL = 1_700_000_000


def zone_data(serial: int = SERIAL, www: str = "192.0.2.1") -> bytes:
    source = f".example.com:127.0.0.1:a\n+www.example.com:{www}\n".encode()
    return assemble([compile_source("zones.x", source)], serial).data


def sealed(data: bytes) -> bytes:
    return data + seal(data)


def dnsmaster_cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m dnsmaster ARGS`` in a process of its own: for what only a process
    shows (another hash seed, other modules loaded, stdout a pipe or a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "dnsmaster", *args],
        capture_output=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(PROJECT), **env),
    )


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, written by ``dnsmaster receiver-bundle -o`` (run in this process)."""
    path = tmp_path_factory.mktemp("bundle") / "dnsmaster-receive.pyz"
    proc = dnsmaster_here("receiver-bundle", "-o", str(path))
    assert (proc.returncode, proc.stderr) == (0, "")
    return path


@pytest.fixture(scope="module")
def installed(debian_python: str, pyz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root the bundle has installed a push in, made once: a test that needs one
    copies it (copy_root) rather than pay Debian's python3 for the same push again."""
    root = tmp_path_factory.mktemp("installed") / "root"
    root.mkdir()
    assert run_bundle(debian_python, pyz, root, "push", sealed(zone_data(SERIAL - 1))).status == 0
    return root


@dataclass
class Ran:
    status: int
    out: str
    err: str


def run_bundle(
    python: str,
    pyz: Path,
    root: Path,
    command: str | None,
    stdin: bytes = b"",
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Ran:
    """What sshd's forced command does: ``python3 -I -S BUNDLE --root ROOT`` with a
    minimal environment (and an empty PYTHONPATH), the command in SSH_ORIGINAL_COMMAND."""
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""} | (env or {})
    if command is not None:
        environ["SSH_ORIGINAL_COMMAND"] = command
    proc = subprocess.run(
        [python, "-I", "-S", str(pyz), *args, "--root", str(root)],
        input=stdin,
        capture_output=True,
        env=environ,
        cwd=cwd or root,
        check=False,
        timeout=120,
    )
    return Ran(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def tinydns_data_of(data_file: Path, tinydns_data: str, workdir: Path) -> bytes:
    """What Debian's tinydns-data makes of ``data_file`` (a copy with the same mtime)."""
    workdir.mkdir()
    shutil.copy2(data_file, workdir / "data")
    subprocess.run([tinydns_data], cwd=workdir, check=True, capture_output=True)
    return (workdir / "data.cdb").read_bytes()


class TestBuild:
    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_deterministic(self, pyz: Path) -> None:
        """Two builds are byte-identical: in this process (to a file, ``pyz``), and in
        another with another hash seed and other modules loaded, to stdout a pipe."""
        built = bundle.build()
        assert built == bundle.build() == pyz.read_bytes()
        # This process's hash seed is random (PYTHONHASHSEED unset): 1 is another.
        proc = dnsmaster_cli("receiver-bundle", PYTHONHASHSEED="1")
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert proc.stdout == built

    def test_layout(self) -> None:
        """A #! line, then a stored zip: __main__.py, and each module's .pyc and source,
        with fixed dates and modes."""
        data = bundle.build()
        first, _, _ = data.partition(b"\n")
        assert first == b"#!/usr/bin/python3 -IS"
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            expected = ["__main__.py"]
            for module in bundle.MODULES:
                expected += [module + "c", module]
            assert names == expected
            for info in infos:
                assert info.date_time == (1980, 1, 1, 0, 0, 0)
                assert info.compress_type == zipfile.ZIP_STORED
                assert stat.S_IMODE(info.external_attr >> 16) == 0o644
            for module in bundle.MODULES:
                assert zf.read(module) == (PROJECT / module).read_bytes()
                assert zf.read(module + "c")[:4] == MAGIC_NUMBER
            assert b"from dnsmaster.slave.receive import main" in zf.read("__main__.py")
        uncompiled = bundle.build(compiled=False)
        with zipfile.ZipFile(io.BytesIO(uncompiled)) as zf:
            assert zf.namelist() == ["__main__.py", *bundle.MODULES]

    def test_output_file(self, tmp_path: Path) -> None:
        """-o writes mode 0755, replacing a file that is there (a new inode: a receiver
        starting from the old one never reads a half-written file)."""
        path = tmp_path / "dnsmaster-receive.pyz"
        path.write_bytes(b"old bundle")
        path.chmod(0o600)
        old_inode = path.stat().st_ino
        assert dnsmaster_here("receiver-bundle", "-o", str(path)).returncode == 0
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert path.stat().st_ino != old_inode
        assert path.read_bytes() == bundle.build()
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left

    def test_output_errors(self, tmp_path: Path) -> None:
        """An unwritable place is a system error (111), a relative interpreter usage (2)."""
        proc = dnsmaster_here("receiver-bundle", "-o", str(tmp_path / "no" / "such.pyz"))
        assert proc.returncode == 111
        assert "cannot write" in proc.stderr
        proc = dnsmaster_here("receiver-bundle", "--python", "python3")
        assert (proc.returncode, proc.stdout) == (2, "")
        assert "absolute path" in proc.stderr

    def test_python_option(self, tmp_path: Path) -> None:
        """--python names another interpreter in the #! line; nothing else changes."""
        path = tmp_path / "r.pyz"
        proc = dnsmaster_here(
            "receiver-bundle", "--python", "/opt/python3.11/bin/python3", "-o", str(path)
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        written = path.read_bytes()
        first = written.partition(b"\n")[0]
        assert first == b"#!/opt/python3.11/bin/python3 -IS"
        with (
            zipfile.ZipFile(io.BytesIO(written)) as theirs,
            zipfile.ZipFile(io.BytesIO(bundle.build())) as ours,
        ):
            assert theirs.namelist() == ours.namelist()
            assert all(theirs.read(name) == ours.read(name) for name in ours.namelist())

    def test_modules_are_what_receive_imports(self) -> None:
        """MODULES lists exactly the dnsmaster modules the receiver imports (the C
        accelerator aside; the confined roots' and the operator's modules, which it
        imports only when a command needs them, included), and it imports nothing else
        outside the standard library."""
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import dnsmaster.slave.receive\n"
            "import dnsmaster.slave.confined, dnsmaster.slave.operator\n"
            "for name, m in sorted(sys.modules.items()):\n"
            "    print(name, getattr(m, '__file__', None) or '-')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, str(PROJECT)],
            capture_output=True,
            text=True,
            check=True,
        )
        ours, others = set(), set()
        for line in proc.stdout.splitlines():
            name, file = line.split(" ", 1)
            if name.split(".")[0] == "dnsmaster":
                if name != "dnsmaster.core._ccompile":
                    ours.add(Path(file).relative_to(PROJECT).as_posix())
            elif name != "__main__":
                others.add(name.split(".")[0])
        assert ours == set(bundle.MODULES)
        assert others - set(sys.stdlib_module_names) == set()


VECTOR_FILES = sorted(p.name for p in VECTORS.glob("*.data"))

#: Run by Debian's python3 -I -S with the bundle first on sys.path: each push its
#: receive.main() as the bundle's __main__ calls it, SSH_ORIGINAL_COMMAND=push, a
#: root of its own, the sealed stream on its stdin; the outcomes as JSON.
PUSH_EACH = """
import io, json, sys
sys.path.insert(0, sys.argv[1])
from dnsmaster.slave.receive import main
ran = []
for root, stream in zip(sys.argv[2::2], sys.argv[3::2]):
    out, err = io.StringIO(), io.StringIO()
    with open(stream, "rb") as stdin:
        status = main(["--root", root], environ={"SSH_ORIGINAL_COMMAND": "push"},
                      stdin=io.BytesIO(stdin.read()), stdout=out, stderr=err)
    ran.append([status, out.getvalue(), err.getvalue()])
print(json.dumps(ran))
"""


@dataclass
class Pushed:
    """Each vector's push: its outcome, and its root under ``base``."""

    base: Path
    ran: dict[str, Ran]


@pytest.fixture(scope="module")
def installed_vectors(
    debian_python: str, pyz: Path, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    """Every spec vector that can carry a trailer, pushed by the bundle's receiver in
    Debian's python3, one Python for all of them (the forced command's own start,
    its -I -S and environment are the other TestDebianPython tests')."""
    base = tmp_path_factory.mktemp("vectors")
    argv = []
    pushed = []
    for vector in VECTOR_FILES:
        data = (VECTORS / vector).read_bytes()
        if data and not data.endswith(b"\n"):
            continue
        (base / vector).mkdir()
        stream = base / f"{vector}.stream"
        stream.write_bytes(sealed(data))
        argv += [str(base / vector), str(stream)]
        pushed.append(vector)
    proc = subprocess.run(
        [debian_python, "-I", "-S", "-c", PUSH_EACH, str(pyz), *argv],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""},
        cwd=base,
        check=False,
        timeout=120,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    outcomes = json.loads(proc.stdout)
    ran = {vector: Ran(*outcome) for vector, outcome in zip(pushed, outcomes, strict=True)}
    return Pushed(base, ran)


class TestDebianPython:
    """The bundle run by ``/usr/bin/python3 -I -S``: Debian's interpreter, no site packages."""

    def test_imports_only_the_stdlib_and_itself(
        self, debian_python: str, pyz: Path, tmp_path: Path
    ) -> None:
        """Every module the receiver loads comes from the bundle or Debian's standard
        library; its compiled modules are used when the magic number matches."""
        code = (
            "import sys, sysconfig; sys.path.insert(0, sys.argv[1]); "
            "import dnsmaster.slave.receive, dnsmaster.slave.confined, dnsmaster.slave.operator\n"
            "print(dnsmaster.slave.receive.main.__code__.co_filename)\n"
            "for name, m in sorted(sys.modules.items()):\n"
            "    print(name, getattr(m, '__file__', None) or '-')\n"
        )
        proc = subprocess.run(
            [debian_python, "-I", "-S", "-c", code, str(pyz)],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""},
            cwd=tmp_path,
        )
        co_filename, *lines = proc.stdout.splitlines()
        stdlib = subprocess.run(
            [
                debian_python,
                "-I",
                "-S",
                "-c",
                "import sysconfig; print(sysconfig.get_path('stdlib'))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        loaded = {}
        for line in lines:
            name, file = line.split(" ", 1)
            loaded[name] = file
            assert file == "-" or file.startswith((f"{pyz}/", f"{stdlib}/")), line
        assert {n for n in loaded if n.startswith("dnsmaster")} == {
            m.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for m in bundle.MODULES
        }
        magic = subprocess.run(
            [
                debian_python,
                "-I",
                "-S",
                "-c",
                "import importlib.util as u; print(u.MAGIC_NUMBER.hex())",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # From the .pyc, code keeps the name it was compiled under; from source, the
        # bundle's path.
        compiled = magic == MAGIC_NUMBER.hex()
        assert co_filename == (
            "dnsmaster/slave/receive.py" if compiled else f"{pyz}/dnsmaster/slave/receive.py"
        )

    def test_push_installs_byte_identical(
        self, debian_python: str, pyz: Path, tmp_path: Path, tinydns_data_bin: str
    ) -> None:
        """A push installs data and a data.cdb byte-identical to what the package's
        compiler and Debian's tinydns-data make of it."""
        root = tmp_path / "root"
        root.mkdir()
        data = zone_data()
        ran = run_bundle(debian_python, pyz, root, "push", sealed(data))
        assert (ran.status, ran.err) == (0, "")
        lines = ran.out.splitlines()
        assert lines[0] == f"received bytes={len(data)} sha256={seal(data).split()[2][7:].decode()}"
        assert lines[-1].startswith("done sha256=")
        installed = root / "data"
        assert installed.read_bytes() == sealed(data)
        cdb = (root / "data.cdb").read_bytes()
        assert cdb == compile_data(sealed(data), installed.stat().st_mtime_ns // 10**9)
        assert cdb == tinydns_data_of(installed, tinydns_data_bin, tmp_path / "td")

    def test_confined_push(
        self, debian_python: str, pyz: Path, tmp_path: Path, tinydns_data_bin: str
    ) -> None:
        """Two confined masters through the bundle (pure Python, no accelerator): their
        merged pair is what tinydns-data makes of the merged data; a line outside a
        master's allowlist is refused, naming it."""
        root = tmp_path / "root"
        root.mkdir()
        alpha = ("--master", "alpha", "--allow", "example.com")
        beta = ("--master", "beta", "--allow", "example.net")
        other = b".example.net:127.0.0.2:a\n+www.example.net:192.0.2.2\n"
        net = assemble([compile_source("zones.n", other)], SERIAL).data
        assert run_bundle(debian_python, pyz, root, "push", sealed(zone_data()), *alpha).status == 0
        ran = run_bundle(debian_python, pyz, root, "push", sealed(net), *beta)
        assert (ran.status, ran.err) == (0, "")
        assert (root / "data").read_bytes().startswith(b"# dnsmaster merged masters=alpha,beta\n")
        cdb = (root / "data.cdb").read_bytes()
        assert cdb == tinydns_data_of(root / "data", tinydns_data_bin, tmp_path / "td")
        ran = run_bundle(debian_python, pyz, root, "status", b"", *beta)
        assert ran.out.rstrip().endswith(" master=beta")
        before = (root / "data").read_bytes(), cdb
        ran = run_bundle(debian_python, pyz, root, "push", sealed(zone_data(SERIAL + 1)), *beta)
        assert ran.status == EXIT_REFUSED
        assert ran.err.splitlines()[0].startswith("refused zones.x:1: ")
        assert ((root / "data").read_bytes(), (root / "data.cdb").read_bytes()) == before

    @pytest.mark.parametrize("vector", VECTOR_FILES)
    def test_vectors(
        self,
        vector: str,
        installed_vectors: Pushed,
        tinydns_data_bin: str,
        tmp_path: Path,
    ) -> None:
        """Every spec vector: what tinydns-data compiles, the bundle installs with the
        same data.cdb (its serials from the installed file's mtime); what it refuses,
        the bundle refuses, leaving nothing."""
        data = (VECTORS / vector).read_bytes()
        if data and not data.endswith(b"\n"):
            pytest.skip("data without a final newline cannot carry a trailer (never pushed)")
        root = installed_vectors.base / vector
        ran = installed_vectors.ran[vector]
        if vector.startswith("e"):
            assert ran.status == 1, ran.err
            assert "refused: data does not compile: line" in ran.err
            assert not [p.name for p in root.iterdir() if p.name.startswith("data")]
            return
        assert (ran.status, ran.err) == (0, "")
        ours = (root / "data.cdb").read_bytes()
        assert ours == tinydns_data_of(root / "data", tinydns_data_bin, tmp_path / "td")

    def test_status(self, debian_python: str, pyz: Path, installed: Path, tmp_path: Path) -> None:
        """status says what is installed, and the protocol and version it speaks."""
        assert (
            run_bundle(debian_python, pyz, tmp_path, "status").out
            == f"status none {SPEAKS} writable=yes\n"
        )
        data = zone_data(SERIAL - 1)  # what the bundle pushed into ``installed``
        ran = run_bundle(debian_python, pyz, copy_root(installed, tmp_path / "root"), "status")
        assert (ran.status, ran.err) == (0, "")
        version = parse_status(ran.out.splitlines())
        assert version is not None
        assert (version.sha256, version.serial) == (seal(data).split()[2][7:].decode(), SERIAL - 1)
        assert (version.protocol, version.version) == (PROTOCOL, __version__)

    @pytest.mark.parametrize(
        ("command", "stdin", "status", "message"),
        [
            ("rm -rf /", b"", 2, "unknown command 'rm -rf /'; this key runs one of: push, "),
            (None, b"", 2, "no command given"),
            ("push", sealed(zone_data())[:-10], 1, "incomplete data"),
            ("push", zone_data(), 1, "without the closing trailer line"),
        ],
    )
    def test_refusals(  # noqa: PLR0917 - fixtures and parameters, named by pytest
        self,
        debian_python: str,
        pyz: Path,
        installed: Path,
        tmp_path: Path,
        command: str | None,
        stdin: bytes,
        status: int,
        message: str,
    ) -> None:
        """Unknown commands, no command and cut streams are refused; nothing changes."""
        root = copy_root(installed, tmp_path / "root")
        before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
        ran = run_bundle(debian_python, pyz, root, command, stdin)
        assert ran.status == status
        assert message in ran.err
        assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before

    def test_environment_cannot_interfere(
        self, debian_python: str, pyz: Path, tmp_path: Path
    ) -> None:
        """A PYTHONPATH and a working directory holding another ``dnsmaster`` change
        nothing: -I -S runs the bundle and the standard library only."""
        poison = tmp_path / "poison"
        (poison / "dnsmaster").mkdir(parents=True)
        (poison / "dnsmaster" / "__init__.py").write_text("raise SystemExit('poisoned')\n")
        root = tmp_path / "root"
        root.mkdir()
        ran = run_bundle(
            debian_python, pyz, root, "status", env={"PYTHONPATH": str(poison)}, cwd=poison
        )
        assert (ran.status, ran.out, ran.err) == (0, f"status none {SPEAKS} writable=yes\n", "")

    def test_receive_word_accepted(self, debian_python: str, pyz: Path, tmp_path: Path) -> None:
        """A line written for the installed command (``... receive --root``) works too."""
        proc = subprocess.run(
            [debian_python, "-I", "-S", str(pyz), "receive", "--root", str(tmp_path)],
            env={"SSH_ORIGINAL_COMMAND": "status"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert (proc.returncode, proc.stdout) == (0, f"status none {SPEAKS} writable=yes\n")

    def test_runs_by_its_shebang(self, debian_python: str, pyz: Path) -> None:
        """Executable as it is: ``./dnsmaster-receive.pyz --version``."""
        proc = subprocess.run(
            [str(pyz), "--version"], capture_output=True, text=True, check=False, env={}
        )
        assert (proc.returncode, proc.stdout) == (
            0,
            f"dnsmaster receive {__version__} (protocol {PROTOCOL})\n",
        )

    def test_other_python_uses_the_source(self, debian_python: str, tmp_path: Path) -> None:
        """A Python whose magic number differs skips the .pyc files and compiles the
        sources beside them (simulated: every .pyc with another magic number)."""
        other = tmp_path / "other.pyz"
        built = bundle.build()
        shebang = built.partition(b"\n")[0] + b"\n"
        out = io.BytesIO()
        out.write(shebang)
        with zipfile.ZipFile(io.BytesIO(built)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith(".pyc"):
                    data = b"\x00\x00\r\n" + data[4:]
                dst.writestr(info, data)
        other.write_bytes(out.getvalue())
        ran = run_bundle(debian_python, other, tmp_path, "push", sealed(zone_data()))
        assert (ran.status, ran.err) == (0, "")
        assert run_bundle(debian_python, other, tmp_path, "status").out.endswith(
            f"{SPEAKS} writable=yes\n"
        )


class TestAuthorizedKey:
    """``authorized-key``, run in this process: what it prints and its exit status."""

    @pytest.fixture
    def pubkey(self, tmp_path: Path) -> tuple[Path, str]:
        line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMrcP7scL+EBFOOR0MwZPkFWF8YKJK3qtEs9OM7W2ui m"
        path = tmp_path / "id.pub"
        path.write_text(line + "\n")
        return path, line

    def test_bundle(self, pubkey: tuple[Path, str]) -> None:
        """--bundle: Debian's python3, isolated, runs the bundle as the receiver itself."""
        path, line = pubkey
        proc = dnsmaster_here(
            "authorized-key",
            "--pubkey",
            str(path),
            "--root",
            "/srv/tinydns/root",
            "--bundle",
            "/usr/local/lib/dnsmaster-receive.pyz",
            "--keep",
            "5",
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        assert proc.stdout == (
            'restrict,command="/usr/bin/python3 -I -S /usr/local/lib/dnsmaster-receive.pyz '
            f'--root /srv/tinydns/root --keep 5" {line}\n'
        )

    def test_bundle_other_python(self, pubkey: tuple[Path, str]) -> None:
        path, _ = pubkey
        proc = dnsmaster_here(
            "authorized-key",
            *("--pubkey", str(path), "--root", "/r"),
            *("--bundle", "/opt/r.pyz", "--python", "/usr/bin/python3.11"),
        )
        assert proc.stdout.startswith(
            'restrict,command="/usr/bin/python3.11 -I -S /opt/r.pyz --root /r" '
        )

    def test_command_still_works(self, pubkey: tuple[Path, str]) -> None:
        path, line = pubkey
        proc = dnsmaster_here("authorized-key", "--pubkey", str(path), "--root", "/r")
        assert proc.stdout == f'restrict,command="dnsmaster receive --root /r" {line}\n'

    @pytest.mark.parametrize(
        "command",
        [
            "/opt/dnsmaster/bin/dnsmaster receive",
            "/opt/dnsmaster/bin/dnsmaster",
            "  /opt/dnsmaster/bin/dnsmaster   receive ",
        ],
    )
    def test_command_with_or_without_receive(self, pubkey: tuple[Path, str], command: str) -> None:
        """--command as the README words it (ending in receive) or not: one receive word."""
        path, line = pubkey
        proc = dnsmaster_here(
            "authorized-key", "--pubkey", str(path), "--root", "/r", "--command", command
        )
        assert (proc.returncode, proc.stderr) == (0, "")
        assert proc.stdout == (
            f'restrict,command="/opt/dnsmaster/bin/dnsmaster receive --root /r" {line}\n'
        )

    def test_several_words_command(self, pubkey: tuple[Path, str]) -> None:
        path, _ = pubkey
        proc = dnsmaster_here(
            "authorized-key",
            *("--pubkey", str(path), "--root", "/r"),
            *("--command", "/usr/bin/python3 -m dnsmaster receive", "--keep", "3"),
        )
        assert proc.stdout.startswith(
            'restrict,command="/usr/bin/python3 -m dnsmaster receive --root /r --keep 3" '
        )

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (("--command", "dnsmaster receive --keep 3"), "receive must be its last word"),
            (("--command", "receive"), "--command: give how the slave runs dnsmaster"),
            (("--command", "'dnsmaster"), '--command "\'dnsmaster": No closing quotation'),
            (("--bundle", "dnsmaster-receive.pyz"), "must be absolute paths on the slave"),
            (("--bundle", "/x.pyz", "--python", "python3"), "must be absolute paths"),
            # Not "dnsmaster", --command's default: argparse takes a value that *is* the
            # default object (an interned literal, in this process) for no value given.
            (("--bundle", "/x.pyz", "--command", "/usr/bin/dnsmaster"), "not allowed with"),
        ],
    )
    def test_refused(self, pubkey: tuple[Path, str], extra: Sequence[str], message: str) -> None:
        path, _ = pubkey
        proc = dnsmaster_here("authorized-key", "--pubkey", str(path), "--root", "/r", *extra)
        assert (proc.returncode, proc.stdout) == (2, "")
        assert message in proc.stderr

    @pytest.mark.parametrize("bundle_path", [None, "/opt/r.pyz"])
    def test_relative_root_refused(self, pubkey: tuple[Path, str], bundle_path: str | None) -> None:
        """A relative --root would be made absolute on the master: refused (exit 2)."""
        path, _ = pubkey
        extra = ["--bundle", bundle_path] if bundle_path else []
        proc = dnsmaster_here(
            "authorized-key", "--pubkey", str(path), "--root", "tinydns/root", *extra
        )
        assert (proc.returncode, proc.stdout) == (2, "")
        assert proc.stderr == (
            "dnsmaster: --root tinydns/root: give the slave's tinydns root as an absolute "
            "path (it is a directory on the slave, e.g. /etc/tinydns/root)\n"
        )


@pytest.mark.usefixtures("dnsmaster_cli")
class TestReceiverBundleOutput:
    def test_refuses_a_terminal(self) -> None:
        """No -o and stdout a terminal: refused (exit 2), nothing written there."""
        controller, terminal = os.openpty()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "dnsmaster", "receiver-bundle"],
                stdout=terminal,
                stderr=subprocess.PIPE,
                check=False,
                env=dict(os.environ, PYTHONPATH=str(PROJECT)),
                timeout=60,
            )
            os.set_blocking(controller, False)
            try:
                written = os.read(controller, 1 << 16)
            except BlockingIOError:
                written = b""
        finally:
            os.close(terminal)
            os.close(controller)
        assert proc.returncode == 2
        assert written == b""
        assert b"give -o FILE (e.g. -o dnsmaster-receive.pyz) or redirect it" in proc.stderr
        # A pipe gets the bundle: TestBuild.test_deterministic reads it from one.


# --------------------------------------------------------------------------- the master's check


@dataclass
class Answering:
    """A channel whose receiver answers ``status`` with fixed lines (one branch each)."""

    slave: Slave
    lines: tuple[str, ...]

    async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
        assert (verb, payload) == ("status", None)
        return RunResult(0, self.lines)

    async def close(self) -> None:
        pass


def nothing(slave: str, stream: str, line: str, truncated: int = 0) -> None:
    pass


SHA = "a" * 64


class TestProtocolCheck:
    def test_parse_status_reads_protocol_and_version(self) -> None:
        """The receiver's fields are read, and take no part in comparing builds."""
        got = parse_status([f"status sha256={SHA} serial=7 bytes=1 time=x {SPEAKS}"])
        assert got == SlaveVersion(SHA, 7)
        assert got is not None
        assert (got.protocol, got.version) == (PROTOCOL, __version__)
        old = parse_status([f"status sha256={SHA} serial=7 bytes=1 time=x"])
        assert old is not None
        assert (old.protocol, old.version) == (None, None)

    @pytest.mark.parametrize(
        "line",
        [
            f"status none {SPEAKS}",
            f"status sha256={SHA} serial=1 {SPEAKS}",
            "status none protocol=99",
            f"status none protocol={NEEDED} version=0.1.0",
        ],
    )
    def test_needed_or_newer_passes(self, line: str) -> None:
        """Every receiver of NEEDED and up is served (protocol 1 with plain pushes)."""
        check_receiver("s1", [line])
        check_receiver("s1", ["swept 1 files a killed run left: .data.x.tmp", line])

    @pytest.mark.parametrize(
        ("lines", "speaks"),
        [
            (["status none"], "no protocol version"),
            ([f"status sha256={SHA} serial=1 bytes=3 time=t"], "no protocol version"),
            ([f"status none protocol={NEEDED - 1} version=0.0.9"], f"protocol {NEEDED - 1}"),
        ],
    )
    def test_older_is_refused(self, lines: list[str], speaks: str) -> None:
        """No protocol (a receiver from before versioning) or a lower one: a named error,
        not retryable, that says what to do."""
        with pytest.raises(ReceiverOutdated) as raised:
            check_receiver("s1", lines)
        exc = raised.value
        assert (exc.slave, exc.phase, exc.retryable, exc.needed) == (
            "s1",
            "status",
            False,
            NEEDED,
        )
        assert f"speaks {speaks}" in exc.reason
        assert f"this master (dnsmaster {__version__}) needs protocol {NEEDED}" in exc.reason
        assert "dnsmaster receiver-bundle" in exc.reason
        assert "pip install" in exc.reason
        assert str(exc).startswith("slave s1: receiver version ")

    @pytest.mark.parametrize("lines", [[], ["hello"], ["statusx sha256=a protocol=9"]])
    def test_no_status_line_is_no_receiver(self, lines: list[str]) -> None:
        """Output without a status line: not dnsmaster receive at all; not retryable."""
        with pytest.raises(SlaveError) as raised:
            check_receiver("s1", lines)
        exc = raised.value
        assert not isinstance(exc, ReceiverOutdated)
        assert (exc.phase, exc.retryable, exc.exit_status) == ("status", False, 0)
        assert "printed no status line: it is not dnsmaster receive" in exc.reason

    def test_names_the_version(self) -> None:
        with pytest.raises(ReceiverOutdated) as raised:
            check_receiver("s1", ["status none protocol=1 version=0.1.0"], needed=2)
        assert raised.value.reason.startswith(
            "receiver version 0.1.0 speaks protocol 1; this master "
        )
        assert "needs protocol 2: upgrade it: " in raised.value.reason

    async def test_fetch_status_checks(self) -> None:
        """fetch_status raises for an outdated receiver, installed data or not."""
        slave = Slave(name="s1", host="h")
        good = Answering(slave, (f"status sha256={SHA} serial=5 bytes=1 time=t {SPEAKS}",))
        version = await fetch_status(good, 5, nothing)
        assert version is not None
        assert version.protocol == PROTOCOL
        assert await fetch_status(Answering(slave, (f"status none {SPEAKS}",)), 5, nothing) is None
        for old in ("status none", f"status sha256={SHA} serial=5 bytes=1 time=t"):
            with pytest.raises(ReceiverOutdated):
                await fetch_status(Answering(slave, (old,)), 5, nothing)

    async def test_legacy_slave_is_not_asked(self) -> None:
        """A legacy update-dns slave has no status verb and is not checked."""
        slave = Slave(name="s1", host="h", protocol="legacy")
        assert await fetch_status(Answering(slave, ()), 5, nothing) is None


# --------------------------------------------------------------------------- through sshd


def _config(lab: Lab, tmp_path: Path, slave: LabSlave) -> Config:
    return Config(
        path=tmp_path / "dnsmaster.toml",
        zones=tmp_path,
        output=tmp_path,
        state=tmp_path / "state",
        key=lab.key,
        known_hosts=lab.known_hosts,
        slaves=(Slave(name=slave.name, host=slave.address, port=slave.port, user=lab.user),),
    )


def _bundle_key(lab: Lab, slave: LabSlave, pyz: Path) -> str:
    proc = dnsmaster_here(
        "authorized-key",
        *("--pubkey", str(lab.pubkey), "--root", str(slave.root), "--bundle", str(pyz)),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class TestThroughSshd:
    async def test_bundle_as_forced_command(
        self, lab: Lab, tmp_path: Path, debian_python: str
    ) -> None:
        """authorized-key --bundle's line in a real sshd: the master asks status (the
        protocol passes), pushes, and tinydns serves the new serial; other commands are
        refused."""
        (slave,) = lab(1)
        pyz = lab.workdir / "lib" / "dnsmaster-receive.pyz"
        pyz.parent.mkdir()
        bundle.write(pyz)
        line = _bundle_key(lab, slave, pyz)
        assert f'command="{debian_python} -I -S {pyz} --root {slave.root}"' in line
        slave.sshd.set_authorized_keys(line)

        proc = lab.ssh(slave, "status")
        assert (proc.returncode, proc.stdout.decode()) == (
            0,
            f"status none {SPEAKS} writable=yes\n",
        )
        refused = lab.ssh(slave, "rm", "-rf", "/")
        assert refused.returncode == 2
        assert b"this key runs one of" in refused.stderr

        channel = SshChannel(_config(lab, tmp_path, slave).slaves[0], _config(lab, tmp_path, slave))
        try:
            assert await fetch_status(channel, 60, nothing) is None
            data = zone_data(SERIAL + 1)
            sha = seal(data).split()[2][7:].decode()
            result = await push_one(channel, data, sha, 60, nothing)
            assert result.ok, result.error
            assert slave.tinydns.wait_serial("example.com", SERIAL + 1) == SERIAL + 1
            version = await fetch_status(channel, 60, nothing)
            assert version == SlaveVersion(sha, SERIAL + 1)
            assert version is not None
            assert (version.protocol, version.version) == (PROTOCOL, __version__)
        finally:
            await channel.close()

    async def test_old_receiver_must_be_upgraded(self, lab: Lab, tmp_path: Path) -> None:
        """A slave whose forced command is a receiver from before versioning: the first
        contact fails, not retryable, saying to upgrade it; nothing is pushed."""
        (slave,) = lab(1)
        old = lab.workdir / "bin" / "old-receiver"
        # What dnsmaster receive answered before it named its protocol.
        old.write_text(
            '#!/bin/sh\n[ "$SSH_ORIGINAL_COMMAND" = status ] && echo "status none" && exit 0\n'
            "exit 2\n"
        )
        old.chmod(0o755)
        slave.sshd.set_authorized_keys(
            f'restrict,command="{old}" ' + lab.pubkey.read_text().strip()
        )
        config = _config(lab, tmp_path, slave)
        channel = SshChannel(config.slaves[0], config)
        try:
            with pytest.raises(ReceiverOutdated) as raised:
                await fetch_status(channel, 60, nothing)
        finally:
            await channel.close()
        exc = raised.value
        assert (exc.phase, exc.retryable, exc.protocol) == ("status", False, None)
        assert str(exc).startswith(
            f"slave {slave.name}: receiver version unknown speaks no protocol version"
        )
        assert slave.snapshot() == {}
