"""A root serving confined masters, driven in process: the sections and the merged
pair, every refusal changing nothing, deltas per master, and the slave operator's
commands (``--masters``, ``--remove-master``, ``--adopt``)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.core import accel, cdb, delta
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split
from dnsmaster.fsutil import JOURNAL
from dnsmaster.slave import masters, receive
from tests.lab.receiver import pair_matches

ALPHA = ("--master", "alpha", "--allow", "a.example")
BETA = ("--master", "beta", "--allow", "b.example")
ZONE_A = b".a.example:127.0.0.1:a\n+www.a.example:192.0.2.1\n"
ZONE_B = b".b.example:127.0.0.2:a\n+www.b.example:192.0.2.2\n"


def build(zone: bytes, n: int, source: str = "zones.x") -> bytes:
    """A sealed dnsmaster build of ``zone`` with serial 1700000000 + n."""
    data = assemble([compile_source(source, zone)], 1_700_000_000 + n).data
    return data + seal(data)


def run(
    root: Path, key: tuple[str, ...], verb: str | None = "push", data: bytes = b""
) -> tuple[int, str, str]:
    """The receiver in process, as a key line with ``key`` runs it (``verb`` None:
    the slave's operator at a shell)."""
    out, err = io.StringIO(), io.StringIO()
    environ = {} if verb is None else {"SSH_ORIGINAL_COMMAND": verb}
    status = receive.main(
        ["--root", str(root), *key],
        environ=environ,
        stdin=io.BytesIO(data),
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative name, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def body(sealed: bytes) -> bytes:
    return split(sealed)[0]


def merged_expected(*parts: tuple[str, bytes]) -> bytes:
    """The merged data of ``(name, sealed data)`` parts, by the design's words."""
    ordered = sorted(parts)
    text = b"# dnsmaster merged masters=" + ",".join(n for n, _ in ordered).encode() + b"\n"
    for name, sealed in ordered:
        b = body(sealed)
        serial = previous_serial(b[:256])
        sha = hashlib.sha256(b).hexdigest()
        text += f"# dnsmaster master {name} sha256={sha} serial={serial}\n".encode() + b
    return text


A1, A2, A3 = build(ZONE_A, 1), build(ZONE_A + b"+two.a.example:192.0.2.3\n", 2), build(ZONE_A, 3)
B1 = build(ZONE_B, 1, "zones.b")
B2 = build(ZONE_B + b"+two.b.example:192.0.2.4\n", 2, "zones.b")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root serving alpha (A1) and beta (B1)."""
    r = tmp_path / "root"
    r.mkdir()
    assert run(r, ALPHA, data=A1)[0] == 0
    assert run(r, BETA, data=B1)[0] == 0
    return r


class TestSections:
    def test_two_masters_and_the_merged_pair(self, root: Path) -> None:
        """Each master's data in its section; the merged data both bodies in name
        order; data.cdb what compiling that data gives."""
        assert (root / "masters/alpha/data").read_bytes() == A1
        assert (root / "masters/beta/data").read_bytes() == B1
        assert (root / "data").read_bytes() == merged_expected(("alpha", A1), ("beta", B1))
        assert pair_matches(root)
        assert (root / "masters/alpha/allow").read_text() == "allow a.example\nlocations no\n"
        names = sorted(os.listdir(root / "masters/alpha"))
        assert names[:3] == ["allow", "data", "data.2" + names[2][6:]]
        assert names[3:] == ["records"]
        assert not (root / JOURNAL).exists()

    def test_modes_for_one_account_per_master(self, root: Path) -> None:
        """Directories group-writable and setgid whatever the umask, files readable."""
        for d in (root / "masters", root / "masters/alpha", root / "masters/beta"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o2775, d
        for f in ("data", "data.cdb", "masters/alpha/data", "masters/alpha/records"):
            assert stat.S_IMODE((root / f).stat().st_mode) == 0o644, f

    def test_each_master_replaces_only_its_own(self, root: Path) -> None:
        status, out, err = run(root, ALPHA, data=A2)
        assert (status, err) == (0, "")
        assert "installed master alpha" in out
        assert (root / "masters/beta/data").read_bytes() == B1
        assert (root / "data").read_bytes() == merged_expected(("alpha", A2), ("beta", B1))
        assert pair_matches(root)

    def test_status_reports_the_own_section(self, root: Path) -> None:
        for key, sealed, name in ((ALPHA, A1, "alpha"), (BETA, B1, "beta")):
            status, out, err = run(root, key, "status")
            assert (status, err) == (0, "")
            version = protocol.parse_status(out.splitlines())
            assert version is not None
            assert (version.sha256, version.serial) == (
                hashlib.sha256(body(sealed)).hexdigest(),
                previous_serial(sealed[:256]),
            )
            assert out.rstrip().endswith(f"writable=yes master={name}")
            assert f" protocol={protocol.PROTOCOL} " in out

    def test_older_masters_read_the_status_line(self) -> None:
        """A master of protocol 2 reads a confined status: the new field is ignored."""
        line = f"status sha256={'a' * 64} serial=7 bytes=1 time=T protocol=3 version=V master=x"
        version = protocol.parse_status([line])
        assert version is not None
        assert (version.sha256, version.serial, version.protocol) == ("a" * 64, 7, 3)
        protocol.check_receiver("slave", [line], needed=2)

    def test_status_of_a_master_not_yet_pushed(self, root: Path) -> None:
        status, out, _ = run(root, ("--master", "gamma", "--allow", "c.example"), "status")
        assert status == 0
        assert out.startswith("status none protocol=")
        assert out.rstrip().endswith("master=gamma")

    def test_unchanged_push(self, root: Path) -> None:
        before = snapshot(root)
        status, out, _ = run(root, ALPHA, data=A1)
        assert status == 0
        assert "unchanged: data and data.cdb already installed" in out
        assert snapshot(root) == before

    def test_tinydns_data_gives_our_cdb(self, root: Path, tinydns_data_bin: str) -> None:
        """The merged data compiled by tinydns-data is our data.cdb, byte for byte."""
        work = root.parent / "td"
        work.mkdir()
        shutil.copy2(root / "data", work / "data")
        subprocess.run([tinydns_data_bin], cwd=work, check=True)
        assert (work / "data.cdb").read_bytes() == (root / "data.cdb").read_bytes()

    def test_pure_python_same_bytes(self, tmp_path: Path) -> None:
        """Without the accelerators (the bundle) the merged pair is the same."""
        roots = []
        for pure in (False, True):
            r = tmp_path / f"pure{pure}"
            r.mkdir()
            with contextlib.ExitStack() as stack:
                if pure:
                    stack.enter_context(accel.using("compiler", None))
                    stack.enter_context(accel.using("records", None))
                assert run(r, ALPHA, data=A1)[0] == 0
                assert run(r, BETA, data=B1)[0] == 0
                assert run(r, ALPHA, data=A2)[0] == 0
            roots.append(r)
        assert (roots[0] / "data").read_bytes() == (roots[1] / "data").read_bytes()
        assert pair_matches(roots[0])
        assert pair_matches(roots[1])

    def test_a_push_compiles_only_its_own_data(
        self, root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """beta's push compiles beta's data; alpha's records are reused as they are."""
        compiled: list[bytes] = []
        real = masters.compile_packed

        def spy(content: bytes) -> cdb.Packed:
            compiled.append(content)
            return real(content)

        monkeypatch.setattr(masters, "compile_packed", spy)
        assert run(root, BETA, data=B2)[0] == 0
        assert compiled == [B2]
        assert pair_matches(root)

    def test_stale_records_are_rebuilt(self, root: Path) -> None:
        """Records that are not of the data beside them are compiled again."""
        records = root / "masters/alpha/records"
        records.write_bytes(records.read_bytes()[:-3])
        status, out, _ = run(root, BETA, data=B2)
        assert status == 0
        assert "rebuilt the records of master alpha" in out
        assert pair_matches(root)
        assert (root / "data").read_bytes() == merged_expected(("alpha", A1), ("beta", B2))

    def test_delta_applies_to_its_master_only(self, root: Path) -> None:
        status, out, err = run(root, BETA, "delta", delta.make(body(B1), body(B2)))
        assert (status, err) == (0, ""), out
        assert (root / "masters/beta/data").read_bytes() == B2
        assert (root / "masters/alpha/data").read_bytes() == A1
        assert (root / "data").read_bytes() == merged_expected(("alpha", A1), ("beta", B2))
        # alpha's data is not beta's base: refused as another base, nothing changed.
        before = snapshot(root)
        status, _, err = run(root, BETA, "delta", delta.make(body(A1), body(A2)))
        assert status == protocol.EXIT_DELTA
        assert "base mismatch" in err
        assert snapshot(root) == before


class TestRefusals:
    """Each refusal: its exit status, its words, and not one byte of the root changed."""

    def refused(self, root: Path, key: tuple[str, ...], data: bytes, verb: str = "push") -> str:
        before = snapshot(root)
        status, _, err = run(root, key, verb, data)
        assert status in (protocol.EXIT_REFUSED, protocol.EXIT_USAGE), err
        assert snapshot(root) == before
        return err

    def test_outside_the_allowlist(self, root: Path) -> None:
        bad = build(
            ZONE_B + b"+www.bank.example:192.0.2.9\n'B.Example:txt\n+x.bank.example:1.2.3.4\n",
            4,
            "zones.b",
        )
        err = self.refused(root, BETA, bad)
        lines = err.splitlines()
        assert lines[0] == (
            "refused zones.b:3: +www.bank.example:192.0.2.9: "
            "not in this master's allowlist (b.example)"
        )
        assert lines[1].startswith("refused zones.b:5: +x.bank.example:1.2.3.4: ")
        assert lines[-1] == (
            "dnsmaster receive: refused: 2 lines outside this master's allowlist: "
            "zones.b:3, zones.b:5"
        )

    def test_many_offences_are_bounded(self, root: Path) -> None:
        zone = ZONE_B + b"".join(b"+h%d.bank.example:192.0.2.1\n" % i for i in range(30))
        err = self.refused(root, BETA, build(zone, 4, "zones.b"))
        lines = err.splitlines()
        assert len(lines) == 22
        assert lines[20] == "refused: and 10 more"
        assert lines[-1].endswith(
            "30 lines outside this master's allowlist: "
            "zones.b:3, zones.b:4, zones.b:5, zones.b:6, zones.b:7, ..."
        )

    def test_reason_is_bounded(self, root: Path) -> None:
        """Long zones file names do not make the master's reason line long."""
        zone = ZONE_B + b"+www.bank.example:192.0.2.9\n" * 3
        err = self.refused(root, BETA, build(zone, 4, "zones." + "x" * 300))
        last = err.splitlines()[-1]
        assert last.endswith("...")
        assert len(last) < 300

    def test_overlap(self, root: Path) -> None:
        gamma = ("--master", "gamma", "--allow", "www.a.example")
        err = self.refused(root, gamma, build(b"+www.a.example:192.0.2.5\n", 1, "zones.g"))
        assert err.count("\n") == 1
        assert "alpha" in err
        assert "gamma" in err
        assert "a.example" in err

    def test_older_build_per_master(self, root: Path) -> None:
        assert run(root, ALPHA, data=A2)[0] == 0
        err = self.refused(root, ALPHA, A1)
        assert "older than the installed serial" in err
        # beta's own history is its own: its build 1 is still beta's newest.
        assert run(root, BETA, data=B2)[0] == 0

    def test_unconfined_key_on_a_confined_root(self, root: Path) -> None:
        for verb in ("push", "status"):
            err = self.refused(root, (), A1, verb)
            assert "this root serves confined masters (alpha, beta)" in err

    def test_confined_push_on_a_single_master_root(self, tmp_path: Path) -> None:
        assert run(tmp_path, (), data=A1)[0] == 0
        for verb in ("push", "status"):
            err = self.refused(tmp_path, ALPHA, A2, verb)
            assert "--adopt NAME" in err
        assert not (tmp_path / "masters").exists()

    def test_single_master_journal_is_not_merged_away(self, tmp_path: Path) -> None:
        """A confined key on a single master's root with an install cut short: the
        journal is not taken for the sections' (there are none), nothing changes."""
        assert run(tmp_path, (), data=A1)[0] == 0
        (tmp_path / JOURNAL).write_text("installing\n")
        for verb in ("push", "status"):
            err = self.refused(tmp_path, ALPHA, A2, verb)
            assert "--adopt NAME" in err

    def test_does_not_compile(self, root: Path) -> None:
        bad = body(B2) + b"!not a line\n"
        err = self.refused(root, BETA, bad + seal(bad))
        assert "data does not compile: line " in err

    def test_refused_first_push_makes_nothing(self, tmp_path: Path) -> None:
        """Not even masters/: an empty one would turn the root away from an unconfined key."""
        status, _, _ = run(tmp_path, BETA, data=A1)
        assert status == protocol.EXIT_REFUSED
        assert os.listdir(tmp_path) == []

    @pytest.mark.parametrize(
        ("key", "words"),
        [
            (("--master", "alpha"), "needs --allow DOMAIN"),
            (("--allow", "a.example"), "need --master NAME"),
            (("--master", "../x", "--allow", "a.example"), "--master"),
            (("--master", "alpha", "--allow", "."), "root"),
            (("--master", "alpha", "--allow", "a.example", "--except", "b.example"), "strictly"),
        ],
    )
    def test_usage(self, root: Path, key: tuple[str, ...], words: str) -> None:
        status, _, err = run(root, key, "status")
        assert status == protocol.EXIT_USAGE
        assert words in err


class TestOperator:
    def test_masters(self, root: Path) -> None:
        status, out, err = run(root, ("--masters",), None)
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert [line.split()[:2] for line in lines] == [["master", "alpha"], ["master", "beta"]]
        assert lines[0].endswith(" allow=a.example except= locations=no")
        assert f" bytes={len(body(A1))} " in lines[0]

    def test_operator_commands_refused_through_a_key(self, root: Path) -> None:
        before = snapshot(root)
        for key in (("--masters",), ("--remove-master", "alpha"), ("--adopt", "x")):
            status, _, err = run(root, key, "status")
            assert status == protocol.EXIT_USAGE
            assert "never through a key" in err
        assert snapshot(root) == before

    def test_remove_master(self, root: Path) -> None:
        status, out, err = run(root, ("--remove-master", "alpha"), None)
        assert (status, err) == (0, "")
        assert "removed master alpha" in out
        assert sorted(os.listdir(root / "masters")) == ["beta"]
        assert (root / "data").read_bytes() == merged_expected(("beta", B1))
        assert pair_matches(root)
        status, _, err = run(root, ("--remove-master", "alpha"), None)
        assert status == protocol.EXIT_USAGE
        assert "known: beta" in err

    def test_adopt(self, tmp_path: Path) -> None:
        """A single master's root converted; what tinydns serves stays as it was."""
        assert run(tmp_path, (), data=A1)[0] == 0
        served = (tmp_path / "data").read_bytes(), (tmp_path / "data.cdb").read_bytes()
        status, out, err = run(tmp_path, ("--adopt", "alpha", "--allow", "a.example"), None)
        assert (status, err) == (0, ""), out
        assert ((tmp_path / "data").read_bytes(), (tmp_path / "data.cdb").read_bytes()) == served
        assert (tmp_path / "masters/alpha/data").read_bytes() == A1
        assert not [n for n in os.listdir(tmp_path) if n.startswith("data.2")]
        assert [n for n in os.listdir(tmp_path / "masters/alpha") if n.startswith("data.2")]
        status, out, _ = run(tmp_path, ALPHA, "status")
        assert status == 0
        assert out.startswith("status sha256=")
        # The adopted master pushes on as a confined one; a second master joins.
        assert run(tmp_path, ALPHA, data=A2)[0] == 0
        assert run(tmp_path, BETA, data=B1)[0] == 0
        assert (tmp_path / "data").read_bytes() == merged_expected(("alpha", A2), ("beta", B1))
        assert pair_matches(tmp_path)

    def test_adopt_refuses_data_outside_the_allowlist(self, tmp_path: Path) -> None:
        assert run(tmp_path, (), data=A1)[0] == 0
        before = snapshot(tmp_path)
        status, _, err = run(tmp_path, ("--adopt", "beta", "--allow", "b.example"), None)
        assert status == protocol.EXIT_REFUSED
        assert "outside" in err
        assert snapshot(tmp_path) == before
