"""The new data a delta makes (:mod:`dnsmaster.slave.newdata`): what a reader gives of
any range is what the writer writes there, restamp and banner included, and a range
that is not is caught before data.cdb is trusted."""

from __future__ import annotations

import io
import os
from pathlib import Path

from dnsmaster.core import delta
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
