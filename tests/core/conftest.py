"""Fixtures the core's test files share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dnsmaster.core import accel
from tests.conftest import IN_CI


@pytest.fixture(params=["c", "python"])
def way(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test once with ``_cdbblob`` and once with the pure-Python functions."""
    module = accel.found("records").module
    if request.param == "c" and module is None:
        if IN_CI:
            pytest.fail("dnsmaster/core/_cdbblob.c is not built (gcc and python3-dev?)")
        pytest.skip("dnsmaster/core/_cdbblob.c is not built")
    with accel.using("records", module if request.param == "c" else None):
        yield request.param
