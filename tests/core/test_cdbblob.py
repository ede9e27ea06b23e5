"""Packed records (:class:`dnsmaster.core.cdb.Packed`): the C functions of ``_cdbblob``
against the pure-Python ones of cdb.py, and both against :func:`cdb.dumps`.

Every check runs both ways: the same blobs, the same cdb bytes, the same refusals
(ValueError, never a crash or a cdb of garbage) for blobs a damaged cache entry
could hold.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import accel, cdb
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.errors import CdbTooLarge
from tests.conftest import IN_CI

_cdbblob: ModuleType | None = accel.found("records").module

SERIAL = 1_700_000_123
SOA_NUMBERS = bytes(range(20))
SOA_TYPE = b"\x00\x06"  # a tinydns value starts with its type

# The rest comes from the Hypothesis profile in tests/conftest.py.
SETTINGS = settings(max_examples=200)


def pure() -> contextlib.AbstractContextManager[None]:
    return accel.using("records", None)


def written(packs: list[cdb.Packed], serial: int = SERIAL) -> bytes:
    with tempfile.TemporaryFile() as f:
        cdb.write_packed(f.fileno(), packs, serial)
        f.seek(0)
        return f.read()


def stamped(values: list[bytes], soa: list[int], serial: int) -> list[bytes]:
    out = list(values)
    for i in soa:
        v = out[i]
        out[i] = v[:-20] + (serial & 0xFFFFFFFF).to_bytes(4, "big") + v[-16:]
    return out


# Short keys from a small alphabet repeat often, so tables fill and probe.
_keys = st.binary(max_size=6) | st.sampled_from([b"", b"a", b"\x00%"])
_values = st.binary(max_size=40)
# A record, and whether it is an SOA whose serial is the build's (then 20+ bytes).
_records = st.lists(
    st.tuples(_keys, _values, st.booleans()).map(
        lambda r: (r[0], SOA_TYPE + r[1] + SOA_NUMBERS, True) if r[2] else r
    ),
    max_size=120,
)


class TestAgainstReference:
    @SETTINGS
    @given(st.lists(_records, max_size=5), st.integers(0, 2**32 - 1))
    def test_same_blobs_and_cdb_both_ways(
        self, runs: list[list[tuple[bytes, bytes, bool]]], serial: int
    ) -> None:
        """pack gives the same Packed in C and Python; write_packed the bytes of dumps
        over the stamped records, in C and Python."""
        keys: list[bytes] = []
        values: list[bytes] = []
        packs = []
        for run in runs:
            k = [key for key, _, _ in run]
            v = [value for _, value, _ in run]
            soa = [i for i, (_, _, is_soa) in enumerate(run) if is_soa]
            with pure():
                reference = cdb.pack(k, v, soa)
            packed = cdb.pack(k, v, soa)
            assert packed == reference
            assert cdb.scan(packed.blob, packed.serials) == len(run)
            assert cdb.unpack(packed, serial) == (k, stamped(v, soa, serial))
            packs.append(packed)
            keys += k
            values += stamped(v, soa, serial)
        expected = cdb.dumps(keys, values)
        assert written(packs, serial) == expected
        with pure():
            assert written(packs, serial) == expected

    def test_a_real_source(self, way: str) -> None:
        """A compiled source (SOA defaults of . and Z lines, IPv6 lines) packed and
        written gives assemble's records through dumps."""
        zone = (
            b".example.com:192.0.2.1:a:300\n"
            b"Zexample.org:ns.example.org:hm.example.org.\n"
            b"Zexample.net:ns.example.net:hm.example.net.:42\n"
            b"6v6.example.com:20010db80000000000000000000000ab:600\n"
            b"+www.example.com:192.0.2.2\n"
        )
        src = compile_source("zones.example", zone)
        assert len(src.records.soa_defaults) == 2
        built = assemble([src, src], SERIAL)
        packed = cdb.pack(src.records.keys, src.records.values, src.records.soa_defaults)
        assert written([packed, packed]) == cdb.dumps(built.keys, built.values)

    def test_empty(self, way: str) -> None:
        empty = cdb.pack([], [], [])
        assert empty == cdb.Packed(b"", (), 0)
        assert written([]) == written([empty, empty]) == cdb.dumps([], [])

    def test_views_write_as_bytes(self, way: str) -> None:
        """A blob that is a view into a larger buffer (as a cache entry's is)."""
        packed = cdb.pack([b"k", b"s"], [b"v", b"\0\6" + SOA_NUMBERS], [1])
        view = memoryview(b"junk" + bytes(packed.blob) + b"junk")[4:-4]
        assert written([cdb.Packed(view, packed.serials, 2)]) == written([packed])


def blob_of(*records: tuple[bytes, bytes]) -> bytes:
    return b"".join(struct.pack("<II", len(k), len(v)) + k + v for k, v in records)


GOOD = blob_of((b"a", b"x"), (b"soa", b"\0\6" + SOA_NUMBERS), (b"b", b"y" * 30))
SERIAL_AT = 8 + 1 + 1 + 8 + 3 + 2  # the second record's data, after its type


class TestRefusals:
    """What a damaged or forged blob does: ValueError, in C as in Python, from scan
    and from write_packed (before writing a byte)."""

    def test_good(self, way: str) -> None:
        assert cdb.scan(GOOD, (SERIAL_AT,)) == 3

    @pytest.mark.parametrize(
        ("blob", "serials", "reason"),
        [
            (GOOD[:-1], (SERIAL_AT,), "runs past the end"),
            (GOOD + b"\0\0\0", (SERIAL_AT,), "runs past the end"),
            (GOOD[:4] + b"\xff\xff\xff\xff" + GOOD[8:], (), "runs past the end"),
            (GOOD, (SERIAL_AT + 1,), "not the serial"),
            (GOOD, (SERIAL_AT - 1,), "not the serial"),
            (GOOD, (SERIAL_AT, SERIAL_AT), "not the serial"),
            (GOOD, (len(GOOD) - 20, SERIAL_AT), "not the serial"),  # not ascending
            (GOOD, (len(GOOD) + 4,), "not the serial"),
            (GOOD, (2,), "not the serial"),  # a record with less than 20 bytes of data
            (GOOD, (SERIAL_AT, len(GOOD) - 20), "not the serial"),  # 30 bytes, but not an SOA
            (GOOD, (-1,), "serial"),
            (GOOD, (2**64,), "serial"),
        ],
    )
    def test_refused(self, way: str, blob: bytes, serials: tuple[int, ...], reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            cdb.scan(blob, serials)
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError, match=reason):
                cdb.write_packed(
                    f.fileno(), [cdb.pack([], [], []), cdb.Packed(blob, serials, 0)], 1
                )
            assert f.read() == b""

    @pytest.mark.parametrize(
        ("soa", "reason"),
        [([2], "past the records"), ([1, 0], "ascending"), ([0], "too short")],
    )
    def test_pack_refuses_bad_indexes(self, way: str, soa: list[int], reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            cdb.pack([b"a", b"b"], [b"x", b"y" * 20], soa)

    def test_pack_refuses_mismatched_lists(self, way: str) -> None:
        with pytest.raises(ValueError, match="differ in length"):
            cdb.pack([b"a"], [], [])


class TestWrite:
    def test_write_error_is_oserror(self, way: str, tmp_path: Path) -> None:
        """A descriptor that cannot be written: OSError, as from write_fd."""
        path = tmp_path / "ro"
        path.write_bytes(b"")
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(OSError, match="Bad file descriptor") as caught:
                cdb.write_packed(fd, [cdb.pack([b"a"], [b"b"], [])], 1)
            assert caught.value.errno == errno.EBADF
        finally:
            os.close(fd)

    def test_more_than_the_buffer(self, way: str) -> None:
        """Blobs past the C writer's 1 MiB buffer, serials across its edges."""
        keys = [b"k%d" % (i % 97) for i in range(3000)]
        values = [b"\0\6" + bytes([i % 251]) * 700 + SOA_NUMBERS for i in range(3000)]
        soa = list(range(0, 3000, 7))
        packed = cdb.pack(keys, values, soa)
        assert len(packed.blob) > 2 << 20
        assert written([packed, packed]) == cdb.dumps(keys * 2, stamped(values, soa, SERIAL) * 2)

    def test_too_large(self) -> None:
        """Past 4 GiB, in C: CdbTooLarge, before anything is written (one 1 MiB blob
        4096 times is 4 GiB of records without 4 GiB of memory; Python would unpack it)."""
        if _cdbblob is None:
            if IN_CI:
                pytest.fail("dnsmaster/core/_cdbblob.c is not built (gcc and python3-dev?)")
            pytest.skip("dnsmaster/core/_cdbblob.c is not built")
        record = struct.pack("<II", 0, (1 << 20) - 8) + bytes((1 << 20) - 8)
        packed = cdb.Packed(record, (), 1)
        with accel.using("records", _cdbblob), tempfile.TemporaryFile() as f:
            with pytest.raises(CdbTooLarge, match="4 GiB"):
                cdb.write_packed(f.fileno(), [packed] * 4096, SERIAL)
            assert os.fstat(f.fileno()).st_size == 0
