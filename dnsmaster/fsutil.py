"""Replacing files so that readers only ever see a whole old or a whole new file.

A file is written to a temp file in the same directory, fsynced, and renamed over
the old one; then the directory is fsynced so the rename survives a crash. Nothing
here leaves a partial file under the final name, whatever fails.

``data`` and ``data.cdb`` are a pair, and no rename swaps two names at once. So a
pair is installed under a journal (:func:`install_pair`): a crash between the two
renames leaves the journal behind, and the next run that takes the directory's lock
(:func:`locked`) sees it (:func:`interrupted_install`), rebuilds data.cdb from the
``data`` there and clears it. data.cdb is renamed first: without the journal, a
half-done install still shows the *old* ``data``, which makes the master push
again, never the new ``data`` beside an old data.cdb.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = [
    "JOURNAL",
    "DirectoryLock",
    "account",
    "clear_interrupted",
    "describe",
    "discard",
    "file_signature",
    "fsync_directory",
    "home",
    "install_pair",
    "interrupted_install",
    "locked",
    "make_temp",
    "publish",
    "stage",
    "sweep_litter",
    "user_name",
    "write_all",
]

#: Present in a directory while a data/data.cdb pair is being installed there.
JOURNAL = ".dnsmaster-installing"

# What a killed builder or receiver leaves: staged temp files of data, data.cdb and
# the receiver's copies (``.data.*.tmp``, ``.data.cdb.*.tmp``) and the receiver's
# second name for a copy (``.data.PID.link``).
_LITTER = re.compile(r"\.data\..*\.(?:tmp|link)", re.DOTALL)


def file_signature(path: os.PathLike[str] | str | None) -> tuple[int, int, int, int] | None:
    """What tells a changed file from an unchanged one without reading it (device,
    inode, size, mtime); None when it cannot be stat'ed. An editor's rename and an
    in-place write both change it. Here, not beside the host key checks that use
    it, so that the daemon's slave workers need not import asyncssh for it."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is out (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def make_temp(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.XXXXXXXX.tmp`` beside ``path``, mode 0600, open for reading
    and writing: tempfile.mkstemp's file, without importing tempfile (and shutil,
    random...), which a receiver starting once per push would pay for."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        name = "".join(_NAME_CHARS[b % len(_NAME_CHARS)] for b in os.urandom(8))
        tmp = path.parent / f".{path.name}.{name}.tmp"
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue


def stage(
    path: Path, write: Callable[[int], None], mode: int = 0o644, *, fsync: bool = True
) -> Path:
    """Write a complete temp file beside ``path``, fsynced unless ``fsync`` is False
    (for files whose reader checks them whole); return the temp path."""
    fd, tmp = make_temp(path)
    try:
        write(fd)
        os.fchmod(fd, mode)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def publish(staged: Iterable[tuple[Path, Path]]) -> None:
    """Rename each (temp, final) pair into place, then make the renames durable."""
    dirs = set()
    for tmp, final in staged:
        os.replace(tmp, final)
        dirs.add(final.parent)
    for directory in dirs:
        fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive ``flock`` on a directory itself, held until :meth:`release`.

    The lock is on the directory, not on a file in it, so nothing is left behind
    and ``flock DIR command`` (util-linux) takes the same lock from a shell. It is
    released when the process dies, however it dies.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; whether we have it now."""
        assert self._fd is not None, "released"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self) -> None:
        """Take the lock, waiting for as long as another process holds it."""
        assert self._fd is not None, "released"
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the lock


@contextlib.contextmanager
def locked(directory: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold :class:`DirectoryLock` on ``directory`` for the ``with`` block.

    When another process holds it, ``on_wait`` is called once before waiting.
    """
    lock = DirectoryLock(directory)
    try:
        if not lock.try_acquire():
            if on_wait is not None:
                on_wait()
            lock.acquire()
        yield
    finally:
        lock.release()


def install_pair(directory: Path, data_tmp: Path, cdb_tmp: Path, sha256: str) -> None:
    """Rename staged ``data`` and ``data.cdb`` into ``directory`` as one pair.

    The caller holds :func:`locked` on ``directory``, and both temp files are
    complete and fsynced (:func:`stage`). The journal's name is made durable before
    the first rename (its content is for people only, so it is not fsynced) and it
    is removed after the last, so any crash in between is seen by
    :func:`interrupted_install`.
    """
    journal = directory / JOURNAL
    text = f"installing data sha256={sha256}\n".encode()
    try:
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, text)
        finally:
            os.close(fd)
        fsync_directory(directory)
        os.replace(cdb_tmp, directory / "data.cdb")
    except OSError:
        # Nothing was renamed: the pair is untouched. A journal left behind would make
        # the next run rebuild data.cdb for nothing, and after a full disk (the usual
        # reason to get here) that rebuild needs the very space that just ran out.
        # Only OSError: a signal's exception may come after the rename went through.
        with contextlib.suppress(OSError):
            os.unlink(journal)
        raise
    os.replace(data_tmp, directory / "data")
    fsync_directory(directory)
    clear_interrupted(directory)


def interrupted_install(directory: Path) -> bool:
    """Whether an install of a pair into ``directory`` was cut short.

    ``data`` is then whole (old or new) but data.cdb may not be the one built from
    it: the caller, holding the lock, rebuilds data.cdb from ``data`` and calls
    :func:`clear_interrupted`.
    """
    return os.path.lexists(directory / JOURNAL)


def clear_interrupted(directory: Path) -> None:
    """Remove the journal: the pair in ``directory`` matches again.

    Not fsynced: a removal lost in a crash brings the journal back, and the next run
    rebuilds a data.cdb that was right already, which costs time, not correctness.
    Every push is spared a directory fsync.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(directory / JOURNAL)


def sweep_litter(directory: Path) -> list[str]:
    """Remove what killed builders and receivers left in ``directory``; the names.

    Only safe while holding :func:`locked`: a live writer's temp files look the same.
    """
    gone = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if _LITTER.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    gone.append(entry.name)
    return sorted(gone)


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


def user_name() -> str:
    """The running account's name (``uid N`` when it has no passwd entry)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def account() -> str:
    """The running account as an error names it: ``user dnsmaster (uid 998)``.

    A file the daemon cannot read is readable by someone: the message must say who
    tried, since a supervised daemon runs as its own account, not the operator's.
    """
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid} (no passwd entry)"


def home() -> Path | None:
    """The running account's home directory from its passwd entry; None without one.

    Never ``$HOME``: a supervisor started from root's shell passes ``HOME=/root`` to a
    service that then runs as another account, and ``~`` must still mean that
    account's own files.
    """
    try:
        return Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return None
