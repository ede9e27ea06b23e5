"""The manual in docs/: it builds without a warning, and its reference is complete.

The reference pages are checked against the code, not against a list kept here:
every configuration key the loader accepts (asked of the loader itself, through
the "unknown key (known: ...)" message it gives), every option of every command
(walked from the argparse parser, and from the receiver's own ``--help``), and
every log event the code emits (found in the source by its AST). A key, option or
event added without its line in the reference fails here.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from dnsmaster.commands import main
from dnsmaster.config import from_mapping
from dnsmaster.errors import ConfigError
from dnsmaster.exits import EXIT_STATUSES
from tests.conftest import missing
from tests.lab.daemonrun import PROJECT

DOCS = PROJECT / "docs"
README = PROJECT / "README.rst"
README_MAX_LINES = 250

#: The logger methods an event is emitted through (``log.info("push.done", ...)``).
LOG_METHODS = frozenset({"debug", "info", "warning", "error", "critical", "exception", "msg"})
EVENT = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)?")


# -- reading the pages -------------------------------------------------------------


def sections(page: Path) -> dict[str, str]:
    """Each section of an reStructuredText page, by its title, with its text.

    A section runs from its title to the next title of any level; the text before
    the first title is under "".
    """
    lines = page.read_text().splitlines()
    found: dict[str, list[str]] = {"": []}
    title = ""
    for i, line in enumerate(lines):
        underline = lines[i + 1] if i + 1 < len(lines) else ""
        if (
            line.strip()
            and len(underline) >= len(line.rstrip())
            and re.fullmatch(r"([=\-~^\"'`#*+])\1*", underline)
        ):
            title = line.strip()
            found[title] = []
        else:
            found[title].append(line)
    return {name: "\n".join(text) for name, text in found.items()}


def mentions(text: str, option: str) -> bool:
    """Whether ``option`` (``--json``, ``-o``) is written in ``text`` as a whole word."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


# -- the build ------------------------------------------------------------------------


def test_manual_builds_without_warnings(tmp_path: Path) -> None:
    """``sphinx-build -W``: any Sphinx warning (a broken reference, a malformed
    table, a page outside every toctree) fails the build, and so does any Python
    warning in the build (``-W error``), as everywhere in these tests."""
    if importlib.util.find_spec("sphinx") is None:
        missing("Sphinx is not installed: pip install -e '.[docs]'")
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not proc.stderr.strip(), proc.stderr
    assert (tmp_path / "html" / "index.html").is_file()


def test_readme_is_short() -> None:
    """The README is the front door: what it is, a demo, the tests, the manual."""
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.rst has {len(lines)} lines: keep it under {README_MAX_LINES}, "
        "and put the rest in docs/"
    )


def test_readme_renders_cleanly() -> None:
    """README.rst is plain reStructuredText (the package's long description, read
    on GitHub): no Sphinx roles, and docutils warns about nothing in it."""
    if importlib.util.find_spec("docutils") is None:
        missing("docutils is not installed: pip install -e '.[docs]'")
    import docutils.core  # noqa: PLC0415 - only when it is there

    docutils.core.publish_doctree(
        README.read_text(),
        settings_overrides={"report_level": 2, "halt_level": 2, "warning_stream": io.StringIO()},
    )


def test_every_page_is_in_a_toctree() -> None:
    """Sphinx warns about an orphan page too; this says which, without Sphinx."""
    index = (DOCS / "index.rst").read_text()
    listed = set(re.findall(r"^   (\S+)$", index, re.M))
    pages = {str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.rst")}
    assert pages - {"index"} <= listed, sorted(pages - {"index"} - listed)


# -- the exit statuses ---------------------------------------------------------------------


def test_exit_statuses_page_is_the_code_table() -> None:
    """docs/reference/exit-codes.rst shows EXIT_STATUSES, the one table, as it is:
    its literal block, unindented, is that text, line for line."""
    page = DOCS / "reference" / "exit-codes.rst"
    lines = page.read_text().splitlines()
    assert "::" in lines, f"{page}: no literal block"
    start = lines.index("::") + 1
    block: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    shown = "\n".join(block).strip("\n")
    assert shown == EXIT_STATUSES.strip("\n"), (
        f"{page}: its table differs from EXIT_STATUSES: copy the table from the code"
    )


# -- the configuration reference ---------------------------------------------------------

#: Where the loader's tables are described in docs/reference/config.rst.
CONFIG_SECTIONS = {
    "": "Top-level keys",
    "slave": "``[[slave]]``",
    "secondary": "``[[secondary]]``",
    "axfrdns": "``[axfrdns]``",
    "notify": "``[notify]``",
    "daemon": "``[daemon]``",
    "push": "``[push]``",
    "guard": "``[guard]``",
    "hooks": "``[hooks]``",
    "log": "``[log]``",
}


def known_keys(table: str) -> list[str]:
    """The keys the loader accepts in ``table`` ("" for the top level), asked of it.

    An unknown key is refused with a message listing the known ones: that list is
    the loader's own, whatever dataclass or tuple it comes from.
    """
    base: dict[str, object] = {"zones": "zones", "output": "out"}
    unknown = {"no_such_key_for_the_docs_test": 1}
    if table == "":
        document = {**base, **unknown}
    elif table == "slave":
        document = {**base, "slave": [{"name": "ns", "host": "192.0.2.2", **unknown}]}
    elif table == "secondary":
        secondary = {"name": "nsd", "address": "192.0.2.7", **unknown}
        document = {**base, "axfrdns": {"ip": "192.0.2.53"}, "secondary": [secondary]}
    else:
        document = {**base, table: unknown}
    with pytest.raises(ConfigError) as caught:
        from_mapping(document, path=Path("/nonexistent/dnsmaster.toml"))
    message = str(caught.value)
    found = re.search(r"unknown key \(known: ([^)]*)\)", message)
    assert found, f"the loader's message names no known keys: {message}"
    return [key.strip() for key in found.group(1).split(",")]


@pytest.mark.parametrize("table", sorted(CONFIG_SECTIONS))
def test_every_config_key_is_in_the_reference(table: str) -> None:
    """Each key the loader accepts is described in its table's section."""
    page = DOCS / "reference" / "config.rst"
    text = sections(page).get(CONFIG_SECTIONS[table])
    assert text is not None, f"{page}: no section {CONFIG_SECTIONS[table]!r}"
    keys = known_keys(table)
    assert keys, f"the loader knows no keys in {table or 'the top level'}?"
    missing = [key for key in keys if f"``{key}``" not in text]
    assert not missing, (
        f"{page}, section {CONFIG_SECTIONS[table]!r}: keys the loader accepts but the "
        f"reference does not describe: {missing}"
    )


# -- the command reference -----------------------------------------------------------------


def options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings ``parser`` accepts, but ``--help`` and hidden ones."""
    return [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option not in ("-h", "--help")
    ]


def commands() -> dict[str, list[str]]:
    """Every command ("" for ``dnsmaster`` itself) and the options it accepts.

    Walked from the command line's parser (``dnsmaster.commands.main.parser``: the
    parser ``dnsmaster`` runs, there is no other) and its sub-parsers.
    """
    parser = main.parser()
    found: dict[str, list[str]] = {"": options(parser)}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = options(sub)
    # The receiver parses its own options (it must not pay for the rest of the
    # command line): take them from its --help.
    found["receive"] = receiver_options()
    return found


def receiver_options() -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main.main(["receive", "--help"])
    assert status == 0, out.getvalue()
    listed = out.getvalue().split("options:", 1)[1]
    found = re.findall(r"^\s+(-[-\w]+)", listed, re.M)
    return [option for option in found if option not in ("-h", "--help")]


def _command_sections() -> Iterator[tuple[str, list[str], str | None]]:
    text = sections(DOCS / "reference" / "commands.rst")
    for name, accepted in commands().items():
        title = f"``dnsmaster {name}``" if name else "Commands"
        yield name, accepted, text.get(title)


def test_every_command_and_option_is_in_the_reference() -> None:
    """Each command has its section in commands.rst, naming each of its options."""
    page = DOCS / "reference" / "commands.rst"
    problems = []
    for name, accepted, text in _command_sections():
        command = f"dnsmaster {name}".strip()
        if text is None:
            problems.append(f"no section ``{command}``")
            continue
        problems += [f"{command}: {o} not described" for o in accepted if not mentions(text, o)]
    assert not problems, f"{page}:\n" + "\n".join(problems)


# -- the log reference ---------------------------------------------------------------------------


@cache  # two tests read it; parsing the package is most of either's CPU
def emitted_events() -> dict[str, str]:
    """Every event name the code logs, with the file where it is first found.

    An event is the only positional argument, a string literal, of a call to a logger method
    (``log.info("push.done", ...)``), or of a call whose level is chosen at run time
    (``(log.debug if quiet else log.info)("build.unchanged")``, ``level("push.failed")``).
    """
    found: dict[str, str] = {}
    for path in sorted((PROJECT / "dnsmaster").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # An event is the only positional argument; its fields are keywords.
            if not (isinstance(node, ast.Call) and len(node.args) == 1):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            func = node.func
            by_method = isinstance(func, ast.Attribute) and func.attr in LOG_METHODS
            by_choice = isinstance(func, ast.IfExp) or (
                isinstance(func, ast.Name) and func.id == "level"
            )
            if (by_method or by_choice) and EVENT.fullmatch(first.value):
                if by_choice and "." not in first.value:
                    continue
                found.setdefault(first.value, str(path.relative_to(PROJECT)))
    return found


def test_the_event_finder_finds_events() -> None:
    """The AST walk sees the forms the code uses, so the next test means something."""
    events = emitted_events()
    for name in ("push.done", "build.unchanged", "wait.end", "signal", "python.warning"):
        assert name in events, name


def test_every_log_event_is_in_the_reference() -> None:
    page = DOCS / "reference" / "log-events.rst"
    text = page.read_text()
    missing = [f"{name} ({where})" for name, where in emitted_events().items()
               if f"``{name}``" not in text]  # fmt: skip
    assert not missing, f"{page}: events the code logs but the reference omits: {missing}"
