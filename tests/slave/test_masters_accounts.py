"""One account per confined master, sharing a group that owns the root (the classic
set-up): each account replaces, sweeps and repairs the other's files, with the modes
the reference documents (``chgrp GROUP ROOT && chmod 2775 ROOT``).

The two accounts are bare uids (no passwd entry needed) running the receiver bundle
with Debian's python3, as their key lines would.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dnsmaster.fsutil import JOURNAL
from dnsmaster.slave import bundle
from tests.conftest import require_root
from tests.slave.test_masters import A1, A2, ALPHA, B1, B2, BETA, merged_expected, pair_matches

#: Unused ids for the two masters' accounts and their shared group.
UIDS = {"alpha": 64201, "beta": 64202}
GROUP = 64200


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory every uid may enter (pytest's own tmp_path is root's alone)."""
    require_root("running receivers as other accounts")
    path = Path(tempfile.mkdtemp(prefix="dnsmaster-accounts-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def as_account(
    name: str, pyz: Path, root: Path, key: tuple[str, ...], *, verb: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    uid = UIDS[name]
    return subprocess.run(
        ["/usr/bin/python3", "-I", "-S", str(pyz), "--root", str(root), *key],
        input=stdin,
        env={"PATH": "/usr/bin:/bin", "SSH_ORIGINAL_COMMAND": verb},
        capture_output=True,
        user=uid,
        group=uid,
        extra_groups=[GROUP],
        umask=0o022,
        cwd="/",
        check=False,
        timeout=60,
    )


@pytest.mark.usefixtures("debian_python")
class TestOneAccountPerMaster:
    def test_two_accounts_share_a_root(self, base: Path) -> None:
        pyz = base / "dnsmaster-receive.pyz"
        bundle.write(pyz)
        root = base / "root"
        root.mkdir()
        os.chown(root, 0, GROUP)
        root.chmod(0o2775)

        def push(name: str, key: tuple[str, ...], data: bytes, verb: str = "push") -> str:
            proc = as_account(name, pyz, root, key, verb=verb, stdin=data)
            assert proc.returncode == 0, (name, proc.stderr)
            return proc.stdout.decode()

        push("alpha", ALPHA, A1)
        push("beta", BETA, B1)
        push("alpha", ALPHA, A2)  # replaces the merged pair beta's account wrote
        assert (root / "data").stat().st_uid == UIDS["alpha"]
        # alpha's records stale: beta's push compiles and replaces them in alpha's section.
        records = root / "masters/alpha/records"
        records.write_bytes(b"not records\n")
        assert "rebuilt the records of master alpha" in push("beta", BETA, B2)
        assert records.stat().st_uid == UIDS["beta"]
        # An install of alpha's cut short: beta's status merges again, the journal goes.
        (root / JOURNAL).write_bytes(b"installing\n")
        os.chown(root / JOURNAL, UIDS["alpha"], UIDS["alpha"])
        out = push("beta", BETA, b"", "status")
        assert "repaired: merged data and data.cdb again" in out
        assert out.rstrip().endswith("master=beta")
        assert not (root / JOURNAL).exists()
        assert (root / "data").read_bytes() == merged_expected(("alpha", A2), ("beta", B2))
        assert pair_matches(root)
        for path in (root / "masters", root / "masters/alpha", root / "masters/beta"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o2775, path
            assert path.stat().st_gid == GROUP, path
        cdb = (root / "data.cdb").stat()
        assert stat.S_IMODE(cdb.st_mode) == 0o644
        assert cdb.st_gid == GROUP
