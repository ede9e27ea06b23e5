"""``dnsmaster receive``: the slave's side of a push, run as an SSH forced command.

The slave account's only key is ``restrict,command="dnsmaster receive --root DIR"``;
the command the master asked for arrives in ``SSH_ORIGINAL_COMMAND`` and must be
one verb of :data:`VERBS`. ``push`` reads the data on stdin, proves it arrived
whole (the trailer line, see :mod:`dnsmaster.core.stream`), compiles it with the
same compiler as the master, keeps a timestamped copy, installs ``data`` and
``data.cdb`` by rename (one directory fsync makes all three renames durable) and
prunes old copies; a push of exactly the installed data changes nothing (see
:func:`_already_installed`). ``status`` prints what is installed.

One progress line per step goes to stdout and errors to stderr, so the master can
log them as they come. This runs once per push on every slave: it imports no
asyncssh, structlog or dnspython.

Exit statuses: 0 done; 1 data refused (incomplete, too large, does not compile);
2 command refused (unknown verb, bad arguments); 111 system error.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from dnsmaster import fsutil
from dnsmaster.core import cdb, stream
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.errors import ReceiveError, TinydnsDataError

__all__ = ["DEFAULT_KEEP", "DEFAULT_MAX_SIZE", "VERBS", "main"]

VERBS = ("push", "status")
DEFAULT_KEEP = 10
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_SYSTEM = 111

_COPY = re.compile(r"data\.\d{4}-\d\d-\d\d\.\d{6}(\.\d{6})?")


class _Refused(ReceiveError):
    """The data was refused; the installed data is unchanged."""

    status = EXIT_REFUSED


class _Usage(ReceiveError):
    """The command was refused."""

    status = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Installed:
    """What ``status`` reports about the installed data."""

    sha256: str
    serial: int | None
    size: int
    mtime: float

    def line(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.mtime))
        serial = "none" if self.serial is None else str(self.serial)
        return f"status sha256={self.sha256} serial={serial} bytes={self.size} time={when}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsmaster receive",
        description="Take a push from the master (verb from SSH_ORIGINAL_COMMAND).",
    )
    p.add_argument("--root", type=Path, required=True, help="the tinydns root (data, data.cdb)")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="copies of data to keep")
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, help="largest push, bytes")
    return p


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
        verb = _verb(env.get("SSH_ORIGINAL_COMMAND"))
        if args.keep < 1 or args.max_size < 1:
            raise _Usage("--keep and --max-size must be at least 1")
        if verb == "status":
            out.write(status(args.root).line() + "\n")
        else:
            source = stdin if stdin is not None else sys.stdin.buffer
            push(args.root, source, out, keep=args.keep, max_size=args.max_size)
    except (_Refused, _Usage) as exc:
        err.write(f"dnsmaster receive: refused: {exc}\n")
        return exc.status
    except OSError as exc:
        where = exc.filename or args.root
        err.write(f"dnsmaster receive: failed: {where}: {fsutil.describe(exc)}\n")
        return EXIT_SYSTEM
    return 0


def _verb(command: str | None) -> str:
    if command is None:
        raise _Usage(f"no command given; this key runs one of: {', '.join(VERBS)}")
    words = command.split()
    if len(words) != 1 or words[0] not in VERBS:
        shown = command if len(command) <= 80 else command[:77] + "..."
        raise _Usage(f"unknown command {shown!r}; this key runs one of: {', '.join(VERBS)}")
    return words[0]


def status(root: Path) -> Installed:
    """The installed data's identity: the sha256 the master built it with."""
    path = root / "data"
    with path.open("rb") as f:
        content = f.read()
        mtime = os.fstat(f.fileno()).st_mtime
    body, trailer = stream.split(content)
    sha = trailer.sha256 if trailer else hashlib.sha256(content).hexdigest()
    return Installed(sha, previous_serial(body), len(body), mtime)


def push(root: Path, source: BinaryIO, out: TextIO, *, keep: int, max_size: int) -> None:
    """Receive, verify, compile and install one push."""
    content = _read_capped(source, max_size)
    body, trailer = stream.split(content)
    if trailer is None:
        raise _Refused(
            f"incomplete data: {len(content)} bytes without the closing trailer line "
            "(connection cut?)"
        )
    problem = trailer.mismatch(body)
    if problem:
        raise _Refused(f"incomplete data: {problem}")
    _say(out, f"received bytes={len(body)} sha256={trailer.sha256}")
    serial = previous_serial(body)
    shown = serial if serial is not None else "none"
    if _already_installed(root, content):
        _say(out, "unchanged: data and data.cdb already installed")
        _say(out, f"done sha256={trailer.sha256} serial={shown}")
        return
    try:
        recs = compile_text(content, 0)
    except TinydnsDataError as exc:
        raise _Refused(f"data does not compile: line {exc.lineno}: {exc.reason}") from None
    _say(out, f"compiled records={len(recs)} serial={shown}")

    copy = _copy_name(root)
    staged: list[tuple[Path, Path]] = []
    try:
        kept = fsutil.stage(root / copy, lambda fd: fsutil.write_all(fd, content))
        # Durable once the directory is fsynced below, with data and data.cdb: its
        # content is fsynced already, and data only ever names it after that.
        os.replace(kept, root / copy)
        # dnsmaster's data has every serial written in; data from elsewhere may leave
        # them to the file's mtime, as tinydns-data would on this copy.
        values = recs.with_serial(default_serial((root / copy).stat().st_mtime_ns // 10**9))
        # The copy stays; data becomes a second name for it, swapped in by rename.
        link = root / f".data.{os.getpid()}.link"
        link.unlink(missing_ok=True)
        os.link(root / copy, link)
        staged.append((link, root / "data"))
        staged.append(
            (
                fsutil.stage(root / "data.cdb", lambda fd: cdb.write_fd(fd, recs.keys, values)),
                root / "data.cdb",
            )
        )
        fsutil.publish(staged)
    except BaseException:
        fsutil.discard(tmp for tmp, _ in staged)
        raise
    _say(out, f"kept {copy}")
    _say(out, "installed data and data.cdb")
    pruned = prune(root, keep)
    if pruned:
        _say(out, f"pruned {len(pruned)} old copies")
    _say(out, f"done sha256={trailer.sha256} serial={shown}")


def _already_installed(root: Path, content: bytes) -> bool:
    """Whether ``data`` holds exactly ``content`` and a whole data.cdb was built from it.

    A push of what is installed (a re-push after SIGALRM, a restarted master) then
    changes nothing and costs no compile. Anything doubtful rebuilds: ``data``
    differing by one byte, data.cdb missing, not a regular file, older than
    ``data`` (restored from elsewhere), or not ending where its own hash tables
    say it ends (cut short by a full disk, say).
    """
    try:
        with (root / "data").open("rb") as f:
            data_mtime = os.fstat(f.fileno()).st_mtime_ns
            if f.read(len(content) + 1) != content:
                return False
        with (root / "data.cdb").open("rb") as f:
            st = os.fstat(f.fileno())
            header = f.read(cdb.HEADER_SIZE)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_mtime_ns < data_mtime:
        return False
    return len(header) == cdb.HEADER_SIZE and cdb.size_from_header(header) == st.st_size


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest timestamped copies; return what went.

    Newest by modification time, then name: a name reused after its first holder
    was pruned must not make the newest copy look old. The copy that ``data`` is
    linked to is never deleted.
    """
    try:
        current = (root / "data").stat().st_ino
    except FileNotFoundError:
        current = None
    copies = []
    for entry in os.scandir(root):
        if _COPY.fullmatch(entry.name):
            st = entry.stat()
            copies.append((st.st_mtime_ns, entry.name, st.st_ino))
    copies.sort()
    gone = []
    for _, name, inode in copies[: max(0, len(copies) - keep)]:
        if inode != current:
            (root / name).unlink(missing_ok=True)
            gone.append(name)
    return gone


def _copy_name(root: Path) -> str:
    now = time.time()
    base = "data." + time.strftime("%Y-%m-%d.%H%M%S", time.gmtime(now))
    if not (root / base).exists():
        return base
    # A second push in the same second gets the microseconds, which sort after it.
    micro = int((now % 1) * 1_000_000)
    while (root / f"{base}.{micro:06d}").exists():
        micro += 1
    return f"{base}.{micro:06d}"


def _read_capped(source: BinaryIO, max_size: int) -> bytes:
    limit = max_size + stream.TRAILER_MAX
    chunks = []
    size = 0
    while chunk := source.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise _Refused(f"data over the size cap of {max_size} bytes (--max-size)")
        chunks.append(chunk)
    return b"".join(chunks)


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()
