"""A confined master's push and status (a key line with ``--master NAME --allow ...``).

The root's layout and the merged pair are :mod:`dnsmaster.slave.masters`. A push,
under the root's one lock, after any interrupted install is merged again:

1. a delta is applied to this master's own ``data`` (``masters/NAME/data``);
2. every line must make records only at or under this master's allowed domains
   (:func:`dnsmaster.core.confine.offences`): else the push is refused whole, each
   offending line named (:class:`OutsideAllowlist`);
3. its allowlist must not overlap another master's as recorded at that master's
   last accepted push (:func:`dnsmaster.core.confine.overlaps`);
4. a build older than this master's installed one is refused, as for a single master;
5. its data is compiled (its records kept), the merged pair written from every
   master's records, and all installed under the journal (:func:`masters.install`);
6. a copy of its data is kept in its section, and its old copies pruned.

A refusal at any step changes no file of the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from dnsmaster import fsutil
from dnsmaster.core import delta as deltas
from dnsmaster.core import stream
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.confine import offences, overlaps
from dnsmaster.core.text import printable
from dnsmaster.errors import CdbTooLarge, TinydnsDataError
from dnsmaster.slave import masters, records
from dnsmaster.slave.masters import ALLOW, MASTERS, Confinement, Part
from dnsmaster.slave.outcome import OutsideAllowlist, Refused, Usage, say
from dnsmaster.slave.root import (
    Installed,
    NotInstalled,
    NotRegular,
    can_write,
    cdb_doubt,
    copy_uncopied,
    keep_copy,
    open_regular,
    prune,
    rebuild,
    refuse_older,
)

__all__ = [
    "SHOWN",
    "OutsideAllowlist",
    "install_confined",
    "refuse_offences",
    "session",
    "status_confined",
]

#: Offending lines printed one by one; past these, how many more.
SHOWN = 20
# Where lines are named in the last stderr line (the master's reason): the first few.
_NAMED = 5
_NAMED_MAX = 200
#: A delta of more operations is checked whole: most of its lines are new anyway.
_DELTA_OPS_CHECKED = 10_000
_HEAD = 256


def _single_master(root: Path) -> Usage:
    return Usage(
        f"{printable(str(root))} serves one unconfined master (its data is there, no "
        f"{MASTERS}/): a confined push would drop that data; convert the root first "
        "(dnsmaster receive --root ROOT --adopt NAME on the slave, then that master's key "
        "line gets --master NAME --allow ...)"
    )


def _require_confined(root: Path) -> None:
    """Raise :class:`Usage` when ``root`` holds a single master's data. The caller
    holds the lock."""
    if os.path.isdir(root / MASTERS):
        return
    if os.path.lexists(root / "data") or os.path.lexists(root / "data.cdb"):
        raise _single_master(root)


@contextlib.contextmanager
def session(root: Path, out: TextIO) -> Iterator[str | None]:
    """Hold the root's lock, litter swept and an interrupted install merged again.

    Yields None when the merged pair matches the sections (or nothing is installed),
    else why it may not. A root holding a single master's data is refused first
    (:class:`Usage`): merging its journal away from sections would drop that data.
    """

    def waiting() -> None:
        say(out, f"waiting: another receiver holds the lock on {printable(str(root))}")

    with fsutil.locked(root, on_wait=waiting):
        _require_confined(root)
        gone = fsutil.sweep_litter(root) + masters.sweep(root)
        if gone:
            names = ", ".join(printable(name) for name in gone[:5])
            more = f" and {len(gone) - 5} more" if len(gone) > 5 else ""
            say(out, f"swept {len(gone)} files a killed run left: {names}{more}")
        try:
            unmatched = masters.remerge(root, out)
        except OSError as exc:
            unmatched = f"the merged data could not be rebuilt: {fsutil.describe(exc)}"
        yield unmatched


def status_confined(root: Path, master: str, out: TextIO) -> Installed | NotInstalled:
    """Master ``master``'s own section as ``status`` reports it, vouched for only
    when the merged pair tinydns serves matches the sections."""
    with session(root, out) as unmatched:
        where = masters.section(root, master)
        # Where this master's next push writes first: its section, else what makes it.
        first = next(p for p in (where, root / MASTERS, root) if p.is_dir())
        writable = can_write(root) and can_write(first)
        if unmatched is not None:
            return NotInstalled(unmatched, writable, master)
        try:
            with open_regular(where / "data") as f:
                content = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            return NotInstalled(None, writable, master)
        except NotRegular as exc:
            return NotInstalled(str(exc), writable, master)
        doubt = _merged_doubt(root)
        if doubt is not None:
            return NotInstalled(doubt, writable, master)
    body, trailer = stream.split(content)
    sha = hashlib.sha256(body if trailer else content).hexdigest()
    return Installed(sha, previous_serial(body[:_HEAD]), len(body), st.st_mtime, writable, master)


def _merged_doubt(root: Path) -> str | None:
    """Why the merged data.cdb may not be built from the merged ``data``; None if it is."""
    try:
        with open_regular(root / "data") as f:
            mtime_ns = os.fstat(f.fileno()).st_mtime_ns
    except FileNotFoundError:
        return "no merged data"
    except NotRegular as exc:
        return str(exc)
    return cdb_doubt(root, mtime_ns)


def install_confined(
    root: Path,
    confinement: Confinement,
    content: bytes,
    body: bytes,
    trailer: stream.Trailer,
    *,
    out: TextIO,
    edits: deltas.Delta | None,
    keep: int,
    force: bool = False,
) -> None:
    """Check, compile and install a confined master's push already read and verified."""
    name = confinement.master
    with session(root, out) as unmatched:
        where = masters.section(root, name)
        try:
            if edits is not None:
                body = rebuild(where, edits)
                content = body + trailer.line()
                say(out, f"rebuilt bytes={len(body)} sha256={trailer.sha256} from the delta")
            refuse_offences(body, confinement, only=_unchecked(where, confinement, edits, body))
            _refuse_overlaps(root, confinement)
            serial = previous_serial(body[:_HEAD])
            shown = serial if serial is not None else "none"
            if unmatched is not None:
                say(out, f"not repaired: {unmatched}; this push merges the pair again")
            copy_uncopied(where, out)
            if unmatched is None and _already_installed(root, where, content):
                _record_allow(where, confinement)
                say(out, "unchanged: data and data.cdb already installed")
            else:
                if not force:
                    refuse_older(where, body, serial)
                copy = _install(root, confinement, content, body, trailer, out=out, serial=serial)
                say(out, f"installed master {name} and the merged data and data.cdb")
                if copy is not None:
                    say(out, f"kept {MASTERS}/{name}/{copy}")
        except BaseException:
            with contextlib.suppress(OSError):
                _prune(where, keep)
            raise
        pruned = _prune(where, keep)
    if pruned:
        say(out, f"pruned {len(pruned)} old copies")
    say(out, f"done sha256={trailer.sha256} serial={shown}")


def _prune(where: Path, keep: int) -> list[str]:
    # A first push refused before its section was made has nothing to prune.
    return prune(where, keep) if where.is_dir() else []


def refuse_offences(body: bytes, confinement: Confinement, *, only: bytes | None = None) -> None:
    """Raise :class:`OutsideAllowlist` when a line of ``body`` is outside the allowlist.

    ``only``: the lines of ``body`` that may be new (:func:`_unchecked`); when none of
    them offends, the rest need no check. When one does, ``body`` is checked whole,
    so that each offence is named with its source line.
    """
    if only is not None and not offences(only, confinement.allowlist, limit=1):
        return
    found = offences(body, confinement.allowlist)
    if not found:
        return
    lines = [f"refused {o}" for o in found[:SHOWN]]
    if len(found) > SHOWN:
        lines.append(f"refused: and {len(found) - SHOWN} more")
    named = ", ".join(o.where for o in found[:_NAMED])
    if len(named) > _NAMED_MAX:  # zones file names are the master's to choose
        named = named[: _NAMED_MAX - 3] + "..."
    elif len(found) > _NAMED:
        named += ", ..."
    raise OutsideAllowlist(
        f"{len(found)} {_lines(len(found))} outside this master's allowlist: {named}", lines
    )


def _unchecked(
    where: Path, confinement: Confinement, edits: deltas.Delta | None, body: bytes
) -> bytes | None:
    """The lines of ``body`` the installed data does not vouch for, joined; None: all.

    The installed data passed this check when it was accepted, under the allowlist
    its allow file records; when that is this key's, a re-push of it needs no check
    and a delta only the lines it may have made new (:func:`_delta_lines`). A 1M-line
    master's one-line delta is then checked in a few lines, not a million.
    """
    try:
        if (where / ALLOW).read_bytes() != confinement.text():
            return None
        if edits is not None:
            return _delta_lines(edits, body)
        with open_regular(where / "data") as f:
            installed = f.read(len(body) + stream.TRAILER_MAX + 1)
    except (OSError, NotRegular):
        return None
    return b"" if stream.split(installed)[0] == body else None


def _delta_lines(edits: deltas.Delta, result: bytes) -> bytes | None:
    """The lines of ``result`` (``edits`` applied) that may not be whole lines of the
    installed data, joined; None for a delta of too many operations to be worth it.

    A line wholly inside one copy, after the copy's first line, is a whole line of
    the installed data (the newline before it was copied too). Every other line may
    be new: those with inserted bytes, and each copy's first and last line (a copy
    may begin mid-line, in a comment say, and make a line the installed data held
    only as text).
    """
    if len(edits.ops) > _DELTA_OPS_CHECKED:
        return None
    marks: list[tuple[int, int]] = []
    at = 0
    for op in edits.ops:
        size = len(op.text) if isinstance(op, deltas.Insert) else op.size
        first = -1 if isinstance(op, deltas.Insert) else result.find(b"\n", at, at + size)
        if first < 0:
            marks.append((at, at + size))
        else:
            marks.append((at, first + 1))
            marks.append((result.rfind(b"\n", at, at + size) + 1, at + size))
        at += size
    pieces = []
    done = 0  # where the lines taken so far end: always a line's start
    for start, end in marks:
        if end <= start:
            continue
        line_start = max(result.rfind(b"\n", 0, start) + 1, done)
        line_end = result.find(b"\n", end - 1)
        line_end = len(result) if line_end < 0 else line_end + 1
        if line_start < line_end:
            pieces.append(result[line_start:line_end])
            done = line_end
    return b"".join(pieces)


def _lines(n: int) -> str:
    return "line" if n == 1 else "lines"


def _refuse_overlaps(root: Path, confinement: Confinement) -> None:
    for other in masters.known(root):
        if other == confinement.master:
            continue
        theirs = masters.read_confinement(other, masters.section(root, other) / ALLOW)
        if theirs is None:
            continue
        why = overlaps(confinement.master, confinement.allowlist, other, theirs.allowlist)
        if why is not None:
            raise Refused(why)


def _record_allow(where: Path, confinement: Confinement) -> None:
    """The allow file made to say what the key line says now, if it does not."""
    text = confinement.text()
    with contextlib.suppress(OSError):
        if (where / ALLOW).read_bytes() == text:
            return
    tmp = fsutil.stage(where / ALLOW, lambda fd: fsutil.write_all(fd, text))
    try:
        fsutil.publish([(tmp, where / ALLOW)])
    except BaseException:
        fsutil.discard([tmp])
        raise


def _already_installed(root: Path, where: Path, content: bytes) -> bool:
    """Whether the section holds exactly ``content`` and the merged pair is whole.

    The caller holds the lock, with any interrupted install merged again, so the
    merged pair holds what the sections hold.
    """
    try:
        with open_regular(where / "data") as f:
            if f.read(len(content) + 1) != content:
                return False
        if _merged_doubt(root) is not None:
            return False
        return os.lstat(root / "data.cdb").st_ctime_ns <= os.lstat(root / "data").st_ctime_ns
    except (OSError, NotRegular):
        return False


def _install(
    root: Path,
    confinement: Confinement,
    content: bytes,
    body: bytes,
    trailer: stream.Trailer,
    *,
    out: TextIO,
    serial: int | None,
) -> str | None:
    """Compile, stage this section's files and the merged pair, install them; the
    name of the copy kept. The caller holds the lock; nothing is left on failure."""
    name = confinement.master
    where = masters.section(root, name)
    try:
        packed = masters.compile_packed(content)
    except TinydnsDataError as exc:
        raise Refused(
            f"data does not compile: line {exc.lineno}: {printable(exc.reason)}"
        ) from None
    say(out, f"compiled records={packed.count} serial={serial if serial is not None else 'none'}")
    # Made only now, by a push that passed every check: an empty masters/ would make
    # the root refuse its unconfined key.
    masters.make_dir(root / MASTERS)
    masters.make_dir(where)
    staged: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            data_tmp = fsutil.stage(where / "data", lambda fd: fsutil.write_all(fd, content))
            staged.append(data_tmp)
            st = data_tmp.stat()
            stamp = records.Stamp(st.st_size, st.st_mtime_ns, trailer.sha256, len(body))
            staged.append(records.stage(where, stamp, packed))
            text = confinement.text()
            staged.append(fsutil.stage(where / ALLOW, lambda fd: fsutil.write_all(fd, text)))
            parts = [
                masters.part_of(stack, root, other, out)
                for other in masters.known(root)
                if other != name
            ]
            parts.append(Part(name, data_tmp, stamp, serial, packed))
            merged = masters.stage_merged(root, parts)
            staged += merged
            moves = [
                (staged[1], where / records.RECORDS),
                (staged[2], where / ALLOW),
                (data_tmp, where / "data"),
            ]
            masters.install(root, moves, merged)
    except CdbTooLarge as exc:
        fsutil.discard(staged)
        raise Refused(f"the merged data does not fit a cdb: {exc}") from None
    except BaseException:
        fsutil.discard(staged)
        raise
    try:
        return keep_copy(where)
    except OSError as exc:
        say(out, f"warning: no copy kept: {fsutil.describe(exc)}")
        return None
