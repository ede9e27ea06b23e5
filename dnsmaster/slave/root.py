"""The tinydns root as the receiver (:mod:`dnsmaster.slave.receive`) keeps it: what
is installed, installing a pushed pair, and the copies of ``data``.

One writer at a time: everything that reads or changes the root happens under an
exclusive ``flock`` on the root directory (:func:`dnsmaster.fsutil.locked`), taken
once the pushed data has been read and verified, so a master that stalls mid-stream
never holds up the next push. Under the lock, each run first removes what killed
runs left (:func:`dnsmaster.fsutil.sweep_litter`) and, when an install of the pair
was cut short, rebuilds data.cdb from the ``data`` there (:func:`_repair`). Only
then does ``status`` report, or ``push`` compare, compile and install:

- a build older than the installed one (RFC 1982 serials) is refused, and so is a
  different build with the same serial, unless the command is ``push --force``;
- the pushed data is written to a temp file and data.cdb compiled beside it, both
  fsynced, then installed as a pair under a journal
  (:func:`dnsmaster.fsutil.install_pair`): a crash at any instant leaves the old
  pair, the new pair, or the journal, which the next run sees and repairs;
- only then is a timestamped copy kept, as a second name (hard link) of ``data``,
  created exclusively; a push that fails therefore never leaves a copy;
- old copies are pruned, after failures too (a full disk needs the room).

A push of exactly the installed data changes nothing (see :func:`_already_installed`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from dnsmaster import fsutil
from dnsmaster.core import cdb, stream
from dnsmaster.core import delta as deltas
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.compiler import compile_text, default_serial
from dnsmaster.core.linetypes import Records
from dnsmaster.core.serial import newer
from dnsmaster.core.text import printable
from dnsmaster.errors import CdbTooLarge, DeltaError, DnsmasterError, TinydnsDataError
from dnsmaster.protocol import FORCE, SPEAKS
from dnsmaster.slave import inplace, sections
from dnsmaster.slave.outcome import DeltaRefused, Refused, Usage, say

__all__ = [
    "COPY",
    "Installed",
    "NotInstalled",
    "NotRegular",
    "can_write",
    "cdb_doubt",
    "copy_uncopied",
    "install_received",
    "keep_copy",
    "open_regular",
    "prune",
    "read_data",
    "rebuild",
    "refuse_older",
    "status",
    "yes_no",
]

#: The name of a timestamped copy of ``data``.
COPY = re.compile(r"data\.\d{4}-\d\d-\d\d\.\d{6}(\.\d{6})?")
# The banner (``# dnsmaster serial N sources=...``) is well inside this.
_HEAD = 256


class NotRegular(DnsmasterError):
    """A name in the root that the receiver reads is not a regular file; the message
    says which and what it is."""


#: How the receiver opens what it reads in the root. O_NONBLOCK: a FIFO there would
#: block the open, then the read, for ever, with the root's lock held (every later
#: push and status would wait behind it). O_NOFOLLOW: the receiver installs data and
#: data.cdb by rename, so a symbolic link under those names is not its own.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _not_regular(path: Path, mode: int) -> NotRegular:
    kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
    return NotRegular(f"{path.name} is {kind}, not a regular file")


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """``path`` open for reading, if it is a regular file; else :class:`NotRegular`.

    Checked on the open descriptor, so nothing can swap the name in between.
    FileNotFoundError and other OSErrors propagate as they are.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_regular(path, stat.S_IFLNK) from None
        raise
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        yield f


@dataclass(frozen=True, slots=True)
class Installed:
    """What ``status`` reports about a pair it vouches for."""

    sha256: str
    serial: int | None
    size: int
    mtime: float
    #: Whether this receiver can write the root (a push would fail otherwise).
    writable: bool = True
    #: The confined master whose section this is (None: the root's one master).
    master: str | None = None

    def line(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.mtime))
        serial = "none" if self.serial is None else str(self.serial)
        fields = f"sha256={self.sha256} serial={serial} bytes={self.size} time={when}"
        return f"status {fields} {SPEAKS} {yes_no(self.writable)}{_of(self.master)}"


@dataclass(frozen=True, slots=True)
class NotInstalled:
    """No pair ``status`` can vouch for; ``reason`` is None when the root is empty.

    Either way the line carries no sha256, which the master reads as "nothing
    installed" and answers with a full push: that installs a fresh pair.
    """

    reason: str | None = None
    writable: bool = True
    master: str | None = None

    def line(self) -> str:
        what = "status none" if self.reason is None else "status none pair=unknown"
        return f"{what} {SPEAKS} {yes_no(self.writable)}{_of(self.master)}"


def yes_no(writable: bool) -> str:
    return f"writable={'yes' if writable else 'no'}"


def _of(master: str | None) -> str:
    # Protocol 3: a confined master's status says whose section it reports.
    return "" if master is None else f" master={master}"


def can_write(root: Path) -> bool:
    """Whether a file can be created in ``root`` now (what a push needs first).

    The probe is named like the temp files a killed push leaves, so a crash between
    its creation and removal leaves nothing the next run does not sweep.
    """
    try:
        fsutil.discard([fsutil.stage(root / ".data.probe", lambda fd: None)])
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _session(root: Path, out: TextIO) -> Iterator[str | None]:
    """Hold the root's lock, with litter swept and an interrupted install repaired.

    Yields None when ``data`` and data.cdb are a pair again (or nothing is
    installed), else why data.cdb is not known to match ``data``.
    """

    def waiting() -> None:
        say(out, f"waiting: another receiver holds the lock on {printable(str(root))}")

    with fsutil.locked(root, on_wait=waiting):
        # masters.MASTERS, spelt out: an unconfined push does not import the confined
        # machinery to look for it.
        if os.path.isdir(root / "masters"):
            from dnsmaster.slave.masters import known  # noqa: PLC0415

            # Under the lock: the first confined push makes masters/ under it too.
            names = ", ".join(known(root)) or "none yet"
            raise Usage(
                f"this root serves confined masters ({names}): this key has no --master; "
                "give it --master NAME --allow DOMAIN (dnsmaster authorized-key)"
            )
        gone = fsutil.sweep_litter(root)
        if gone:
            names = ", ".join(printable(name) for name in gone[:5])
            more = f" and {len(gone) - 5} more" if len(gone) > 5 else ""
            say(out, f"swept {len(gone)} files a killed run left: {names}{more}")
        try:
            unmatched = _repair(root, out)
        except OSError as exc:
            # Journal kept: the next run tries again. A push goes on regardless, since
            # installing its pair repairs as well (and may fit where this did not).
            unmatched = f"data.cdb could not be rebuilt: {fsutil.describe(exc)}"
        yield unmatched


def _repair(root: Path, out: TextIO) -> str | None:
    """Rebuild data.cdb from ``data`` when an install was cut short; None once they match.

    The caller holds the lock. When ``data`` is missing or does not compile, data.cdb
    is left as it is and so is the journal: data.cdb is a whole cdb that some install
    renamed into place (renames are atomic), so tinydns keeps answering from it,
    possibly stale, where removing it would make tinydns answer nothing at all; and
    the journal keeps ``status`` from vouching for the pair until a push installs a
    new one. Returns the reason then. An OSError (a full disk) propagates, with the
    journal kept.
    """
    if not fsutil.interrupted_install(root):
        return None
    try:
        content, mtime = read_data(root)
    except FileNotFoundError:
        return "an install was cut short and there is no data to rebuild data.cdb from"
    except NotRegular as exc:
        return f"an install was cut short and {exc}"
    try:
        recs = compile_text(content, 0)
        _replace_cdb(root, recs, mtime)
    except TinydnsDataError as exc:
        return (
            "an install was cut short and data does not compile: "
            f"line {exc.lineno}: {printable(exc.reason)}"
        )
    except CdbTooLarge as exc:
        return f"an install was cut short and data.cdb cannot be rebuilt: {exc}"
    # The rebuilt data.cdb is durable (fsynced, directory fsynced) before the journal goes.
    fsutil.clear_interrupted(root)
    say(out, "repaired: rebuilt data.cdb from data (an install was cut short)")
    return None


def _replace_cdb(root: Path, recs: Records, mtime: int) -> None:
    """Install data.cdb alone (repair): stage, rename, fsync the directory."""
    values = recs.with_serial(default_serial(mtime))
    tmp = fsutil.stage(root / "data.cdb", lambda fd: cdb.write_fd(fd, recs.keys, values))
    try:
        os.replace(tmp, root / "data.cdb")
    except BaseException:
        fsutil.discard([tmp])
        raise
    fsutil.fsync_directory(root)


def read_data(root: Path) -> tuple[bytes, int]:
    """The installed ``data`` and its mtime in seconds (tinydns-data's default serial).

    Raises :class:`NotRegular` when ``data`` is not a regular file.
    """
    with open_regular(root / "data") as f:
        return f.read(), os.fstat(f.fileno()).st_mtime_ns // 10**9


def status(root: Path, out: TextIO) -> Installed | NotInstalled:
    """The installed pair's identity (the sha256 the master built it with), or why none.

    Under the root's lock and after any repair, so it never vouches for a ``data``
    that tinydns is not serving from data.cdb.
    """
    with _session(root, out) as unmatched:
        writable = can_write(root)
        if unmatched is not None:
            return NotInstalled(unmatched, writable)
        path = root / "data"
        try:
            with open_regular(path) as f:
                st = os.fstat(f.fileno())
                kept = sections.vouched(root)
                content = b"" if kept is not None else f.read()
        except FileNotFoundError:
            if os.path.lexists(root / "data.cdb"):
                return NotInstalled("data.cdb without data", writable)
            return NotInstalled(None, writable)
        except NotRegular as exc:
            # Not data tinydns-data could build from: the next push replaces it.
            return NotInstalled(str(exc), writable)
        doubt = cdb_doubt(root, st.st_mtime_ns)
        if doubt is not None:
            return NotInstalled(doubt, writable)
    if kept is not None:  # the pair it describes, so data is as installed: not edited
        return Installed(kept[0], kept[2], kept[1], st.st_mtime, writable)
    body, trailer = stream.split(content)
    # The sha256 of what is there, not what the trailer claims: data edited after its
    # push must not look like the master's build, or the master would never push again.
    sha = hashlib.sha256(body if trailer else content).hexdigest()
    return Installed(sha, previous_serial(body[:_HEAD]), len(body), st.st_mtime, writable)


def cdb_doubt(root: Path, data_mtime_ns: int) -> str | None:
    """Why data.cdb may not be the one built from a ``data`` of that mtime; None if it is.

    Cheap checks only (the journal covers our own installs): data.cdb is missing, not
    a regular file, older than ``data`` (restored from elsewhere), or does not end
    where its own hash tables say it ends (cut short by a full disk, say).
    """
    try:
        with open_regular(root / "data.cdb") as f:
            st = os.fstat(f.fileno())
            header = f.read(cdb.HEADER_SIZE)
    except FileNotFoundError:
        return "no data.cdb"
    except NotRegular as exc:
        return str(exc)
    if st.st_mtime_ns < data_mtime_ns:
        return "data.cdb is older than data"
    if len(header) != cdb.HEADER_SIZE or cdb.size_from_header(header) != st.st_size:
        return "data.cdb is cut short"
    return None


def install_received(
    root: Path,
    content: bytes,
    body: bytes | memoryview,
    trailer: stream.Trailer,
    out: TextIO,
    *,
    edits: deltas.Delta | None,
    keep: int,
    force: bool = False,
) -> None:
    """Compare, compile and install a push already read and verified, under the lock.

    ``edits`` (a delta) are applied to the installed data first, and ``content`` and
    ``body`` are then what they rebuild.
    """
    with _session(root, out) as unmatched:
        try:
            staged = None
            if edits is not None and unmatched is None:
                staged = inplace.stage_delta(root, edits, trailer)
            if staged is not None:
                shown = _install_delta(root, staged, trailer, out, force=force)
            elif edits is not None:
                body = rebuild(root, edits)
                content = body + trailer.line()
                say(out, f"rebuilt bytes={len(body)} sha256={trailer.sha256} from the delta")
            if staged is None:
                shown = _install_full(root, (content, body, trailer), out, unmatched, force=force)
        except BaseException:
            # Pruning runs after a failure too: after a full disk it makes the room
            # the next push needs. Its own failure must not hide the first one.
            with contextlib.suppress(OSError):
                prune(root, keep)
            raise
        pruned = prune(root, keep)
    if pruned:
        say(out, f"pruned {len(pruned)} old copies")
    say(out, f"done sha256={trailer.sha256} serial={shown}")


def _install_full(
    root: Path,
    pushed: tuple[bytes, bytes | memoryview, stream.Trailer],
    out: TextIO,
    unmatched: str | None,
    *,
    force: bool,
) -> object:
    """Install a whole data (pushed, or rebuilt from a delta in memory): ``pushed`` is
    its content, body and trailer. Returns the serial."""
    content, body, trailer = pushed
    serial = previous_serial(bytes(body[:_HEAD]))
    shown = serial if serial is not None else "none"
    if unmatched is not None:
        say(out, f"not repaired: {unmatched}; the pushed pair replaces both")
    copy_uncopied(root, out)
    if unmatched is None and _already_installed(root, content):
        say(out, "unchanged: data and data.cdb already installed")
    else:
        if not force:
            refuse_older(root, body, serial)
        copy = _install(root, content, len(body), out, sha256=trailer.sha256, shown=shown)
        say(out, "installed data and data.cdb")
        if copy is not None:
            say(out, f"kept {copy}")
    return shown


def _install_delta(
    root: Path, staged: inplace.Staged, trailer: stream.Trailer, out: TextIO, *, force: bool
) -> object:
    """Install a pair a delta staged in place (:mod:`dnsmaster.slave.inplace`); the serial."""
    shown = staged.serial if staged.serial is not None else "none"
    try:
        say(out, f"rebuilt bytes={trailer.size} sha256={trailer.sha256} from the delta in place")
        copy_uncopied(root, out)
        if staged.sha256 == staged.replaces_sha256:
            say(out, "unchanged: data and data.cdb already installed")
            staged.discard()
            return shown
        if not force:
            # The kept file vouches that data is the build it describes, not edited.
            _refuse(staged.replaces, staged.serial, different=True)
        say(out, f"compiled records={staged.compiled.count} serial={shown}")
    except BaseException:
        staged.discard()
        raise
    copy = _put_in(root, staged, out)
    say(out, "installed data and data.cdb")
    if copy is not None:
        say(out, f"kept {copy}")
    return shown


def rebuild(root: Path, edits: deltas.Delta) -> bytes:
    """The new ``data``: ``edits`` applied to the installed one, checked whole.

    The caller holds the lock, so the base cannot change between this check and
    the install. The base is the installed data without its trailer line, exactly
    what ``status`` reported the sha256 of.
    """
    try:
        installed, _ = read_data(root)
    except FileNotFoundError:
        raise DeltaRefused("delta: base mismatch: no data is installed") from None
    except NotRegular as exc:
        raise DeltaRefused(f"delta: base mismatch: {exc}") from None
    body, trailer = stream.split(installed)
    try:
        result = deltas.apply(edits, body if trailer else installed)
    except DeltaError as exc:
        raise DeltaRefused(f"delta: {exc.reason}") from None
    if result and not result.endswith(b"\n"):
        raise DeltaRefused("delta: the result does not end with a newline")
    return result


def refuse_older(root: Path, body: bytes | memoryview, serial: int | None) -> None:
    """Refuse a build older than the installed one, or another build with its serial.

    dnsmaster gives every build a serial past the previous one, so an older serial
    is a stale push (a retry that lost a race, a second master behind the first) and
    would take every SOA serial backwards. An equal serial on different data means
    two masters, or a master that lost its state: the SOA serials would not tell the
    two apart anywhere, so neither may silently replace the other. Data without a
    banner (not built by dnsmaster) is not compared.
    """
    try:
        with open_regular(root / "data") as f:
            installed_head = f.read(_HEAD)
    except (FileNotFoundError, NotRegular):
        return  # no build there to compare with (copy_uncopied said what is there)
    current = previous_serial(installed_head)
    if serial is None or current is None:
        return
    _refuse(current, serial, different=False)
    if serial == current:
        installed_body, installed_trailer = stream.split(read_data(root)[0])
        # Data edited by hand after its push (its trailer no longer matches) is not
        # another build: the push repairs it.
        edited = installed_trailer is None or installed_trailer.mismatch(installed_body)
        _refuse(current, serial, different=installed_body != body and not edited)


def _refuse(current: int | None, serial: int | None, *, different: bool) -> None:
    """Refused for ``serial`` older than ``current``, or equal to it on ``different``
    data (see :func:`refuse_older`)."""
    if serial is None or current is None:
        return
    hint = f"'push {FORCE}' installs it anyway (a rollback)"
    if newer(current, serial):
        raise Refused(f"build serial {serial} is older than the installed serial {current}; {hint}")
    if serial == current and different:
        raise Refused(
            f"build serial {serial} is already installed with different data (two masters?); {hint}"
        )


def _install(
    root: Path, content: bytes, body: int, out: TextIO, *, sha256: str, shown: object
) -> str | None:
    """Compile ``content``, install it with its data.cdb as a pair; the copy's name.

    The caller holds the lock. Nothing is left behind on failure: the temp files
    are removed, and no copy exists yet (it is made once the pair is in).
    """
    try:
        staged = inplace.stage_full(root, content, body, sha256)
    except TinydnsDataError as exc:
        raise Refused(
            f"data does not compile: line {exc.lineno}: {printable(exc.reason)}"
        ) from None
    except CdbTooLarge as exc:
        raise Refused(f"data does not fit a cdb: {exc}") from None
    say(out, f"compiled records={staged.compiled.count} serial={shown}")
    return _put_in(root, staged, out)


def _put_in(root: Path, staged: inplace.Staged, out: TextIO) -> str | None:
    """Install a staged pair, keep its copy, then its kept file (whose identities
    are the installed files' as they stay); the copy's name."""
    try:
        fsutil.install_pair(root, staged.data, staged.cdb, staged.sha256)
    except BaseException:
        staged.discard()
        raise
    try:
        copy: str | None = keep_copy(root)
    except OSError as exc:
        # The pair is in and durable; a missing copy only shortens the history.
        say(out, f"warning: no copy kept: {fsutil.describe(exc)}")
        copy = None
    try:
        staged.finish(root)
    except OSError as exc:  # the next delta compiles everything: slower, never wrong
        sections.forget(root)
        say(out, f"warning: sections not kept: {fsutil.describe(exc)}")
    return copy


def copy_uncopied(root: Path, out: TextIO) -> None:
    """Give the installed ``data`` its copy if it has none (no other name).

    A run killed after its install but before its copy (the directory fsyncs in
    between are the slow part) leaves ``data`` without one; so does data installed
    by other means. The copy's mtime is the data's own, so it sorts where it belongs.
    """
    try:
        st = (root / "data").lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        # A copy would be another name for it (a FIFO kept as history, say).
        problem = _not_regular(root / "data", st.st_mode)
        say(out, f"not kept: {problem}; this push replaces it")
        return
    if st.st_nlink != 1:
        return
    try:
        say(out, f"kept {keep_copy(root)} (the installed data had no copy)")
    except OSError as exc:  # history only: never a reason to refuse a push
        say(out, f"warning: no copy kept of the installed data: {fsutil.describe(exc)}")


def keep_copy(root: Path) -> str:
    """Give the installed ``data`` a timestamped second name, created exclusively.

    ``link`` fails when the name exists, so two receivers can never share a name,
    whatever the clock does. Made after the install, so only installed data has a
    copy. Not fsynced here: the next install fsyncs the directory, and losing the
    name in a power cut loses history, never served data.
    """
    now = time.time()
    base = "data." + time.strftime("%Y-%m-%d.%H%M%S", time.gmtime(now))
    # A second push in the same second gets the microseconds, which sort after it.
    micro = int((now % 1) * 1_000_000)
    # Lazily: a list of every name would cost 0.25 s of every push.
    names = itertools.chain([base], (f"{base}.{m:06d}" for m in range(micro, 1_000_000)))
    for name in names:
        try:
            os.link(root / "data", root / name)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(errno.EEXIST, "every copy name of this second is taken", str(root))


def _already_installed(root: Path, content: bytes) -> bool:
    """Whether ``data`` holds exactly ``content`` and a whole data.cdb was built from it.

    A push of what is installed (a re-push after SIGALRM, a restarted master) then
    changes nothing and costs no compile. Anything doubtful rebuilds: ``data``
    differing by one byte, data.cdb doubtful (:func:`cdb_doubt`), or data.cdb changed
    after ``data`` was (its inode's ctime): an install renames data.cdb into place
    before ``data``, so that is a data.cdb replaced or rewritten by hand, an older
    build's, say, which the master sees served (stale) and pushes again for; only a
    compile can tell whether it matches. The caller holds the lock, with any
    interrupted install repaired.
    """
    try:
        with open_regular(root / "data") as f:
            data = os.fstat(f.fileno())
            if data.st_size != len(content):
                return False
            # a MiB at a time: a 540 MB data is not read into memory beside the pushed one
            at = 0
            with memoryview(content) as view:
                while chunk := f.read(1 << 20):
                    if view[at : at + len(chunk)] != chunk:
                        return False
                    at += len(chunk)
            if at != len(content):
                return False
        if cdb_doubt(root, data.st_mtime_ns) is not None:
            return False
        return os.lstat(root / "data.cdb").st_ctime_ns <= data.st_ctime_ns
    except (OSError, NotRegular):
        return False


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
    with os.scandir(root) as entries:
        for entry in entries:
            if COPY.fullmatch(entry.name):
                st = entry.stat(follow_symlinks=False)
                copies.append((st.st_mtime_ns, entry.name, st.st_ino))
    copies.sort()
    gone = []
    for _, name, inode in copies[: max(0, len(copies) - keep)]:
        if inode != current:
            (root / name).unlink(missing_ok=True)
            gone.append(name)
    return gone
