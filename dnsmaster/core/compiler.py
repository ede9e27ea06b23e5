"""The tinydns-data compiler: data text to cdb records, byte-identical to djbdns 1.05.

Records come out in the order tinydns-data adds them (file order, and within a line
the order of spec §5), because that order decides the layout of the whole data.cdb.
:func:`compile_data` is the whole program; :func:`compile_stream` is the same
written as tinydns-data writes it, a chunk of data at a time straight into the cdb
file, so that neither the data nor its records are ever all in memory;
:func:`compile_text` (and
:func:`compile_lines`, for a list of lines) is the part make-data reuses to compile
each zones file once, with the checker, and keep the result.

Each kind of line is one entry of :data:`~dnsmaster.core.linetypes.LINE_TYPES`
(:mod:`dnsmaster.core.linetypes`): the function that compiles it (a plain
transcription of spec §5) and its :class:`~dnsmaster.core.lint.Shape`, where the
checker finds its fields; this module runs them over the lines. The optional C
accelerator (``_ccompile.c``, found by :mod:`dnsmaster.core.accel`) mirrors that
table line type by line type; it compiles (and, with the checker on, checks) the
lines it is certain of and hands every other line to the Python entry, so errors,
diagnostics and odd lines have one implementation, and both paths give the same bytes.

Comments cite ``shared/tinydns-data-spec.md`` by section.
"""

from __future__ import annotations

import contextlib
import gc
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from dnsmaster.core import accel, cdb
from dnsmaster.core.fields import split_fields
from dnsmaster.core.linetypes import LINE_TYPES, SOA_TAIL, LineCompiler, LineError, Records
from dnsmaster.core.lint import Linter
from dnsmaster.core.text import printable
from dnsmaster.errors import TinydnsDataError

__all__ = [
    "CHUNK_SIZE",
    "PackedRecords",
    "compile_data",
    "compile_line",
    "compile_lines",
    "compile_stream",
    "compile_text",
    "default_serial",
    "no_gc",
    "split_lines",
]

_U32 = 0xFFFFFFFF

#: How much of the data :func:`compile_stream` reads at a time: big enough that the
#: calls cost nothing, small enough that memory does not grow with the data.
CHUNK_SIZE = 1 << 22


def default_serial(mtime: int) -> int:
    """§3.8: the serial tinydns-data derives from the data file's mtime."""
    serial = mtime & _U32
    return serial or 1


def split_lines(data: bytes) -> list[bytes]:
    """§2.1: split on LF; a final piece without LF is a line if non-empty."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass(slots=True)
class PackedRecords:
    """Records in cdb's record layout (§8.3: key length and data length as 4-byte
    little-endian numbers, the key, the data; one after another), as a build writes
    them: no Python object per record.

    ``serials`` are the offsets in ``blob`` of the default serials (those of
    ``Records.soa_defaults``), ``count`` how many records.
    """

    blob: bytearray = field(default_factory=bytearray)
    serials: list[int] = field(default_factory=list)
    count: int = 0

    def add(self, recs: Records) -> None:
        """Move the records of ``recs`` here (``recs.stamped`` stays)."""
        blob = self.blob
        defaults = set(recs.soa_defaults)
        for i, (key, value) in enumerate(zip(recs.keys, recs.values, strict=True)):
            blob += _PAIR.pack(len(key), len(value))
            blob += key
            blob += value
            if i in defaults:
                self.serials.append(len(blob) - len(SOA_TAIL) - 4)
        self.count += len(recs.keys)
        recs.keys.clear()
        recs.values.clear()
        recs.soa_defaults.clear()


_PAIR = struct.Struct("<II")


def compile_lines(
    lines: Sequence[bytes],
    serial: int,
    *,
    first_lineno: int = 1,
    linter: Linter | None = None,
    errors: list[TinydnsDataError] | None = None,
) -> Records:
    """Compile data lines into records; ``serial`` is the default SOA serial.

    Raises :class:`TinydnsDataError` for the first line tinydns-data refuses, with
    ``lineno`` counted from ``first_lineno``. With an ``errors`` list, each refused
    line is appended to it instead and compiling goes on with the next line (what
    a checker wants: every error of a file in one pass; the records are then of
    no use, as tinydns-data would have written none). With a ``linter``, every line
    is checked too.
    """
    c = LineCompiler(serial, first_lineno)
    fast = accel.compiler()
    with no_gc():
        if fast is None:
            for index, line in enumerate(lines):
                compile_line(c, index, line.rstrip(b" \t\n"), linter, errors)  # §2.2
        else:
            _run_accelerated(c, lines, linter, errors)
    return c.recs


def compile_text(
    data: bytes,
    serial: int,
    *,
    linter: Linter | None = None,
    errors: list[TinydnsDataError] | None = None,
    stamped_at: list[int] | None = None,
    packed: PackedRecords | None = None,
) -> Records:
    """Compile a whole data text; the same as ``compile_lines(split_lines(data), serial)``
    with the same options. ``stamped_at`` receives the offset in ``data`` of each line
    in ``Records.stamped``, so no list of lines need be made to find them. With
    ``packed``, the records go there instead, and the Records returned hold only
    ``stamped``."""
    c = LineCompiler(serial, 1, stamped_at)
    fast = accel.compiler()
    with no_gc():
        if fast is None:
            for index, line in enumerate(split_lines(data)):
                compile_line(c, index, line.rstrip(b" \t"), linter, errors)  # §2.2
                if stamped_at is not None:
                    c.pos += len(line) + 1
            if packed is not None:
                packed.add(c.recs)
        else:
            _run_text(c, data, linter, errors, packed)
    return c.recs


def compile_data(data: bytes, mtime: int) -> bytes:
    """The data.cdb tinydns-data writes for ``data`` whose file mtime is ``mtime``."""
    recs = compile_text(data, default_serial(mtime))
    return cdb.dumps(recs.keys, recs.values)


def compile_stream(
    read: Callable[[int], bytes], out: int, serial: int, *, chunk_size: int = CHUNK_SIZE
) -> int:
    """Compile the data ``read(chunk_size)`` returns, chunk by chunk until it returns
    b"", into the cdb of :func:`compile_data` written to the file ``out`` (from
    offset 0; its header last, so ``out`` must be a regular file); return how many
    records it holds. ``serial`` is the default SOA serial.

    With the C accelerator, each line's records go to the file as it is compiled, as
    tinydns-data does: memory is a chunk, the writer's buffer and 8 bytes a record
    (16 while the tables are laid out at the end).
    Lines the accelerator leaves to Python (escapes, errors, odd lines) are compiled
    here and put in the same stream, in order. Without it, the data is read whole
    and compiled as :func:`compile_text`, which gives the same bytes.

    Raises :class:`TinydnsDataError` for the first line tinydns-data refuses, after
    the records of the lines before it were written (the caller throws the file
    away), :class:`~dnsmaster.errors.CdbTooLarge` past 4 GiB, and OSError when a
    write fails. What ``read`` raises passes through.
    """
    fast = accel.compiler()
    if fast is None:
        data = b"".join(iter(lambda: read(chunk_size), b""))
        recs = compile_text(data, serial)
        cdb.write_fd(out, recs.keys, recs.values)
        return len(recs.keys)
    c = LineCompiler(serial, 1)
    recs = c.recs
    soa = c.default_soa
    stream = fast.Stream(out)
    rest = b""
    index = 0
    with no_gc():
        while True:
            chunk = read(chunk_size)
            final = not chunk
            data = rest + chunk if rest else chunk
            size = len(data)
            pos, index = stream.run_text(data, 0, index, final, soa)
            while pos < size:
                end = data.find(b"\n", pos)
                if end < 0:
                    if not final:
                        break  # a line cut by the chunk's end: it comes whole next time
                    end = size
                compile_line(c, index, data[pos:end].rstrip(b" \t"), None, None)  # §2.2
                if recs.keys:
                    stream.add(recs.keys, recs.values)
                    recs.keys.clear()
                    recs.values.clear()
                recs.soa_defaults.clear()  # the serial is in the record already
                recs.stamped.clear()
                pos, index = stream.run_text(data, end + 1, index + 1, final, soa)
            if final:
                break
            rest = data[pos:]
    return int(stream.finish())


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Nothing a compile makes has cycles; the collector would walk every temp list."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_line(
    c: LineCompiler,
    index: int,
    line: bytes,
    linter: Linter | None,
    errors: list[TinydnsDataError] | None,
) -> None:
    """Line ``index``, stripped (§2.2): checked, then compiled by its type's entry."""
    if not line:
        return
    kind = LINE_TYPES.get(line[0])
    try:
        if kind is None:
            raise LineError(
                f"unable to parse data line {c.first_lineno + index}: "
                "unrecognized leading character",
                f"unrecognized leading character '{printable(line[:1])}'",
            )
        if kind.compile is None:
            return
        f = split_fields(line)
        if linter is not None and kind.shape is not None:
            linter.check(index, line, f, kind.shape)
        kind.compile(c, index, f)
    except LineError as exc:
        error = TinydnsDataError(exc.message, lineno=c.first_lineno + index, reason=exc.reason)
        if errors is None:
            raise error from None
        errors.append(error)


def _run_accelerated(
    c: LineCompiler,
    lines: Sequence[bytes],
    linter: Linter | None,
    errors: list[TinydnsDataError] | None,
) -> None:
    """The C code compiles (and checks) every line it is sure of, and hands back the
    index of the first one it is not (escapes, errors, anything the checker would
    report ...); that line goes the Python way, then C goes on from the next."""
    fast = accel.compiler()
    assert fast is not None
    run = fast.run
    seq = lines if isinstance(lines, list | tuple) else list(lines)
    recs = c.recs
    lists = (recs.keys, recs.values, recs.stamped, recs.soa_defaults)
    check = linter is not None
    index = run(seq, 0, check, c.default_soa, *lists)
    while index < len(seq):
        compile_line(c, index, seq[index].rstrip(b" \t\n"), linter, errors)
        index = run(seq, index + 1, check, c.default_soa, *lists)


def _run_text(
    c: LineCompiler,
    data: bytes,
    linter: Linter | None,
    errors: list[TinydnsDataError] | None,
    packed: PackedRecords | None,
) -> None:
    """:func:`_run_accelerated` over a whole data text: C cuts and strips the lines
    itself, so no list of lines is made. With ``packed``, C packs its records there,
    and the records of each line Python compiles are moved there after it."""
    fast = accel.compiler()
    assert fast is not None
    run_text = fast.run_text
    recs = c.recs
    lists = (recs.keys, recs.values, recs.stamped, recs.soa_defaults, c.stamped_at)
    into = (None, None) if packed is None else (packed.blob, packed.serials)
    check = linter is not None
    size = len(data)
    pos, index, count = run_text(data, 0, 0, check, c.default_soa, *lists, *into)
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        c.pos = pos
        compile_line(c, index, data[pos:end].rstrip(b" \t"), linter, errors)
        if packed is not None:
            packed.count += count
            packed.add(recs)
        pos, index, count = run_text(data, end + 1, index + 1, check, c.default_soa, *lists, *into)
    if packed is not None:
        packed.count += count
