"""The daemon's state file: written whole, read back equal, old and new files read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dnsmaster.master import state

SHA = "a" * 64
OLD = "b" * 64


def _state(*slaves: state.SlaveState, error: str | None = None) -> state.State:
    build = state.BuildState(serial=1700000000, sha256=SHA, records=22, time=1.0, error=error)
    return state.State(pid=42, updated=2.0, build=build, slaves=slaves)


class TestStateFile:
    def test_round_trip(self, tmp_path: Path) -> None:
        """What is written reads back equal, every field included."""
        written = state.State(
            pid=42,
            updated=2.0,
            build=state.BuildState(1700000000, SHA, 22, 1.0, None, "f" * 64, 0.25),
            slaves=(
                state.SlaveState("ns2", SHA, 1700000000, "ok", last_push=3.0, verified="ok"),
                state.SlaveState(
                    "ns3",
                    OLD,
                    1,
                    "failed",
                    "cannot connect",
                    3.0,
                    9.0,
                    None,
                    push_started=2.5,
                    push_seconds=0.5,
                    failures=4,
                    last_success=0.5,
                    verify_zone="example.com",
                    expected_serial=1,
                    served_serial=0,
                    verify_error=None,
                    verified_at=0.6,
                ),
            ),
            heartbeat_interval=10.0,
            started=0.1,
            stopped=None,
            host="master",
            zones="/etc/dns/zones",
            build_error=None,
        )
        path = tmp_path / "state.json"
        state.write(path, written)
        assert state.read(path) == written
        assert json.loads(path.read_text())["format"] == state.FORMAT

    def test_secondaries_round_trip(self, tmp_path: Path) -> None:
        """The secondaries' records read back equal; a file without them reads as none."""
        written = dataclasses.replace(
            _state(),
            secondaries=(
                state.SecondaryState(
                    "nsd1", 1700000000, 3, 5.0, 3, 1700000000, 6.5, 1.5, None, "serving"
                ),
                state.SecondaryState(
                    "provider", 1700000000, 2, 5.0, 0, 1699999999, None, None, "REFUSED", "late"
                ),
                state.SecondaryState("new"),
            ),
        )
        path = tmp_path / "state.json"
        state.write(path, written)
        assert state.read(path) == written
        document = json.loads(path.read_text())
        assert document["secondaries"][0]["result"] == "serving"
        del document["secondaries"]
        path.write_text(json.dumps(document))
        assert state.read(path).secondaries == ()

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

    def test_first_format_reads_with_defaults(self, tmp_path: Path) -> None:
        """A file from a daemon that wrote none of the newer fields reads with their
        defaults: "not said", never a made-up value."""
        path = tmp_path / "state.json"
        path.write_text(
            json.dumps(
                {
                    "format": 1,
                    "pid": 7,
                    "updated": 5.0,
                    "build": {"serial": 3, "sha256": SHA, "records": 1, "time": 4.0, "error": None},
                    "slaves": [
                        {
                            "name": "ns2",
                            "installed_sha256": SHA,
                            "installed_serial": 3,
                            "result": "ok",
                            "error": None,
                            "last_push": 4.5,
                            "next_retry": None,
                            "verified": "ok",
                        }
                    ],
                }
            )
        )
        read = state.read(path)
        assert read.heartbeat_interval is None
        assert read.stopped is None
        assert read.build is not None
        assert read.build.fingerprint is None
        assert read.slaves[0].failures == 0
        assert read.slaves[0].served_serial is None

    def test_newer_fields_ignored(self, tmp_path: Path) -> None:
        """Keys a newer daemon adds do not stop an older reader."""
        path = tmp_path / "state.json"
        state.write(path, _state(state.SlaveState("ns2")))
        document = json.loads(path.read_text())
        document["future"] = 1
        document["build"]["future"] = 2
        document["slaves"][0]["future"] = 3
        path.write_text(json.dumps(document))
        assert state.read(path) == _state(state.SlaveState("ns2"))

    @pytest.mark.parametrize(
        "text",
        [
            "[]",
            '{"format": 1}',
            '{"format": 1, "pid": 1, "updated": 1, "build": 5}',
            "{",
            '{"format": 1, "pid": 1, "updated": "now", "build": null}',
            '{"format": 1, "pid": "1", "updated": 1, "build": null}',
            '{"format": 1, "pid": 1, "updated": 1, "build": null, "stopped": "yes"}',
            '{"format": 1, "pid": 1, "updated": NaN, "build": null}',
            '{"format": 1, "pid": 1, "updated": 1, "build": null, "slaves": [{"name": 2}]}',
            '{"format": 1, "pid": 1, "updated": 1, "build": null, "slaves": {}}',
            '{"format": 1, "pid": 1, "updated": 1, "build": {"sha256": "a", "serial": 1}}',
            '{"format": 1, "pid": ' + "[" * 100_000,
        ],
    )
    def test_bad_shape_is_value_error(self, tmp_path: Path, text: str) -> None:
        """Whatever is wrong with the file, the reader raises ValueError only."""
        path = tmp_path / "state.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=r"."):
            state.read(path)


class TestPushed:
    """Every push's record of what it installed on each slave."""

    def test_round_trip(self, tmp_path: Path) -> None:
        path = state.pushed_path(tmp_path)
        path.parent.mkdir()
        records = {"ns2": state.Pushed("ab" * 32, 2), "ns3": state.Pushed("cd" * 32, 3)}
        state.write_pushed(path, records)
        assert state.read_pushed(path) == records
        assert path.parent.name == ".dnsmaster-builds"

    @pytest.mark.parametrize(
        "text",
        [
            None,
            "{",
            "[]",
            '{"format": 2, "slaves": {}}',
            '{"format": 1, "slaves": []}',
            '{"format": 1, "slaves": {"ns2": {"sha256": "ab"}}}',
            '{"format": 1, "slaves": {"ns2": {"sha256": "ab", "protocol": "two"}}}',
        ],
    )
    def test_unreadable_is_no_record(self, tmp_path: Path, text: str | None) -> None:
        """A record missing, damaged or of another format is no record (the slaves are
        asked), never an error."""
        path = tmp_path / "pushed"
        if text is not None:
            path.write_text(text)
        assert state.read_pushed(path) == {}


class TestRecordPushed:
    """record_pushed: what one push (by hand, the daemon's, a rollback's) installed."""

    def test_records_forgets_and_names_the_last_build(self, tmp_path: Path) -> None:
        path = state.pushed_path(tmp_path)
        path.parent.mkdir()
        a, b = "ab" * 32, "cd" * 32
        state.record_pushed(tmp_path, {"ns2": state.Pushed(a, 2), "ns3": state.Pushed(a, 0)})
        assert state.read_last_pushed(path) == a
        state.record_pushed(tmp_path, {"ns2": state.Pushed(b, 2)})
        state.record_pushed(tmp_path, {"ns3": None})  # its push failed: unknown now
        assert state.read_pushed(path) == {"ns2": state.Pushed(b, 2)}
        assert state.read_last_pushed(path) == b

    def test_nothing_without_the_archive_directory(self, tmp_path: Path) -> None:
        """No kept builds: no base a delta or the guard could use; nothing written."""
        state.record_pushed(tmp_path, {"ns2": state.Pushed("ab" * 32, 2)})
        assert not state.pushed_path(tmp_path).parent.exists()
