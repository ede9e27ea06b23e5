"""The zones directory as a build reads it: which files are sources, and their content.

The directory is not trusted: only regular files (or symlinks to them) are read,
never a FIFO or a device that would block or never end, each up to a size cap, and
a name with a control character is refused rather than written into a
``# zones.X:LINE`` comment of ``data``.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import re
import stat
import time
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from typing import cast

from dnsmaster import fsutil
from dnsmaster.core.sources import HEADER, JUNK_SUFFIXES, source_order, why_skipped
from dnsmaster.core.text import has_control, printable
from dnsmaster.errors import BuildError

__all__ = ["DEFAULT_MAX_FILE_SIZE", "Stat", "ZonesDir", "list_sources"]

#: The largest zones file read: far above any real one (1M lines are about 50 MB),
#: far below what would exhaust memory.
DEFAULT_MAX_FILE_SIZE = 256 * 1024 * 1024

_JUNK = JUNK_SUFFIXES
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

#: What says a file is unchanged without reading it: device, inode, size, mtime, ctime.
Stat = tuple[int, ...]

_FIELDS = operator.attrgetter("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
_NAME = operator.attrgetter("name")
_IS_DIR, _IS_LINK = os.DirEntry.is_dir, os.DirEntry.is_symlink
# A directory changed this recently is listed again next time (see ZonesDir.scan).
_RACY_NS = 2_000_000_000
# zones directory -> its stat before its last listing, the sources and the skipped
_LISTED: dict[str, tuple[Stat, list[str], list[tuple[str, str]]]] = {}
_LISTINGS = 8


@dataclass(frozen=True, slots=True)
class ZonesDir:
    """One zones directory, read with a cap on each file."""

    path: Path
    max_file_size: int = DEFAULT_MAX_FILE_SIZE

    def scan(self) -> tuple[list[str], list[tuple[str, str]]]:
        """The sources in build order, and the look-alikes skipped with why.

        The last listing of the directory is taken again while the directory's own
        stat is the one taken before that listing: a name that comes, goes or is
        renamed changes the directory's mtime, and a file written in place changes
        no name. As with a file's stat (git's racy-clean rule), a directory changed
        in the two seconds before its listing is listed again next time; and a
        listing with a symlink in it is not kept (what it points to may become a
        directory without the directory changing).
        """
        key = str(self.path)
        before = _directory_stat(self.path)
        kept = _LISTED.get(key)
        if kept is not None and before is not None and kept[0] == before:
            return list(kept[1]), list(kept[2])
        try:
            names, skipped, links = _listing(self.path)
        except FileNotFoundError:
            raise BuildError(str(self.path), "zones directory does not exist") from None
        except NotADirectoryError:
            raise BuildError(str(self.path), "is not a directory") from None
        except OSError as exc:
            raise BuildError(str(self.path), f"cannot list: {fsutil.describe(exc)}") from None
        # One search of all the names, not one per name: a directory may hold 100,000.
        if _CONTROL.search("".join(names)):
            for name in names:
                if has_control(name):
                    # It would be written into a "# zones.X:LINE" comment of data, where
                    # a newline starts a line of its own: a record nobody wrote.
                    raise BuildError(
                        printable(str(self.path / name)),
                        "file name contains a control character; rename the file",
                    )
        _LISTED.pop(key, None)
        if before is not None and not links and max(before[3:]) < time.time_ns() - _RACY_NS:
            while len(_LISTED) >= _LISTINGS:  # one zones directory a process, but tests
                del _LISTED[next(iter(_LISTED))]
            _LISTED[key] = (before, list(names), list(skipped))
        return names, skipped

    def stat(self, name: str) -> Stat | None:
        """The file's :data:`Stat`; None when it cannot be had (:meth:`read` says why)."""
        return self.stats([name])[name]

    def stats(self, names: list[str]) -> dict[str, Stat | None]:
        """:meth:`stat` of each of ``names``, relative to one open directory: no path
        is made per file, and while no stat fails no statement runs per file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return dict.fromkeys(names)
        try:
            with contextlib.suppress(OSError):
                taken = map(functools.partial(os.stat, dir_fd=fd), names)
                return dict(zip(names, map(_FIELDS, taken), strict=True))
            # one failed (a file removed since the listing): each on its own
            found: dict[str, Stat | None] = dict.fromkeys(names)
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd)
                except OSError:
                    continue
                found[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        finally:
            os.close(fd)
        return found

    def read(self, name: str) -> bytes:
        """The content of a regular file, whatever else sits under its name.

        A FIFO would block the open and then the read for ever, /dev/zero would
        never end: the open does not block (O_NONBLOCK), the descriptor is checked
        for a regular file, and the read stops at the cap.
        """
        path = self.path / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise BuildError(str(path), f"cannot read: {fsutil.describe(exc)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(
                    str(path),
                    f"not a regular file ({_kind(st.st_mode)}); "
                    "zones files must be plain files or symlinks to them",
                )
            if st.st_size > self.max_file_size:
                raise BuildError(str(path), self._too_large())
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > self.max_file_size:  # it grew while we read it
                    raise BuildError(str(path), self._too_large())
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise BuildError(str(path), f"cannot read: {fsutil.describe(exc)}") from None
        finally:
            os.close(fd)

    def _too_large(self) -> str:
        return f"larger than the cap of {self.max_file_size} bytes for one zones file"


def list_sources(zones: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The sources in ``zones`` in build order, and the look-alikes skipped with why
    (``zones.x~``: an editor backup), by name.

    What build, check and doctor count, so that they never disagree. Raises OSError
    when the directory cannot be listed.
    """
    names, skipped, _ = _listing(zones)
    return names, skipped


def _listing(zones: Path) -> tuple[list[str], list[tuple[str, str]], bool]:
    """:func:`list_sources`, and whether a symlink was among the entries."""
    with os.scandir(zones) as listed:
        entries = list(listed)
    # map and compress: no statement per entry (a directory may hold 100,000)
    names = list(compress(map(_NAME, entries), map(operator.not_, map(_IS_DIR, entries))))
    links = any(map(_IS_LINK, entries))
    skipped = []
    # the common case first, by map: zones.X, not junk (why_skipped for the rest)
    common = map(
        operator.and_,
        map(str.startswith, names, repeat("zones.")),
        map(operator.gt, map(len, names), repeat(6)),
    )
    plain = list(
        map(operator.and_, common, map(operator.not_, map(str.endswith, names, repeat(_JUNK))))
    )
    chosen = list(compress(names, plain))
    for name in compress(names, map(operator.not_, plain)):
        reason = why_skipped(name)
        if reason is None:
            chosen.append(name)
        # Only what looks meant as data is worth a word; the rest is simply not ours.
        elif name.startswith((".", "#")) or "zones." in name:
            skipped.append((name, reason))
    skipped.sort()
    # Code point order is UTF-8 byte order but for undecodable bytes (surrogates):
    # most directories hold ASCII names alone, sorted without a key.
    if "".join(chosen).isascii():
        files = sorted(chosen)
        if HEADER not in files:
            return files, skipped, links
        files.remove(HEADER)
        return [HEADER, *files], skipped, links
    return source_order(chosen), skipped, links


def _directory_stat(path: Path) -> Stat | None:
    try:
        return cast("Stat", _FIELDS(os.stat(path)))
    except OSError:
        return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a plain file"
