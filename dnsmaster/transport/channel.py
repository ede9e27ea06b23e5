"""One verb of the slave's receiver, run over some channel: the conversation.

A :class:`SlaveChannel` (SSH in :mod:`dnsmaster.transport.ssh`, a local subprocess
in :mod:`dnsmaster.transport.local`) runs one verb, feeds it the payload and
reports every line the slave prints as it arrives (:class:`LineSink`). The
conversation itself (:func:`converse`) is the same on every channel, and so is
the ``status`` verb (:func:`fetch_receiver`), which any part of the master may ask.

What a slave prints is capped per run and stream (:data:`MAX_OUTPUT_LINES`,
:data:`MAX_OUTPUT_BYTES`, each line at :data:`MAX_LINE` bytes): beyond that it is
read, counted and discarded, so a slave that prints forever neither blocks nor
fills the master's memory, and its exit status and last stderr line (its reason
for failing) still arrive. Each stream has its own budget: whatever the slave
prints on stderr, the receiver's status and ``done`` lines on stdout are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dnsmaster.config import Slave
from dnsmaster.core.text import LineCutter, printable
from dnsmaster.errors import SlaveError, SlavePhase
from dnsmaster.fsutil import describe
from dnsmaster.protocol import (
    FINAL_EXITS,
    SlaveVersion,
    check_receiver,
    number,
    parse_status,
    receiver_reason,
    status_fields,
)

__all__ = [
    "FEED_READ",
    "MAX_LINE",
    "MAX_OUTPUT_BYTES",
    "MAX_OUTPUT_LINES",
    "FileRange",
    "LineSink",
    "Payload",
    "Ranged",
    "Reader",
    "Receiver",
    "RunResult",
    "SlaveChannel",
    "Writer",
    "converse",
    "fetch_receiver",
    "fetch_status",
    "os_reason",
    "payload_size",
    "receiver_error",
]


class LineSink(Protocol):
    """Called for every line a slave prints: (slave name, ``stdout`` or ``stderr``,
    the line, how many bytes were cut from its end: 0 for a whole line)."""

    def __call__(self, slave: str, stream: str, line: str, truncated: int, /) -> None: ...


_CHUNK = 64 * 1024
#: How much of a file range is read at once (in a thread) while it is fed.
FEED_READ = 1 << 20


class Ranged(Protocol):
    """What a :class:`FileRange` reads from: an open file, read by ranges."""

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset``."""


@dataclass(frozen=True, slots=True)
class FileRange:
    """``size`` bytes from ``offset`` of ``source``, read as they are fed: a full
    push of a large build is sent from its file, never held whole in memory."""

    source: Ranged
    offset: int
    size: int


#: What a verb is fed: bytes, or pieces (bytes or file ranges) one after another.
Payload = bytes | tuple[bytes | FileRange, ...]


def payload_size(payload: Payload | None) -> int:
    """How many bytes ``payload`` is."""
    if payload is None:
        return 0
    if isinstance(payload, bytes):
        return len(payload)
    return sum(p.size if isinstance(p, FileRange) else len(p) for p in payload)


async def _blocks(payload: Payload) -> AsyncIterator[bytes | memoryview]:
    """``payload`` in blocks of at most :data:`_CHUNK` bytes; a file range is read a
    :data:`FEED_READ` at a time, in a thread (the disk must not stall the loop)."""
    for piece in (payload,) if isinstance(payload, bytes) else payload:
        if isinstance(piece, bytes):
            with memoryview(piece) as view:
                for start in range(0, len(view), _CHUNK):
                    yield view[start : start + _CHUNK]
            continue
        at, end = piece.offset, piece.offset + piece.size
        while at < end:
            block = await asyncio.to_thread(piece.source.read, at, min(FEED_READ, end - at))
            if not block:
                raise OSError(f"the payload's file ends at byte {at}, before {end}")
            for start in range(0, len(block), _CHUNK):
                yield block[start : start + _CHUNK]
            at += len(block)


#: The most lines, and bytes, of a slave's output passed on (logged) per run, for
#: each stream: stdout's lines (the status and ``done`` lines) must be read whatever
#: arrives on stderr. The receiver prints a handful; anything near these is a broken
#: or hostile slave, whose further output is read, counted and thrown away.
MAX_OUTPUT_LINES = 1000
MAX_OUTPUT_BYTES = 256 * 1024
#: A longer line is cut to this many bytes (a line without end must not grow forever).
MAX_LINE = 4096
#: How much of the end of stderr is kept to find the receiver's last line (its reason).
_STDERR_TAIL = 2 * MAX_LINE


@dataclass(frozen=True, slots=True)
class RunResult:
    """A verb's exit status, what it printed on stdout (within the caps), the last
    line it printed on stderr, whether its output was cut, and how many lines of it
    were dropped."""

    exit_status: int | None
    stdout: tuple[str, ...]
    stderr_last: str | None = None
    cut: bool = False
    dropped: int = 0


class Writer(Protocol):
    """Where a payload goes: a channel's stdin."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...


class Reader(Protocol):
    """A channel's stdout or stderr."""

    async def read(self, n: int = -1) -> bytes: ...


class _Budget:
    """What one stream may still pass on in a run, and what it dropped."""

    def __init__(self) -> None:
        self.lines_left = MAX_OUTPUT_LINES
        self.bytes_left = MAX_OUTPUT_BYTES
        self.full = False
        self.dropped = 0

    def take(self, size: int) -> bool:
        """Whether a line of ``size`` bytes fits; once one does not, none does."""
        if self.full or self.lines_left <= 0 or size > self.bytes_left:
            self.full = True  # from here on, everything is counted out
            self.dropped += 1
            return False
        self.lines_left -= 1
        self.bytes_left -= size
        return True


class _Output:
    """A run's output as lines for ``on_line``, within a budget for each stream.

    Bounded memory whatever the slave prints: a line is cut at :data:`MAX_LINE`
    bytes (no newline at all, a 10 MB line: read in chunks, never by
    ``readline``, whose buffer limit would raise), stdout keeps at most its
    budget's lines, and stderr keeps its last :data:`_STDERR_TAIL` bytes for the
    reason. A stream's budget is its own: a receiver's wrapper that prints
    thousands of lines on stderr does not hide the status line on stdout.
    """

    def __init__(self, name: str, on_line: LineSink) -> None:
        self._name = name
        self._on_line = on_line
        self._budgets = {"stdout": _Budget(), "stderr": _Budget()}
        self.stdout: list[str] = []
        self.stderr_tail = b""

    @property
    def cut(self) -> bool:
        return any(b.full for b in self._budgets.values())

    @property
    def dropped(self) -> int:
        return sum(b.dropped for b in self._budgets.values())

    def emit(self, stream: str, raw: bytes, truncated: int) -> None:
        if not self._budgets[stream].take(len(raw)):
            return
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if stream == "stdout":
            self.stdout.append(line)
        self._on_line(self._name, stream, line, truncated)

    async def read(self, reader: Reader, stream: str) -> None:
        budget = self._budgets[stream]
        cutter = LineCutter(MAX_LINE)
        while chunk := await reader.read(_CHUNK):
            if stream == "stderr":
                self.stderr_tail = (self.stderr_tail + chunk)[-_STDERR_TAIL:]
            if budget.full:
                # Drained and counted: the slave never blocks on a full window.
                budget.dropped += cutter.skip(chunk)
                continue
            for raw, truncated in cutter.feed(chunk):
                self.emit(stream, raw, truncated)
        if budget.full:
            budget.dropped += cutter.open
        elif (last := cutter.end()) is not None:
            self.emit(stream, *last)

    def stderr_last(self) -> str | None:
        """The last non-empty line on stderr, escaped for logs and terminals."""
        for raw in reversed(self.stderr_tail.splitlines()):
            if raw.strip():
                return printable(raw.decode("utf-8", "surrogateescape").strip())
        return None


async def converse(
    name: str,
    stdin: Writer,
    stdout: Reader,
    stderr: Reader,
    *,
    payload: Payload | None,
    on_line: LineSink,
    wait: Callable[[], Awaitable[int | None]],
    closed: tuple[type[Exception], ...] = (),
) -> RunResult:
    """Feed ``payload`` and read both output streams at once, then the exit status.

    Reading while writing matters: a slave that prints while the channel window
    is full would otherwise stall both directions. A slave that stops reading
    (a broken pipe, a reset, or one of the channel's own ``closed`` errors) ends
    the feeding, not the run: its output and exit status say why.
    """
    output = _Output(name, on_line)

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, *closed):
            if payload:
                async for block in _blocks(payload):
                    stdin.write(bytes(block))
                    await stdin.drain()
            stdin.write_eof()

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(feed())
            tasks.create_task(output.read(stdout, "stdout"))
            tasks.create_task(output.read(stderr, "stderr"))
    except BaseExceptionGroup as group:
        # A lost connection fails both readers at once. Callers handle asyncssh.Error
        # and OSError per slave, not groups: raise the first cause itself.
        raise _first_cause(group) from None
    return RunResult(
        await wait(), tuple(output.stdout), output.stderr_last(), output.cut, output.dropped
    )


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first


def receiver_error(slave: Slave, result: RunResult, phase: SlavePhase = "receive") -> SlaveError:
    """The failure of a run that ended with a non-zero exit status."""
    final = slave.protocol != "legacy" and result.exit_status in FINAL_EXITS
    return SlaveError(
        slave.name,
        receiver_reason(result.stderr_last, result.exit_status),
        result.exit_status,
        phase=phase,
        retryable=not final,
    )


class SlaveChannel(Protocol):
    """Runs one verb of the receiver on one slave.

    ``run`` raises :class:`~dnsmaster.errors.SlaveError` (and nothing else but
    cancellation) when the slave cannot be reached or the conversation breaks; a
    non-zero exit status is a result, not an error.
    """

    slave: Slave

    async def run(self, verb: str, payload: Payload | None, on_line: LineSink) -> RunResult: ...

    async def close(self) -> None: ...


def os_reason(exc: OSError) -> str:
    """An OSError in plain words: ``connection refused``, ``no route to host``."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name: {exc.strerror or exc}"
    if exc.errno:
        text = describe(exc)
        return text[:1].lower() + text[1:]  # os.strerror capitalizes, djb's words do not
    # asyncio's "Multiple exceptions: ..." for several addresses, each with its words.
    return str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Receiver:
    """What a slave's receiver said to ``status``: its protocol and version (None:
    not said, or a legacy slave, which is not asked) and the build it has installed
    (None: none it vouches for).

    ``master`` is the name the slave's key line gives this master on a slave that
    serves several (protocol 3, ``master=NAME``): ``installed`` is then this
    master's own section there, not the merged data the slave's tinydns serves.
    None: a slave of this master alone.
    """

    protocol: int | None
    version: str | None
    installed: SlaveVersion | None
    master: str | None = None


async def fetch_status(
    channel: SlaveChannel, timeout: float, on_line: LineSink
) -> SlaveVersion | None:
    """The version a slave has installed; None when it has none (or is legacy).

    As :func:`fetch_receiver`, for those who need only the installed build.
    """
    return (await fetch_receiver(channel, timeout, on_line)).installed


async def fetch_receiver(channel: SlaveChannel, timeout: float, on_line: LineSink) -> Receiver:
    """What a slave's receiver speaks, and the version it has installed.

    Raises :class:`~dnsmaster.errors.SlaveError` when the slave cannot be asked
    (phase ``connect``, ``hostkey``, ``auth``, ``transfer``, ``timeout``) or its
    receiver fails the verb (phase ``status``, with the receiver's reason), and
    :class:`ReceiverOutdated` (phase ``status``, not retryable) when the receiver
    speaks an older protocol than this master's.
    """
    slave = channel.slave
    if slave.protocol == "legacy":
        return Receiver(None, None, None)  # the classic update-dns script has no status
    try:
        async with asyncio.timeout(timeout):
            result = await channel.run("status", None, on_line)
    except TimeoutError:
        await channel.close()
        raise SlaveError(
            slave.name, f"status timed out after {timeout:g} s", phase="timeout"
        ) from None
    if result.exit_status != 0:
        raise receiver_error(slave, result, "status")
    # First contact: a receiver too old for this master is named now, with what to do,
    # rather than failing pushes in ways that do not say why.
    check_receiver(slave.name, result.stdout)
    fields = status_fields(result.stdout) or {}
    return Receiver(
        number(fields.get("protocol")),
        fields.get("version"),
        parse_status(result.stdout),
        fields.get("master"),
    )
