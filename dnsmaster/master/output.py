"""The output directory as a build writes it: ``data`` and ``data.cdb`` installed as
one pair, or nothing at all, and each build kept for rollback.

Both files are staged as complete, fsynced temp files and renamed into place under
a journal (:func:`dnsmaster.fsutil.install_pair`); any error raises before the first
rename, so the directory is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.core import cdb
from dnsmaster.core.makedata import assemble_text, built_from, fingerprint
from dnsmaster.errors import ArchiveError, BuildError, CdbTooLarge
from dnsmaster.log import get_logger
from dnsmaster.master.archive import Archive
from dnsmaster.master.buildcache import Ready

__all__ = ["cannot_write", "check_output", "head", "keep", "unchanged", "write_pair"]


def check_output(output: Path) -> None:
    """Raise BuildError unless ``output`` is a directory this process can write."""
    if not output.is_dir():
        reason = "does not exist" if not output.exists() else "is not a directory"
        raise BuildError(str(output), f"output directory {reason}")
    if not os.access(output, os.W_OK | os.X_OK):
        raise BuildError(str(output), "output directory is not writable")


def cannot_write(output: Path, exc: OSError) -> BuildError:
    """The BuildError for a failed write in ``output``."""
    where = exc.filename or str(output)
    return BuildError(str(where), f"cannot write: {fsutil.describe(exc)}")


def head(path: Path) -> bytes:
    """The first line of ``path`` (the banner of a ``data``), or b"" when unreadable."""
    try:
        with path.open("rb") as f:
            return f.readline(200)
    except OSError:
        return b""


def unchanged(
    output: Path, compiled: list[Ready], data_head: bytes, *, ipv6_int: bool, catalog: str = ""
) -> bool:
    """Whether the pair in ``output`` is complete and was built from these sources
    (with these options: see :func:`dnsmaster.core.makedata.fingerprint`)."""
    pairs = [(src.name, src.digest) for src in compiled]
    sources = fingerprint(pairs, ipv6_int=ipv6_int, catalog=catalog)
    return (
        built_from(data_head) == sources
        and not fsutil.interrupted_install(output)
        and (output / "data.cdb").is_file()
    )


def write_pair(
    output: Path, compiled: list[Ready], serial: int, *, ipv6_int: bool, catalog: str = ""
) -> tuple[bytes, list[int], str]:
    """Stage both files, then install them as a pair.

    ``catalog`` is the catalog zone's name when the last of ``compiled`` is the
    catalog's section (it goes into the banner's fingerprint).

    Returns ``data``, the offsets of its serials, and its sha256 in hex. A thread
    joins ``data`` and hashes, writes and fsyncs it while this one writes the cdb
    from the sources' packed records: but for the join, both spend their time in
    hashlib, the C writer and system calls, which release the GIL, so on two
    cores they overlap.
    """
    data_final = output / "data"
    cdb_final = output / "data.cdb"
    records = [src.records for src in compiled]

    def stage_data() -> tuple[bytes, list[int], Path, str]:
        data, stamps = assemble_text(compiled, serial, ipv6_int=ipv6_int, catalog=catalog)
        sha256 = hashlib.sha256(data).hexdigest()
        tmp = fsutil.stage(data_final, lambda fd: fsutil.write_all(fd, data))
        return data, stamps, tmp, sha256

    failure: BaseException | None = None
    data_tmp: Path | None = None
    cdb_tmp: Path | None = None
    data = b""
    stamps: list[int] = []
    sha256 = ""
    with ThreadPoolExecutor(max_workers=1) as pool:
        data_job = pool.submit(stage_data)
        try:
            cdb_tmp = fsutil.stage(cdb_final, lambda fd: cdb.write_packed(fd, records, serial))
        except OSError as exc:
            failure = cannot_write(output, exc)
        except CdbTooLarge as exc:
            failure = BuildError(str(cdb_final), str(exc))
        except BaseException as exc:  # out of memory: the data thread's file goes too
            failure = exc
        try:
            data, stamps, data_tmp, sha256 = data_job.result()
        except OSError as exc:
            # data is written first in spirit: its error is the one to report
            failure = cannot_write(output, exc)
        except BaseException as exc:  # out of memory joining data
            failure = exc
    staged = [tmp for tmp in (data_tmp, cdb_tmp) if tmp is not None]
    if failure is not None or data_tmp is None or cdb_tmp is None:
        fsutil.discard(staged)
        raise failure or BuildError(str(output), "cannot write")
    try:
        # One pair, under a journal: a crash between the two renames is seen by
        # the next run (is_current is then false, and it builds both again).
        fsutil.install_pair(output, data_tmp, cdb_tmp, sha256)
    except OSError as exc:
        fsutil.discard(staged)
        raise cannot_write(output, exc) from None
    return data, stamps, sha256


def keep(
    output: Path,
    *,
    count: int,
    data: bytes,
    serial: int,
    sha256: str,
    stamps: list[int],
    now: float,
) -> None:
    """Keep the installed build for rollback; a failure is logged, never fatal.

    The build is on disk already: losing a rollback point must not cost the
    operator the build itself (nor the push that follows it).
    """
    try:
        archive = Archive(output, count)
        # data is installed, fsynced and never written in place: link, do not copy
        archive.add(data, serial, sha256, stamps, now, source=output / "data")
    except ArchiveError as exc:
        get_logger().warning("archive.failed", path=exc.path, error=exc.reason, serial=serial)
