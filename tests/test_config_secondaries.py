"""The ``[[secondary]]``, ``[axfrdns]``, ``[notify]`` and ``catalog`` keys: defaults,
normalisation, and every mistake a ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsmaster import config
from dnsmaster.config import AxfrdnsOptions, NotifyOptions, Secondary
from dnsmaster.errors import ConfigError

BASE = 'zones = "zones"\noutput = "out"\n'
AXFRDNS = '[axfrdns]\nip = "192.0.2.53"\n'
SECONDARY = '[[secondary]]\nname = "nsd1"\naddress = "192.0.2.7"\n'


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "dnsmaster.toml"
    path.write_text(text)
    return config.load(path)


def test_defaults_without_secondaries(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    assert cfg.secondaries == ()
    # The served root is there all the same: OUTPUT/served, resolved as output is.
    assert cfg.axfrdns == AxfrdnsOptions(root=(tmp_path / "out" / "served").absolute())
    assert cfg.notify == NotifyOptions(timeout=1.0, retries=5, confirm_timeout=300.0)
    assert cfg.catalog == ""


def test_a_minimal_secondary_gets_its_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE + AXFRDNS + SECONDARY)
    assert cfg.secondaries == (
        Secondary(
            name="nsd1", address="192.0.2.7", port=53, zones=(), transfer_from=("192.0.2.7",)
        ),
    )
    assert cfg.axfrdns == AxfrdnsOptions(
        ip="192.0.2.53", port=53, service=None, root=(tmp_path / "out" / "served").absolute()
    )


def test_everything_given(tmp_path: Path) -> None:
    text = (
        BASE
        + 'catalog = "Catalog.Example."\n'
        + '[axfrdns]\nip = "2001:db8::53"\nport = 5353\nservice = "sv/axfrdns"\n'
        + 'root = "srv/axfrdns/root"\n'
        + "[notify]\ntimeout = 0.25\nretries = 0\nconfirm_timeout = 30\n"
        + SECONDARY
        + 'port = 1053\nzones = ["Example.COM.", "example.net", "example.com"]\n'
        + 'transfer_from = ["192.0.2.8", "2001:db8::8"]\n'
        + '[[secondary]]\nname = "provider"\naddress = "2001:db8::7"\n'
    )
    cfg = load(tmp_path, text)
    assert cfg.catalog == "catalog.example"
    assert cfg.axfrdns == AxfrdnsOptions(
        ip="2001:db8::53",
        port=5353,
        service=(tmp_path / "sv/axfrdns").absolute(),
        root=(tmp_path / "srv/axfrdns/root").absolute(),
    )
    assert cfg.notify == NotifyOptions(timeout=0.25, retries=0, confirm_timeout=30.0)
    first, second = cfg.secondaries
    assert first.port == 1053
    assert first.zones == ("example.com", "example.net")  # lower case, no dot, once each
    assert first.transfer_from == ("192.0.2.8", "2001:db8::8")
    assert second.transfer_from == ("2001:db8::7",)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (BASE + SECONDARY, "axfrdns.ip", "missing"),
        (BASE + AXFRDNS + "[[secondary]]\naddress = '192.0.2.7'\n", "secondary[0].name", "missing"),
        (BASE + AXFRDNS + "[[secondary]]\nname = 'a b'\n", "secondary[0].name", "letters"),
        (BASE + AXFRDNS + "[[secondary]]\nname = 'n'\n", "secondary[0].address", "missing"),
        (BASE + "secondary = [1]\n" + AXFRDNS, "secondary[0]", "must be a table"),
        (BASE + AXFRDNS + "[secondary]\nname = 'n'\n", "secondary", "must be an array"),
        (
            BASE + AXFRDNS + "[[secondary]]\nname = 'n'\naddress = 'ns.example'\n",
            "secondary[0].address",
            "not a name",
        ),
        (BASE + AXFRDNS + SECONDARY + "port = 0\n", "secondary[0].port", "from 1 to 65535"),
        (BASE + AXFRDNS + SECONDARY + "zones = 'x'\n", "secondary[0].zones", "must be an array"),
        (BASE + AXFRDNS + SECONDARY + "zones = [1]\n", "secondary[0].zones", "zone names"),
        (BASE + AXFRDNS + SECONDARY + "zones = ['a..b']\n", "secondary[0].zones", "no domain"),
        (BASE + AXFRDNS + SECONDARY + "zones = ['a b']\n", "secondary[0].zones", "no spaces"),
        (
            BASE + AXFRDNS + SECONDARY + "transfer_from = []\n",
            "secondary[0].transfer_from",
            "non-empty",
        ),
        (
            BASE + AXFRDNS + SECONDARY + "transfer_from = ['x']\n",
            "secondary[0].transfer_from",
            "IPv4 or IPv6",
        ),
        (BASE + AXFRDNS + SECONDARY + "hots = 1\n", "secondary[0].hots", "unknown key"),
        (BASE + AXFRDNS + SECONDARY + SECONDARY, "secondary[1].name", "duplicate name 'nsd1'"),
        (
            BASE
            + AXFRDNS
            + '[[slave]]\nname = "nsd1"\nhost = "h"\ntransport = "local"\nroot = "r"\n'
            + SECONDARY,
            "secondary[0].name",
            "slaves and secondaries share names",
        ),
        (BASE + "[axfrdns]\nip = 'localhost'\n", "axfrdns.ip", "IPv4 or IPv6"),
        (BASE + "[axfrdns]\nip = ''\n", "axfrdns.ip", "must not be empty"),
        (BASE + "[axfrdns]\nport = 70000\n", "axfrdns.port", "from 1 to 65535"),
        (BASE + "[axfrdns]\nroot = 'out'\n", "axfrdns.root", "not be the output directory"),
        (BASE + "[axfrdns]\nroot = ''\n", "axfrdns.root", "must not be empty"),
        (BASE + "[notify]\ntimeout = 0\n", "notify.timeout", "at least 0.01"),
        (BASE + "[notify]\nretries = -1\n", "notify.retries", "from 0 to 20"),
        (BASE + "[notify]\nretries = 21\n", "notify.retries", "from 0 to 20"),
        (BASE + "[notify]\nconfirm_timeout = 0\n", "notify.confirm_timeout", "at least 0.1"),
        (BASE + "[notify]\ntimout = 1\n", "notify.timout", "unknown key"),
        (BASE + "catalog = ''\n", "catalog", "must not be empty"),
        (BASE + "catalog = '.'\n", "catalog", "no domain name"),
        (BASE + "catalog = 1\n", "catalog", "must be a string"),
        (BASE + "catalog = 'catalog'\n", "catalog", "single label"),
        (BASE + "catalog = 'cat*.example'\n", "catalog", "letters, digits"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.key == key, str(info.value)
    assert reason in str(info.value)
