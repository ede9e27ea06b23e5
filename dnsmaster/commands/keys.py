"""``dnsmaster authorized-key`` and ``dnsmaster receiver-bundle``: a slave's set-up.

``authorized-key`` prints the ``authorized_keys`` line that restricts the master's
key to the receiver (installed, or the bundle); ``receiver-bundle`` writes the
receiver as one zipapp a slave's python3 runs without pip.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from dnsmaster.commands.common import usage_error
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM
from dnsmaster.fsutil import describe
from dnsmaster.slave import bundle

__all__ = ["authorized_key", "receiver_bundle"]


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
    if args.keep is not None:
        command += ["--keep", str(args.keep)]
    if args.max_size is not None:
        command += ["--max-size", str(args.max_size)]
    forced = " ".join(shlex.quote(w) for w in command).replace("\\", "\\\\").replace('"', '\\"')
    sys.stdout.write(f'restrict,command="{forced}" {" ".join(words)}\n')
    return EXIT_OK


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
