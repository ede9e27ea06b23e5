"""The slave's receiver: verbs, completeness proof, size cap, install, pruning."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnsmaster import __version__, fsutil, protocol
from dnsmaster.core import accel, cdb, delta
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split
from dnsmaster.protocol import PROTOCOL
from dnsmaster.slave import receive
from dnsmaster.slave.root import keep_copy
from tests.conftest import missing, require_accelerator

DATA = assemble(
    [compile_source("zones.x", b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.1\n")],
    1_700_000_000,
).data
NEWER = assemble(
    [compile_source("zones.x", b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.2\n")],
    1_700_000_001,
).data


def build(n: int, serial: int | None = None) -> bytes:
    """A dnsmaster build: serial 1700000000 + n unless given, one record that differs."""
    zone = b".example.com:127.0.0.1:a\n+www.example.com:192.0.2.%d\n" % (n % 250 + 1)
    return assemble(
        [compile_source("zones.x", zone)], 1_700_000_000 + n if serial is None else serial
    ).data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


#: What ends every status line: the receiver's protocol and version.
SPEAKS = f"protocol={PROTOCOL} version={__version__}"


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

    @pytest.mark.parametrize("way", ["packed", "records"])
    def test_both_compile_ways_install_the_same_cdb(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
    ) -> None:
        """C packing records as it compiles (when built) and the pure-Python bundle's
        lists write the bytes tinydns-data's way, default serials from the mtime too."""
        paths = contextlib.ExitStack()
        if way == "records":
            paths.enter_context(accel.using("compiler", None))
            paths.enter_context(accel.using("records", None))
        elif accel.compiler() is None or not cdb.packs_fast():
            require_accelerator()  # not built fails under CI=true, as any missing component
            missing("dnsmaster/core/_cdbblob.c is not built: apt-get install -y gcc python3-dev")
        written: list[str] = []

        def spy(name: str) -> None:
            real = getattr(cdb, name)

            def counted(*args: object, **kwargs: object) -> None:
                written.append(name)
                real(*args, **kwargs)

            monkeypatch.setattr(cdb, name, counted)

        spy("write_pieces")
        spy("write_fd")
        # Not dnsmaster's data: a Z line without a serial takes the file's mtime.
        data = b"Zfrom.elsewhere:ns1.from.elsewhere:hostmaster.from.elsewhere\n" + DATA
        with paths:
            assert run(tmp_path, "push", data + seal(data))[0] == 0
        mtime = (tmp_path / "data").stat().st_mtime_ns // 10**9
        assert written == ["write_pieces" if way == "packed" else "write_fd"]
        assert (tmp_path / "data.cdb").read_bytes() == compile_data(data + seal(data), mtime)

    def test_keeps_timestamped_copies_and_prunes(self, tmp_path: Path) -> None:
        """Each push of new data keeps a copy; only the --keep newest stay."""
        for i in range(5):
            data = build(i)
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

    @pytest.mark.parametrize(
        "damage", ["missing", "cut", "older", "replaced", "directory", "other data"]
    )
    def test_same_data_rebuilds_what_is_doubtful(self, root: Path, damage: str) -> None:
        """Same data, but data.cdb gone, cut short, older than data, replaced by hand after
        data was installed (an older build's, found by benchmarks/soak.py: the master
        pushed again and again and heard "unchanged"), or data differs: rebuild."""
        cdb_path, data_path = root / "data.cdb", root / "data"
        good = cdb_path.read_bytes()
        if damage == "missing":
            cdb_path.unlink()
        elif damage == "cut":
            cdb_path.write_bytes(good[:-1])
        elif damage == "older":
            stamp = data_path.stat().st_mtime_ns - 10**9
            os.utime(cdb_path, ns=(stamp, stamp))
        elif damage == "replaced":
            replacement = root / "restored.cdb"
            replacement.write_bytes(compile_data(NEWER, 1))
            os.replace(replacement, cdb_path)
        elif damage == "directory":
            cdb_path.unlink()
            cdb_path.mkdir()
        else:
            data_path.unlink()
            data_path.write_bytes(DATA + b"+extra.example.com:192.0.2.9\n" + seal(DATA))
        if damage == "directory":
            # Not installable over a directory: refused as a system error, never skipped.
            assert run(root, "push", DATA + seal(DATA))[0] == protocol.EXIT_SYSTEM
            return
        status, out, err = run(root, "push", DATA + seal(DATA))
        assert (status, err) == (0, "")
        assert "installed data and data.cdb" in out
        assert cdb_path.read_bytes() == good
        assert data_path.read_bytes() == DATA + seal(DATA)

    def test_copy_names(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Copies are data.YYYY-MM-DD.HHMMSS, with microseconds when a second repeats."""
        # A fixed clock: a real one can cross a second between the two copies.
        monkeypatch.setattr(time, "time", lambda: 1_800_000_000.25)
        root = tmp_path
        (root / "data").write_bytes(DATA)
        first = keep_copy(root)
        second = keep_copy(root)
        assert first == time.strftime("data.%Y-%m-%d.%H%M%S", time.gmtime(1_800_000_000))
        assert second == first + ".250000"
        for name in (first, second):
            assert (root / name).stat().st_ino == (root / "data").stat().st_ino

    def test_copy_names_are_taken_exclusively(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A name that exists (another receiver's copy) is never reused: the next one is."""
        monkeypatch.setattr(time, "time", lambda: 1_800_000_000.25)
        taken = ["data.2027-01-15.080000", "data.2027-01-15.080000.250000"]
        for name in taken:
            (root / name).write_bytes(b"someone else's")
        assert keep_copy(root) == "data.2027-01-15.080000.250001"
        for name in taken:
            assert (root / name).read_bytes() == b"someone else's"

    def test_data_without_copy_gets_one(self, root: Path) -> None:
        """data left without a copy (killed before its link) gets one at the next push."""
        for copy in root.glob("data.2*"):
            copy.unlink()
        status, out, _ = run(root, "push", NEWER + seal(NEWER))
        assert status == 0
        assert "(the installed data had no copy)" in out
        kept = sorted(p.read_bytes() for p in root.glob("data.2*"))
        assert kept == sorted([DATA + seal(DATA), NEWER + seal(NEWER)])

    def test_failed_push_keeps_no_copy(self, root: Path) -> None:
        """A push that fails after compiling leaves no copy, no temp file and the old pair."""
        before = installed(root)
        (root / "data.cdb").unlink()
        (root / "data.cdb").mkdir()  # the rename of data.cdb fails
        status, _, err = run(root, "push", NEWER + seal(NEWER))
        assert status == protocol.EXIT_SYSTEM, err
        (root / "data.cdb").rmdir()
        del before["data.cdb"]
        assert installed(root) == before

    def test_prunes_after_a_failure(self, root: Path) -> None:
        """Pruning runs after a failed push too (a full disk needs the room)."""
        for i in range(4):
            (root / f"data.2020-01-01.00000{i}").write_bytes(b"old")
            os.utime(root / f"data.2020-01-01.00000{i}", (1, 1))
        bad = NEWER + b"Xbroken\n"
        assert run(root, "push", bad + seal(bad), "--keep", "2")[0] == protocol.EXIT_REFUSED
        assert len([p for p in root.iterdir() if p.name.startswith("data.2")]) == 2

    def test_sweeps_litter(self, root: Path) -> None:
        """Temp files and links a killed run left are removed by the next run."""
        litter = [".data.abc123.tmp", ".data.cdb.x_y.tmp", ".data.4242.link", ".data.a\x1bb.tmp"]
        for name in litter:
            (root / name).write_bytes(b"half")
        status, out, err = run(root, "status")
        assert (status, err) == (0, "")
        assert "swept 4 files" in out
        assert "\\x1b" in out
        assert "\x1b" not in out
        assert not [n for n in litter if (root / n).exists()]


class TestOrder:
    def test_older_build_refused(self, root: Path) -> None:
        """A build older than the installed one is refused, naming both serials."""
        assert run(root, "push", NEWER + seal(NEWER))[0] == 0
        before = installed(root)
        status, out, err = run(root, "push", DATA + seal(DATA))
        assert status == protocol.EXIT_REFUSED
        assert "build serial 1700000000 is older than the installed serial 1700000001" in err
        assert "push --force" in err
        assert "installed" not in out
        assert installed(root) == before

    def test_force_installs_an_older_build(self, root: Path) -> None:
        """push --force installs an older build (a rollback)."""
        assert run(root, "push", NEWER + seal(NEWER))[0] == 0
        status, _, err = run(root, "push --force", DATA + seal(DATA))
        assert (status, err) == (0, "")
        assert (root / "data").read_bytes() == DATA + seal(DATA)
        assert (root / "data.cdb").read_bytes() == compile_data(DATA + seal(DATA), 1)

    def test_same_serial_other_data_refused(self, root: Path) -> None:
        """Another build with the installed serial (two masters?) is refused unless forced."""
        other = DATA.replace(b"192.0.2.1", b"192.0.2.9")
        status, _, err = run(root, "push", other + seal(other))
        assert status == protocol.EXIT_REFUSED
        assert "already installed with different data" in err
        assert run(root, "push --force", other + seal(other))[0] == 0

    def test_serials_wrap(self, tmp_path: Path) -> None:
        """Serials compare on the RFC 1982 circle: 5 is newer than 4294967290."""
        old, new = build(0, serial=4_294_967_290), build(1, serial=5)
        assert run(tmp_path, "push", old + seal(old))[0] == 0
        assert run(tmp_path, "push", new + seal(new))[0] == 0
        assert run(tmp_path, "push", old + seal(old))[0] == protocol.EXIT_REFUSED

    def test_data_without_banner_is_not_compared(self, root: Path) -> None:
        """Data not built by dnsmaster (no serial banner) is installed as it comes."""
        plain = b"+www.example.com:192.0.2.5\n"
        assert run(root, "push", plain + seal(plain))[0] == 0
        assert run(root, "push", DATA + seal(DATA))[0] == 0


class TestRepair:
    def interrupt(self, root: Path, data: bytes) -> None:
        """What a kill between the two renames of an install leaves."""
        (root / ".dnsmaster-installing").write_bytes(b"installing data sha256=x\n")
        (root / "data").unlink()
        (root / "data").write_bytes(data)

    @pytest.mark.parametrize("verb", ["status", "push"])
    def test_interrupted_install_repaired(self, root: Path, verb: str) -> None:
        """New data beside the old data.cdb, journal left: the next run rebuilds data.cdb."""
        self.interrupt(root, NEWER + seal(NEWER))
        status, out, err = run(root, verb, NEWER + seal(NEWER))
        assert (status, err) == (0, ""), err
        assert "repaired: rebuilt data.cdb from data" in out
        assert (root / "data.cdb").read_bytes() == compile_data(NEWER + seal(NEWER), 1)
        assert not (root / ".dnsmaster-installing").exists()
        if verb == "status":
            assert out.splitlines()[-1].startswith(f"status sha256={sha(NEWER)} serial=1700000001")

    def test_unrepairable_is_not_vouched_for(self, root: Path) -> None:
        """Cut install, data does not compile: status names no sha256; a push repairs."""
        old_cdb = (root / "data.cdb").read_bytes()
        self.interrupt(root, b"Xbroken\x1b\n")
        status, out, err = run(root, "status")
        assert (status, out.splitlines()[-1]) == (
            0,
            f"status none pair=unknown {SPEAKS} writable=yes",
        )
        assert "data.cdb is not known to match data" in err
        assert "\x1b" not in err
        assert (root / "data.cdb").read_bytes() == old_cdb  # tinydns keeps answering
        status, out, _ = run(root, "push", NEWER + seal(NEWER))
        assert status == 0
        assert "not repaired: an install was cut short and data does not compile" in out
        assert run(root, "status")[1].startswith(f"status sha256={sha(NEWER)} ")
        assert not (root / ".dnsmaster-installing").exists()

    def test_journal_without_data(self, tmp_path: Path) -> None:
        """The first install cut after data.cdb went in: no data, so nothing is vouched for."""
        (tmp_path / ".dnsmaster-installing").write_bytes(b"")
        (tmp_path / "data.cdb").write_bytes(compile_data(DATA, 1))
        status, out, _ = run(tmp_path, "status")
        assert (status, out.strip()) == (0, f"status none pair=unknown {SPEAKS} writable=yes")
        assert run(tmp_path, "push", DATA + seal(DATA))[0] == 0
        assert run(tmp_path, "status")[1].startswith(f"status sha256={sha(DATA)} ")

    @pytest.mark.parametrize("damage", ["missing", "cut", "older"])
    def test_doubtful_cdb_not_vouched_for(self, root: Path, damage: str) -> None:
        """status names no sha256 when data.cdb is missing, cut short or older than data."""
        cdb_path = root / "data.cdb"
        if damage == "missing":
            cdb_path.unlink()
        elif damage == "cut":
            cdb_path.write_bytes(cdb_path.read_bytes()[:-1])
        else:
            stamp = (root / "data").stat().st_mtime_ns - 10**9
            os.utime(cdb_path, ns=(stamp, stamp))
        status, out, err = run(root, "status")
        assert (status, out.strip()) == (0, f"status none pair=unknown {SPEAKS} writable=yes")
        assert "data.cdb" in err


class TestRefusals:
    @pytest.mark.parametrize("cut", [0, 1, 50, -70, -66, -2, -1])
    def test_cut_stream_never_installs(self, root: Path, cut: int) -> None:
        """A stream cut anywhere is refused and the installed data is unchanged."""
        before = installed(root)
        stream = NEWER + seal(NEWER)
        status, _, err = run(root, "push", stream[:cut])
        assert status == protocol.EXIT_REFUSED
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
        assert (status, "sha256" in err) == (protocol.EXIT_REFUSED, True)
        assert installed(root) == before

    def test_data_that_does_not_compile(self, root: Path) -> None:
        """Data tinydns-data would refuse is refused, with the line and why."""
        before = installed(root)
        bad = NEWER + b"Xbroken\n"
        status, _, err = run(root, "push", bad + seal(bad))
        assert status == protocol.EXIT_REFUSED
        assert "does not compile: line" in err
        assert "unrecognized leading character" in err
        assert installed(root) == before

    def test_oversize(self, root: Path) -> None:
        """Data over --max-size is refused before anything is written."""
        before = installed(root)
        status, _, err = run(root, "push", NEWER + seal(NEWER), "--max-size", "100")
        assert status == protocol.EXIT_REFUSED
        assert "size cap of 100 bytes" in err
        assert installed(root) == before

    def test_size_cap_is_on_the_data(self, root: Path) -> None:
        """--max-size caps the data itself; the trailer line comes on top."""
        cap = str(len(NEWER))
        assert run(root, "push", NEWER + seal(NEWER), "--max-size", str(len(NEWER) - 1))[0] == 1
        assert run(root, "push", NEWER + seal(NEWER), "--max-size", cap)[0] == 0

    @pytest.mark.parametrize(
        "verb",
        [
            "rm -rf /",
            "push extra",
            "PUSH",
            "",
            "status; id",
            "push --force --force",
            "push -f",
            "status --force",
            "--force push",
        ],
    )
    def test_unknown_verbs(self, root: Path, verb: str) -> None:
        """Only the fixed verbs run; anything else is refused and changes nothing."""
        before = installed(root)
        status, out, err = run(root, verb, NEWER + seal(NEWER))
        assert status == protocol.EXIT_USAGE
        assert "this key runs one of: push, push --force, status" in err
        assert out == ""
        assert installed(root) == before

    def test_unknown_verb_escaped(self, root: Path) -> None:
        """A command with control characters is quoted escaped, never raw."""
        status, _, err = run(root, "push\x1b[2J")
        assert status == protocol.EXIT_USAGE
        assert "\x1b" not in err
        assert "\\x1b[2J" in err

    def test_no_command(self, root: Path) -> None:
        """An interactive login (no command) is refused."""
        status, _, err = run(root, None)
        assert status == protocol.EXIT_USAGE
        assert "no command given" in err

    def test_unwritable_root(self, tmp_path: Path) -> None:
        """A root that does not exist is a system error, named."""
        status, _, err = run(tmp_path / "missing", "push", DATA + seal(DATA))
        assert status == protocol.EXIT_SYSTEM
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
        assert out.endswith(f" {SPEAKS} writable=yes\n")

    def test_line_format(self, root: Path) -> None:
        """One line, the old fields first (older masters read them), then what speaks."""
        (line,) = run(root, "status")[1].splitlines()
        words = line.split()
        keys = [w.split("=", 1)[0] for w in words[1:]]
        assert (words[0], keys) == (
            "status",
            ["sha256", "serial", "bytes", "time", "protocol", "version", "writable"],
        )
        assert words[-3:] == [f"protocol={PROTOCOL}", f"version={__version__}", "writable=yes"]

    def test_unwritable_root_is_said(self, root: Path) -> None:
        """A root the receiver cannot write (here a read-only mount over it, which even
        root cannot write) says so, so that doctor can tell before a push fails."""
        before = run(root, "status")[1]
        subprocess.run(["mount", "--bind", "-o", "ro", str(root), str(root)], check=True)
        try:
            status, out, _ = run(root, "status")
        finally:
            subprocess.run(["umount", str(root)], check=True)
        assert status == 0
        assert out.split()[:-1] == before.split()[:-1]
        assert out.split()[-1] == "writable=no"
        assert not [p.name for p in root.iterdir() if p.name.startswith(".data.probe")]

    def test_reports_what_is_there(self, root: Path) -> None:
        """data edited after its push reports its own sha256, not the trailer's claim."""
        edited = DATA + b"+extra.example.com:192.0.2.9\n" + seal(DATA)
        (root / "data").unlink()
        (root / "data").write_bytes(edited)
        (root / "data.cdb").write_bytes(compile_data(edited, 1))
        status, out, _ = run(root, "status")
        assert status == 0
        assert out.startswith(f"status sha256={sha(edited[: -len(seal(DATA))])} ")

    def test_nothing_installed(self, tmp_path: Path) -> None:
        """status on an empty root says so, with no sha256 (the master then pushes)."""
        assert run(tmp_path, "status") == (0, f"status none {SPEAKS} writable=yes\n", "")


def run_bounded(root: Path, verb: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """The receiver as the forced command runs it, killed if it hangs (a FIFO would)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dnsmaster", "receive", "--root", str(root)],
        input=stdin,
        env=dict(os.environ, SSH_ORIGINAL_COMMAND=verb),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def replace_with(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(path.parent / "elsewhere")
        path.with_name("elsewhere").write_bytes(DATA + seal(DATA))


#: What the receiver says each kind is.
KINDS = {"fifo": "a FIFO", "symlink": "a symbolic link"}


@pytest.mark.usefixtures("dnsmaster_cli")
class TestNotRegular:
    """What the receiver reads in the root (data, data.cdb) it opens only as a regular
    file: a FIFO there hung status and push with the root's lock held, and became a
    kept copy. Each returns at once, says what is there, and a push replaces it."""

    @pytest.mark.parametrize("kind", ["fifo", "symlink"])
    def test_status_with_data_not_a_file(self, root: Path, kind: str) -> None:
        replace_with(root / "data", kind)
        status, out, err = run_bounded(root, "status")
        assert status == 0, err
        assert out.startswith("status none pair=unknown ")
        assert f"data is {KINDS[kind]}, not a regular file; the next push installs both" in err

    def test_status_with_a_fifo_data_cdb(self, root: Path) -> None:
        replace_with(root / "data.cdb", "fifo")
        status, out, err = run_bounded(root, "status")
        assert (status, out.split()[:3]) == (0, ["status", "none", "pair=unknown"]), err
        assert "data.cdb is a FIFO, not a regular file" in err

    def test_repair_with_a_fifo_data(self, root: Path) -> None:
        """An install cut short, and no data a repair could read: said, nothing hangs."""
        (root / fsutil.JOURNAL).write_bytes(b"")
        replace_with(root / "data", "fifo")
        status, out, err = run_bounded(root, "status")
        assert (status, out.split()[:3]) == (0, ["status", "none", "pair=unknown"]), err
        assert "an install was cut short and data is a FIFO, not a regular file" in err

    @pytest.mark.parametrize("name", ["data", "data.cdb"])
    def test_push_replaces_a_fifo(self, root: Path, name: str) -> None:
        """The same data again: the one push that reads both to see whether it may skip."""
        replace_with(root / name, "fifo")
        status, out, err = run_bounded(root, "push", DATA + seal(DATA))
        assert (status, err) == (0, "")
        assert "installed data and data.cdb" in out
        if name == "data":
            assert "not kept: data is a FIFO, not a regular file; this push replaces it" in out
        assert (root / "data").read_bytes() == DATA + seal(DATA)
        assert (root / "data.cdb").read_bytes() == compile_data(DATA + seal(DATA), 1)
        # no FIFO was kept as a copy
        assert all(p.is_file() for p in root.glob("data.*"))

    def test_delta_against_a_fifo_is_refused(self, root: Path) -> None:
        replace_with(root / "data", "fifo")
        stream = delta.make(DATA, NEWER)
        status, _, err = run_bounded(root, "delta", stream)
        assert status == protocol.EXIT_DELTA
        assert "refused: delta: base mismatch: data is a FIFO, not a regular file" in err


class TestCommandLine:
    def test_version(self) -> None:
        """--version names the dnsmaster version and the protocol; no --root needed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert receive.main(["--version"], environ={}) == 0
        assert out.getvalue() == f"dnsmaster receive {__version__} (protocol {PROTOCOL})\n"

    @pytest.mark.usefixtures("dnsmaster_cli")
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
            "import sys; from dnsmaster.commands import main; "
            "sys.argv=['dnsmaster','receive','--root','/nonexistent']; "
            "main.main(['receive', '--help']) if False else None; "
            "import dnsmaster.slave.receive; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncssh','structlog','dns','watchdog')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"
