"""The verb a push by hand starts ahead on each slave (pure)."""

from __future__ import annotations

import pytest

from dnsmaster.config import Slave
from dnsmaster.master.ahead import first_verb
from dnsmaster.master.state import Pushed
from dnsmaster.protocol import COMMANDS


@pytest.mark.parametrize(
    ("protocol", "compress", "known", "verb"),
    [
        ("legacy", "on", Pushed("a" * 64, 0), None),  # update-dns installs an empty session
        ("dnsmaster", "on", None, "status"),
        ("dnsmaster", "on", Pushed("a" * 64, 1), "status"),  # too old for a delta: asked
        ("dnsmaster", "on", Pushed("a" * 64, 2), "delta --zlib"),
        ("dnsmaster", "off", Pushed("a" * 64, 3), "delta"),
    ],
)
def test_first_verb(protocol: str, compress: str, known: Pushed | None, verb: str | None) -> None:
    slave = Slave(name="s", host="192.0.2.1", protocol=protocol, compress=compress)  # type: ignore[arg-type]
    assert first_verb(slave, known) == verb
    assert verb is None or verb in COMMANDS  # a verb the receiver takes
