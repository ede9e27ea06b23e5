"""The installed ``dnsmaster`` command prints on stderr only what it means to print.

A dependency that starts to warn on import (cryptography's DSA deprecation through
asyncssh did) would otherwise put raw Python text between the daemon's log lines,
where multilog and ``--log-format json`` readers choke on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: What a command means to print on stderr: a log event, its own ``dnsmaster:``
#: message, or a ``FILE: message`` diagnostic about a zones file.
_MEANT = re.compile(r"^(level=\w+ event=[\w.]+|dnsmaster: |\S+/zones/\S+: )")


def _installed() -> str:
    """The console script pip installed beside this interpreter."""
    script = Path(sys.executable).with_name("dnsmaster")
    if script.exists():
        return str(script)
    found = shutil.which("dnsmaster")
    if found is None:
        pytest.fail("the dnsmaster console script is not installed (pip install -e .)")
    return found


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # Show every warning, as a user's interpreter may: none of them may escape as text.
    env["PYTHONWARNINGS"] = "always"
    return subprocess.run(
        [_installed(), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    done = _run("demo", "--setup-only", str(directory), cwd=directory)
    assert done.returncode == 0, done.stderr
    return directory


def _unmeant(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not _MEANT.match(line)]


class TestCleanStderr:
    @pytest.mark.parametrize(
        "argv",
        [
            ["--version"],
            ["check", "--config", "dnsmaster.toml"],
            ["build", "--config", "dnsmaster.toml"],
            ["status", "--config", "dnsmaster.toml"],
            ["diff", "--config", "dnsmaster.toml"],
            ["push", "--config", "dnsmaster.toml"],
        ],
        ids=lambda argv: argv[0].lstrip("-"),
    )
    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_only_meant_lines(self, demo: Path, argv: list[str]) -> None:
        """Each command's stderr holds log events and its own messages, nothing else."""
        done = _run(*argv, cwd=demo)
        assert done.returncode in {0, 1, 111}, done.stderr
        assert _unmeant(done.stderr) == []
        assert "Warning" not in done.stderr

    @pytest.mark.usefixtures("dnsmaster_cli")
    def test_json_log_is_all_json(self, demo: Path) -> None:
        """With --log-format json, every stderr line of push is one JSON object."""
        import json  # noqa: PLC0415

        done = _run("push", "--config", "dnsmaster.toml", "--log-format", "json", cwd=demo)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines, "push logged nothing"
        for line in lines:
            assert isinstance(json.loads(line), dict), line

    def test_a_warning_is_a_log_event(self, tmp_path: Path) -> None:
        """A Python warning raised while a command runs is logged as python.warning."""
        script = tmp_path / "warn.py"
        script.write_text(
            "import sys, warnings\n"
            "from dnsmaster.commands import main\n"
            "def warn(args):\n"
            "    warnings.warn('a dependency changed', DeprecationWarning, stacklevel=1)\n"
            "    return 0\n"
            "main.COMMANDS['check'] = main.Command('__main__', 'warn')\n"
            "sys.exit(main.main(['check', '--zones', '.']))\n"
        )
        env = {**os.environ, "PYTHONWARNINGS": "always"}
        done = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [
            "level=warning event=python.warning category=DeprecationWarning "
            f'message="a dependency changed" where={script}:4'
        ]
