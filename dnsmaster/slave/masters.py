"""A root serving confined masters: their sections, and the merged pair tinydns serves.

::

    ROOT/data, ROOT/data.cdb     the merged pair, installed under the root's journal
    ROOT/masters/NAME/data       NAME's data as received (trailer included), and its
                                 timestamped copies beside it
    ROOT/masters/NAME/records    NAME's compiled records (:mod:`dnsmaster.slave.records`)
    ROOT/masters/NAME/allow      NAME's allowlist at its last accepted push

The merged ``data`` is ``# dnsmaster merged masters=A,B``, then for each master in
name order ``# dnsmaster master NAME sha256=H serial=N`` and that master's data
without its trailer line. Comment lines make no records and tinydns-data compiles
line by line, so the merged data.cdb is every section's records one after another,
written from the kept records (:func:`dnsmaster.core.cdb.write_packed`), with the
default serial of the merged ``data`` file as tinydns-data would take it.

An install (:func:`install`) writes the root's journal first, renames the
section's files in (``data`` last), then data.cdb and ``data``, and clears the
journal: a crash anywhere leaves the journal, and the next run under the lock
merges again from what the sections hold (:func:`remerge`). Records are checked
against the ``data`` beside them, so a section whose ``data`` did not make it keeps
being merged as it was.

Directories are made group-writable and setgid (one account per master, sharing a
group: another account's files are replaced by rename, which needs write permission
on the directory only); files are 0644, data.cdb readable by tinydns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dnsmaster import fsutil
from dnsmaster.core import cdb
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.compiler import PackedRecords, compile_text, default_serial
from dnsmaster.core.confine import MASTER_NAME, Allowlist, check_master_name, domain_text
from dnsmaster.core.text import printable
from dnsmaster.errors import AllowlistError, CdbTooLarge, TinydnsDataError
from dnsmaster.slave import records
from dnsmaster.slave.outcome import SectionBroken, Usage, say

__all__ = [
    "ALLOW",
    "DIR_MODE",
    "MASTERS",
    "Confinement",
    "Part",
    "SectionBroken",
    "check_name",
    "compile_packed",
    "install",
    "known",
    "make_dir",
    "part_of",
    "parts",
    "read_confinement",
    "remerge",
    "section",
    "stage_merged",
    "sweep",
]

#: The directory of the sections; its presence makes a root a confined one.
MASTERS = "masters"
#: A section's allowlist file.
ALLOW = "allow"
#: Directories the receiver makes: group-writable, setgid (the group is inherited).
DIR_MODE = 0o2775

# What a killed run leaves in a section: staged files, copies' second names, and a
# removed section not yet deleted (``masters/.removed.NAME.PID``).
_SECTION_LITTER = re.compile(r"\.(?:data|records|allow)\..*\.(?:tmp|link)", re.DOTALL)
_REMOVED = re.compile(r"\.removed\..*", re.DOTALL)
_HEAD = 256


def check_name(name: str) -> str:
    """``name`` if it may name a master (a directory on the slave), else :class:`Usage`."""
    try:
        check_master_name(name)
    except AllowlistError as exc:
        raise Usage(f"--master {exc}") from None
    return name


@dataclass(frozen=True, slots=True)
class Confinement:
    """A confined master as its key line names it: its name and allowlist."""

    master: str
    allowlist: Allowlist

    def words(self) -> tuple[list[str], list[str], bool]:
        """The allowlist as options would give it again: allowed, excepted, locations."""
        a = self.allowlist
        allowed = [domain_text(d) for d in a.allowed]
        return allowed, [domain_text(d) for d in a.excepted], a.locations

    def text(self) -> bytes:
        """The allow file's content."""
        allowed, excepted, locations = self.words()
        lines = [f"allow {d}" for d in allowed] + [f"except {d}" for d in excepted]
        lines.append(f"locations {_yes_no(locations)}")
        return ("\n".join(lines) + "\n").encode()

    def shown(self) -> str:
        """``allow=a.example,b.example except= locations=no`` (``--masters``)."""
        allowed, excepted, locations = self.words()
        # domain_text escapes every byte but [a-z0-9*_-] and the dot: no comma or blank.
        return (
            f"allow={','.join(allowed)} except={','.join(excepted)} locations={_yes_no(locations)}"
        )


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def read_confinement(name: str, path: Path) -> Confinement | None:
    """The allow file at ``path``; None when there is none. A file that is not one
    raises :class:`SectionBroken`."""
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, IsADirectoryError):
        raise SectionBroken(f"master {name}: {ALLOW} is not an allow file") from None
    allow, excepts, locations = [], [], False
    for line in text.splitlines():
        word, _, value = line.partition(" ")
        if word == "allow" and value:
            allow.append(value)
        elif word == "except" and value:
            excepts.append(value)
        elif word == "locations" and value in ("yes", "no"):
            locations = value == "yes"
        else:
            raise SectionBroken(f"master {name}: {ALLOW}: unexpected line '{printable(line)}'")
    try:
        return Confinement(name, Allowlist.parse(allow, excepts, locations))
    except AllowlistError as exc:
        raise SectionBroken(f"master {name}: {ALLOW}: {exc}") from None


def section(root: Path, name: str) -> Path:
    return root / MASTERS / name


def known(root: Path) -> list[str]:
    """The masters of a confined root, by name: the sections that hold a ``data``."""
    try:
        entries = sorted(os.listdir(root / MASTERS))
    except FileNotFoundError:
        return []
    return [
        n
        for n in entries
        if MASTER_NAME.fullmatch(n) and os.path.lexists(root / MASTERS / n / "data")
    ]


def make_dir(path: Path) -> None:
    """``path`` made if missing, with :data:`DIR_MODE` whatever the umask."""
    try:
        path.mkdir()
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)
    # The install fsyncs the directories it renames into, not their parents.
    fsutil.fsync_directory(path.parent)


def sweep(root: Path) -> list[str]:
    """Remove what killed runs left in the sections (the root itself is swept by
    :func:`dnsmaster.fsutil.sweep_litter`); the names, relative to ``masters/``.

    The caller holds the root's lock.
    """
    gone: list[str] = []
    base = root / MASTERS
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return gone
    for name in names:
        path = base / name
        if _REMOVED.fullmatch(name):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(name)
        elif _SECTION_LITTER.fullmatch(name):  # a probe of status's (can_write)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                gone.append(name)
        elif MASTER_NAME.fullmatch(name) and path.is_dir() and not path.is_symlink():
            with os.scandir(path) as entries:
                for entry in entries:
                    if _SECTION_LITTER.fullmatch(entry.name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            gone.append(f"{name}/{entry.name}")
    return gone


def compile_packed(content: bytes) -> cdb.Packed:
    """``content`` compiled into packed records (raises TinydnsDataError).

    Packed on the pure-Python path too (the bundle without C): the merged data.cdb is
    then unpacked and written in Python, slower than with C but still without
    compiling the other masters' data again.
    """
    packed = PackedRecords()
    compile_text(content, 0, packed=packed)
    return cdb.Packed(memoryview(packed.blob), tuple(packed.serials), packed.count)


@dataclass(frozen=True, slots=True)
class Part:
    """One master's share of the merged pair: its ``data`` file (of which the
    merged data takes ``stamp.body`` bytes) and its records."""

    name: str
    data: Path
    stamp: records.Stamp
    serial: int | None
    packed: cdb.Packed


def part_of(stack: contextlib.ExitStack, root: Path, name: str, out: TextIO) -> Part:
    """Master ``name``'s part from its section, its records rebuilt when they are
    stale; held open by ``stack``.

    Raises :class:`SectionBroken` when they cannot be (and OSError as it comes).
    """
    where = section(root, name)
    path = where / "data"
    try:
        stamp = records.stamp_of(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SectionBroken(f"master {name}: data is a symbolic link") from None
        raise
    packed = stack.enter_context(records.opened(where, stamp))
    if packed is None:
        content = path.read_bytes()
        try:
            fresh = compile_packed(content)
        except TinydnsDataError as exc:
            raise SectionBroken(
                f"master {name}: data does not compile: line {exc.lineno}: {printable(exc.reason)}"
            ) from None
        # Written back, so the next merge finds them; a failure costs time only.
        with contextlib.suppress(OSError):
            tmp = records.stage(where, stamp, fresh)
            try:
                fsutil.publish([(tmp, where / records.RECORDS)])
            except OSError:
                fsutil.discard([tmp])
                raise
            say(out, f"rebuilt the records of master {name}")
        packed = fresh
    with path.open("rb") as f:
        serial = previous_serial(f.read(_HEAD))
    return Part(name, path, stamp, serial, packed)


def stage_merged(root: Path, parts: Sequence[Part]) -> tuple[Path, Path]:
    """Stage the merged ``data`` and data.cdb of ``parts`` (in name order) in ``root``;
    the two temp paths. Raises CdbTooLarge, OSError; removes its temp files then."""
    ordered = sorted(parts, key=lambda p: p.name)

    def write_data(fd: int) -> None:
        names = ",".join(p.name for p in ordered)
        fsutil.write_all(fd, f"# dnsmaster merged masters={names}\n".encode())
        for p in ordered:
            serial = "none" if p.serial is None else str(p.serial)
            head = f"# dnsmaster master {p.name} sha256={p.stamp.sha256} serial={serial}\n"
            fsutil.write_all(fd, head.encode())
            _copy(p.data, fd, p.stamp.body)

    staged = [fsutil.stage(root / "data", write_data)]
    try:
        mtime = staged[0].stat().st_mtime_ns // 10**9
        serial = default_serial(mtime)
        packs = [p.packed for p in ordered]
        staged.append(
            fsutil.stage(root / "data.cdb", lambda fd: cdb.write_packed(fd, packs, serial))
        )
    except BaseException:
        fsutil.discard(staged)
        raise
    return staged[0], staged[1]


def _copy(source: Path, fd: int, count: int) -> None:
    """The first ``count`` bytes of ``source`` appended to ``fd``: in the kernel where
    it can (a big master's data never passes through this process), else read and
    written a MiB at a time."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        left = count
        # Both offsets move with what is copied, so the fallback goes on from there.
        with contextlib.suppress(OSError):
            while left:
                done = os.copy_file_range(src, fd, left)
                if not done:
                    break
                left -= done
        while left:
            chunk = os.read(src, min(left, 1 << 20))
            if not chunk:
                raise OSError(errno.EIO, "the data changed while it was merged", str(source))
            fsutil.write_all(fd, chunk)
            left -= len(chunk)
    finally:
        os.close(src)


def install(
    root: Path,
    moves: Sequence[tuple[Path, Path]],
    merged: tuple[Path, Path],
) -> None:
    """Rename ``moves`` (a section's files, or a section away) and then the merged
    pair into place, under the root's journal; the caller holds the lock.

    The journal is made durable before the first rename and removed after the last;
    a failure in between keeps it, and the next run merges again from the sections.
    """
    journal = root / fsutil.JOURNAL
    made = False
    if not os.path.lexists(journal):
        # Created, never truncated: a journal another account left is not ours to open.
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o664)
        try:
            fsutil.write_all(fd, b"installing merged data\n")
        finally:
            os.close(fd)
        made = True
        fsutil.fsync_directory(root)
    renamed = False
    try:
        dirs = set()
        for tmp, final in moves:
            os.replace(tmp, final)
            renamed = True
            dirs.add(final.parent)
        for directory in sorted(dirs):
            fsutil.fsync_directory(directory)
        os.replace(merged[1], root / "data.cdb")
        renamed = True
    except OSError:
        if made and not renamed:
            # Nothing moved: the old state stands, and no rebuild is owed.
            with contextlib.suppress(OSError):
                os.unlink(journal)
        raise
    os.replace(merged[0], root / "data")
    fsutil.fsync_directory(root)
    fsutil.clear_interrupted(root)


@contextlib.contextmanager
def parts(root: Path, out: TextIO, *, skip: str | None = None) -> Iterator[list[Part]]:
    """Every master's part but ``skip``'s, open for the ``with`` block."""
    with contextlib.ExitStack() as stack:
        yield [part_of(stack, root, name, out) for name in known(root) if name != skip]


def remerge(root: Path, out: TextIO) -> str | None:
    """Merge again from the sections when an install was cut short; None once the
    merged pair matches them, else why it does not (the journal is kept then)."""
    if not fsutil.interrupted_install(root):
        return None
    try:
        with parts(root, out) as found:
            staged = stage_merged(root, found)
            try:
                install(root, [], staged)
            except BaseException:
                fsutil.discard(staged)
                raise
    except SectionBroken as exc:
        return f"an install was cut short and {exc}"
    except CdbTooLarge as exc:
        return f"an install was cut short and data.cdb cannot be rebuilt: {exc}"
    say(out, "repaired: merged data and data.cdb again from the masters' sections")
    return None
