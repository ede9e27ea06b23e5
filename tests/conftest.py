"""Shared test plumbing.

Tests that need a real component (tinydns-data, tinydns, sshd, daemontools, the
C accelerator) ask for it with :func:`require` or :func:`require_accelerator`:
under CI=true a missing component fails the test (CI installs them all), elsewhere
the test is skipped with the reason, so a laptop without Debian's packages can
still run the pure-core tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

# The lab (sshd, tinydns, the slave account) for every test that asks for it; loaded
# here so that pytest rewrites its asserts.
pytest_plugins = ["tests.lab.realworld"]

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"  # copied from the spec's tdspec-vectors, with SUMS.tsv
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(program: str, package: str = "tinydns openssh-server") -> str:
    """Return the absolute path of ``program`` or fail (CI) / skip (elsewhere).

    ``package`` is what to install for it, for the message.
    """
    found = shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin")
    if found:
        return found
    _missing(f"{program} not found: apt-get install -y {package}")


def require_accelerator() -> None:
    """The C accelerator (``dnsmaster/core/_ccompile.c``) is built and in use.

    Turned off on purpose (``DNSMASTER_PURE_PYTHON=1``) is a skip even in CI: that
    run tests the pure-Python path and says so. Not built is a missing component.
    """
    from dnsmaster.core import accel  # noqa: PLC0415 - only the tests that need it

    why_not = accel.found("compiler").why_not
    if why_not is None:
        return
    if accel.disabled():
        pytest.skip(f"{accel.PURE_PYTHON_ENV} turns the C accelerator off")
    _missing(
        f"the C accelerator is {why_not}: apt-get install -y gcc python3-dev, "
        "then .venv/bin/pip install -e ."
    )


@pytest.fixture(params=["accelerated", "pure"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both compile paths: the C accelerator and pure Python (a test that takes
    ``path`` runs on each; the accelerated one needs it built, as in CI)."""
    from dnsmaster.core import accel  # noqa: PLC0415 - only the tests that need it

    if request.param == "accelerated":
        require_accelerator()
    with accel.using("compiler", accel.compiler() if request.param == "accelerated" else None):
        yield request.param


def _missing(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """``what`` needs root (tinydns chroots, sshd switches users)."""
    if os.geteuid() == 0:
        return
    _missing(f"{what} needs root")


@pytest.fixture(scope="session")
def tinydns_data_bin() -> str:
    return require("tinydns-data")


@pytest.fixture(scope="session")
def accelerator() -> None:
    """Use (``usefixtures``) in tests of the C accelerator: see require_accelerator.

    Session-scoped, so hypothesis tests may use it too.
    """
    require_accelerator()
