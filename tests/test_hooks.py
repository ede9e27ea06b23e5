"""``[hooks]``: operators' commands on the daemon's events, never in its way.

The real daemon with local slaves; each hook writes what it was told into a file
the test reads, so the environment is checked as the hook saw it.
"""

from __future__ import annotations

from pathlib import Path

from tests.daemonrun import toml_value
from tests.test_daemon import TIMEOUT, Local, example_com, running, write


def hooks_section(out: Path, **extra: str) -> str:
    def record(name: str, what: str) -> str:
        return f"{what} >> {out / name}"

    hooks = {
        "build": record("build", 'echo "$DNSMASTER_EVENT $DNSMASTER_SERIAL $DNSMASTER_SHA256"'),
        "push": record("push", 'echo "$DNSMASTER_SLAVE $DNSMASTER_RESULT $DNSMASTER_SERIAL"'),
        "done": record("done", 'echo "$DNSMASTER_OK $DNSMASTER_FAILED $DNSMASTER_SERIAL"'),
        "failure": record("failure", 'echo "$DNSMASTER_RESULT: $DNSMASTER_ERROR"'),
        **extra,
    }
    return "\n[hooks]\ntimeout = 1\n" + "".join(
        f"{k} = {toml_value(v)}\n" for k, v in hooks.items()
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


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


def test_a_hook_never_holds_up_a_push(tmp_path: Path) -> None:
    """A build hook that hangs is killed at its timeout; the pushes went on meanwhile;
    a failing push hook is only logged; hook output is logged line by line."""
    out = tmp_path / "hooks"
    out.mkdir()
    local = Local(
        tmp_path / "site",
        extra=hooks_section(
            out, build="echo starting; sleep 30", push="echo said $DNSMASTER_SLAVE; exit 7"
        ),
    )
    with running(local) as (daemon, _first):
        failed = daemon.wait("hook.failed", timeout=TIMEOUT, hook="build")
        assert failed["error"] == "timed out after 1 s"
        names = [e["event"] for e in daemon.events]
        assert names.index("push.done") < names.index("hook.failed")  # not held up
        said = daemon.wait_count("hook.line", 2, timeout=TIMEOUT, hook="push")
        assert {e["line"] for e in said} == {"said ns2", "said ns3"}
        assert daemon.wait("hook.failed", timeout=TIMEOUT, hook="push")["exit_status"] == 7
        assert daemon.find("hook.line", hook="build", line="starting")
        mark = daemon.mark()
        write(local.zones / "zones.example.com", example_com("192.0.2.71"))
        done = daemon.wait("build.done", mark, timeout=TIMEOUT)
        daemon.wait_count("push.done", 2, mark, timeout=TIMEOUT, serial=done["serial"])
        assert daemon.stop() == 0
