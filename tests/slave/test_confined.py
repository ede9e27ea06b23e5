"""A confined master's delta is checked in the lines it may have made new, never
fewer: inserted lines, and the first and last line of every copy (a copy starting
mid-line can make a line the installed data held only inside a comment)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dnsmaster import protocol
from dnsmaster.core import delta
from dnsmaster.core.delta import Copy, Insert
from dnsmaster.slave import confined
from tests.slave.test_masters import BETA, ZONE_B, body, build, run, snapshot

B1 = build(ZONE_B + b"# +www.bank.example:192.0.2.66\n", 1, "zones.b")


def crafted(base: bytes, ops: list[Copy | Insert]) -> tuple[bytes, bytes]:
    """A delta stream of ``ops`` against ``base`` (no restamp), and its result."""
    result = b""
    for op in ops:
        result += op.text if isinstance(op, Insert) else base[op.start : op.start + op.size]
    stream = b"".join(delta.encode(hashlib.sha256(base).hexdigest(), len(base), None, ops, result))
    return stream, result


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert run(tmp_path, BETA, data=B1)[0] == 0
    return tmp_path


class TestDeltaLines:
    def test_only_new_lines_are_checked(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A one-line delta checks a few lines, not the whole data."""
        base = body(B1)
        new = base + b"+new.b.example:192.0.2.7\n"
        checked: list[bytes] = []
        real = confined.offences

        def spy(data: bytes, *args: object, **kwargs: object) -> list[object]:
            checked.append(data)
            return real(data, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(confined, "offences", spy)
        stream, _ = crafted(base, [Copy(0, len(base)), Insert(b"+new.b.example:192.0.2.7\n")])
        status, _, err = run(root, BETA, "delta --force", stream)
        assert (status, err) == (0, "")
        assert (root / "masters/beta/data").read_bytes().startswith(new)
        # The copy's first and last lines, and the inserted one.
        assert len(checked) == 1
        assert checked[0].count(b"\n") <= 3
        assert checked[0].endswith(b"+new.b.example:192.0.2.7\n")

    def test_inserted_line_outside_is_refused(self, root: Path) -> None:
        base = body(B1)
        before = snapshot(root)
        stream, _ = crafted(base, [Copy(0, len(base)), Insert(b"+www.bank.example:192.0.2.7\n")])
        status, _, err = run(root, BETA, "delta --force", stream)
        assert status == protocol.EXIT_REFUSED
        assert "refused line " in err or "refused zones." in err
        assert snapshot(root) == before

    def test_line_forged_from_a_comment_is_refused(self, root: Path) -> None:
        """Copying the tail of a comment line makes it a line: it is checked."""
        base = body(B1)
        comment = base.index(b"# +www.bank.example")
        stream, result = crafted(
            base, [Copy(0, len(base)), Copy(comment + 2, len(b"+www.bank.example:192.0.2.66\n"))]
        )
        assert result.endswith(b"\n+www.bank.example:192.0.2.66\n")
        before = snapshot(root)
        status, _, err = run(root, BETA, "delta --force", stream)
        assert status == protocol.EXIT_REFUSED, err
        assert "www.bank.example" in err
        assert snapshot(root) == before

    def test_narrowed_allowlist_checks_everything(self, root: Path) -> None:
        """Data accepted under another allowlist is checked whole again."""
        narrow = ("--master", "beta", "--allow", "www.b.example")
        base = body(B1)
        stream, _ = crafted(base, [Copy(0, len(base)), Insert(b"+x.www.b.example:192.0.2.7\n")])
        status, _, err = run(root, narrow, "delta --force", stream)
        assert status == protocol.EXIT_REFUSED
        assert "lines outside this master's allowlist" in err

    def test_many_operations_check_everything(self) -> None:
        result = b"+a.example:1.2.3.4\n" * 3
        ops = delta.Operations(b"", 0, 0, confined._DELTA_OPS_CHECKED + 1)
        edits = delta.Delta("0" * 64, 0, None, ops, delta.Trailer(len(result), "0" * 64))
        assert confined._delta_lines(edits, result) is None
