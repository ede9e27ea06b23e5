"""The Prometheus textfile: its format, its values, and its atomic replacement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dnsmaster import config, fsutil
from dnsmaster.daemon import metrics
from dnsmaster.errors import ConfigError
from dnsmaster.master import state
from tests.lab.metrics import parse

SHA = "a" * 64
OLD = "b" * 64


def _state(*slaves: state.SlaveState, error: str | None = None) -> state.State:
    build = state.BuildState(1700000007, SHA, 22, 1000.0, error, "f" * 64, 0.5)
    return state.State(
        pid=1, updated=2000.0, build=build, slaves=slaves, heartbeat_interval=10.0, started=900.0
    )


class TestRender:
    def test_values(self) -> None:
        """Build serial and time, and per slave: last success, serials, failures, push seconds."""
        text = metrics.render(
            _state(
                state.SlaveState(
                    "ns2",
                    SHA,
                    1700000007,
                    "ok",
                    verified="ok",
                    last_success=1500.0,
                    served_serial=1700000007,
                    push_seconds=0.25,
                ),
                state.SlaveState("ns3", OLD, 1700000006, "failed", "timed out", failures=3),
            )
        )
        got = parse(text)
        assert got[("dnsmaster_build_serial", ())] == 1700000007
        assert got[("dnsmaster_build_timestamp_seconds", ())] == 1000.0
        assert got[("dnsmaster_build_duration_seconds", ())] == 0.5
        assert got[("dnsmaster_build_failed", ())] == 0
        assert got[("dnsmaster_heartbeat_timestamp_seconds", ())] == 2000.0
        ns2, ns3 = (("slave", "ns2"),), (("slave", "ns3"),)
        assert got[("dnsmaster_slave_last_success_timestamp_seconds", ns2)] == 1500.0
        assert got[("dnsmaster_slave_served_serial", ns2)] == 1700000007
        assert got[("dnsmaster_slave_push_duration_seconds", ns2)] == 0.25
        assert got[("dnsmaster_slave_up_to_date", ns2)] == 1
        assert got[("dnsmaster_slave_up_to_date", ns3)] == 0
        assert got[("dnsmaster_slave_consecutive_failures", ns3)] == 3
        assert got[("dnsmaster_slave_installed_serial", ns3)] == 1700000006
        # Unknown is no sample, not a made-up 0.
        assert ("dnsmaster_slave_last_success_timestamp_seconds", ns3) not in got
        assert ("dnsmaster_slave_served_serial", ns3) not in got

    def test_state_set(self) -> None:
        """dnsmaster_slave_state is 1 for exactly the state status names."""
        got = parse(
            metrics.render(
                _state(
                    state.SlaveState("ns2", SHA, 1, "ok", verified="failed", verify_error="x"),
                    state.SlaveState("ns3", OLD, 1, "pushing"),
                )
            )
        )
        for slave, expected in (("ns2", "dns-failed"), ("ns3", "pushing")):
            states = {
                dict(labels)["state"]: value
                for (name, labels), value in got.items()
                if name == "dnsmaster_slave_state" and dict(labels)["slave"] == slave
            }
            assert {k for k, v in states.items() if v == 1} == {expected}
            assert sum(states.values()) == 1

    def test_failed_build_and_no_build(self) -> None:
        """A failed build is a 1; with no build at all only what is known is there."""
        assert parse(metrics.render(_state(error="2 errors")))[("dnsmaster_build_failed", ())] == 1
        bare = state.State(pid=1, updated=5.0, build=None, build_error="no zones")
        got = parse(metrics.render(bare))
        assert got == {
            ("dnsmaster_heartbeat_timestamp_seconds", ()): 5.0,
            ("dnsmaster_build_failed", ()): 1,
        }

    def test_label_escaping(self) -> None:
        """Label values escape backslash, quote and newline (names are restricted by the
        config, but the renderer does not rely on it)."""
        text = metrics.render(_state(state.SlaveState('a"b\\c\nd', SHA, 1, "ok")))
        assert 'slave="a\\"b\\\\c\\nd"' in text
        parse(text)


class TestWrite:
    def test_atomic_and_temp_not_prom(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Replaced by rename from a temp file in the same directory whose name the
        textfile collector ignores (not *.prom)."""
        path = tmp_path / "dnsmaster.prom"
        path.write_text("old\n")
        renames: list[tuple[str, str]] = []
        real = os.replace

        def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            renames.append((os.fspath(src), os.fspath(dst)))
            real(src, dst)

        monkeypatch.setattr(os, "replace", spy)
        text = metrics.render(_state())
        metrics.write(path, text)
        assert path.read_text() == text
        [(src, dst)] = renames
        assert Path(src).parent == tmp_path
        assert not src.endswith(".prom")
        assert dst == str(path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dnsmaster.prom"]
        assert path.stat().st_mode & 0o777 == 0o644

    def test_failure_leaves_old_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A write that fails raises OSError and leaves the old file and no litter."""
        path = tmp_path / "dnsmaster.prom"
        path.write_text("old\n")

        def full(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(fsutil, "write_all", full)
        with pytest.raises(OSError, match="space"):
            metrics.write(path, "new\n")
        assert path.read_text() == "old\n"
        assert [p.name for p in tmp_path.iterdir()] == ["dnsmaster.prom"]


class TestConfig:
    def _load(self, tmp_path: Path, extra: str) -> config.Config:
        (tmp_path / "zones").mkdir(exist_ok=True)
        path = tmp_path / "c.toml"
        path.write_text(f'zones = "zones"\noutput = "out"\n{extra}')
        return config.load(path)

    def test_default_none(self, tmp_path: Path) -> None:
        assert self._load(tmp_path, "").metrics is None

    def test_relative_to_config(self, tmp_path: Path) -> None:
        cfg = self._load(tmp_path, 'metrics = "textfile/dnsmaster.prom"\n')
        assert cfg.metrics == tmp_path / "textfile" / "dnsmaster.prom"

    def test_must_end_in_prom(self, tmp_path: Path) -> None:
        """node_exporter would never read it: said at load, naming the key."""
        with pytest.raises(ConfigError, match=r"\*\.prom") as caught:
            self._load(tmp_path, 'metrics = "dnsmaster.txt"\n')
        assert caught.value.key == "metrics"
