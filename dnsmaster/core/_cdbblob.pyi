"""Types of the optional C accelerator of packed records (``_cdbblob.c``); see cdb.py."""

from collections.abc import Sequence

from _typeshed import ReadableBuffer, WriteableBuffer

def pack(
    keys: Sequence[bytes], values: Sequence[bytes], soa_defaults: Sequence[int], /
) -> tuple[bytes, tuple[int, ...]]: ...
def scan(blob: ReadableBuffer, serials: Sequence[int], /) -> int: ...
def write(
    fd: int, blobs: Sequence[ReadableBuffer], serials: Sequence[Sequence[int]], serial: int, /
) -> None: ...
def swap(buffer: WriteableBuffer, old: ReadableBuffer, new: ReadableBuffer, /) -> int: ...
