"""Pieces of :mod:`dnsmaster.master.pushing` and the transport without SSH: the local
transport runs the real receiver.

``LocalChannel`` starts ``python -m dnsmaster receive`` exactly as sshd would (the
verb in SSH_ORIGINAL_COMMAND), so these tests exercise the real conversation; the
SSH path is tested against a real sshd in test_push.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dnsmaster.config import Config, Slave
from dnsmaster.core.makedata import assemble, compile_source
from dnsmaster.core.stream import seal, split
from dnsmaster.master.payload import payload_for
from dnsmaster.master.pushing import (
    PushLog,
    PushResult,
    channel_for,
    push_all,
    push_one,
)
from dnsmaster.protocol import SlaveVersion, parse_status
from dnsmaster.transport.channel import LineSink, RunResult, SlaveChannel, fetch_status
from dnsmaster.transport.local import LocalChannel
from dnsmaster.transport.ssh import SshChannel

PROJECT = Path(__file__).resolve().parents[2]
SERIAL = 1_700_000_000


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver subprocess imports this checkout of dnsmaster."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{PROJECT}:{path}" if path else str(PROJECT))


def zone_data(serial: int = SERIAL, www: str = "192.0.2.1") -> bytes:
    source = f".example.com:127.0.0.1:a\n+www.example.com:{www}\n".encode()
    return assemble([compile_source("zones.x", source)], serial).data


def local(root: Path, name: str = "l1", protocol: str = "dnsmaster") -> LocalChannel:
    root.mkdir(parents=True, exist_ok=True)
    slave = Slave(name=name, transport="local", root=root, protocol=protocol)  # type: ignore[arg-type]
    return LocalChannel(slave)


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def __call__(self, slave: str, stream: str, line: str, truncated: int = 0) -> None:
        self.seen.append((slave, stream, line))


# --------------------------------------------------------------------------- pure pieces


def test_payload_for_dnsmaster_slave_is_sealed() -> None:
    data = zone_data()
    payload = payload_for(Slave(name="a", host="h"), data)
    body, trailer = split(payload)
    assert body == data
    assert trailer is not None
    assert trailer.mismatch(body) is None
    assert payload == data + seal(data)


def test_payload_for_legacy_slave_is_plain() -> None:
    data = zone_data()
    assert payload_for(Slave(name="a", host="h", protocol="legacy"), data) == data


def test_payload_for_empty_data() -> None:
    payload = payload_for(Slave(name="a", host="h"), b"")
    assert split(payload)[0] == b""
    assert payload.startswith(b"#dnsmaster-end bytes=0 ")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["status sha256=" + "a" * 64 + " serial=42 bytes=10 time=x"], ("a" * 64, 42)),
        (["status sha256=" + "b" * 64 + " serial=none"], ("b" * 64, None)),
        (["status sha256=" + "c" * 64], ("c" * 64, None)),
        (["noise", "", "status sha256=d serial=7"], ("d", 7)),
        (["status serial=7"], None),
        (["statusx sha256=a serial=1"], None),
        ([], None),
        (["", "   "], None),
        (["status sha256=e serial=-1"], ("e", None)),
    ],
)
def test_parse_status(lines: list[str], expected: tuple[str, int | None] | None) -> None:
    got = parse_status(lines)
    if expected is None:
        assert got is None
    else:
        assert got == SlaveVersion(*expected)


def test_channel_for(tmp_path: Path) -> None:
    cfg = Config(path=tmp_path / "c.toml", zones=tmp_path, output=tmp_path, state=tmp_path / "s")
    assert isinstance(channel_for(Slave(name="a", host="h"), cfg), SshChannel)
    loc = Slave(name="b", transport="local", root=tmp_path)
    assert isinstance(channel_for(loc, cfg), LocalChannel)


def test_push_log_events() -> None:
    events: list[tuple[str, str, dict[str, object]]] = []

    class Logger:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **kw: events.append((level, event, kw))

    log = PushLog(Logger(), serial=9)
    log.line("a", "stdout", "hello")
    log.result(PushResult("a", True, "f" * 64, 10, 0.12345, 0))
    log.result(PushResult("b", False, "f" * 64, 10, 1.0, 1, "bad data (exit 1)", "receive", False))
    log.result(PushResult("c", False, "f" * 64, 10, 1.0, None, "cannot connect: refused"))
    log.result(PushResult("d", False, "f" * 64, 0, 1.0, None, "host key CHANGED", "hostkey", False))
    log.result(PushResult("e", True, "f" * 64, 10, 1.0, 0, output_cut=True, output_dropped=7))
    assert events[0] == ("info", "push.line", {"slave": "a", "stream": "stdout", "line": "hello"})
    assert events[1][:2] == ("info", "push.done")
    assert events[1][2]["serial"] == 9
    assert events[1][2]["seconds"] == 0.123
    assert events[1][2]["sha256"] == "f" * 16
    assert events[2][:2] == ("error", "push.failed")
    assert events[2][2]["exit_status"] == 1
    assert events[2][2]["phase"] == "receive"
    assert events[2][2]["retryable"] is False
    assert "exit_status" not in events[3][2]
    assert events[3][2]["error"] == "cannot connect: refused"
    assert events[3][2]["retryable"] is True
    # A changed host key: critical, someone may be posing as the slave.
    assert events[4][:2] == ("critical", "push.failed")
    # Cut output: one warning, then the result as usual.
    assert [e[:2] for e in events[5:]] == [("warning", "push.output_cut"), ("info", "push.done")]
    assert events[5][2] == {
        "slave": "e",
        "dropped_lines": 7,
        "max_lines": 1000,
        "max_bytes": 256 * 1024,
    }
    # A line cut at MAX_LINE says how many bytes it lost.
    log.line("a", "stderr", "cut", 9)
    cut = {"slave": "a", "stream": "stderr", "line": "cut", "truncated": 9}
    assert events[-1] == ("info", "push.line", cut)


# --------------------------------------------------------------------------- local receiver


async def test_push_one_local(tmp_path: Path) -> None:
    channel = local(tmp_path / "root")
    data = zone_data()
    lines = Lines()
    sha = hashlib.sha256(data).hexdigest()
    result = await push_one(channel, data, sha, 30, lines)
    assert result.ok, lines.seen
    assert result.exit_status == 0
    assert result.bytes == len(data + seal(data))
    assert (tmp_path / "root" / "data").read_bytes() == data + seal(data)
    assert (tmp_path / "root" / "data.cdb").is_file()
    out = [line for _, stream, line in lines.seen if stream == "stdout"]
    assert out[0] == f"received bytes={len(data)} sha256={sha}"
    assert out[-1] == f"done sha256={sha} serial={SERIAL}"
    assert all(slave == "l1" for slave, _, _ in lines.seen)

    version = await fetch_status(channel, 30, Lines())
    assert version == SlaveVersion(sha, SERIAL)


async def test_fetch_status_without_data(tmp_path: Path) -> None:
    """No data installed: the receiver says ``status none``, which reads as None."""
    assert await fetch_status(local(tmp_path / "root"), 30, Lines()) is None


async def test_fetch_status_legacy(tmp_path: Path) -> None:
    assert await fetch_status(local(tmp_path / "r", protocol="legacy"), 30, Lines()) is None


async def test_push_one_refused_data(tmp_path: Path) -> None:
    """Data that does not compile: a failed result with the receiver's status and words."""
    channel = local(tmp_path / "root")
    good = zone_data()
    assert (await push_one(channel, good, "x", 30, Lines())).ok
    before = sorted(p.name for p in (tmp_path / "root").iterdir())
    installed = (tmp_path / "root" / "data").read_bytes()
    lines = Lines()
    # A newer build, so the receiver gets as far as compiling it (the same serial
    # with other data is refused before that, as a second master's build).
    bad = zone_data(SERIAL + 1) + b"!bad\n"
    result = await push_one(channel, bad, "y", 30, lines)
    assert not result.ok
    assert result.exit_status == 1
    # The receiver's own reason, not just its status; pushing it again cannot help.
    reason = "data does not compile: line 9: unrecognized leading character '!'"
    assert result.error == f"{reason} (exit 1)"
    assert result.phase == "receive"
    assert not result.retryable
    assert any("data does not compile" in line for _, s, line in lines.seen if s == "stderr")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == before
    assert (tmp_path / "root" / "data").read_bytes() == installed


async def test_unknown_verb(tmp_path: Path) -> None:
    channel = local(tmp_path / "root")
    lines = Lines()
    result = await channel.run("rm -rf /", b"", lines)
    assert result.exit_status == 2
    assert any("unknown command" in line for _, _, line in lines.seen)
    assert list((tmp_path / "root").iterdir()) == []


async def test_legacy_verb_refused_by_a_dnsmaster_receiver(tmp_path: Path) -> None:
    result = await push_one(local(tmp_path / "r", protocol="legacy"), b"", "", 30, Lines())
    assert not result.ok
    assert result.exit_status == 2
    assert result.error is not None
    assert result.error.startswith("unknown command 'update-dns'")
    # A legacy script's exit statuses mean nothing known, so it is retried.
    assert result.retryable


async def test_push_one_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that does not finish in time is killed; the result says so.

    The "receiver" never finishes (it sleeps), so the timeout fires whatever the
    machine's load; the test proves the kill by the PID it left behind.
    """
    pidfile = tmp_path / "receiver.pid"
    hang = tmp_path / "hang"
    hang.write_text(
        f"#!/bin/sh\necho $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}\nexec sleep 3600\n"
    )
    hang.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hang))  # LocalChannel runs sys.executable
    channel = local(tmp_path / "root")
    async with asyncio.timeout(120):  # a guard against a hang, not a measurement
        result = await push_one(channel, zone_data(), "x", 0.5, Lines())
    assert not result.ok
    assert result.error == "timed out after 0.5 s"
    assert result.phase == "timeout"
    assert result.retryable
    if pidfile.exists():  # else it was killed before it could even write it
        with pytest.raises(ProcessLookupError):
            os.kill(int(pidfile.read_text()), 0)
    assert not (tmp_path / "root" / "data").exists()


async def test_push_all_keeps_order_and_isolates_failures(tmp_path: Path) -> None:
    """Results in channel order; a broken slave does not stop the others."""
    good = [local(tmp_path / f"g{i}", f"g{i}") for i in range(3)]
    # A root that is a file: the receiver fails with a system error.
    (tmp_path / "broken").write_text("")
    broken = LocalChannel(Slave(name="bad", transport="local", root=tmp_path / "broken"))
    channels: list[SlaveChannel] = [good[0], broken, good[1], good[2]]
    data = zone_data()
    seen: list[str] = []
    results = await push_all(
        channels,
        data,
        "s",
        parallel=2,
        timeout=60,
        on_line=Lines(),
        on_result=lambda r: seen.append(r.slave),
    )
    assert [r.slave for r in results] == ["g0", "bad", "g1", "g2"]
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].exit_status == 111
    assert results[1].error is not None
    assert results[1].error.endswith(": not a directory (exit 111)")
    assert results[1].retryable  # a system error on the slave may pass
    assert sorted(seen) == ["bad", "g0", "g1", "g2"]
    for i in range(3):
        assert (tmp_path / f"g{i}" / "data").read_bytes() == data + seal(data)


async def test_push_all_parallel_bound(tmp_path: Path) -> None:
    """At most ``parallel`` channels run at once, and a freed place goes to the next.

    Each channel blocks until the test releases it, so "at once" is a fact of the
    event order, not of timing.
    """
    started: list[str] = []
    running: set[str] = set()
    peak = 0
    release = {f"s{i}": asyncio.Event() for i in range(10)}

    class Held:
        def __init__(self, name: str) -> None:
            self.slave = Slave(name=name, transport="local", root=tmp_path)

        async def run(self, verb: str, payload: bytes | None, on_line: LineSink) -> RunResult:
            nonlocal peak
            started.append(self.slave.name)
            running.add(self.slave.name)
            peak = max(peak, len(running))
            await release[self.slave.name].wait()
            running.discard(self.slave.name)
            return RunResult(0, ())

        async def close(self) -> None:
            return None

    async def settle(count: int) -> None:
        """Let the loop run until ``count`` channels have started, then some more."""
        while len(started) < count:
            await asyncio.sleep(0)
        for _ in range(50):  # room for a wrongly admitted extra channel to start
            await asyncio.sleep(0)

    channels = [Held(f"s{i}") for i in range(10)]
    async with asyncio.timeout(60):  # a guard against a hang, not a measurement
        task = asyncio.create_task(
            push_all(channels, b"", "", parallel=3, timeout=60, on_line=Lines())
        )
        await settle(3)
        assert started == ["s0", "s1", "s2"]
        release["s1"].set()
        await settle(4)
        assert started == ["s0", "s1", "s2", "s3"]
        assert running == {"s0", "s2", "s3"}
        for event in release.values():
            event.set()
        results = await task
    assert all(r.ok for r in results)
    assert sorted(started) == sorted(release)
    assert peak == 3
