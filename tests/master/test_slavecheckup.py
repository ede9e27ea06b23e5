"""A slave's checkup, in process, on a local slave: no sshd needed to see that the
steps stop at the first failure, and say how to fix it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dnsmaster import __version__
from dnsmaster.config import Config
from dnsmaster.errors import SlaveError
from dnsmaster.master.slavecheckup import SlaveFindings, check_slave
from tests.lab.daemonrun import in_process_config


def _config(tmp_path: Path) -> Config:
    zones = tmp_path / "zones"
    zones.mkdir()
    local = {"name": "l", "transport": "local", "root": str(tmp_path / "root")}
    return in_process_config(tmp_path, zones, tmp_path, local)


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


class TestSharedSlave:
    """The words of a slave that serves several masters, each named by its key line."""

    def findings(self, tmp_path: Path) -> SlaveFindings:
        cfg = _config(tmp_path)
        return SlaveFindings(cfg, cfg.slaves[0])

    def test_receiver_names_the_master(self, tmp_path: Path) -> None:
        """Its status says master=NAME: doctor says so, and a key-line fix names it."""
        found = self.findings(tmp_path)
        found.receiver_ok({"protocol": "3", "version": __version__, "master": "a"})
        assert [c.line() for c in found.checks] == [
            f"OK   slave l: receiver: dnsmaster receive answers status (version {__version__}, "
            "protocol 3, master a)"
        ]
        assert "--master a --allow DOMAIN` prints" in found.authorized_key_fix(replace=True)

    def test_unnamed_key_on_a_root_of_named_masters(self, tmp_path: Path) -> None:
        """The receiver refuses a key without --master there: the fix is a key line
        that names this master and its domains."""
        found = self.findings(tmp_path)
        reason = "this root serves confined masters a, b: this key line names no --master"
        found.receiver_failed(SlaveError("l", reason, 2, phase="status"), answered=False)
        (check,) = found.checks
        assert check.why == f"status failed: {reason}"
        assert "replace this key's line" in (check.fix or "")
        assert "--master NAME --allow DOMAIN` prints" in (check.fix or "")

    def test_named_key_on_a_single_master_root(self, tmp_path: Path) -> None:
        """A named master's key on a root that holds one unnamed master's data: the
        slave's operator converts it first."""
        found = self.findings(tmp_path)
        reason = (
            "this root holds a single master's data; a confined push would drop it: "
            "dnsmaster receive --root ROOT --adopt NAME converts it"
        )
        found.receiver_failed(SlaveError("l", reason, 2, phase="status"), answered=False)
        (check,) = found.checks
        assert "dnsmaster receive --root SLAVE_ROOT --adopt NAME" in (check.fix or "")

    def test_plain_slave_keeps_its_words(self, tmp_path: Path) -> None:
        """No master= in the status: the key-line fix is the plain one, as before."""
        found = self.findings(tmp_path)
        found.receiver_ok({"protocol": "2", "version": __version__})
        assert "--master" not in found.authorized_key_fix()
