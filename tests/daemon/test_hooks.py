"""``[hooks]``: operators' commands on the daemon's events, never in its way.

The real daemon with local slaves; each hook writes what it was told into a file
the test reads, so the environment is checked as the hook saw it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dnsmaster.core.text import LineCutter
from tests.lab.daemonrun import toml_value
from tests.lab.site import TIMEOUT, Local, example_com, running, write


def hooks_section(out: Path, *, timeout: int = 1, **extra: str) -> str:
    def record(name: str, what: str) -> str:
        return f"{what} >> {out / name}"

    hooks = {
        "build": record("build", 'echo "$DNSMASTER_EVENT $DNSMASTER_SERIAL $DNSMASTER_SHA256"'),
        "push": record("push", 'echo "$DNSMASTER_SLAVE $DNSMASTER_RESULT $DNSMASTER_SERIAL"'),
        "done": record("done", 'echo "$DNSMASTER_OK $DNSMASTER_FAILED $DNSMASTER_SERIAL"'),
        "failure": record("failure", 'echo "$DNSMASTER_RESULT: $DNSMASTER_ERROR"'),
        **extra,
    }
    return f"\n[hooks]\ntimeout = {timeout}\n" + "".join(
        f"{k} = {toml_value(v)}\n" for k, v in hooks.items()
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.usefixtures("daemon_process")
def test_hooks_see_the_facts(tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    out.mkdir()
    local = Local(tmp_path / "site", extra=hooks_section(out))
    with running(local) as (daemon, first):
        daemon.wait("hook.done", timeout=TIMEOUT, hook="done")
        serial, sha = str(first["serial"]), first["sha256"]
        (built,) = lines(out / "build")
        assert built.split()[:2] == ["build", serial]
        assert built.split()[2].startswith(sha)
        assert sorted(lines(out / "push")) == [f"ns2 ok {serial}", f"ns3 ok {serial}"]
        assert lines(out / "done") == [f"2 0 {serial}"]
        mark = daemon.mark()
        write(local.zones / "zones.example.com", "Xbroken\n")
        daemon.wait("hook.done", mark, timeout=TIMEOUT, hook="failure")
        (failure,) = lines(out / "failure")
        assert failure == "build failed: 1 errors in the zones"


@pytest.mark.usefixtures("daemon_process")
def test_a_hook_never_holds_up_a_push(tmp_path: Path) -> None:
    """A build hook that hangs is killed at its timeout; the pushes went on meanwhile;
    a failing push hook is only logged; hook output is logged line by line."""
    out = tmp_path / "hooks"
    out.mkdir()
    local = Local(
        tmp_path / "site",
        slaves=1,  # a hook's way beside a push: one slave's is enough to see
        # A timeout long enough for a push to start on a loaded machine, so the order
        # of the events below shows the pushes did not wait for the hook.
        extra=hooks_section(
            out,
            timeout=5,
            build="echo starting; sleep 30",
            push="echo said $DNSMASTER_SLAVE; exit 7",
        ),
    )
    with running(local) as (daemon, _first):
        failed = daemon.wait("hook.failed", timeout=TIMEOUT, hook="build")
        assert failed["error"] == "timed out after 5 s"
        names = [e["event"] for e in daemon.events]
        assert names.index("push.line") < names.index("hook.failed")  # not held up
        said = daemon.wait("hook.line", timeout=TIMEOUT, hook="push")
        assert said["line"] == "said ns2"
        assert daemon.wait("hook.failed", timeout=TIMEOUT, hook="push")["exit_status"] == 7
        assert daemon.find("hook.line", hook="build", line="starting")
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.71"))
        done = daemon.wait("build.done", mark, timeout=TIMEOUT)
        daemon.wait("push.done", mark, timeout=TIMEOUT, serial=done["serial"])
        assert daemon.stop() == 0


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and waiting for its reaper, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone(pid: int, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.usefixtures("daemon_process")
def test_hook_output_of_any_shape(tmp_path: Path) -> None:
    """1 MB without a newline, a 200 KB line, binary, a flood of lines: logged cut,
    never fatal; what a hook left running in its process group is killed when it ends."""
    out = tmp_path / "hooks"
    out.mkdir()
    pids = out / "build.pids"
    build = (
        f"sleep 60 >/dev/null 2>&1 & echo $$ $! > {pids}; head -c 1000000 /dev/zero | tr '\\0' x"
    )
    done = "head -c 200000 /dev/zero | tr '\\0' y; echo; printf 'bin\\000\\377ary\\n'; echo after"
    local = Local(
        tmp_path / "site",
        slaves=1,  # each slave's push hook floods the log alike: one is enough
        extra=hooks_section(out, build=build, done=done, push="seq 1 5000"),
    )
    with running(local) as (daemon, _first):
        assert daemon.wait("hook.done", timeout=TIMEOUT, hook="build")
        (cut,) = daemon.find("hook.line", hook="build")
        assert (cut["stream"], cut["line"], cut["truncated"]) == ("stdout", "x" * 4096, 995904)
        leader, background = (int(p) for p in pids.read_text().split())
        assert gone(background), f"the hook's background child {background} still runs"
        assert not alive(leader)

        daemon.wait("hook.done", timeout=TIMEOUT, hook="done")
        said = daemon.find("hook.line", hook="done")
        assert [e["line"][:3] for e in said] == ["yyy", "bin", "aft"], said
        assert (len(said[0]["line"]), said[0]["truncated"]) == (4096, 195904)
        assert "truncated" not in said[2]

        cut = daemon.wait("hook.output_cut", timeout=TIMEOUT, hook="push")
        assert (cut["dropped_lines"], cut["max_lines"]) == (4800, 200)
        assert len(daemon.find("hook.line", hook="push")) == 200

        # The daemon lives on and works.
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.72"))
        built = daemon.wait("build.done", mark, timeout=TIMEOUT)
        daemon.wait("push.done", mark, timeout=TIMEOUT, serial=built["serial"])
        assert not daemon.find("daemon.crash")
        assert daemon.stop() == 0


def test_line_cutter_bounds_any_shape() -> None:
    """Lines of at most the limit, the rest counted, across chunk boundaries; skip
    counts lines without keeping them; a last line without a newline still ends."""
    cutter = LineCutter(4)
    assert cutter.feed(b"ab") == []
    assert cutter.feed(b"cdef\n\nxy") == [(b"abcd", 2), (b"", 0)]
    assert cutter.feed(b"z" * 10) == []
    assert cutter.feed(b"\n") == [(b"xyzz", 8)]
    assert cutter.skip(b"1\n2\n3") == 2
    assert cutter.open
    assert cutter.skip(b"\n") == 1
    assert not cutter.open
    assert cutter.end() is None
    assert cutter.feed(b"\x00\xff") == []
    assert cutter.end() == (b"\x00\xff", 0)
    assert cutter.end() is None
