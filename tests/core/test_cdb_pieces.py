"""cdb from pieces (:func:`dnsmaster.core.cdb.write_pieces`): ranges of packed records in
files and in memory, with or without an index, patched, held byte for byte to
:func:`cdb.dumps` in C and in pure Python, and to tinydns-data's own data.cdb."""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsmaster.core import accel, cdb

_cdbblob: ModuleType | None = accel.found("records").module
_PAIR = struct.Struct("<II")


def blob_of(records: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(_PAIR.pack(len(k), len(v)) + k + v for k, v in records)


def starts(records: list[tuple[bytes, bytes]]) -> list[int]:
    out, at = [], 0
    for k, v in records:
        out.append(at)
        at += 8 + len(k) + len(v)
    return out


def written(pieces: list[cdb.Piece], patches: list[tuple[int, bytes]] = ()) -> tuple[bytes, bytes]:  # type: ignore[assignment]
    """The cdb and the pairs write_pieces gives."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as pairs:
        cdb.write_pieces(out.fileno(), pieces, patches, pairs_to=pairs.fileno())
        out.seek(0)
        pairs.seek(0)
        return out.read(), pairs.read()


_records = st.lists(
    st.tuples(st.binary(max_size=5) | st.sampled_from([b"", b"a"]), st.binary(max_size=30)),
    max_size=60,
)


@settings(max_examples=150)
@given(
    records=_records,
    cuts=st.lists(st.integers(0, 60), max_size=4),
    kinds=st.lists(st.sampled_from(["blob", "file", "index"]), min_size=5, max_size=5),
    patched=st.sets(st.integers(0, 59)),
)
def test_same_bytes_as_dumps(
    records: list[tuple[bytes, bytes]],
    cuts: list[int],
    kinds: list[str],
    patched: set[int],
) -> None:
    """Any split into pieces of any kind, patched in any record with 4 bytes of data:
    dumps' bytes for the patched records, and the pairs its tables hold."""
    blob = blob_of(records)
    at = [*starts(records), len(blob)]
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    patches = []
    values = [v for _, v in records]
    for i in sorted(patched):
        if i < len(records) and len(values[i]) >= 4:
            patches.append((at[i + 1] - 4, b"%04d" % i))
            values[i] = values[i][:-4] + b"%04d" % i
    with tempfile.TemporaryFile() as src:
        src.write(b"junk" + blob)
        src.flush()
        pieces = []
        for (a, b), kind in zip(itertools.pairwise(bounds), kinds, strict=False):
            offset = 4 + at[a]
            index = None
            if kind == "index":
                index = b"".join(
                    _PAIR.pack(cdb.hash_key(records[i][0]), 4 + at[i]) for i in range(a, b)
                )
            if kind == "blob":
                pieces.append(cdb.Piece(at[b] - at[a], b - a, blob=blob[at[a] : at[b]]))
            else:
                pieces.append(cdb.Piece(at[b] - at[a], b - a, src.fileno(), offset, index=index))
        both = [written(pieces, patches)]
        with accel.using("records", None):
            both.append(written(pieces, patches))
    expected = cdb.dumps([k for k, _ in records], values)
    want = b"".join(
        _PAIR.pack(cdb.hash_key(k), 2048 + s) for (k, _), s in zip(records, at, strict=False)
    )
    assert both == [(expected, want)] * 2


GOOD = [(b"key", b"0123456789"), (b"k2", b"abcdefgh"), (b"", b"zz")]
GOOD_BLOB = blob_of(GOOD)
DATA0 = 8 + 3  # the first record's data


@pytest.mark.parametrize(
    ("pieces", "patches", "reason"),
    [
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)], [(DATA0 - 1, b"abcd")], "patch"),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)], [(DATA0 + 8, b"abcd")], "patch"),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)], [(0, b"abcd")], "patch"),
        (
            [cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)],
            [(DATA0 + 2, b"abcd"), (DATA0, b"abcd")],
            "patch",
        ),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)], [(len(GOOD_BLOB), b"abcd")], "patch"),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB)], [(DATA0, b"abc")], "4 bytes"),
        ([cdb.Piece(len(GOOD_BLOB), 2, blob=GOOD_BLOB)], [], "count"),
        ([cdb.Piece(len(GOOD_BLOB), 4, blob=GOOD_BLOB)], [], "count"),
        ([cdb.Piece(len(GOOD_BLOB) - 1, 3, blob=GOOD_BLOB[:-1])], [], "past the end"),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB[:-1])], [], "not its length"),
        ([cdb.Piece(len(GOOD_BLOB), 3, blob=GOOD_BLOB, index=bytes(16))], [], "index"),
        ([cdb.Piece(len(GOOD_BLOB), 1, blob=GOOD_BLOB, index=_PAIR.pack(0, 5))], [], "index"),
        (
            [cdb.Piece(len(GOOD_BLOB), 2, blob=GOOD_BLOB, index=_PAIR.pack(0, 0) * 2)],
            [],
            "index",
        ),
    ],
)
def test_refused_before_writing(
    way: str, pieces: list[cdb.Piece], patches: list[tuple[int, bytes]], reason: str
) -> None:
    with tempfile.TemporaryFile() as out:
        with pytest.raises(ValueError, match=reason):
            cdb.write_pieces(out.fileno(), pieces, patches)
        assert os.fstat(out.fileno()).st_size == 0


def test_file_shorter_than_its_piece(way: str, tmp_path: Path) -> None:
    (tmp_path / "records").write_bytes(GOOD_BLOB[:-4])
    fd = os.open(tmp_path / "records", os.O_RDONLY)
    try:
        with tempfile.TemporaryFile() as out, pytest.raises(ValueError, match="end of its file"):
            cdb.write_pieces(out.fileno(), [cdb.Piece(len(GOOD_BLOB), 3, fd)])
    finally:
        os.close(fd)


def test_to_a_pipe(way: str, tmp_path: Path) -> None:
    """Where the kernel cannot copy between the two (a pipe), the same bytes by
    pread and write."""
    (tmp_path / "records").write_bytes(GOOD_BLOB)
    fd = os.open(tmp_path / "records", os.O_RDONLY)
    r, w = os.pipe()
    try:
        cdb.write_pieces(w, [cdb.Piece(len(GOOD_BLOB), 3, fd)], [(DATA0, b"WXYZ")])
        os.close(w)
        w = -1
        got = os.read(r, 1 << 16)
    finally:
        for f in (fd, r, w):
            if f >= 0:
                os.close(f)
    assert got == cdb.dumps([k for k, _ in GOOD], [b"WXYZ456789", b"abcdefgh", b"zz"])


DATA = (
    b"Zexample.org:ns.example.org:hm.example.org:1700000000:16384:2048:1048576:2560:300\n"
    b"+www.example.org:192.0.2.1:300\n"
    b"&example.org::ns.example.org:300\n"
    b"Zexample.net:ns.example.net:hm.example.net:1700000000::::\n"
    b"'example.net:v=spf1 -all:300\n"
)


def tinydns_data(real: str, where: Path, data: bytes) -> bytes:
    where.mkdir()
    (where / "data").write_bytes(data)
    os.utime(where / "data", (1_700_000_000, 1_700_000_000))
    subprocess.run([real], cwd=where, check=True, capture_output=True)
    return (where / "data.cdb").read_bytes()


def test_from_tinydns_datas_cdb(way: str, tinydns_data_bin: str, tmp_path: Path) -> None:
    """tinydns-data's data.cdb rebuilt from its own record area (read, and from its
    tables' pairs as the index), and restamped by patches, is tinydns-data's file
    for the restamped data."""
    old = tinydns_data(tinydns_data_bin, tmp_path / "old", DATA)
    new = tinydns_data(
        tinydns_data_bin, tmp_path / "new", DATA.replace(b"1700000000", b"1700000007")
    )
    end = struct.unpack_from("<I", old, 0)[0]
    reader = cdb.CdbReader(old)
    soa = [
        v
        for v in (reader.get_all(b"\7example\3org\0") + reader.get_all(b"\7example\3net\0"))
        if v[:2] == b"\0\6"
    ]
    assert len(soa) == 2
    serials = [old.index(v) - 2048 + len(v) - 20 for v in soa]
    patches = sorted((at, (1_700_000_007).to_bytes(4, "big")) for at in serials)
    # the pairs from the tables, in record order
    slots = [_PAIR.unpack_from(old, p) for p in range(end, len(old), 8)]
    index = b"".join(
        _PAIR.pack(h, p) for h, p in sorted((s for s in slots if s[1]), key=lambda s: s[1])
    )
    count = len(index) // 8
    path = tmp_path / "old" / "data.cdb"
    fd = os.open(path, os.O_RDONLY)
    try:
        for idx in (None, index):
            piece = cdb.Piece(end - 2048, count, fd, 2048, index=idx)
            assert written([piece])[0] == old
            data, pairs = written([piece], patches)
            assert data == new
            assert pairs == index
    finally:
        os.close(fd)


def test_sparse_patches_in_a_large_file(way: str, tmp_path: Path) -> None:
    """Few patches in a large piece: the kernel copies between them (the dense case,
    patched in the buffer, is what the small pieces above take)."""
    records = [
        (b"k%d" % (i % 500), b"\0\6" + bytes([i % 256]) * 300 + bytes(20)) for i in range(4000)
    ]
    blob = blob_of(records)
    (tmp_path / "records").write_bytes(blob)
    at = starts(records)
    values = [v for _, v in records]
    patches = []
    for i in (10, 1999, 3999):
        patches.append((at[i] + 8 + len(records[i][0]) + 302, b"WXYZ"))
        values[i] = values[i][:302] + b"WXYZ" + values[i][306:]
    fd = os.open(tmp_path / "records", os.O_RDONLY)
    try:
        data, _ = written([cdb.Piece(len(blob), 4000, fd)], patches)
    finally:
        os.close(fd)
    assert data == cdb.dumps([k for k, _ in records], values)


def test_places(way: str) -> None:
    soa = b"\0\6" + b"x" * 10
    records = [
        (b"a", soa + (7).to_bytes(4, "big") + bytes(16)),
        (b"b", b"\0\1" + (7).to_bytes(4, "big") + bytes(16)),
        (b"c", soa + (8).to_bytes(4, "big") + bytes(16)),
    ]
    blob = blob_of(records)
    assert cdb.places(blob, 7) == [starts(records)[1] - 20]
    assert cdb.places(blob, 8) == [len(blob) - 20]
    with pytest.raises(ValueError, match="past the end"):
        cdb.places(blob[:-1], 7)


def test_dense_and_sparse_patches_across_chunks(way: str, tmp_path: Path) -> None:
    """A restamp's patch every few KiB for over a MiB (read through the buffer and
    patched there, one straddling each edge of the chunks it is read in), then a long
    stretch with none (a kernel copy), then a few far apart: dumps' bytes."""
    records = [(b"k%d" % (i % 700), bytes([i % 251]) * 1990) for i in range(1400)]
    blob = blob_of(records)
    (tmp_path / "records").write_bytes(b"junk" + blob)
    at = [*starts(records), len(blob)]
    # the C writer's first read ends where the 2048-byte header leaves its 1 MiB
    # buffer full, the pure-Python path's reads every MiB
    edges = [(1 << 20) - 2048 - 2, (1 << 20) - 2]
    wanted = [*range(100, 1_300_000, 3000), *edges, 1_800_000, 2_500_000, len(blob) - 10]
    values = [bytearray(v) for _, v in records]
    patches = []
    for want in sorted(wanted):
        i = next(i for i in range(len(records)) if at[i + 1] > want)
        data = at[i] + 8 + len(records[i][0])
        where = min(max(want, data), at[i + 1] - 4)  # inside the record's data
        if patches and where < patches[-1][0] + 4:
            continue
        stamp = b"%04d" % (len(patches) % 10000)
        patches.append((where, stamp))
        values[i][where - data : where - data + 4] = stamp
    assert set(edges) <= {w for w, _ in patches}
    index = b"".join(
        _PAIR.pack(cdb.hash_key(k), 4 + s) for (k, _), s in zip(records, at, strict=False)
    )
    expected = cdb.dumps([k for k, _ in records], [bytes(v) for v in values])
    fd = os.open(tmp_path / "records", os.O_RDONLY)
    try:
        for idx in (None, index):
            data, _ = written([cdb.Piece(len(blob), len(records), fd, 4, index=idx)], patches)
            assert data == expected
    finally:
        os.close(fd)
