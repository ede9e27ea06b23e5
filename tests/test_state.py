"""The daemon's state file and ``dnsmaster status``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnsmaster import state
from dnsmaster.cli import EXIT_OK, EXIT_SLAVES, EXIT_SYSTEM, main

SHA = "a" * 64
OLD = "b" * 64


def _state(*slaves: state.SlaveState, error: str | None = None) -> state.State:
    build = state.BuildState(serial=1700000000, sha256=SHA, records=22, time=1.0, error=error)
    return state.State(pid=42, updated=2.0, build=build, slaves=slaves)


def _config(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "out").mkdir()
    config = tmp_path / "c.toml"
    config.write_text('zones = "zones"\noutput = "out"\nstate = "state.json"\n')
    return config


class TestStateFile:
    def test_round_trip(self, tmp_path: Path) -> None:
        """What is written reads back equal."""
        written = _state(
            state.SlaveState("ns2", SHA, 1700000000, "ok", last_push=3.0),
            state.SlaveState("ns3", OLD, 1, "failed", "cannot connect", 3.0, 9.0, None),
        )
        path = tmp_path / "state.json"
        state.write(path, written)
        assert state.read(path) == written
        assert json.loads(path.read_text())["format"] == state.FORMAT

    def test_replaced_atomically(self, tmp_path: Path) -> None:
        """A rewrite leaves no temp file beside it and changes the inode (rename)."""
        path = tmp_path / "state.json"
        state.write(path, _state())
        inode = path.stat().st_ino
        state.write(path, _state(state.SlaveState("ns2")))
        assert path.stat().st_ino != inode
        assert [p.name for p in tmp_path.iterdir()] == ["state.json"]

    def test_unknown_format_refused(self, tmp_path: Path) -> None:
        """A file of another format is an error, not a guess."""
        path = tmp_path / "state.json"
        path.write_text('{"format": 99}')
        with pytest.raises(ValueError, match="format"):
            state.read(path)


class TestHealth:
    def test_all_current_is_healthy(self) -> None:
        """Every slave on the current build: nothing to report."""
        assert state.unhealthy(_state(state.SlaveState("ns2", SHA, 1, "ok"))) == []

    def test_behind_failing_and_failed_build(self) -> None:
        """A slave behind, a failing slave and a failed build are all reported."""
        found = state.unhealthy(
            _state(
                state.SlaveState("ns2", OLD, 1, "ok"),
                state.SlaveState("ns3", None, None, "failed", "timed out"),
                error="2 errors in the zones",
            )
        )
        assert found == [
            "last build failed: 2 errors in the zones",
            "ns2: behind",
            "ns3: failing: timed out",
        ]

    def test_render_names_each_slave(self) -> None:
        """The table has one row per slave with its state."""
        text = state.render(
            _state(state.SlaveState("ns2", SHA, 1, "ok"), state.SlaveState("ns3", OLD, 1, "ok"))
        )
        rows = {line.split()[0]: line.split()[1] for line in text.splitlines()[3:]}
        assert rows == {"ns2": "ok", "ns3": "behind"}


class TestStatusCommand:
    def test_healthy_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """status prints the table and exits 0 when every slave is current."""
        config = _config(tmp_path)
        state.write(tmp_path / "state.json", _state(state.SlaveState("ns2", SHA, 1, "ok")))
        assert main(["status", "--config", str(config)]) == EXIT_OK
        assert "ns2" in capsys.readouterr().out

    def test_behind_exits_nonzero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A slave behind makes status fail, for monitoring."""
        config = _config(tmp_path)
        state.write(tmp_path / "state.json", _state(state.SlaveState("ns2", OLD, 1, "ok")))
        assert main(["status", "--config", str(config)]) == EXIT_SLAVES
        assert "ns2: behind" in capsys.readouterr().err

    def test_json(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """--json prints the state file itself."""
        config = _config(tmp_path)
        state.write(tmp_path / "state.json", _state())
        main(["status", "--config", str(config), "--json"])
        assert json.loads(capsys.readouterr().out)["build"]["sha256"] == SHA

    def test_missing_state_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """No state file (daemon never ran) is a clear system error."""
        config = _config(tmp_path)
        assert main(["status", "--config", str(config)]) == EXIT_SYSTEM
        assert "state.json" in capsys.readouterr().err
