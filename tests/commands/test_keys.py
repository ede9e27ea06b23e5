"""``dnsmaster authorized-key`` for a confined master: --master, --allow, --except,
--allow-locations (issue 19); the unconfined line is tested in tests/slave/test_bundle.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dnsmaster.commands.keys import forced_command
from dnsmaster.commands.main import main

if TYPE_CHECKING:
    from tests.lab.realworld import Lab

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMrcP7scL+EBFOOR0MwZPkFWF8YKJK3qtEs9OM7W2ui m"


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    path = tmp_path / "id.pub"
    path.write_text(KEY + "\n")
    return path


def run(capsys: pytest.CaptureFixture[str], pubkey: Path, *options: str) -> tuple[int, str, str]:
    status = main(["authorized-key", "--pubkey", str(pubkey), "--root", "/r", *options])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_confined_master(capsys: pytest.CaptureFixture[str], pubkey: Path) -> None:
    status, out, err = run(
        capsys,
        pubkey,
        *("--master", "cust-1", "--allow", "b.example", "--allow", "a.example"),
        *("--except", "x.a.example", "--allow-locations", "--keep", "3"),
    )
    assert (status, err) == (0, "")
    assert out == (
        'restrict,command="dnsmaster receive --root /r --master cust-1 --allow a.example '
        '--allow b.example --except x.a.example --allow-locations --keep 3" '
        f"{KEY}\n"
    )


def test_a_confined_master_with_the_bundle(
    capsys: pytest.CaptureFixture[str], pubkey: Path
) -> None:
    status, out, _ = run(
        capsys, pubkey, "--bundle", "/opt/r.pyz", "--master", "c", "--allow", "a.example"
    )
    assert status == 0
    assert out.startswith(
        'restrict,command="/usr/bin/python3 -I -S /opt/r.pyz --root /r --master c '
        '--allow a.example" '
    )


def test_domains_are_written_as_the_receiver_reads_them(
    capsys: pytest.CaptureFixture[str], pubkey: Path
) -> None:
    """Folded, without the trailing dot, an escaped dot kept one label (and quoted)."""
    status, out, _ = run(
        capsys,
        pubkey,
        *("--master", "c", "--allow", "A.Example.", "--allow", "a\\.b.example"),
        *("--allow", "a.example"),  # the same as the first: once
    )
    assert status == 0
    assert "--allow a.example --allow 'a\\056b.example'\" " in out
    assert out.count("--allow") == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--master", "c"), "--master c: give the domains it may publish as --allow DOMAIN"),
        (("--allow", "a.example"), "give --master NAME as well"),
        (("--except", "x.a.example"), "give --master NAME as well"),
        (("--allow-locations",), "give --master NAME as well"),
        (("--master", "..", "--allow", "a.example"), "--master ..: a master's name is"),
        (("--master", "a/b", "--allow", "a.example"), "--master a/b: a master's name is"),
        (("--master=-x", "--allow", "a.example"), "--master -x: a master's name is"),
        (("--master", "c", "--allow", "."), "--allow cannot be the root"),
        (("--master", "c", "--allow", ""), "--allow takes a domain in tinydns text form"),
        (("--master", "c", "--allow", "a.example:x"), "without ':'"),
        (
            ("--master", "c", "--allow", "a.example", "--except", "b.example"),
            "b.example: an --except must be strictly under one of the --allow domains",
        ),
        (
            ("--master", "c", "--allow", "a.example", "--except", "a.example"),
            "strictly under",
        ),
    ],
)
def test_refused(
    capsys: pytest.CaptureFixture[str], pubkey: Path, options: tuple[str, ...], message: str
) -> None:
    status, out, err = run(capsys, pubkey, *options)
    assert (status, out) == (2, "")
    assert err.startswith("dnsmaster: ")
    assert message in err
    assert err.count("\n") == 1


def _opt_dequote(text: str) -> str:
    """What sshd makes of a command="..." option's text (OpenSSH's opt_dequote):
    ``\\"`` is a quote, every other byte is itself."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 2] == '"':
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


@pytest.mark.parametrize(
    "argv",
    [
        ["dnsmaster", "receive", "--allow", "a\\056b.example"],
        ["/opt/a b/dnsmaster", "receive", "--root", '/r"x', "--allow", "x\\\\y"],
        ["x", 'a\\"b', "c\\", "'", '"'],
    ],
)
def test_the_forced_command_reaches_the_shell_word_for_word(argv: list[str]) -> None:
    assert shlex.split(_opt_dequote(forced_command(argv))) == argv


ARGV = """#!/bin/sh
# A forced command that shows the words it was given, one a line.
printf '%s\\n' "$@"
"""


def test_a_real_sshd_passes_the_escapes_as_written(lab: Lab) -> None:
    """The line in a real sshd: the receiver gets a\\056b.example as one word, with one
    backslash (sshd keeps backslashes, so the line must not double them)."""
    (slave,) = lab(1)
    shows = lab.workdir / "argv"
    shows.write_text(ARGV)
    shows.chmod(0o755)
    line = lab.authorized_key(
        slave.root, "--master", "c", "--allow", "a\\056b.example", "--allow", "b.example"
    )
    slave.sshd.set_authorized_keys(line.replace(str(lab.forced_command), str(shows)))
    proc = lab.ssh(slave, "status")
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode().splitlines()[-6:] == [
        "--master",
        "c",
        "--allow",
        "a\\056b.example",
        "--allow",
        "b.example",
    ]
