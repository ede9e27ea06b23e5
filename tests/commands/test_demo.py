"""``dnsmaster demo``: the command it tells the user to run next must run as printed.

Run as a user does, from the console script pip installed, with and without its
directory on PATH (a venv's ``.venv/bin`` usually is not).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dnsmaster.exits import EXIT_SYSTEM
from tests.lab.daemonrun import PROJECT

#: Where a system installs programs, and not where pip put the one under test.
SYSTEM_PATH = "/usr/bin:/bin"


def _script() -> Path:
    """The console script pip installed beside this interpreter."""
    script = Path(sys.executable).with_name("dnsmaster")
    if not script.exists():
        pytest.fail(f"{script}: the dnsmaster console script is not installed (pip install -e .)")
    return script


def _next_command(argv: list[str], cwd: Path, path: str) -> tuple[str, dict[str, str]]:
    """Set up the demo in cwd/demo; the status command it prints, and the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = path
    if argv[0] == sys.executable:
        env["PYTHONPATH"] = str(PROJECT)
    done = subprocess.run(
        [*argv, "demo", "--setup-only", "demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done
    _, found, command = done.stderr.rpartition("watch the log here, then: ")
    assert found, done.stderr
    return command.rstrip("\n"), env


def _runs(command: str, env: dict[str, str], cwd: Path) -> None:
    """The printed command reaches dnsmaster status (no daemon ran: its state is missing)."""
    done = subprocess.run(
        shlex.split(command),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_SYSTEM, done
    assert "has the daemon ever run?" in done.stderr, done


@pytest.mark.usefixtures("dnsmaster_cli")
def test_script_not_on_path_is_named_by_its_path(tmp_path: Path) -> None:
    """`.venv/bin/dnsmaster demo` with .venv/bin not on PATH: the script's own path."""
    script = _script()
    command, env = _next_command([str(script)], tmp_path, SYSTEM_PATH)
    config = shlex.quote(str(tmp_path / "demo" / "dnsmaster.toml"))
    assert command == f"{shlex.quote(str(script))} status --config {config}"
    _runs(command, env, tmp_path / "demo")  # absolute paths: from any directory


@pytest.mark.usefixtures("dnsmaster_cli")
def test_script_on_path_is_dnsmaster(tmp_path: Path) -> None:
    script = _script()
    path = f"{script.parent}:{SYSTEM_PATH}"
    command, env = _next_command(["dnsmaster"], tmp_path, path)
    assert command.startswith("dnsmaster status --config "), command
    _runs(command, env, tmp_path)


@pytest.mark.usefixtures("dnsmaster_cli")
def test_python_m(tmp_path: Path) -> None:
    """`python -m dnsmaster demo`: the same interpreter and -m, whatever PATH holds."""
    command, env = _next_command([sys.executable, "-m", "dnsmaster"], tmp_path, SYSTEM_PATH)
    assert command.startswith(f"{shlex.quote(sys.executable)} -m dnsmaster status --config ")
    _runs(command, env, tmp_path)
