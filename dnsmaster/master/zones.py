"""The zones directory as a build reads it: which files are sources, and their content.

The directory is not trusted: only regular files (or symlinks to them) are read,
never a FIFO or a device that would block or never end, each up to a size cap, and
a name with a control character is refused rather than written into a
``# zones.X:LINE`` comment of ``data``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class ZonesDir:
    """One zones directory, read with a cap on each file."""

    path: Path
    max_file_size: int = DEFAULT_MAX_FILE_SIZE

    def scan(self) -> tuple[list[str], list[tuple[str, str]]]:
        """The sources in build order, and the look-alikes skipped with why."""
        try:
            names, skipped = list_sources(self.path)
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
        return names, skipped

    def stat(self, name: str) -> Stat | None:
        """The file's :data:`Stat`; None when it cannot be had (:meth:`read` says why)."""
        return self.stats([name])[name]

    def stats(self, names: list[str]) -> dict[str, Stat | None]:
        """:meth:`stat` of each of ``names``, relative to one open directory: no path
        is made per file."""
        found: dict[str, Stat | None] = dict.fromkeys(names)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return found
        try:
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
    with os.scandir(zones) as entries:
        names = [e.name for e in entries if not e.is_dir()]
    skipped = []
    chosen = []
    for name in names:
        # the common case first: one test per name, not why_skipped's five
        if name.startswith("zones.") and not name.endswith(_JUNK) and len(name) > 6:
            chosen.append(name)
            continue
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
        files = sorted(name for name in chosen if name != HEADER)
        return ([HEADER] if len(files) < len(chosen) else []) + files, skipped
    return source_order(chosen), skipped


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
