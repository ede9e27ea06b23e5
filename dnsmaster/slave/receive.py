"""``dnsmaster receive``: the slave's side of a push, run as an SSH forced command.

The slave account's only key is ``restrict,command="dnsmaster receive --root DIR"``;
the command the master asked for arrives in ``SSH_ORIGINAL_COMMAND`` and must be
one of :data:`~dnsmaster.protocol.COMMANDS`. ``push`` reads the data on stdin and
proves it arrived whole (the trailer line, see :mod:`dnsmaster.core.stream`);
``delta`` reads edits of the installed ``data`` instead (:mod:`dnsmaster.core.delta`),
rebuilds the new data from them and checks it against the trailer's length and sha256 before
anything else; ``--zlib`` says the stream is zlib-compressed; ``status`` prints
what is installed, and the protocol (:mod:`dnsmaster.protocol`) and version of
this receiver, which the master checks on first contact.

What it does to the tinydns root, under the root's lock (repair, refusals, the
install of the pair, copies), is :mod:`dnsmaster.slave.root`. A key line with
``--master NAME --allow DOMAIN...`` is one of several confined masters sharing the
root: its pushes go to its own section and the merged pair
(:mod:`dnsmaster.slave.confined`, :mod:`dnsmaster.slave.masters`). ``--masters``,
``--remove-master`` and ``--adopt`` are the slave operator's commands
(:mod:`dnsmaster.slave.operator`), refused through a key.

One progress line per step goes to stdout and errors to stderr, so the master can
log them as they come. This runs once per push on every slave: it imports no
asyncssh, structlog or dnspython. It imports nothing outside the standard library
but the pure core, the protocol, errors, fsutil and the slave's own modules, so it
also travels as one file that needs no pip on the slave (:mod:`dnsmaster.slave.bundle`);
a new import here must be added to :data:`dnsmaster.slave.bundle.MODULES`
(tests/slave/test_bundle.py says so when it is not).

Exit statuses: 0 done (``status`` also when nothing is installed); 1 data refused
(incomplete, too large, does not compile, older than the installed build, outside
the master's allowlist, overlapping another master's); 2 command refused (unknown
command, bad arguments, a key that does not fit the root's kind); 3 delta refused (not against the
installed data, malformed, or its result is not the build the trailer names: the
master sends the full data instead); 111 system error.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn, TextIO

from dnsmaster import __version__, fsutil
from dnsmaster.core import delta as deltas
from dnsmaster.core import stream
from dnsmaster.core.text import printable
from dnsmaster.errors import AllowlistError, DeltaError
from dnsmaster.protocol import (
    COMMANDS,
    EXIT_SYSTEM,
    EXIT_USAGE,
    FAILED_PREFIX,
    FORCE,
    PROTOCOL,
    REFUSED_PREFIX,
    ZLIB,
    add_confinement_options,
)
from dnsmaster.slave.outcome import (
    DeltaRefused,
    OutsideAllowlist,
    Refused,
    SectionBroken,
    Usage,
    say,
)
from dnsmaster.slave.root import NotInstalled, install_received, status

if TYPE_CHECKING:
    from dnsmaster.slave.masters import Confinement

__all__ = ["DEFAULT_KEEP", "DEFAULT_MAX_SIZE", "main", "push"]

DEFAULT_KEEP = 10
DEFAULT_MAX_SIZE = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Request:
    """What ``SSH_ORIGINAL_COMMAND`` asks for."""

    verb: str
    force: bool = False
    compressed: bool = False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsmaster receive",
        description="Take a push from the master (command from SSH_ORIGINAL_COMMAND).",
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"dnsmaster receive {__version__} (protocol {PROTOCOL})",
        help="print the version and the protocol this receiver speaks",
    )
    p.add_argument("--root", type=Path, required=True, help="the tinydns root (data, data.cdb)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="copies of data to keep")
    p.add_argument(
        "--max-size", type=int, default=DEFAULT_MAX_SIZE, help="largest data, bytes (trailer aside)"
    )
    add_confinement_options(p)
    operator = p.add_mutually_exclusive_group()
    operator.add_argument(
        "--masters", action="store_true", help="list the confined masters (on the slave only)"
    )
    operator.add_argument(
        "--remove-master",
        metavar="NAME",
        help="drop a confined master's data from what is served (on the slave only)",
    )
    operator.add_argument(
        "--adopt",
        metavar="NAME",
        help="make a single master's root serve it as confined master NAME (on the slave only)",
    )
    return p


def _confinement(args: argparse.Namespace) -> Confinement | None:
    """The confined master the options name (None: unconfined); Usage when they do not
    go together."""
    name = args.master if args.adopt is None else args.adopt
    if args.master is not None and (args.adopt or args.remove_master or args.masters):
        raise Usage("--master is for a key line; --adopt, --remove-master and --masters are not")
    confining = args.allow or args.excepts or args.allow_locations
    if name is None:
        if confining:
            raise Usage("--allow, --except and --allow-locations need --master NAME")
        return None
    # Imported here: an unconfined push (most of them) needs none of the confined
    # machinery, and the receiver starts once per push on every slave.
    from dnsmaster.core.confine import Allowlist  # noqa: PLC0415
    from dnsmaster.slave.masters import Confinement, check_name  # noqa: PLC0415

    check_name(name)
    if not args.allow:
        if args.adopt is not None and not confining:
            return None
        option = "--master" if args.adopt is None else "--adopt"
        raise Usage(f"{option} {name} needs --allow DOMAIN: a confined master has domains")
    try:
        allowlist = Allowlist.parse(args.allow, args.excepts, args.allow_locations)
    except AllowlistError as exc:
        raise Usage(str(exc)) from None
    return Confinement(name, allowlist)


def _operate(
    args: argparse.Namespace, confinement: Confinement | None, env: Mapping[str, str], out: TextIO
) -> bool:
    """Run the slave operator's command the options name; whether there was one."""
    if not (args.masters or args.remove_master is not None or args.adopt is not None):
        return False
    if "SSH_ORIGINAL_COMMAND" in env:
        raise Usage(
            "--masters, --remove-master and --adopt are the slave operator's: "
            "run them on the slave, never through a key"
        )
    from dnsmaster.slave import operator  # noqa: PLC0415 - the slave operator's only

    if args.masters:
        for line in operator.list_masters(args.root, out):
            out.write(line + "\n")
    elif args.remove_master is not None:
        operator.remove_master(args.root, args.remove_master, out)
    else:
        operator.adopt(args.root, confinement, args.adopt, out)
    return True


def end(status: int) -> NoReturn:
    """End the receiver's process with ``status`` once its output is flushed, without
    the interpreter's teardown (freeing every object and module the run made: a tenth
    of what the imports cost). Nothing is lost: every file is fsynced or closed by
    then and the root's lock goes with the process. A flush that fails (the master
    hung up) makes it 120, as the interpreter's own exit would. Only where the
    process is the receiver's (``dnsmaster receive``, the bundle), never in tests."""
    for out in (sys.stdout, sys.stderr):
        try:
            out.flush()
        except (OSError, ValueError):
            status = status or 120
    os._exit(status)


def main(
    argv: Sequence[str],
    *,
    environ: dict[str, str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Serve one request; return the exit status."""
    env = os.environ if environ is None else environ
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else 0
    try:
        confinement = _confinement(args)
        if _operate(args, confinement, env, out):
            return 0
        request = _command(env.get("SSH_ORIGINAL_COMMAND"))
        if args.keep < 1 or args.max_size < 1:
            raise Usage("--keep and --max-size must be at least 1")
        if request.verb == "status":
            if confinement is None:
                report = status(args.root, out)
            else:
                from dnsmaster.slave.confined import status_confined  # noqa: PLC0415

                report = status_confined(args.root, confinement.master, out)
            out.write(report.line() + "\n")
            if isinstance(report, NotInstalled) and report.reason is not None:
                err.write(
                    f"dnsmaster receive: data.cdb is not known to match data: {report.reason}; "
                    "the next push installs both\n"
                )
        else:
            source = stdin if stdin is not None else sys.stdin.buffer
            push(
                args.root,
                source,
                out,
                keep=args.keep,
                max_size=args.max_size,
                force=request.force,
                delta=request.verb == "delta",
                compressed=request.compressed,
                confinement=confinement,
            )
    except (Refused, Usage, DeltaRefused) as exc:
        if isinstance(exc, OutsideAllowlist):
            err.writelines(line + "\n" for line in exc.lines)
        err.write(f"{REFUSED_PREFIX}{exc}\n")
        return exc.status
    except SectionBroken as exc:
        # Another master's section, not this push, is at fault: the slave's operator
        # must mend or remove it; the master retries meanwhile.
        err.write(f"{FAILED_PREFIX}{exc}\n")
        return EXIT_SYSTEM
    except OSError as exc:
        where = exc.filename or args.root
        err.write(f"{FAILED_PREFIX}{where}: {fsutil.describe(exc)}\n")
        return EXIT_SYSTEM
    return 0


def _command(command: str | None) -> _Request:
    """What ``SSH_ORIGINAL_COMMAND`` asks for: exactly one of the protocol's
    :data:`~dnsmaster.protocol.COMMANDS`."""
    allowed = ", ".join(COMMANDS)
    if command is None:
        raise Usage(f"no command given; this key runs one of: {allowed}")
    words = command.split()
    if " ".join(words) not in COMMANDS:
        shown = command if len(command) <= 80 else command[:77] + "..."
        raise Usage(f"unknown command '{printable(shown)}'; this key runs one of: {allowed}")
    return _Request(words[0], FORCE in words, ZLIB in words)


def push(
    root: Path,
    source: BinaryIO,
    out: TextIO,
    *,
    keep: int,
    max_size: int,
    force: bool = False,
    delta: bool = False,
    compressed: bool = False,
    confinement: Confinement | None = None,
) -> None:
    """Receive, verify, compile and install one push (of the data, or of a delta),
    into a confined master's section when ``confinement`` names one."""
    content, body, trailer, edits = _received(
        source, out, max_size, delta=delta, compressed=compressed
    )
    if confinement is not None:
        from dnsmaster.slave.confined import install_confined  # noqa: PLC0415

        install_confined(
            root,
            confinement,
            content,
            bytes(body),
            trailer,
            out=out,
            edits=edits,
            keep=keep,
            force=force,
        )
        return
    install_received(root, content, body, trailer, out, edits=edits, keep=keep, force=force)


def _received(
    source: BinaryIO, out: TextIO, max_size: int, *, delta: bool, compressed: bool
) -> tuple[bytes, bytes | memoryview, stream.Trailer, deltas.Delta | None]:
    """The stream read whole and checked: the content, its body and trailer, and its
    edits when it is a delta (applied later, under the lock, to the installed data)."""
    # A delta is never sent when it is not smaller than the data (the master sends the
    # data then), so the one cap serves both, with room for the delta's header line.
    extra = deltas.HEADER_MAX if delta else 0
    content = _read_capped(source, max_size, extra=extra, compressed=compressed)
    # Only the last line is split off, and the body is a view of the stream: a data of
    # 540 MB is not held twice (a delta's body is never used as such: its edits are).
    last = content.rfind(b"\n", 0, len(content) - 1) + 1
    tail, trailer = stream.split(content[last:])
    body = memoryview(content)[: last + len(tail)]
    if len(body) > max_size + extra:
        raise Refused(f"data over the size cap of {max_size} bytes (--max-size)")
    if trailer is None:
        raise Refused(
            f"incomplete data: {len(content)} bytes without the closing trailer line "
            "(connection cut?)"
        )
    if not delta:
        problem = trailer.mismatch(body)
        if problem:
            raise Refused(f"incomplete data: {problem}")
        say(out, f"received bytes={len(body)} sha256={trailer.sha256}")
        return content, body, trailer, None
    try:
        edits = deltas.parse(content, max_size=max_size)
    except DeltaError as exc:
        raise DeltaRefused(f"delta: {exc.reason}") from None
    say(
        out,
        f"received delta bytes={len(content)} ops={len(edits.ops)} base={edits.base_sha256[:16]}",
    )
    return content, b"", trailer, edits


def _read_capped(
    source: BinaryIO, max_size: int, *, extra: int = 0, compressed: bool = False
) -> bytes:
    """All of stdin (decompressed), refused as soon as it passes the cap.

    The cap is on what the stream holds once decompressed, so a small compressed
    stream cannot fill the memory. A compressed stream must end where zlib's own
    end is, its checksum right: anything else is a cut or corrupt stream.
    """
    # The cap is on the data; the trailer line may come on top of it.
    limit = max_size + stream.TRAILER_MAX + extra
    over = f"data over the size cap of {max_size} bytes (--max-size)"
    unzip = zlib.decompressobj() if compressed else None
    # Not a list of chunks joined at the end: the join would hold the stream twice.
    # A BytesIO grows its one buffer, and getvalue() hands that buffer over.
    received = io.BytesIO()
    size = 0
    while chunk := source.read(1 << 20):
        for piece in (chunk,) if unzip is None else _inflated(unzip, chunk):
            size += len(piece)
            if size > limit:
                raise Refused(over)
            received.write(piece)
    if unzip is not None:
        if unzip.unused_data:
            raise Refused("bytes after the end of the compressed stream")
        if not unzip.eof:
            raise Refused(
                f"incomplete data: the compressed stream ends before its end, after {size} "
                "bytes (connection cut?)"
            )
    return received.getvalue()


def _inflated(unzip: zlib._Decompress, chunk: bytes) -> Iterator[bytes]:
    """``chunk`` decompressed a MiB at a time: 350 KB of zlib can inflate to 240 MB,
    which would be in memory twice (as one piece, then in the stream) at once."""
    if unzip.eof:
        raise Refused("bytes after the end of the compressed stream")
    while chunk:
        try:
            piece = unzip.decompress(chunk, 1 << 20)
        except zlib.error as exc:
            raise Refused(f"corrupt compressed stream: {exc}") from None
        yield piece
        chunk = unzip.unconsumed_tail
