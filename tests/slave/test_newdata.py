"""The new data a delta makes (:mod:`dnsmaster.slave.newdata`): what a reader gives of
any range is what the writer writes there, restamp and banner included, and a range
that is not is caught before data.cdb is trusted."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from dnsmaster.core import accel, delta
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.slave import newdata, receive, sections


def build(serial: int, extra: bytes = b"") -> bytes:
    sources = [
        (
            f"zones.{name}",
            b"".join(
                b".%s%d.example:127.0.0.1:a\n+www.%s%d.example:192.0.2.%d\n"
                % (name.encode(), i, name.encode(), i, i)
                for i in range(20)
            )
            + (extra if name == "b" else b""),
        )
        for name in ("a", "b", "c")
    ]
    return assemble([compile_source(n, t) for n, t in sources], serial).data


def test_a_reader_gives_what_is_written(tmp_path: Path) -> None:
    root = tmp_path / "slave"
    root.mkdir()
    old = build(1_700_000_000)
    status = receive.main(
        ["--root", str(root)],
        environ={"SSH_ORIGINAL_COMMAND": "push"},
        stdin=io.BytesIO(old + seal(old)),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert status == 0
    kept = sections.load(root)
    assert kept is not None
    new = build(1_700_000_001, b"+new.b1.example:192.0.2.7\n")
    edits = delta.parse(delta.make(old, new), max_size=1 << 20)
    p = newdata.plan(edits, kept)
    assert p is not None
    assert p.swap is not None
    assert p.size == len(new)
    out = tmp_path / "new"
    base_fd = os.open(root / "data", os.O_RDONLY)
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        written = newdata.write(p, base_fd, fd)
        reader = newdata.Reader(p, base_fd)
        points = sorted({0, 1, 17, 255, len(new) - 1, len(new)} | {op.at for op in p.ops})
        for a in points:
            for b in (a + 1, a + 9, a + 300, len(new) + 5):
                assert reader(a, b) == new[a:b]
        assert reader.agrees(fd)
        reader.given.append((3, b"not what is there"))
        assert not reader.agrees(fd)
    finally:
        os.close(fd)
        os.close(base_fd)
    assert out.read_bytes() == new
    assert written.size == len(new)
    assert written.head == new[:256]
    assert written.sha256 == seal(new).split(b"sha256=")[1].strip().decode()


@pytest.mark.parametrize("pure", [False, True])
@pytest.mark.parametrize(
    ("old", "new"), [(b":1:", b":9:"), (b":179668493:", b":179668494:"), (b":12349:", b":12350:")]
)
def test_the_restamp_counts_the_new_serial_as_bytes_count(
    pure: bool, old: bytes, new: bytes
) -> None:
    """The writer's restamp (one C pass where the serials share a prefix, two where
    not) leaves bytes.replace's result and counts the new serial as bytes.count does
    on it: next to each other, overlapping by a colon, already there, cut at an end."""
    o, n = old.strip(b":"), new.strip(b":")
    pieces = [b"Z", b":", o, n, b"\n", b"x", o[:-1], n[:3]]
    texts = [b"", old, new, old + new, new + old, old * 3, new * 3, old[:-1] + new, new[:-1] + old]
    texts += [b":".join(pieces[(i + j) % 8] for j in range(i % 7 + 2)) for i in range(60)]
    texts += [b":" + o + b":" + n + b":" + o + b":", b"::" + n + b"::" + o + b":" + o + b"::"]
    with accel.using("records", None) if pure else contextlib.nullcontext():
        for text in texts:
            buffer = bytearray(text)
            found = newdata._restamped(memoryview(buffer), old, new)
            assert bytes(buffer) == text.replace(old, new), text
            assert found == text.replace(old, new).count(new), text
