"""cdb as cdb_make writes it (spec §8): the reference writer, the C writer
(``cdbmake.h``, here through the compiler accelerator's ``write_cdb``), the reader."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import accel, cdb
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import CdbTooLarge, DnsmasterError
from tests.lab.vectors import ALL

_ccompile: ModuleType | None = accel.found("compiler").module

Writer = Callable[[int, list[bytes], list[bytes]], None]


def via_fd(keys: list[bytes], values: list[bytes], write: Writer = cdb.write_fd) -> bytes:
    with tempfile.TemporaryFile() as f:
        write(f.fileno(), keys, values)
        f.seek(0)
        return f.read()


def via_python(keys: list[bytes], values: list[bytes]) -> bytes:
    """write_fd as it runs without the accelerator: dumps, then os.write."""
    with accel.using("compiler", None):
        return via_fd(keys, values)


def via_c(keys: list[bytes], values: list[bytes]) -> bytes:
    assert _ccompile is not None
    return via_fd(keys, values, _ccompile.write_cdb)


class TestHash:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            (b"", 0x00001505),
            (b"a", 0x0002B5C4),
            (b"\x01a\x00", 0x0B86B2E5),
            (b"\x07example\x03com\x00", 0x22878B48),
            (b"\x00%", 0x00596A60),
            (b"\x00%\xc0\xa8", 0x7C5D8A08),
        ],
    )
    def test_spec_examples(self, key: bytes, expected: int) -> None:
        """The hash values listed in spec §8.2."""
        assert cdb.hash_key(key) == expected


class TestWriter:
    def test_empty(self) -> None:
        """An empty database is the 2048-byte header pointing at 2048 everywhere."""
        assert cdb.dumps([], []) == (2048).to_bytes(4, "little") * 1 + bytes(4) * 1 + (
            ((2048).to_bytes(4, "little") + bytes(4)) * 255
        )

    def test_worked_example(self) -> None:
        """Spec §8.3's worked example for +a:1.2.3.4, byte for byte."""
        value = b"\x00\x01=" + (86400).to_bytes(4, "big") + bytes(8) + b"\x01\x02\x03\x04"
        out = cdb.dumps([b"\x01a\x00"], [value])
        assert len(out) == 2094
        header = [int.from_bytes(out[i * 8 : i * 8 + 4], "little") for i in range(256)]
        counts = [int.from_bytes(out[i * 8 + 4 : i * 8 + 8], "little") for i in range(256)]
        assert header[:229] == [2078] * 229
        assert header[229] == 2078
        assert header[230:] == [2094] * 26
        assert counts[229] == 2
        assert sum(counts) == 2
        assert out[2048:2059] == bytes.fromhex("03000000 13000000 016100")
        assert out[2078:2094] == bytes.fromhex("e5b2860b 00080000 00000000 00000000")

    def test_without_the_accelerator(self) -> None:
        """Without the C writer, write_fd writes the reference writer's bytes, whole."""
        rng = random.Random(7)
        keys = [rng.randbytes(rng.randrange(0, 12)) for _ in range(3000)]
        keys += keys[:500]  # repeated keys probe into the same tables
        values = [rng.randbytes(rng.randrange(0, 40)) for _ in keys]
        assert via_python(keys, values) == cdb.dumps(keys, values)
        assert via_python([b"k1", b"k2", b"k1"], [b"v1", b"v2", b"v3"]) == cdb.dumps(
            [b"k1", b"k2", b"k1"], [b"v1", b"v2", b"v3"]
        )


class TestReader:
    def test_round_trip_with_repeated_keys(self) -> None:
        """Values of one key come back in insertion order; items() dumps in order."""
        keys = [b"a", b"b", b"a", b"", b"a"]
        values = [b"1", b"2", b"3", b"4", b"5"]
        reader = cdb.CdbReader(cdb.dumps(keys, values))
        assert reader.get_all(b"a") == [b"1", b"3", b"5"]
        assert reader.get(b"") == b"4"
        assert reader.get(b"zz") is None
        assert list(reader.items()) == list(zip(keys, values, strict=True))
        assert len(reader) == 5

    def test_reads_what_write_fd_wrote(self) -> None:
        """The reader finds every record of a file write_fd wrote (in C when built)."""
        keys = [b"x%d" % i for i in range(1000)]
        reader = cdb.CdbReader(via_fd(keys, keys))
        assert all(reader.get(k) == k for k in keys)

    def test_rejects_short_file(self) -> None:
        """A file shorter than the header is not a cdb."""
        with pytest.raises(ValueError, match="not a cdb"):
            cdb.CdbReader(b"short")


# Not built: fails under CI=true (CI installs a compiler and the headers), skips elsewhere.
needs_c = pytest.mark.usefixtures("accelerator")

# The rest comes from the Hypothesis profile in tests/conftest.py.
SETTINGS = settings(max_examples=300)

# Short keys from a small alphabet repeat often, so tables fill and probe.
_keys = st.binary(max_size=6) | st.sampled_from([b"", b"a", b"\x01a\x00", b"\x00%"])
_records = st.lists(st.tuples(_keys, st.binary(max_size=64)), max_size=400)


@needs_c
class TestCWriter:
    """``_ccompile.write_cdb``: the bytes of dumps, each write() without the GIL."""

    def test_write_fd_uses_it(self) -> None:
        """write_fd goes through the accelerator the loader found."""
        assert _ccompile is not None
        assert accel.compiler() is _ccompile
        calls: list[int] = []

        class Spy:
            @staticmethod
            def write_cdb(fd: int, keys: list[bytes], values: list[bytes]) -> None:
                calls.append(len(keys))
                assert _ccompile is not None
                _ccompile.write_cdb(fd, keys, values)

        with accel.using("compiler", Spy()):  # type: ignore[arg-type]
            assert via_fd([b"a"], [b"b"]) == cdb.dumps([b"a"], [b"b"])
        assert calls == [1]

    @SETTINGS
    @given(_records)
    def test_matches_reference(self, records: list[tuple[bytes, bytes]]) -> None:
        keys = [k for k, _ in records]
        values = [v for _, v in records]
        expected = cdb.dumps(keys, values)
        assert via_c(keys, values) == expected
        assert via_fd(keys, values) == expected
        assert via_python(keys, values) == expected

    def test_empty(self) -> None:
        assert via_c([], []) == cdb.dumps([], []) == via_python([], [])

    def test_duplicate_keys(self) -> None:
        """One key many times: a table of 2n slots probed all the way round."""
        keys = [b"same"] * 700 + [b"other", b"same", b""] * 50
        values = [b"%d" % i for i in range(len(keys))]
        out = via_c(keys, values)
        assert out == cdb.dumps(keys, values) == via_python(keys, values)
        assert cdb.CdbReader(out).get_all(b"same")[:3] == [b"0", b"1", b"2"]

    def test_large_values(self) -> None:
        """Values past the 1 MiB buffer are written straight from the bytes."""
        rng = random.Random(3)
        keys = [b"k%d" % (i % 5) for i in range(40)]
        values = [rng.randbytes(rng.choice([0, 10, 1 << 20, (1 << 20) + 7, 3 << 20])) for _ in keys]
        assert via_c(keys, values) == cdb.dumps(keys, values) == via_python(keys, values)

    def test_tuples_and_random_lists(self) -> None:
        rng = random.Random(11)
        keys = [rng.randbytes(rng.randrange(0, 30)) for _ in range(20000)]
        values = [rng.randbytes(rng.randrange(0, 30)) for _ in keys]
        expected = cdb.dumps(keys, values)
        assert via_c(keys, values) == expected
        assert via_fd(tuple(keys), tuple(values)) == expected  # type: ignore[arg-type]

    @pytest.mark.parametrize("vector", [v for v in ALL if v.exit == 0], ids=lambda v: v.file)
    def test_vectors(self, vector: object) -> None:
        """Each vector compiled, written by C and by Python: the sha256 of SUMS.tsv,
        tinydns-data's own file."""
        data = vector.data  # type: ignore[attr-defined]
        recs = compile_text(data, default_serial(vector.mtime))  # type: ignore[attr-defined]
        for out in (via_c(recs.keys, recs.values), via_python(recs.keys, recs.values)):
            assert len(out) == vector.cdb_size  # type: ignore[attr-defined]
            assert hashlib.sha256(out).hexdigest() == vector.cdb_sha256  # type: ignore[attr-defined]

    def test_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match="differ in length"):
            via_c([b"a", b"b"], [b"1"])

    def test_not_bytes(self) -> None:
        with pytest.raises(TypeError, match="must be bytes"):
            via_c([b"a"], ["1"])  # type: ignore[list-item]

    def test_too_large(self) -> None:
        """Past 4 GiB: CdbTooLarge (a ValueError), before anything is written."""
        chunk = bytes(1 << 20)
        values = [chunk] * 4096  # one object: 4 GiB of records without 4 GiB of memory
        with tempfile.TemporaryFile() as f:
            with pytest.raises(CdbTooLarge, match="4 GiB") as caught:
                cdb.write_fd(f.fileno(), [b"k"] * 4096, values)
            assert os.fstat(f.fileno()).st_size == 0
        assert (
            str(caught.value)
            == "The database would pass 4 GiB, where cdb's 32-bit positions end (§8.4)."
        )
        assert issubclass(CdbTooLarge, ValueError)
        assert issubclass(CdbTooLarge, DnsmasterError)

    @pytest.mark.parametrize("c_writer", [True, False], ids=["c", "python"])
    def test_unwritable_fd(self, c_writer: bool, tmp_path: Path) -> None:
        """A write that fails raises OSError with its errno, as the Python path does."""
        path = tmp_path / "ro"
        path.write_bytes(b"")
        fd = os.open(path, os.O_RDONLY)
        try:
            if c_writer:
                with pytest.raises(OSError, match="Bad file descriptor") as caught:
                    cdb.write_fd(fd, [b"a"], [b"b"])
            else:
                data = memoryview(cdb.dumps([b"a"], [b"b"]))
                with pytest.raises(OSError, match="Bad file descriptor") as caught:
                    cdb._write(fd, data)
            assert caught.value.errno == errno.EBADF
        finally:
            os.close(fd)

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
    def test_disk_full(self) -> None:
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            with pytest.raises(OSError, match="No space left") as caught:
                cdb.write_fd(fd, [b"a"] * 1000, [b"b" * 100] * 1000)
            assert caught.value.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def test_pipe_read_by_another_thread(self) -> None:
        """Through a pipe read by a Python thread: short writes go on, and the GIL is
        released while C blocks (or the reader could never run)."""
        rng = random.Random(5)
        keys = [rng.randbytes(8) for _ in range(30000)]
        values = [rng.randbytes(rng.randrange(0, 100)) for _ in keys]
        values[7] = bytes(3 << 20)
        got = bytearray()
        r, w = os.pipe()

        def drain() -> None:
            while chunk := os.read(r, 1 << 16):
                got.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            cdb.write_fd(w, keys, values)
        finally:
            os.close(w)
            reader.join()
            os.close(r)
        assert bytes(got) == cdb.dumps(keys, values)

    @pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer")
    def test_signal_handler_interrupts(self) -> None:
        """A write blocked in C is interrupted by a signal whose handler raises
        (PEP 475: EINTR runs the handlers), and the exception comes out."""

        class Interrupted(Exception):
            pass

        def handler(signum: int, frame: object) -> None:
            raise Interrupted

        r, w = os.pipe()  # nobody reads: the write blocks once the pipe is full
        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(Interrupted):
                cdb.write_fd(w, [b"k"], [bytes(4 << 20)])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            os.close(r)
            os.close(w)

    @pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no setitimer")
    def test_signal_handler_returns(self) -> None:
        """EINTR with a handler that returns: the write goes on, the bytes are whole."""
        fired: list[int] = []
        got = bytearray()
        r, w = os.pipe()
        keys, values = [b"a", b"b"], [bytes(2 << 20), b"tail"]

        def drain() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(0.5)  # the write blocks on a full pipe meanwhile
            while chunk := os.read(r, 1 << 16):
                got.extend(chunk)

        old = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
        reader = threading.Thread(target=drain)
        reader.start()
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            cdb.write_fd(w, keys, values)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            os.close(w)
            reader.join()
            os.close(r)
        assert fired == [signal.SIGALRM]
        assert bytes(got) == cdb.dumps(keys, values)
