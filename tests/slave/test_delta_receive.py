"""The receiver's protocol-2 verbs: ``delta`` and ``--zlib``, in process and as the
master's LocalChannel runs it.

A delta installs exactly what a full push installs; any doubt about its base or
result is refused with exit status 3 and changes nothing; a stream cut at any byte,
plain or compressed, installs nothing.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.config import Slave
from dnsmaster.core import delta
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.master.payload import Offer, compresses
from dnsmaster.master.pushing import push_one
from dnsmaster.slave import bundle, receive
from dnsmaster.transport.local import LocalChannel
from tests.lab.receiver import push_in_process

ZONES = b"".join(
    b".z%d.example:127.0.0.1:a\n+www.z%d.example:192.0.2.1\n" % (i, i) for i in range(40)
)
#: Bytes a text protocol would mangle: NUL, 0xff, CR, lone high bytes, in a TXT
#: record and a comment.
HOSTILE = b"'bin.z1.example:\x00\xff\r\x80\xc3(\xfe:300\n#\r\x00\xff\x80 comment\n"


def build(serial: int, extra: bytes = b"") -> bytes:
    return assemble([compile_source("zones.a", ZONES + extra)], serial).data


V1 = build(1_700_000_000)
V2 = build(1_700_000_001, b"+new.z3.example:192.0.2.7\n")
V3 = build(1_700_000_002, HOSTILE)


def run(root: Path, verb: str, stdin: bytes = b"") -> tuple[int, str, str]:
    return push_in_process(root, stdin, verb)


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def pair(root: Path) -> tuple[bytes, bytes]:
    return (root / "data").read_bytes(), (root / "data.cdb").read_bytes()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A slave root holding V1, pushed in full."""
    r = tmp_path / "slave"
    r.mkdir()
    assert run(r, "push", V1 + seal(V1))[0] == 0
    return r


@pytest.fixture
def full(tmp_path: Path) -> Path:
    """Another root, given V1 then V2 in full: what a delta must reproduce."""
    r = tmp_path / "full"
    r.mkdir()
    assert run(r, "push", V1 + seal(V1))[0] == 0
    assert run(r, "push", V2 + seal(V2))[0] == 0
    return r


class TestDelta:
    def test_same_pair_as_a_full_push(self, root: Path, full: Path) -> None:
        """data and data.cdb byte for byte those of a full push, delta or zlib delta."""
        status, out, err = run(root, "delta", delta.make(V1, V2))
        assert (status, err) == (0, "")
        assert pair(root) == pair(full)
        lines = out.splitlines()
        assert lines[0].startswith("received delta bytes=")
        assert lines[1].startswith(f"rebuilt bytes={len(V2)} sha256=")
        assert lines[-1].startswith("done sha256=")

    def test_zlib_delta(self, root: Path, full: Path) -> None:
        status, _, err = run(root, "delta --zlib", zlib.compress(delta.make(V1, V2)))
        assert (status, err) == (0, "")
        assert pair(root) == pair(full)

    def test_status_reports_protocol_2(self, root: Path) -> None:
        status, out, _ = run(root, "status")
        assert status == 0
        assert f" protocol={protocol.PROTOCOL} " in out

    def test_edited_by_hand_is_refused(self, root: Path) -> None:
        """The slave's data changed under the master: exit 3, nothing changed."""
        data = root / "data"
        data.write_bytes(data.read_bytes().replace(b"192.0.2.1", b"192.0.2.9", 1))
        before = files(root)
        status, _, err = run(root, "delta", delta.make(V1, V2))
        assert status == protocol.EXIT_DELTA == 3
        assert err.startswith("dnsmaster receive: refused: delta: base mismatch: ")
        assert err.count("\n") == 1
        assert files(root) == before

    def test_unknown_base_is_refused(self, root: Path) -> None:
        before = files(root)
        status, _, err = run(root, "delta", delta.make(V3, V2))
        assert status == 3
        assert "base mismatch: the installed data is" in err
        assert files(root) == before

    def test_nothing_installed_is_refused(self, tmp_path: Path) -> None:
        status, _, err = run(tmp_path, "delta", delta.make(V1, V2))
        assert (status, err) == (
            3,
            "dnsmaster receive: refused: delta: base mismatch: no data is installed\n",
        )
        assert files(tmp_path) == {}

    def test_wrong_result_is_refused(self, root: Path) -> None:
        """A delta whose result is not its trailer's build: exit 3, nothing changed."""
        before = files(root)
        bad = delta.make(V1, V2).replace(b"192.0.2.7", b"192.0.2.8")
        status, _, err = run(root, "delta", bad)
        assert status == 3
        assert "delta: result mismatch: sha256 " in err
        assert files(root) == before

    def test_malformed_is_refused(self, root: Path) -> None:
        before = files(root)
        stream = delta.make(V1, V2).replace(b"\n= ", b"\n=  ", 1)
        status, _, err = run(root, "delta", stream)
        assert status == 3
        assert "refused: delta: byte " in err
        assert files(root) == before

    def test_full_stream_on_the_delta_verb(self, root: Path) -> None:
        before = files(root)
        status, _, err = run(root, "delta", V2 + seal(V2))
        assert (status, files(root)) == (3, before)
        assert "not a delta" in err

    def test_older_build_refused_as_a_full_push_would_be(self, root: Path) -> None:
        """The install rules stay: an older serial is refused (exit 1) unless forced."""
        older = build(1_699_999_999, b"+old.z1.example:192.0.2.3\n")
        status, _, err = run(root, "delta", delta.make(V1, older))
        assert status == 1
        assert "older than the installed serial" in err
        assert run(root, "delta --force", delta.make(V1, older))[0] == 0
        assert pair(root)[0] == older + seal(older)

    def test_unchanged(self, root: Path) -> None:
        status, out, _ = run(root, "delta", delta.make(V1, V1))
        assert status == 0
        assert "unchanged: data and data.cdb already installed" in out


class TestCut:
    """A stream cut at any byte installs nothing (exit 1 or 3, never 0)."""

    def test_delta_cut_at_every_byte(self, root: Path) -> None:
        stream = delta.make(V1, V2)
        header = stream.index(b"\n") + 1
        trailer = stream.rindex(b"#dnsmaster-end")
        before = files(root)
        # Every byte of the base reference (header) and the trailer, and the body's
        # every tenth byte (all of it is covered by the pure tests in test_delta).
        cuts = [*range(header + 1), *range(header, trailer, 10), *range(trailer, len(stream))]
        for cut in cuts:
            status, _, err = run(root, "delta", stream[:cut])
            assert status in (1, 3), (cut, err)
            assert files(root) == before, cut

    @pytest.mark.parametrize("verb", ["push --zlib", "delta --zlib"])
    def test_compressed_cut_at_every_byte(self, root: Path, verb: str) -> None:
        plain = V2 + seal(V2) if verb.startswith("push") else delta.make(V1, V2)
        stream = zlib.compress(plain)
        before = files(root)
        # Every byte of zlib's header and first block's start, and of its last block's
        # end and the checksum; every tenth between, where a cut is the same to the
        # receiver: zlib's end not reached (or a block cut corrupt), refused before
        # any of it is parsed.
        ends = 32
        cuts = [
            *range(ends),
            *range(ends, len(stream) - ends, 10),
            *range(len(stream) - ends, len(stream)),
        ]
        assert len(stream) > 3 * ends
        for cut in cuts:
            status, _, err = run(root, verb, stream[:cut])
            assert status == 1, (cut, err)
            assert "incomplete data" in err or "corrupt" in err, err
            assert files(root) == before, cut

    def test_compressed_with_bytes_after_its_end(self, root: Path) -> None:
        before = files(root)
        status, _, err = run(root, "push --zlib", zlib.compress(V2 + seal(V2)) + b"x")
        assert (status, files(root)) == (1, before)
        assert "bytes after the end of the compressed stream" in err


class TestZlib:
    def test_binary_unsafe_bytes_round_trip(self, root: Path, tmp_path: Path) -> None:
        """NUL, 0xff, CR, lone high bytes: a compressed push installs them exactly."""
        plain = tmp_path / "plain"
        plain.mkdir()
        assert run(plain, "push", V3 + seal(V3))[0] == 0
        status, _, err = run(root, "push --zlib", zlib.compress(V3 + seal(V3)))
        assert (status, err) == (0, "")
        assert pair(root) == pair(plain)
        assert HOSTILE in pair(root)[0]
        # and back, by a compressed delta
        assert run(root, "delta --zlib --force", zlib.compress(delta.make(V3, V2)))[0] == 0
        assert pair(root)[0] == V2 + seal(V2)

    def test_decompressed_size_is_capped(self, root: Path) -> None:
        """A small stream that inflates past --max-size is refused while reading."""
        bomb = zlib.compress(b"#" * 10_000_000 + b"\n")
        assert len(bomb) < 20_000
        out, err = io.StringIO(), io.StringIO()
        status = receive.main(
            ["--root", str(root), "--max-size", "1000000"],
            environ={"SSH_ORIGINAL_COMMAND": "push --zlib"},
            stdin=io.BytesIO(bomb),
            stdout=out,
            stderr=err,
        )
        assert status == 1
        assert "over the size cap of 1000000 bytes" in err.getvalue()

    @pytest.mark.parametrize(
        "verb", ["push --force --zlib", "zlib", "push --delta", "delta -f", "delta --zlib --zlib"]
    )
    def test_other_spellings_refused(self, root: Path, verb: str) -> None:
        assert run(root, verb, b"")[0] == 2


#: Run in a fresh interpreter: the peak RSS growth of one hostile delta, in KiB,
#: after the receiver is imported and a base installed.
_MEASURE = """
import hashlib, io, sys, zlib
from pathlib import Path
from dnsmaster.slave import receive
from dnsmaster.core.stream import seal

root, ops, cap = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = (root / "data").read_bytes()
body, _ = base.rsplit(b"#dnsmaster-end", 1)
header = b"#dnsmaster-delta 1 base=%s bytes=%d restamp=none\\n" % (
    hashlib.sha256(body).hexdigest().encode(), len(body))
# one-byte copies of the base, as many as the result's bytes, with a trailer whose
# sha256 is not theirs: every operation is read and applied before the refusal.
# Compressed piece by piece, so that making it does not raise the peak measured.
z = zlib.compressobj(9)
pieces = [z.compress(header)]
pieces += [z.compress(b"= 0 1\\n" * 1000) for _ in range(ops // 1000)]
stream = b"".join([*pieces, z.compress(seal(b"x" * (ops - 1) + b"\\n")), z.flush()])


def kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

# The peak so far may be above the present (imports): reset it to the present.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = kib("VmRSS:")
err = io.StringIO()
status = receive.main(
    ["--root", str(root), "--max-size", cap],
    environ={"SSH_ORIGINAL_COMMAND": "delta --zlib"},
    stdin=io.BytesIO(stream), stdout=io.StringIO(), stderr=err,
)
grown = kib("VmHWM:") - before
print(status, grown, len(stream), err.getvalue().strip())
"""


class TestHostile:
    """A stolen key cannot make a slave's memory grow past what the cap allows."""

    def test_600k_one_byte_copies_in_a_few_kb(self, root: Path) -> None:
        """600,000 ops in a few KB of zlib, against the installed base: the peak stays
        within a few times the cap (the old receiver kept an object per operation,
        and a memoryview per copy: over 200 MB here). Peak RSS, not time."""
        cap, ops = 4_000_000, 600_000  # ops * len("= 0 1\n") is 3.6 MB
        before = files(root)
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(root), str(ops), str(cap)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        status, grown, size, err = done.stdout.split(" ", 3)
        assert int(size) < 100_000
        assert int(status) == 3, err
        assert "refused: delta: result mismatch" in err
        # the decompressed stream, the result (and its copy to bytes), the base: under
        # 3 caps with room to spare
        assert int(grown) * 1024 < 3 * cap, grown
        assert files(root) == before

    def test_more_operations_than_the_result_has_bytes(self, root: Path) -> None:
        """Refused while parsing, at the first operation past the trailer's length."""
        header = delta.make(V1, V2).split(b"\n", 1)[0] + b"\n"
        status, _, err = run(root, "delta", header + b"= 0 1\n" * 100_000 + seal(b"x\n"))
        assert status == 3
        assert "refused: delta: operation 3: the result passes the 2 bytes" in err


# --------------------------------------------------------------------------- the master's side


def local(root: Path, compress: str = "auto") -> LocalChannel:
    return LocalChannel(
        Slave(name="s", transport="local", root=root, compress=compress)  # type: ignore[arg-type]
    )


def nothing(slave: str, stream: str, line: str, truncated: int = 0) -> None:
    pass


class TestPushOne:
    async def test_delta_when_offered(self, root: Path, full: Path) -> None:
        result = await push_one(local(root, "on"), V2, "x", 60, nothing, offer=Offer(2, V1))
        assert result.ok, result.error
        assert (result.mode, result.compressed) == ("delta", True)
        assert result.bytes < 600
        assert pair(root) == pair(full)

    async def test_protocol_1_gets_plain_data(self, root: Path) -> None:
        result = await push_one(local(root, "on"), V2, "x", 60, nothing, offer=Offer(1, V1))
        assert result.ok, result.error
        assert (result.mode, result.compressed, result.bytes) == (
            "full",
            False,
            len(V2 + seal(V2)),
        )

    async def test_refused_delta_falls_back_at_once(self, root: Path, full: Path) -> None:
        """The master thinks the slave holds V3; it holds V1: refused, then full data."""
        refused: list[tuple[str, str]] = []
        result = await push_one(
            local(root),
            V2,
            "x",
            60,
            nothing,
            offer=Offer(2, V3),
            on_delta_refused=lambda slave, why: refused.append((slave, why)),
        )
        assert result.ok, result.error
        assert result.mode == "full"
        assert result.delta_refused is not None
        assert result.delta_refused.startswith("delta: base mismatch: ")
        assert result.delta_refused.endswith("(exit 3)")
        assert refused == [("s", result.delta_refused)]
        assert pair(root) == pair(full)

    async def test_no_delta_bigger_than_the_data(self, root: Path) -> None:
        other = build(1_700_000_005, b"".join(b"+h%d.x.example:192.0.2.2\n" % i for i in range(50)))
        result = await push_one(
            local(root), other[:200] + b"\n", "x", 60, nothing, offer=Offer(2, V1)
        )
        assert result.mode == "full"


class TestCompresses:
    @pytest.mark.parametrize(
        ("host", "transport", "compress", "expected"),
        [
            ("ns2.example.net", "ssh", "auto", True),
            ("192.0.2.1", "ssh", "auto", True),
            ("2001:db8::1", "ssh", "auto", True),
            ("127.0.1.5", "ssh", "auto", False),
            ("::1", "ssh", "auto", False),
            ("localhost", "ssh", "auto", False),
            ("", "local", "auto", False),
            ("127.0.0.1", "ssh", "on", True),
            ("192.0.2.1", "ssh", "off", False),
        ],
    )
    def test_auto(self, host: str, transport: str, compress: str, expected: bool) -> None:
        slave = Slave(name="s", host=host, transport=transport, compress=compress)  # type: ignore[arg-type]
        assert compresses(slave) is expected


class TestBundle:
    def test_delta_and_zlib_under_debian_python(
        self, root: Path, full: Path, debian_python: str
    ) -> None:
        """The one-file receiver under Debian's ``python3 -I -S`` (stdlib only) takes a
        compressed delta, and installs what the package's receiver installs."""
        python = debian_python
        pyz = root.parent / "dnsmaster-receive.pyz"
        bundle.write(pyz)
        proc = subprocess.run(
            [python, "-I", "-S", str(pyz), "--root", str(root)],
            input=zlib.compress(delta.make(V1, V2)),
            capture_output=True,
            env={"SSH_ORIGINAL_COMMAND": "delta --zlib"},
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert b"rebuilt bytes=" in proc.stdout
        assert pair(root) == pair(full)
