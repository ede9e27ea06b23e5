"""Shared test plumbing.

Tests that need a real component (tinydns-data, tinydns, sshd) ask for it with
:func:`require`: under CI=true a missing component fails the test, elsewhere the
test is skipped with the reason, so a laptop without Debian's packages can still
run the pure-core tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"  # copied from the spec's tdspec-vectors, with SUMS.tsv
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(program: str) -> str:
    """Return the absolute path of ``program`` or fail (CI) / skip (elsewhere)."""
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
    if found:
        return found
    reason = f"{program} not found: apt-get install -y tinydns openssh-server"
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """``what`` needs root (tinydns chroots, sshd switches users)."""
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root"
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tinydns_data_bin() -> str:
    return require("tinydns-data")
