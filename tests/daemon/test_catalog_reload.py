"""The daemon picks up ``catalog`` on SIGHUP: the next build has the catalog, or not."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from dnsmaster import config as configuration
from dnsmaster.core.catalog import catalog_zone
from dnsmaster.daemon.loop import Daemon
from dnsmaster.exits import EXIT_OK
from tests.lab.daemonrun import config_text
from tests.lab.recorder import Recorder
from tests.lab.site import make_zones

TIMEOUT = 30.0
CATALOG = b"\x07catalog\x07example\x00"


def write_config(base: Path, root: Path, top: dict[str, object]) -> Path:
    zones, output = base / "master" / "zones", base / "master" / "out"
    path = base / "dnsmaster.toml"
    path.write_text(
        config_text(
            zones=zones,
            output=output,
            state=base / "state.json",
            daemon={"debounce": 0.1, "retry_initial": 0.1, "retry_max": 0.5, "verify": False},
            top=top,
            slaves=[{"name": "ns2", "transport": "local", "root": root}],
        )
    )
    return path


async def test_sighup_turns_the_catalog_on_and_off(tmp_path: Path) -> None:
    """The build after a SIGHUP follows the file's catalog; turning it off drops a
    zone, which the guard holds like any other."""
    make_zones(tmp_path / "master")
    root = tmp_path / "slaves" / "ns2"
    root.mkdir(parents=True)
    path = write_config(tmp_path, root, {})
    log = Recorder()
    daemon = Daemon(configuration.load(path), log)
    run = asyncio.create_task(daemon.run())
    async with asyncio.timeout(3 * TIMEOUT):  # each wait has its own, shorter
        await log.wait("push.done", 1)
        assert daemon.current is not None
        assert catalog_zone(daemon.current.text()) is None
        write_config(tmp_path, root, {"catalog": "catalog.example"})
        os.kill(os.getpid(), signal.SIGHUP)
        await log.wait("push.done", 2)
        assert catalog_zone(daemon.current.text()) == CATALOG
        assert catalog_zone((root / "data").read_bytes()) == CATALOG
        write_config(tmp_path, root, {})
        os.kill(os.getpid(), signal.SIGHUP)
        (held,) = await log.wait("guard.held")
        assert held["zones"] == "catalog.example"
        assert catalog_zone((root / "data").read_bytes()) == CATALOG
        os.kill(os.getpid(), signal.SIGTERM)
        assert await run == EXIT_OK
    assert not log.find("daemon.crash"), log.find("daemon.crash")
