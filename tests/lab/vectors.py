"""The test vectors of tests/vectors (copied from the spec's tdspec-vectors, with SUMS.tsv)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import VECTORS


@dataclass(frozen=True, slots=True)
class Vector:
    """One line of SUMS.tsv."""

    file: str
    mtime: int
    mtime_matters: bool
    exit: int
    cdb_size: int | None
    cdb_sha256: str | None
    stderr: str | None

    @property
    def data(self) -> bytes:
        return (VECTORS / self.file).read_bytes()


def _load() -> list[Vector]:
    vectors = []
    for line in (VECTORS / "SUMS.tsv").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        file, mtime, matters, status, size, sha, stderr = line.split("\t")
        vectors.append(
            Vector(
                file=file,
                mtime=int(mtime),
                mtime_matters=matters == "yes",
                exit=int(status),
                cdb_size=None if size == "-" else int(size),
                cdb_sha256=None if sha == "-" else sha,
                stderr=None if stderr == "-" else stderr,
            )
        )
    return vectors


ALL = _load()
