"""``dnsmaster diff``, ``build --dry-run``, ``push --dry-run``: the plan, exactly, and nothing done.

The record comparison is tested on data texts (pure); the commands by their main(),
on builds of real zones directories and on ``transport = "local"`` slaves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dnsmaster.core.recordset import NO_ZONE, Record, compare, parse
from dnsmaster.master import buildcache
from dnsmaster.master.build import Builder
from tests.conftest import dnsmaster_here
from tests.lab.clock import Clock
from tests.lab.site import Local, example_com, write

EXAMPLE_COM = (
    b".example.com:192.0.2.1:a\n"
    b"+www.example.com:192.0.2.2\n"
    b"+old.example.com:192.0.2.7\n"
    b"@example.com::mail.example.com:10\n"
)
EXAMPLE_COM_NEW = (
    b".example.com:192.0.2.1:a\n"
    b"+www.example.com:192.0.2.20\n"
    b"+new.example.com:192.0.2.8:300\n"
    b"@example.com::mail.example.com:10\n"
)
EXAMPLE_NET = b".example.net:192.0.2.4:a\n+host.example.net:192.0.2.3\n"

#: The plan from OLD to NEW below: one record added, one removed, one changed, a zone gone.
EXPECTED = [
    "- zone example.net: removed, 4 records, serial 1700000000",
    "~ zone example.com: serial 1700000000 -> 1700000100",
    "  - old.example.com A 86400 192.0.2.7",
    "  + new.example.com A 300 192.0.2.8",
    "  ~ www.example.com A: 86400 192.0.2.2 -> 86400 192.0.2.20",
    "changes: zones 0 added, 1 removed, 1 changed; records 1 added, 1 removed, 1 changed",
]


def record(name: str, ttl: int, data: str) -> dict[str, Any]:
    return {"name": name, "type": "A", "ttl": ttl, "data": data, "location": None, "ttd": None}


EXPECTED_JSON: dict[str, Any] = {
    "zones_added": [],
    "zones_removed": ["example.net"],
    "zones": {
        "example.com": {
            "added": [record("new.example.com", 300, "192.0.2.8")],
            "removed": [record("old.example.com", 86400, "192.0.2.7")],
            "changed": [
                [
                    record("www.example.com", 86400, "192.0.2.2"),
                    record("www.example.com", 86400, "192.0.2.20"),
                ]
            ],
            "serial": [1700000000, 1700000100],
        }
    },
}


def dnsmaster(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """The command in this process: its exit status, stdout and stderr are what a
    process's would be, without a start's CPU (tests/commands/test_main.py and
    test_clean_stderr.py run the command line as processes)."""
    return dnsmaster_here(*argv)


def zones_dir(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    (path / "header").write_bytes(b"# header\n")
    for name, content in files.items():
        (path / name).write_bytes(content)
    return path


def build(base: Path, files: dict[str, bytes], now: int) -> Path:
    """A build of ``files`` made at ``now``: its output directory."""
    zones = zones_dir(base / "zones", files)
    out = base / "out"
    out.mkdir()
    Builder(zones, out, clock=Clock(now)).build()
    return out


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture
def builds(tmp_path: Path) -> tuple[Path, Path]:
    """Two builds: OLD (example.com, example.net), NEW (example.com changed, no example.net)."""
    old = build(
        tmp_path / "old",
        {"zones.example.com": EXAMPLE_COM, "zones.example.net": EXAMPLE_NET},
        1_700_000_000,
    )
    new = build(tmp_path / "new", {"zones.example.com": EXAMPLE_COM_NEW}, 1_700_000_100)
    return old / "data", new / "data"


class TestCompare:
    def test_exactly_the_changed_records(self, builds: tuple[Path, Path]) -> None:
        """An added, a removed and a changed record and a removed zone: those lines only."""
        old, new = builds
        plan = compare(old.read_bytes(), new.read_bytes())
        assert plan.lines() == EXPECTED
        assert plan.to_json() == EXPECTED_JSON
        assert plan.changed

    def test_serial_only_is_no_change(self, tmp_path: Path) -> None:
        """The same sources built twice differ in every serial: no change, only a summary."""
        files = {"zones.example.com": EXAMPLE_COM, "zones.example.net": EXAMPLE_NET}
        a = build(tmp_path / "a", files, 1_700_000_000) / "data"
        b = build(tmp_path / "b", files, 1_700_000_100) / "data"
        assert a.read_bytes() != b.read_bytes()
        plan = compare(a.read_bytes(), b.read_bytes())
        assert not plan.changed
        assert plan.lines() == ["no change (only the serial differs, in 2 zones)"]
        assert plan.serial_only == {
            "example.com": (1_700_000_000, 1_700_000_100),
            "example.net": (1_700_000_000, 1_700_000_100),
        }
        assert plan.to_json() == {"zones_added": [], "zones_removed": [], "zones": {}}

    def test_zone_added(self) -> None:
        """A new zone is one line with its record count and serial."""
        plan = compare(
            b"", b"Zexample.org:ns.example.org:hm.example.org:7\n+x.example.org:1.2.3.4\n"
        )
        assert plan.lines() == [
            "+ zone example.org: added, 2 records, serial 7",
            "changes: zones 1 added, 0 removed, 0 changed; records 0 added, 0 removed, 0 changed",
        ]

    def test_soa_fields_other_than_serial_are_a_change(self) -> None:
        """A SOA whose refresh changes is a changed record, shown without its serial."""
        old = b"Zexample.org:ns.example.org:hm.example.org:7:100\n"
        new = b"Zexample.org:ns.example.org:hm.example.org:8:200\n"
        assert compare(old, new).lines()[:2] == [
            "~ zone example.org: serial 7 -> 8",
            "  ~ example.org SOA: 2560 ns.example.org hm.example.org 100 2048 1048576 2560"
            " -> 2560 ns.example.org hm.example.org 200 2048 1048576 2560",
        ]

    def test_ttl_change_pairs_with_same_data(self) -> None:
        """Of several A records, the one whose TTL changed is paired with itself."""
        head = b"Zexample.org:ns.example.org:hm.example.org:7\n"
        old = head + b"+w.example.org:192.0.2.1:60\n+w.example.org:192.0.2.2:60\n"
        new = head + b"+w.example.org:192.0.2.1:60\n+w.example.org:192.0.2.2:120\n"
        (zone,) = compare(old, new).zones
        assert zone.changed == (
            (
                Record("w.example.org", "A", 60, "192.0.2.2"),
                Record("w.example.org", "A", 120, "192.0.2.2"),
            ),
        )
        assert zone.added == zone.removed == ()

    def test_repeated_record_counts(self) -> None:
        """A line written twice is two records: dropping one is a removal."""
        head = b"Zexample.org:ns.example.org:hm.example.org:7\n"
        line = b"+w.example.org:192.0.2.1\n"
        (zone,) = compare(head + line + line, head + line).zones
        assert zone.removed == (Record("w.example.org", "A", 86400, "192.0.2.1"),)


class TestParse:
    def test_rendering(self) -> None:
        """Each type as a person reads it; a record belongs to the longest zone."""
        data = (
            b"Zexample.org:ns.example.org:hm.example.org:7\n"
            b"Zsub.example.org:ns.example.org:hm.example.org:9\n"
            b"@example.org::mx.example.org:10\n"
            b"'example.org:v=spf1 -all\\001:60\n"
            b"Cwww.sub.example.org:example.org\n"
            b"^1.2.0.192.in-addr.arpa:example.org\n"
            b"+*.example.org:192.0.2.9::400000006553f100\n"
            b":example.org:28:\\040\\001\\015\\270\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\000\\001\n"
            b":example.org:99:ab\n"
            b"+lo.example.org:192.0.2.5:::ex\n"
            b"%ex:192.0.2\n"
        )
        zones = parse(data)
        texts = {zone: [r.text() for r in recs] for zone, recs in zones.items()}
        assert texts == {
            "example.org": [
                "example.org SOA 2560 ns.example.org hm.example.org 16384 2048 1048576 2560",
                "example.org MX 86400 10 mx.example.org",
                'example.org TXT 60 "v=spf1 -all\\001"',
                "*.example.org A 86400 192.0.2.9 ttd=400000006553f100",
                "example.org AAAA 86400 2001:db8::1",
                "example.org TYPE99 86400 \\# 2 6162",
                "lo.example.org A 86400 192.0.2.5 lo=ex",
            ],
            "sub.example.org": [
                "sub.example.org SOA 2560 ns.example.org hm.example.org 16384 2048 1048576 2560",
                "www.sub.example.org CNAME 86400 example.org",
            ],
            NO_ZONE: ["1.2.0.192.in-addr.arpa PTR 86400 example.org", "%192.0.2 % ex"],
        }
        assert [r.serial for r in zones["sub.example.org"]] == [9, None]


@pytest.mark.usefixtures("dnsmaster_cli")
class TestDiffCommand:
    def test_two_data_files(self, builds: tuple[Path, Path]) -> None:
        """``diff OLD NEW`` prints exactly the plan and exits 1; --json the same as JSON."""
        old, new = builds
        proc = dnsmaster("diff", old, new)
        assert (proc.returncode, proc.stdout.splitlines(), proc.stderr) == (1, EXPECTED, "")
        proc = dnsmaster("diff", "--json", old, new)
        assert proc.returncode == 1
        assert json.loads(proc.stdout) == EXPECTED_JSON

    def test_same_data_exits_0(self, builds: tuple[Path, Path]) -> None:
        """Identical data: exit 0 and nothing but the summary."""
        old, _ = builds
        proc = dnsmaster("diff", old, old)
        assert (proc.returncode, proc.stdout) == (0, "no change\n")

    def test_not_data_exits_2(self, tmp_path: Path) -> None:
        """A file tinydns-data would refuse, or a missing one: exit 2, the reason on stderr."""
        bad = tmp_path / "bad"
        bad.write_bytes(b"!nonsense\n")
        proc = dnsmaster("diff", bad, bad)
        assert proc.returncode == 2
        assert "not valid tinydns data" in proc.stderr
        proc = dnsmaster("diff", tmp_path / "missing", bad)
        assert proc.returncode == 2
        assert "cannot read" in proc.stderr

    def test_zones_against_current_build(self, tmp_path: Path) -> None:
        """``diff`` builds the zones in memory against output/data, and writes nothing."""
        out = build(
            tmp_path,
            {"zones.example.com": EXAMPLE_COM, "zones.example.net": EXAMPLE_NET},
            1_700_000_000,
        )
        zones = tmp_path / "zones"
        before = snapshot(out), snapshot(zones)
        proc = dnsmaster("diff", "--zones", zones, "--out", out)
        assert (proc.returncode, proc.stdout) == (0, "no change\n")
        (zones / "zones.example.com").write_bytes(EXAMPLE_COM_NEW)
        (zones / "zones.example.net").unlink()
        proc = dnsmaster("diff", "--zones", zones, "--out", out)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == EXPECTED[0]
        assert lines[1].startswith("~ zone example.com: serial 1700000000 -> ")
        assert lines[2:] == EXPECTED[2:]
        assert snapshot(out) == before[0]

    def test_zones_with_errors_exit_2(self, tmp_path: Path) -> None:
        """Zones tinydns-data would refuse: no plan, exit 2 naming the file and line."""
        out = build(tmp_path, {"zones.example.com": EXAMPLE_COM}, 1_700_000_000)
        (tmp_path / "zones" / "zones.example.com").write_bytes(b"+www.example.com\n!bad\n")
        proc = dnsmaster("diff", "--zones", tmp_path / "zones", "--out", out)
        assert proc.returncode == 2
        assert "zones.example.com:2: error:" in proc.stderr


@pytest.mark.usefixtures("dnsmaster_cli")
class TestBuildDryRun:
    def test_writes_nothing(self, tmp_path: Path) -> None:
        """build --dry-run prints the plan, exits 1, and leaves the output as it was."""
        out = build(
            tmp_path,
            {"zones.example.com": EXAMPLE_COM, "zones.example.net": EXAMPLE_NET},
            1_700_000_000,
        )
        zones = tmp_path / "zones"
        (zones / "zones.example.com").write_bytes(EXAMPLE_COM_NEW)
        (zones / "zones.example.net").unlink()
        before = snapshot(out)
        names = sorted(os.listdir(out))
        cached = sorted(os.listdir(out / buildcache.DIRECTORY))
        proc = dnsmaster("build", "--dry-run", "--zones", zones, "--out", out)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.splitlines()[2:] == EXPECTED[2:]
        proc = dnsmaster("build", "--dry-run", "--json", "--zones", zones, "--out", out)
        assert proc.returncode == 1
        plan = json.loads(proc.stdout)
        assert plan["zones_removed"] == ["example.net"]
        assert (
            plan["zones"]["example.com"]["changed"]
            == EXPECTED_JSON["zones"]["example.com"]["changed"]
        )
        assert snapshot(out) == before
        assert sorted(os.listdir(out)) == names
        # The plan reads the build cache but never writes it.
        assert sorted(os.listdir(out / buildcache.DIRECTORY)) == cached

    def test_into_empty_output(self, tmp_path: Path) -> None:
        """No build yet: every zone is added; still nothing written."""
        zones = zones_dir(tmp_path / "zones", {"zones.example.com": EXAMPLE_COM})
        out = tmp_path / "out"
        out.mkdir()
        proc = dnsmaster("build", "--dry-run", "--zones", zones, "--out", out)
        assert proc.returncode == 1
        assert proc.stdout.splitlines()[0].startswith("+ zone example.com: added, 6 records")
        assert os.listdir(out) == []


@pytest.mark.usefixtures("dnsmaster_cli")
class TestPushDryRun:
    def test_pushes_nothing(self, tmp_path: Path) -> None:
        """push --dry-run on local slaves: the plan and each slave's state; no slave changes."""
        local = Local(tmp_path)
        proc = dnsmaster("push", "--config", local.config)
        assert proc.returncode == 0, proc.stderr
        installed = local.installed()
        data = (local.output / "data").read_bytes()
        assert all(copy.startswith(data) for copy in installed)  # and the trailer

        proc = dnsmaster("push", "--dry-run", "--config", local.config)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[:2] == [
            f"slave ns2: holds this build already (serial {serial(data)})",
            f"slave ns3: holds this build already (serial {serial(data)})",
        ]
        assert lines[2:] == ["slaves: 0 of 2 would change", "no change"]

        write(local.zones / "zones.example.com", example_com("192.0.2.55"))
        before = snapshot(local.output), [snapshot(r) for r in local.roots]
        proc = dnsmaster("push", "--dry-run", "--config", local.config)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(f"~ zone example.com: serial {serial(data)} -> ")
        assert lines[1:] == [
            "  ~ www.example.com A: 86400 192.0.2.80 -> 86400 192.0.2.55",
            f"slave ns2: would push: holds serial {serial(data)}; the push sends a new build",
            f"slave ns3: would push: holds serial {serial(data)}; the push sends a new build",
            "slaves: 2 of 2 would change",
            "changes: zones 0 added, 0 removed, 1 changed; records 0 added, 0 removed, 1 changed",
        ]
        proc = dnsmaster("push", "--dry-run", "--json", "--slave", "ns3", "--config", local.config)
        assert proc.returncode == 1
        plan = json.loads(proc.stdout)
        assert plan["slaves"] == {
            "ns3": {"push": True, "sha256": sha(data), "serial": serial(data), "error": None}
        }
        assert (snapshot(local.output), [snapshot(r) for r in local.roots]) == before
        assert local.installed() == installed

    def test_diff_slave(self, tmp_path: Path) -> None:
        """diff --slave: against the build the slave holds; a build the master lacks is exit 2."""
        local = Local(tmp_path, slaves=1)  # the one diffed against
        assert dnsmaster("push", "--config", local.config).returncode == 0
        proc = dnsmaster("diff", "--slave", "ns2", "--config", local.config)
        assert (proc.returncode, proc.stdout) == (0, "no change\n"), proc.stderr
        write(local.zones / "zones.example.com", example_com("192.0.2.55"))
        proc = dnsmaster("diff", "--slave", "ns2", "--config", local.config)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.splitlines()[1:] == [
            "  ~ www.example.com A: 86400 192.0.2.80 -> 86400 192.0.2.55",
            "changes: zones 0 added, 0 removed, 1 changed; records 0 added, 0 removed, 1 changed",
        ]
        # The master builds; ns2 keeps the build before, which the master keeps too.
        assert dnsmaster("build", "--config", local.config).returncode == 0
        proc = dnsmaster("diff", "--slave", "ns2", "--config", local.config)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.splitlines()[1] == (
            "  ~ www.example.com A: 86400 192.0.2.80 -> 86400 192.0.2.55"
        )
        # A build the master no longer keeps: no plan.
        shutil.rmtree(local.output / ".dnsmaster-builds")
        proc = dnsmaster("diff", "--slave", "ns2", "--config", local.config)
        assert proc.returncode == 2
        assert "ns2 holds a build the master does not have" in proc.stderr
        assert proc.stdout == ""
        proc = dnsmaster("diff", "--slave", "nosuch", "--config", local.config)
        assert proc.returncode == 2
        assert "no such slave: nosuch" in proc.stderr


def serial(data: bytes) -> int:
    from dnsmaster.core.banner import previous_serial  # noqa: PLC0415

    found = previous_serial(data[:200])
    assert found is not None
    return found


def sha(data: bytes) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(data).hexdigest()


@pytest.mark.usefixtures("dnsmaster_cli")
class TestDryRunExitStatuses:
    """``build --dry-run`` and ``push --dry-run`` follow diff(1): a script tells "no
    change" (0) from "would change" (1) from "cannot build" (2)."""

    def test_build_dry_run_three_ways(self, tmp_path: Path) -> None:
        out = build(tmp_path, {"zones.example.com": EXAMPLE_COM}, 1_700_000_000)
        zones = tmp_path / "zones"
        assert dnsmaster("build", "--dry-run", "--zones", zones, "--out", out).returncode == 0
        (zones / "zones.example.com").write_bytes(EXAMPLE_COM_NEW)
        assert dnsmaster("build", "--dry-run", "--zones", zones, "--out", out).returncode == 1
        (zones / "zones.example.com").write_bytes(b"+www.example.com\n!bad\n")
        proc = dnsmaster("build", "--dry-run", "--zones", zones, "--out", out)
        assert proc.returncode == 2
        assert "zones.example.com:2: error:" in proc.stderr
        # The build itself says 1 for the same zones: nothing written.
        assert dnsmaster("build", "--zones", zones, "--out", out).returncode == 1

    def test_no_output_directory_is_no_plan(self, tmp_path: Path) -> None:
        """A build there would fail (111): the dry run must not say "would change"."""
        zones = zones_dir(tmp_path / "zones", {"zones.example.com": EXAMPLE_COM})
        proc = dnsmaster("build", "--dry-run", "--zones", zones, "--out", tmp_path / "none")
        assert proc.returncode == 2
        assert "output directory does not exist" in proc.stderr
        assert dnsmaster("build", "--zones", zones, "--out", tmp_path / "none").returncode == 111

    # One slave in these: each push is a receiver per slave, and what is judged is
    # the dry run's exit status and the plan's lines about the master's side.

    def test_push_dry_run_with_zones_errors(self, tmp_path: Path) -> None:
        local = Local(tmp_path, slaves=1)
        assert dnsmaster("push", "--config", local.config).returncode == 0
        write(local.zones / "zones.example.com", "+www.example.com\n!bad\n")
        proc = dnsmaster("push", "--dry-run", "--config", local.config)
        assert proc.returncode == 2, proc.stdout
        assert proc.stdout == ""

    def test_push_dry_run_says_a_rollback_holds(self, tmp_path: Path) -> None:
        local = Local(tmp_path, slaves=1)
        assert dnsmaster("push", "--config", local.config).returncode == 0
        write(local.zones / "zones.example.com", example_com("192.0.2.55"))
        assert dnsmaster("push", "--config", local.config).returncode == 0
        assert dnsmaster("rollback", "--config", local.config).returncode == 0
        proc = dnsmaster("push", "--dry-run", "--config", local.config)
        assert proc.returncode == 1, proc.stderr
        assert any(
            line.startswith("rollback: serial ") and "dnsmaster rollback --release" in line
            for line in proc.stdout.splitlines()
        ), proc.stdout


def test_exit_table_names_every_command() -> None:
    """EXIT_STATUSES, the one table of exit statuses, has a row for every command."""
    from dnsmaster.commands.main import COMMANDS  # noqa: PLC0415
    from dnsmaster.exits import EXIT_STATUSES  # noqa: PLC0415

    rows = {line.split()[0] for line in EXIT_STATUSES.splitlines() if line[:1].isalpha()}
    commands = {*COMMANDS, "receive"}
    assert commands <= rows | {"command"}, commands - rows
