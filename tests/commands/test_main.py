"""The parser and its table: each command's module is found, and loaded only when it runs."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dnsmaster.commands.main import COMMANDS, DRY_RUNS, Command, parser


def sub_commands() -> set[str]:
    """The commands the parser accepts."""
    top = parser()
    return {
        name
        for action in top._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


class TestTable:
    def test_every_command_has_an_entry(self) -> None:
        """Each command the parser accepts runs through the table (receive aside: it is
        handed to the receiver before any parsing), and the table names no other."""
        assert sub_commands() == {*COMMANDS, "receive"}

    @pytest.mark.parametrize(
        "command",
        [*COMMANDS.values(), *DRY_RUNS.values()],
        ids=[*COMMANDS, *(f"{name} --dry-run" for name in DRY_RUNS)],
    )
    def test_entry_names_a_function(self, command: Command) -> None:
        """The module of each entry imports, and has the function it names."""
        assert callable(command.load())

    def test_dry_runs_are_options_of_their_commands(self) -> None:
        """Only commands with a --dry-run option have a dry run."""
        for name in DRY_RUNS:
            args = parser(name).parse_args([name, "--dry-run", "--config", "x.toml"])
            assert args.dry_run


class TestLazy:
    def test_parsing_loads_no_command(self) -> None:
        """Parsing a command's arguments imports none of the command modules, nor
        asyncssh, structlog or dnspython; running it imports its own module."""
        code = (
            "import sys\n"
            "from dnsmaster.commands.main import parser\n"
            "parser('check').parse_args(['check', '--zones', '.'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('dnsmaster.commands')\n"
            "      or m.split('.')[0] in ('asyncssh', 'structlog', 'dns', 'watchdog')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        assert out.strip() == "['dnsmaster.commands', 'dnsmaster.commands.main']"

    def test_commands_load_only_what_they_run(self) -> None:
        """The commands that need neither SSH nor DNS for what they do (build, check,
        diff, status, and push and rollback to a local slave, without --wait) import
        neither asyncssh nor dnspython: a quarter and a tenth of a second of CPU at
        every start. One interpreter loads them all: any one importing either fails.
        The daemon (run) loads no asyncssh either until an SSH slave needs it."""
        code = (
            "import sys\n"
            "from dnsmaster.commands.main import COMMANDS, DRY_RUNS\n"
            "for name in ('build', 'check', 'diff', 'status', 'push', 'rollback'):\n"
            "    COMMANDS[name].load()\n"
            "for command in DRY_RUNS.values():\n"
            "    command.load()\n"
            "from pathlib import Path\n"
            "from dnsmaster.config import Config, Slave\n"
            "from dnsmaster.master.pushing import channel_for\n"
            "t = Path('/nonexistent')\n"
            "cfg = Config(path=t / 'c.toml', zones=t, output=t, state=t / 's')\n"
            "channel_for(Slave(name='l', transport='local', root=t), cfg)\n"
            "def loaded():\n"
            "    return sorted({m.split('.')[0] for m in sys.modules\n"
            "        if m.split('.')[0] in ('asyncssh', 'dns', 'watchdog')})\n"
            "print(loaded())\n"
            "COMMANDS['run'].load()\n"
            "print(loaded())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        # The daemon needs dnspython (it verifies what slaves serve) and watchdog, but
        # asyncssh only once it pushes to an SSH slave.
        assert out.splitlines() == ["[]", "['dns', 'watchdog']"]
