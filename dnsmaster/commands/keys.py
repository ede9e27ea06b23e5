"""``dnsmaster authorized-key`` and ``dnsmaster receiver-bundle``: a slave's set-up.

``authorized-key`` prints the ``authorized_keys`` line that restricts the master's
key to the receiver (installed, or the bundle), and with ``--master`` to that
master's own domains; ``receiver-bundle`` writes the
receiver as one zipapp a slave's python3 runs without pip.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dnsmaster.commands.common import usage_error
from dnsmaster.core.confine import Allowlist, check_master_name, domain_text
from dnsmaster.core.text import printable
from dnsmaster.errors import AllowlistError
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM
from dnsmaster.fsutil import describe
from dnsmaster.slave import bundle

__all__ = ["authorized_key", "forced_command", "receiver_bundle"]


def authorized_key(args: argparse.Namespace) -> int:
    """``dnsmaster authorized-key --pubkey FILE --root DIR ...``: print the line."""
    try:
        words = args.pubkey.read_text().split()
    except OSError as exc:
        return usage_error(f"{args.pubkey}: cannot read: {describe(exc)}")
    if len(words) < 2 or not (words[0].startswith(("ssh-", "ecdsa-", "sk-"))):
        return usage_error(f"{args.pubkey}: not an OpenSSH public key")
    if not args.root.is_absolute():
        # Made absolute here, it would name a directory of this master, not the slave.
        return usage_error(
            f"--root {args.root}: give the slave's tinydns root as an absolute path "
            "(it is a directory on the slave, e.g. /etc/tinydns/root)"
        )
    if args.bundle is not None:
        if not (args.bundle.startswith("/") and args.python.startswith("/")):
            return usage_error("--bundle and --python must be absolute paths on the slave")
        # -I -S: nothing in the slave's environment or site-packages changes what runs.
        # The bundle is the receiver itself: no "receive" word.
        command = [args.python, "-I", "-S", args.bundle, "--root", str(args.root)]
    else:
        receiver = _receiver_command(args.receiver)
        if isinstance(receiver, str):
            return usage_error(receiver)
        command = [*receiver, "receive", "--root", str(args.root)]
    confined = _confinement(args)
    if isinstance(confined, str):
        return usage_error(confined)
    command += confined
    if args.keep is not None:
        command += ["--keep", str(args.keep)]
    if args.max_size is not None:
        command += ["--max-size", str(args.max_size)]
    sys.stdout.write(f'restrict,command="{forced_command(command)}" {" ".join(words)}\n')
    return EXIT_OK


def forced_command(argv: list[str]) -> str:
    """``argv`` as the text of an authorized_keys ``command="..."`` option.

    The words are quoted for the shell sshd runs the command with. sshd itself
    reads one escape only, ``\\"`` for a quote, and keeps every other backslash as
    it is (OpenSSH's opt_dequote), so a backslash (as in ``a\\056b.example``) is
    written once, not doubled.
    """
    return " ".join(shlex.quote(w) for w in argv).replace('"', '\\"')


def _confinement(args: argparse.Namespace) -> list[str] | str:
    """The receiver's options that confine the key to its master's domains, or why
    they are refused.

    The domains go into the line as the receiver will read them (lowercase, odd
    bytes as octal escapes), so the key line shows what the slave enforces.
    """
    if args.master is None:
        if args.allow or args.excepts or args.allow_locations:
            return (
                "--allow, --except and --allow-locations confine a named master: "
                "give --master NAME as well"
            )
        return []
    if not args.allow:
        return (
            f"--master {printable(args.master)}: give the domains it may publish "
            "as --allow DOMAIN (an unconfined master has no --master)"
        )
    try:
        check_master_name(args.master)
    except AllowlistError as exc:
        return f"--master {exc}"
    try:
        allow = Allowlist.parse(args.allow, args.excepts, args.allow_locations)
    except AllowlistError as exc:
        return str(exc)
    words = ["--master", args.master]
    for labels in allow.allowed:
        words += ["--allow", domain_text(labels)]
    for labels in allow.excepted:
        words += ["--except", domain_text(labels)]
    if allow.locations:
        words.append("--allow-locations")
    return words


def _receiver_command(text: str) -> list[str] | str:
    """--command's words without a trailing ``receive``, or why it is refused.

    The manual's wording (docs/slaves.rst: the forced command runs ``dnsmaster
    receive``) invites giving the whole command; both forms mean the same program.
    """
    # Several words are allowed ("/usr/bin/python3 -m dnsmaster").
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return f"--command {text!r}: {exc}"
    if words[-1:] == ["receive"]:
        words.pop()
    if not words:
        return "--command: give how the slave runs dnsmaster, e.g. /opt/dnsmaster/bin/dnsmaster"
    if "receive" in words:
        return (
            f"--command {text!r}: receive must be its last word; give the receiver's "
            "options as --keep and --max-size"
        )
    return words


def receiver_bundle(args: argparse.Namespace) -> int:
    """``dnsmaster receiver-bundle [-o FILE] [--python PATH]``: write the zipapp."""
    if args.output is None and sys.stdout.isatty():
        # Checked first: a zip on a terminal is garbage on screen, and building is wasted.
        return usage_error(
            "the bundle is a binary file, not for a terminal: give -o FILE "
            "(e.g. -o dnsmaster-receive.pyz) or redirect it (> FILE)"
        )
    try:
        if args.output is not None:
            bundle.write(args.output, args.python)
            return EXIT_OK
        data = bundle.build(args.python)
    except ValueError as exc:
        return usage_error(f"--python: {exc}")
    except OSError as exc:
        sys.stderr.write(f"dnsmaster: {args.output}: cannot write: {describe(exc)}\n")
        return EXIT_SYSTEM
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK
