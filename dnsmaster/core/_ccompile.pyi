"""Types of the optional C accelerator (``_ccompile.c``); see compiler.py and cdb.py."""

from collections.abc import Sequence

def run(
    lines: list[bytes] | tuple[bytes, ...],
    start: int,
    check: bool,
    default_soa: bytes,
    keys: list[bytes],
    values: list[bytes],
    stamped: list[int],
    soa_defaults: list[int],
    /,
) -> int: ...
def run_text(
    data: bytes,
    pos: int,
    index: int,
    check: bool,
    default_soa: bytes,
    keys: list[bytes],
    values: list[bytes],
    stamped: list[int],
    soa_defaults: list[int],
    stamped_at: list[int] | None,
    blob: bytearray | None,
    serials: list[int] | None,
    /,
) -> tuple[int, int, int]: ...
def dot_line(line: bytes, origin: bytes, index: int, more: bool, serial: bytes, /) -> bytes: ...
def writeback(fd: int, /) -> None: ...
def newlines(buffer: bytes | bytearray | memoryview, /) -> int: ...
def write_cdb(fd: int, keys: Sequence[bytes], values: Sequence[bytes], /) -> None: ...

class Stream:
    """A cdb written to a file as its records come."""

    records: int
    def __init__(self, fd: int) -> None: ...
    def run_text(
        self, data: bytes, pos: int, index: int, final: bool, default_soa: bytes, /
    ) -> tuple[int, int]: ...
    def add(self, keys: list[bytes], values: list[bytes], /) -> None: ...
    def put(
        self,
        blob: bytes | bytearray | memoryview,
        serials: Sequence[int],
        stamp: bytes,
        count: int,
        /,
    ) -> None: ...
    def finish(self, pairs: int = -1, /) -> int: ...
