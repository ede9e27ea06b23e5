"""The receiver run by itself on a slave root: builds to push, the receiver's command line
(under strace for fault injection) and the checks of a root after a crash.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path

import dnsmaster
from dnsmaster.core.compiler import compile_data
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split
from dnsmaster.fsutil import JOURNAL
from dnsmaster.slave import receive
from tests.conftest import require

PROJECT = Path(dnsmaster.__file__).resolve().parent.parent


_LITTER = re.compile(r"\.data\..*\.(tmp|link)", re.DOTALL)


def build(n: int, lines: int = 1) -> bytes:
    """A dnsmaster build with serial 1700000000 + n and ``lines`` address records."""
    zone = b".example.com:127.0.0.1:a\n" + b"".join(
        b"+h%d.example.com:192.0.2.%d\n" % (i, (n + i) % 250 + 1) for i in range(lines)
    )
    return assemble([compile_source("zones.x", zone)], 1_700_000_000 + n).data


def sealed(data: bytes) -> bytes:
    return data + seal(data)


def receiver_argv(root: Path, *, strace: list[str] | None = None) -> list[str]:
    """``dnsmaster receive`` as the forced command runs it, under strace if asked."""
    argv = [sys.executable, "-m", "dnsmaster", "receive", "--root", str(root)]
    if strace is None:
        return argv
    return [require("strace"), "-f", "-qq", *strace, *argv]


def receiver_env(verb: str) -> dict[str, str]:
    # No .pyc writes: they rename, and would shift the count of renames.
    return dict(
        os.environ,
        SSH_ORIGINAL_COMMAND=verb,
        PYTHONPATH=str(PROJECT),
        PYTHONDONTWRITEBYTECODE="1",
    )


def push_in_process(root: Path, data: bytes, verb: str = "push") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = receive.main(
        ["--root", str(root)],
        environ={"SSH_ORIGINAL_COMMAND": verb},
        stdin=io.BytesIO(data),
        stdout=out,
        stderr=err,
    )
    return status, out.getvalue(), err.getvalue()


def status_line(root: Path) -> str:
    status, out, err = push_in_process(root, b"", "status")
    assert status == 0, err
    return out.splitlines()[-1]


def data_sha(content: bytes) -> str:
    return hashlib.sha256(split(content)[0]).hexdigest()


def pair_matches(root: Path) -> bool:
    """Whether data.cdb is exactly what tinydns-data would make of ``data``."""
    data = root / "data"
    expected = compile_data(data.read_bytes(), int(data.stat().st_mtime))
    return (root / "data.cdb").read_bytes() == expected


def litter(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if _LITTER.fullmatch(p.name))


def copies(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.name.startswith("data.2")}


def check_repaired(root: Path) -> None:
    """After a run under the lock: the pair matches, status vouches for it, nothing left."""
    assert not (root / JOURNAL).exists()
    assert pair_matches(root)
    assert status_line(root).startswith(f"status sha256={data_sha((root / 'data').read_bytes())} ")
    assert litter(root) == []
