"""The slave's receiver: verbs, completeness proof, size cap, install, pruning."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnsmaster import receive
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split

DATA = assemble(
    [compile_source("zones.x", b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.1\n")],
    1_700_000_000,
).data
NEWER = assemble(
    [compile_source("zones.x", b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.2\n")],
    1_700_000_001,
).data


def run(root: Path, verb: str | None, stdin: bytes = b"", *extra: str) -> tuple[int, str, str]:
    env = {} if verb is None else {"SSH_ORIGINAL_COMMAND": verb}
    out, err = io.StringIO(), io.StringIO()
    status = receive.main(
        ["--root", str(root), *extra], environ=env, stdin=io.BytesIO(stdin), stdout=out, stderr=err
    )
    return status, out.getvalue(), err.getvalue()


def installed(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A slave root with DATA already installed."""
    status, _, err = run(tmp_path, "push", DATA + seal(DATA))
    assert status == 0, err
    return tmp_path


class TestPush:
    def test_installs_data_and_cdb(self, tmp_path: Path) -> None:
        """A whole push installs data (with its trailer) and the matching data.cdb."""
        status, out, err = run(tmp_path, "push", DATA + seal(DATA))
        assert (status, err) == (0, "")
        assert (tmp_path / "data").read_bytes() == DATA + seal(DATA)
        assert (tmp_path / "data.cdb").read_bytes() == compile_data(DATA + seal(DATA), 1)
        lines = out.splitlines()
        assert lines[0].startswith("received bytes=")
        assert lines[-1].startswith("done sha256=")
        assert "serial=1700000000" in lines[-1]

    def test_cdb_matches_real_tinydns_data(self, tmp_path: Path, tinydns_data_bin: str) -> None:
        """The installed data.cdb is what tinydns-data makes of the installed data."""
        run(tmp_path, "push", DATA + seal(DATA))
        ours = (tmp_path / "data.cdb").read_bytes()
        (tmp_path / "data.cdb").unlink()
        subprocess.run([tinydns_data_bin], cwd=tmp_path, check=True)
        assert (tmp_path / "data.cdb").read_bytes() == ours

    def test_keeps_timestamped_copies_and_prunes(self, tmp_path: Path) -> None:
        """Each push of new data keeps a copy; only the --keep newest stay."""
        for i in range(5):
            data = DATA if i % 2 else NEWER
            assert run(tmp_path, "push", data + seal(data), "--keep", "3")[0] == 0
        copies = [p for p in tmp_path.iterdir() if p.name.startswith("data.2")]
        assert len(copies) == 3
        newest = max(copies, key=lambda p: (p.stat().st_mtime_ns, p.name))
        assert newest.stat().st_ino == (tmp_path / "data").stat().st_ino

    def test_same_data_again_is_unchanged(self, root: Path) -> None:
        """A push of what is installed compiles and writes nothing, and still succeeds."""
        before = installed(root)
        mtimes = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
        status, out, err = run(root, "push", DATA + seal(DATA))
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert lines[1] == "unchanged: data and data.cdb already installed"
        assert lines[-1] == f"done sha256={seal(DATA).split()[2][7:].decode()} serial=1700000000"
        assert installed(root) == before
        assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == mtimes

    @pytest.mark.parametrize("damage", ["missing", "cut", "older", "directory", "other data"])
    def test_same_data_rebuilds_what_is_doubtful(self, root: Path, damage: str) -> None:
        """Same data, but data.cdb gone, cut short, older than data, or data differs: rebuild."""
        cdb_path, data_path = root / "data.cdb", root / "data"
        good = cdb_path.read_bytes()
        if damage == "missing":
            cdb_path.unlink()
        elif damage == "cut":
            cdb_path.write_bytes(good[:-1])
        elif damage == "older":
            stamp = data_path.stat().st_mtime_ns - 10**9
            os.utime(cdb_path, ns=(stamp, stamp))
        elif damage == "directory":
            cdb_path.unlink()
            cdb_path.mkdir()
        else:
            data_path.unlink()
            data_path.write_bytes(DATA + b"+extra.example.com:192.0.2.9\n" + seal(DATA))
        if damage == "directory":
            # Not installable over a directory: refused as a system error, never skipped.
            assert run(root, "push", DATA + seal(DATA))[0] == receive.EXIT_SYSTEM
            return
        status, out, err = run(root, "push", DATA + seal(DATA))
        assert (status, err) == (0, "")
        assert "installed data and data.cdb" in out
        assert cdb_path.read_bytes() == good
        assert data_path.read_bytes() == DATA + seal(DATA)

    def test_copy_names(self, tmp_path: Path) -> None:
        """Copies are data.YYYY-MM-DD.HHMMSS, with microseconds when a second repeats."""
        first = receive._copy_name(tmp_path)
        (tmp_path / first).write_bytes(b"")
        second = receive._copy_name(tmp_path)
        assert len(first) == len("data.2026-11-25.043930")
        assert second.startswith(first + ".")
        assert sorted([second, first]) == [first, second]


class TestRefusals:
    @pytest.mark.parametrize("cut", [0, 1, 50, -70, -66, -2, -1])
    def test_cut_stream_never_installs(self, root: Path, cut: int) -> None:
        """A stream cut anywhere is refused and the installed data is unchanged."""
        before = installed(root)
        stream = NEWER + seal(NEWER)
        status, _, err = run(root, "push", stream[:cut])
        assert status == receive.EXIT_REFUSED
        assert "incomplete data" in err
        assert installed(root) == before

    def test_cut_at_every_byte(self, root: Path) -> None:
        """No prefix of a stream verifies as complete."""
        stream = NEWER + seal(NEWER)
        for cut in range(len(stream)):
            body, trailer = split(stream[:cut])
            assert trailer is None or trailer.mismatch(body) is not None, cut

    def test_tampered_body(self, root: Path) -> None:
        """A body that does not match its trailer is refused."""
        before = installed(root)
        stream = NEWER.replace(b"192.0.2.2", b"192.0.2.3") + seal(NEWER)
        status, _, err = run(root, "push", stream)
        assert (status, "sha256" in err) == (receive.EXIT_REFUSED, True)
        assert installed(root) == before

    def test_data_that_does_not_compile(self, root: Path) -> None:
        """Data tinydns-data would refuse is refused, with the line and why."""
        before = installed(root)
        bad = NEWER + b"Xbroken\n"
        status, _, err = run(root, "push", bad + seal(bad))
        assert status == receive.EXIT_REFUSED
        assert "does not compile: line" in err
        assert "unrecognized leading character" in err
        assert installed(root) == before

    def test_oversize(self, root: Path) -> None:
        """Data over --max-size is refused before anything is written."""
        before = installed(root)
        status, _, err = run(root, "push", NEWER + seal(NEWER), "--max-size", "100")
        assert status == receive.EXIT_REFUSED
        assert "size cap of 100 bytes" in err
        assert installed(root) == before

    @pytest.mark.parametrize("verb", ["rm -rf /", "push extra", "PUSH", "", "status; id"])
    def test_unknown_verbs(self, root: Path, verb: str) -> None:
        """Only the fixed verbs run; anything else is refused and changes nothing."""
        before = installed(root)
        status, out, err = run(root, verb, NEWER + seal(NEWER))
        assert status == receive.EXIT_USAGE
        assert "this key runs one of: push, status" in err
        assert out == ""
        assert installed(root) == before

    def test_no_command(self, root: Path) -> None:
        """An interactive login (no command) is refused."""
        status, _, err = run(root, None)
        assert status == receive.EXIT_USAGE
        assert "no command given" in err

    def test_unwritable_root(self, tmp_path: Path) -> None:
        """A root that does not exist is a system error, named."""
        status, _, err = run(tmp_path / "missing", "push", DATA + seal(DATA))
        assert status == receive.EXIT_SYSTEM
        assert str(tmp_path / "missing") in err


class TestStatus:
    def test_reports_installed_version(self, root: Path) -> None:
        """status prints the sha256 the master built, the serial and the size."""
        status, out, _ = run(root, "status")
        body, trailer = split((root / "data").read_bytes())
        assert status == 0
        assert trailer is not None
        assert out.startswith(
            f"status sha256={trailer.sha256} serial=1700000000 bytes={len(body)} "
        )

    def test_nothing_installed(self, tmp_path: Path) -> None:
        """status on an empty root is a clear system error."""
        status, _, err = run(tmp_path, "status")
        assert status == receive.EXIT_SYSTEM
        assert "file does not exist" in err


class TestCommandLine:
    def test_runs_as_forced_command(self, tmp_path: Path) -> None:
        """python -m dnsmaster receive reads SSH_ORIGINAL_COMMAND and stdin."""
        env = dict(os.environ, SSH_ORIGINAL_COMMAND="push")
        proc = subprocess.run(
            [sys.executable, "-m", "dnsmaster", "receive", "--root", str(tmp_path)],
            input=DATA + seal(DATA),
            env=env,
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode().splitlines()[-1].startswith("done sha256=")

    def test_imports_stay_light(self) -> None:
        """The receiver does not import asyncssh, structlog or dnspython."""
        code = (
            "import sys; from dnsmaster import cli; "
            "sys.argv=['dnsmaster','receive','--root','/nonexistent']; "
            "cli.main(['receive', '--help']) if False else None; "
            "import dnsmaster.receive; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncssh','structlog','dns','watchdog')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
