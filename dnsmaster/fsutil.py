"""Replacing files so that readers only ever see a whole old or a whole new file.

A file is written to a temp file in the same directory, fsynced, and renamed over
the old one; then the directory is fsynced so the rename survives a crash. Nothing
here leaves a partial file under the final name, whatever fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["describe", "discard", "publish", "stage", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def stage(path: Path, write: Callable[[int], None], mode: int = 0o644) -> Path:
    """Write a complete, fsynced temp file beside ``path``; return the temp path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        write(fd)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return Path(tmp)


def publish(staged: Iterable[tuple[Path, Path]]) -> None:
    """Rename each (temp, final) pair into place, then make the renames durable."""
    dirs = set()
    for tmp, final in staged:
        os.replace(tmp, final)
        dirs.add(final.parent)
    for directory in dirs:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard(paths: Iterable[Path]) -> None:
    """Remove temp files that will not be published."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


# djbdns' own wording for errno values (spec §7.3); the drop-in tinydns-data must
# print exactly these, and the rest of dnsmaster uses them to stay consistent.
_DJB = {
    0: "no error",
    errno.ENOENT: "file does not exist",
    errno.EACCES: "access denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
    errno.ENOSPC: "out of disk space",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
    errno.EXDEV: "cross-device link",
    errno.EFBIG: "file too big",
    errno.ENOMEM: "out of memory",
    errno.EPROTO: "protocol error",
    errno.ELOOP: "symbolic link loop",
    errno.ENAMETOOLONG: "file name too long",
    errno.EINVAL: "invalid argument",
    errno.EBUSY: "device busy",
    errno.EMFILE: "process cannot open more files",
    errno.ENFILE: "system cannot open more files",
    errno.EBADF: "file descriptor not open",
}


def describe(exc: OSError) -> str:
    """The errno of ``exc`` in djbdns' words, or the system's text for others."""
    if exc.errno in _DJB:
        return _DJB[exc.errno]
    return os.strerror(exc.errno) if exc.errno else str(exc)
