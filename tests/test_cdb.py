"""cdb as cdb_make writes it (spec §8): the reference writer, cdbx, the reader."""

from __future__ import annotations

import builtins
import random
import tempfile

import pytest

from dnsmaster.core import cdb


def via_fd(keys: list[bytes], values: list[bytes]) -> bytes:
    with tempfile.TemporaryFile() as f:
        cdb.write_fd(f.fileno(), keys, values)
        f.seek(0)
        return f.read()


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

    def test_cdbx_matches_reference(self) -> None:
        """The cdbx fast path writes exactly what the reference writer does."""
        rng = random.Random(7)
        keys = [rng.randbytes(rng.randrange(0, 12)) for _ in range(3000)]
        keys += keys[:500]  # repeated keys probe into the same tables
        values = [rng.randbytes(rng.randrange(0, 40)) for _ in keys]
        assert via_fd(keys, values) == cdb.dumps(keys, values)

    def test_fallback_without_cdbx(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without cdbx the same bytes come from the reference writer."""
        real_import = builtins.__import__

        def no_cdbx(name: str, *args: object, **kwargs: object) -> object:
            if name == "cdbx":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(builtins, "__import__", no_cdbx)
        keys, values = [b"k1", b"k2", b"k1"], [b"v1", b"v2", b"v3"]
        assert via_fd(keys, values) == cdb.dumps(keys, values)


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

    def test_reads_cdbx_output(self) -> None:
        """The reader finds every record of a file cdbx wrote."""
        keys = [b"x%d" % i for i in range(1000)]
        reader = cdb.CdbReader(via_fd(keys, keys))
        assert all(reader.get(k) == k for k in keys)

    def test_rejects_short_file(self) -> None:
        """A file shorter than the header is not a cdb."""
        with pytest.raises(ValueError, match="not a cdb"):
            cdb.CdbReader(b"short")
