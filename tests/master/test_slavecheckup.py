"""A slave's checkup, in process, on a local slave: no sshd needed to see that the
steps stop at the first failure, and say how to fix it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dnsmaster import config
from dnsmaster.config import Config
from dnsmaster.master.slavecheckup import check_slave
from tests.lab.daemonrun import config_text


def _config(tmp_path: Path) -> Config:
    zones = tmp_path / "zones"
    zones.mkdir()
    path = tmp_path / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=zones,
            output=tmp_path,
            state=tmp_path / "state.json",
            slaves=[{"name": "l", "transport": "local", "root": str(tmp_path / "root")}],
        )
    )
    return config.load(path)


class TestLocalSlave:
    def test_missing_root_stops_the_checks(self, tmp_path: Path) -> None:
        """A local slave whose root is missing: one failure, with the mkdir that fixes it."""
        cfg = _config(tmp_path)
        checks = asyncio.run(check_slave(cfg, cfg.slaves[0], None, 10))
        assert [c.line() for c in checks] == [
            f"FAIL slave l: root: {tmp_path / 'root'} is missing; fix: mkdir -p {tmp_path / 'root'}"
        ]

    def test_root_that_is_a_file(self, tmp_path: Path) -> None:
        """A root that is a file: a failure that names it, and nothing asked after."""
        cfg = _config(tmp_path)
        (tmp_path / "root").write_text("")
        checks = asyncio.run(check_slave(cfg, cfg.slaves[0], None, 10))
        assert [c.line() for c in checks] == [
            f"FAIL slave l: root: {tmp_path / 'root'} is not a directory; "
            "fix: point root at a directory"
        ]
