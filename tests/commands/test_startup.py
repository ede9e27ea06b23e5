"""What a new dnsmaster process imports: the start-up cost of every command.

Each command runs in a new process (by hand, from cron, from a supervisor, from
the tests), and every module it imports costs each of those starts: ``--version``
and ``--help`` must stay instant, and a ``build`` after a one-line change must
spend its time on the build (issue #21: a new process after a one-line change at
1M lines takes at most half of tinydns-data's full compile). No timing here:
the modules each command must not import, all checked in one interpreter, so any
one of them brought back on the path fails with its name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: Run in a fresh interpreter: ``--help``, ``--version``, then ``build`` and
#: ``check`` of a small zones directory in process; after each, the modules loaded.
CHILD = """
import contextlib, io, sys
from dnsmaster.commands.main import main
seen = {}
def run(name, argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
    assert status == 0, (name, status)
    # a module the log put in sys.modules unrun (dnsmaster.log's own class) is not loaded
    seen[name] = sorted(
        m for m, mod in sys.modules.items() if type(mod).__module__ != "dnsmaster.log"
    )
zones, out = sys.argv[1], sys.argv[2]
run("help", ["--help"])
run("version", ["--version"])
run("build", ["build", "--zones", zones, "--out", out])
run("check", ["check", "--zones", zones])
# what the log deferred runs when a command uses it, in whichever thread first
import threading
import asyncio
import structlog.stdlib
got = []
def look():
    got.append(asyncio.iscoroutinefunction)
threads = [threading.Thread(target=look) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(got) == 4 and all(g is got[0] for g in got), got
assert asyncio.run(asyncio.sleep(0, result=5)) == 5
assert structlog.stdlib.BoundLogger.__name__ == "BoundLogger"
import json
print(json.dumps(seen))
"""

#: Nothing the command line's parser needs.
NOT_FOR_THE_PARSER = (
    "dataclasses",
    "dnsmaster.config",
    "dnsmaster.core.compiler",
    "dnsmaster.master",
    "dnsmaster.protocol",
    "json",
    "structlog",
    "tomllib",
)

#: Nothing a build without a daemon, a configuration or a slave needs: the
#: network, the configuration file, the guard and the state file, the push; nor
#: what structlog imports and the log never runs (asyncio, with socket and ssl;
#: its stdlib-logging bridge; its thread-local context, with uuid).
NOT_FOR_A_BUILD = (
    "asyncio",
    "asyncssh",
    "cryptography",
    "dns",
    "dnsmaster.commands.handing",
    "dnsmaster.config",
    "dnsmaster.daemon.loop",
    "dnsmaster.master.guarded",
    "dnsmaster.master.handoff",
    "dnsmaster.master.payload",
    "dnsmaster.master.pushing",
    "dnsmaster.master.state",
    "dnsmaster.protocol",
    "dnsmaster.transport",
    "socket",
    "ssl",
    "structlog.stdlib",
    "structlog.threadlocal",
    "tomllib",
    "uuid",
    "watchdog",
)


def loaded(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    """The modules of ``banned`` (packages with their submodules) in ``modules``."""
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


def test_each_command_imports_only_what_it_runs(tmp_path: Path) -> None:
    """--help and --version load the parser and nothing of the master (--version
    the C extension too); build and check of a zones directory load neither the
    network, nor the configuration, nor the daemon's hand-off, guard and state,
    nor asyncio; which runs all the same once a command uses it."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "zones.example").write_bytes(b".example.com:192.0.2.1:a\n+www.example.com:192.0.2.2\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(zones), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert loaded(seen["help"], NOT_FOR_THE_PARSER) == []
    dnsmaster = {m for m in seen["help"] if m.startswith("dnsmaster")}
    assert dnsmaster == {
        "dnsmaster",
        "dnsmaster.commands",
        "dnsmaster.commands.main",
        "dnsmaster.daemon",
    }
    assert loaded(seen["version"], NOT_FOR_THE_PARSER) == ["dataclasses"]  # core.accel's
    added = {m for m in seen["version"] if m.startswith("dnsmaster")} - dnsmaster
    assert added - {"dnsmaster.core._ccompile"} == {"dnsmaster.core", "dnsmaster.core.accel"}
    assert (out / "data.cdb").exists()
    assert loaded(seen["build"], NOT_FOR_A_BUILD) == []
    assert loaded(seen["check"], NOT_FOR_A_BUILD) == []
