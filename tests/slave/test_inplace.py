"""A delta applied in place (:mod:`dnsmaster.slave.inplace`) from the kept sections
(:mod:`dnsmaster.slave.sections`): data.cdb byte for byte tinydns-data's on every
path (a changed section, a restamp alone, a section the restamp changes beyond its
serials, default serials, and every fallback), and the fallbacks never trust what
the kept file does not vouch for."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dnsmaster.core import delta
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal
from dnsmaster.slave import inplace, sections
from tests.lab.receiver import push_in_process

IN_PLACE = "from the delta in place"


def zones(name: str, n: int, extra: bytes = b"") -> tuple[str, bytes]:
    text = b"".join(
        b".%s%d.example:127.0.0.1:a\n+www.%s%d.example:192.0.2.%d\n"
        % (name.encode(), i, name.encode(), i, i)
        for i in range(n)
    )
    return f"zones.{name}", text + extra


def build(serial: int, **extra: bytes) -> bytes:
    sources = [zones(name, 30, extra.get(name, b"")) for name in ("a", "b", "c")]
    return assemble([compile_source(n, t) for n, t in sources], serial).data


def run(root: Path, verb: str, stdin: bytes) -> tuple[int, str, str]:
    return push_in_process(root, stdin, verb)


def body(root: Path) -> bytes:
    content = (root / "data").read_bytes()
    return content[: content.rindex(b"#dnsmaster-end ")]


def tinydns_cdb(real: str, where: Path, root: Path) -> bytes:
    """tinydns-data's data.cdb for the installed data, with its mtime (default serials)."""
    where.mkdir(exist_ok=True)
    shutil.copyfile(root / "data", where / "data")
    st = (root / "data").stat()
    os.utime(where / "data", ns=(st.st_mtime_ns, st.st_mtime_ns))
    subprocess.run([real], cwd=where, check=True, capture_output=True)
    return (where / "data.cdb").read_bytes()


def send_delta(root: Path, new: bytes) -> str:
    status, out, err = run(root, "delta", delta.make(body(root), new))
    assert status == 0, err
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "slave"
    r.mkdir()
    assert run(r, "push", build(1_700_000_000) + seal(build(1_700_000_000)))[0] == 0
    assert sections.load(r) is not None
    return r


def test_deltas_in_place_are_tinydns_datas(
    tinydns_data_bin: str, root: Path, tmp_path: Path
) -> None:
    """One line changed, then a section whose text holds the serial outside a Z line
    (a TTL that follows the serial: the restamp changes that record too, so the
    section is compiled again, not patched), then a restamp alone: each in place,
    each data.cdb tinydns-data's."""
    new = b"+new.b3.example:192.0.2.7\n"
    steps = [
        (build(1_700_000_001, b=new), [30, 30, 30]),
        (build(1_700_000_002, b=new + b"+ttl.b1.example:192.0.2.9:1700000002::\n"), [30, -1, 30]),
        (build(1_700_000_003, b=new + b"+ttl.b1.example:192.0.2.9:1700000003::\n"), [30, -1, 30]),
        (build(1_700_000_004, b=new), [30, 30, 30]),
    ]
    for n, (data, restamps) in enumerate(steps):
        out = send_delta(root, data)
        assert IN_PLACE in out, out
        assert body(root) == data
        expected = tinydns_cdb(tinydns_data_bin, tmp_path / f"t{n}", root)
        assert (root / "data.cdb").read_bytes() == expected
        kept = sections.load(root)
        assert kept is not None
        assert len(kept.sections) == 4  # the banner and three sources, however edited
        assert [s.restamps for s in kept.sections][1:] == restamps


@pytest.mark.parametrize("late", [False, True])
def test_default_serials_take_the_new_files_mtime(
    tinydns_data_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, late: bool
) -> None:
    """Data not built by dnsmaster (no banner, a Z line without a serial): the default
    serial is the new data file's mtime, patched into the carried sections too; also
    when the data is written in another second than the staging began (``late``: then
    it is staged again, data first)."""
    if late:
        monkeypatch.setattr(inplace.time, "time_ns", lambda: 0)
    root = tmp_path / "slave"
    root.mkdir()
    old = b"# zones.a:1\nZfrom.elsewhere:ns.from.elsewhere:hm.from.elsewhere\n"
    old += b"# zones.b:1\n+a.b.example:192.0.2.1\n"
    new = old + b"+c.b.example:192.0.2.3\n"
    assert run(root, "push", old + seal(old))[0] == 0
    # An older mtime (and the kept file told of it), so the new default serial differs.
    kept = root / sections.KEPT
    before = b":".join(b"%d" % x for x in sections.identity((root / "data").lstat()))
    os.utime(root / "data", (1_600_000_000, 1_600_000_000))
    after = b":".join(b"%d" % x for x in sections.identity((root / "data").lstat()))
    kept.write_bytes(kept.read_bytes().replace(b"data=" + before, b"data=" + after))
    out = send_delta(root, new)
    assert IN_PLACE in out, out
    assert (root / "data.cdb").read_bytes() == tinydns_cdb(tinydns_data_bin, tmp_path / "t", root)


def _garbage(root: Path) -> None:
    (root / sections.KEPT).write_bytes(b"not a kept file\n")


def _other_version(root: Path) -> None:
    kept = root / sections.KEPT
    kept.write_bytes(kept.read_bytes().replace(b"dnsmaster-sections 1 ", b"dnsmaster-sections 2 "))


def _cdb_replaced(root: Path) -> None:
    # as a crash between renames or a restore would leave it: another inode
    shutil.copyfile(root / "data.cdb", root / "copy.cdb")
    os.replace(root / "copy.cdb", root / "data.cdb")


@pytest.mark.parametrize("spoil", [_garbage, _other_version, _cdb_replaced])
def test_falls_back_to_a_full_compile(
    tinydns_data_bin: str, root: Path, tmp_path: Path, spoil: object
) -> None:
    spoil(root)  # type: ignore[operator]
    new = build(1_700_000_001, c=b"+new.c1.example:192.0.2.8\n")
    out = send_delta(root, new)
    assert IN_PLACE not in out
    assert (root / "data.cdb").read_bytes() == tinydns_cdb(tinydns_data_bin, tmp_path / "t", root)
    # and the next one is in place again
    out = send_delta(root, build(1_700_000_002, c=b"+new.c1.example:192.0.2.8\n"))
    assert IN_PLACE in out, out


def test_data_edited_by_hand_is_not_a_base(root: Path) -> None:
    """The kept file no longer matches, and the delta is refused as before."""
    with (root / "data").open("ab") as f:
        f.write(b"+hand.a1.example:192.0.2.99\n")
    before = (root / "data.cdb").read_bytes()
    status, _, err = run(root, "delta", delta.make(build(1_700_000_000), build(1_700_000_001)))
    assert status == 3, err
    assert "base mismatch" in err
    assert (root / "data.cdb").read_bytes() == before


def test_a_section_after_an_open_line_is_compiled(tinydns_data_bin: str, tmp_path: Path) -> None:
    """A delta (not the master's) whose insert leaves a line open before a section it
    copies whole: that section's first line is another line now, so it is compiled."""
    root = tmp_path / "slave"
    root.mkdir()
    old = b"# zones.a:1\n+a.a.example:192.0.2.1\n# zones.b:1\n+b.b.example:192.0.2.2\n"
    assert run(root, "push", old + seal(old))[0] == 0
    cut = old.index(b"# zones.b:1")
    new = old[:cut] + b"+x.a.example:192.0.2.3:300:" + old[cut:]  # the TTL's line runs on
    ops = [
        delta.Copy(0, cut),
        delta.Insert(new[cut : new.index(b"# zones.b:1")]),
        delta.Copy(cut, len(old) - cut),
    ]
    stream = b"".join(delta.encode(sections.load(root).sha256, len(old), None, ops, new))  # type: ignore[union-attr]
    status, _, err = run(root, "delta", stream)
    assert status == 0, err
    assert body(root) == new
    assert (root / "data.cdb").read_bytes() == tinydns_cdb(tinydns_data_bin, tmp_path / "t", root)


def test_status_trusts_the_kept_file_only_for_its_pair(root: Path) -> None:
    """status takes the sha256 from the kept file while the pair is the one it names;
    data edited in place, even to the same size and mtime, is hashed again."""
    installed = (root / "data").read_bytes()
    status, out, _ = run(root, "status", b"")
    assert status == 0
    assert f"sha256={hashlib.sha256(body(root)).hexdigest()} " in out
    st = (root / "data").stat()
    edited = installed.replace(b"192.0.2.1\n", b"192.0.2.9\n", 1)
    with (root / "data").open("r+b") as f:
        f.write(edited)
    os.utime(root / "data", ns=(st.st_atime_ns, st.st_mtime_ns))
    status, out, _ = run(root, "status", b"")
    assert status == 0
    assert f"sha256={hashlib.sha256(body(root)).hexdigest()} " in out
    assert hashlib.sha256(body(root)).hexdigest() != hashlib.sha256(installed).hexdigest()


@pytest.mark.parametrize("pure", [False, True])
def test_the_in_buffer_restamp_is_bytes_replace(pure: bool) -> None:
    """The restamp made in the read buffer (C, and the pure-Python fallback) is
    bytes.replace: left to right, not overlapping, none, at either end."""
    from dnsmaster.core import accel  # noqa: PLC0415
    from dnsmaster.slave.newdata import restamp_in_place  # noqa: PLC0415

    texts = [b"", b":1:", b":1:1:1:", b"Zx:1::1:\n:11:1:", b"a:1", b"::1::1:::1:"]
    with accel.using("records", None) if pure else contextlib.nullcontext():
        for text in texts:
            buffer = bytearray(text)
            restamp_in_place(memoryview(buffer), b":1:", b":9:")
            assert bytes(buffer) == text.replace(b":1:", b":9:")


def test_data_finished_after_data_cdb_leaves_no_doubt(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data is written beside data.cdb; when it is finished last (its mtime
    later than data.cdb's), the pair installed is still one status vouches for, not
    "pair=unknown" (which would make the master push everything again)."""
    write = inplace.newdata.write

    def late(p: inplace.newdata.Plan, base_fd: int, fd: int) -> inplace.newdata.Written:
        written = write(p, base_fd, fd)
        time.sleep(0.05)
        os.utime(fd)  # finished after the main thread's data.cdb
        return written

    monkeypatch.setattr(inplace.newdata, "write", late)
    out = send_delta(root, build(1_700_000_001, b=b"+late.b3.example:192.0.2.8\n"))
    assert IN_PLACE in out, out
    assert (root / "data.cdb").stat().st_mtime_ns >= (root / "data").stat().st_mtime_ns
    status, out, _ = run(root, "status", b"")
    assert status == 0
    assert f"sha256={hashlib.sha256(body(root)).hexdigest()} " in out
