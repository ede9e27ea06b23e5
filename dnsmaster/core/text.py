"""Showing untrusted bytes to people: control characters never reach a terminal or log.

Zones content and file names come from anywhere. An ESC in an error message can
rewrite the operator's terminal, a CR or a newline can forge a log line. Every
message that quotes input goes through :func:`printable`.
"""

from __future__ import annotations

__all__ = ["LineCutter", "has_control", "printable"]

# C0 controls, DEL and the C1 controls (which some terminals obey as well).
_CONTROL = frozenset([*range(0x20), 0x7F, *range(0x80, 0xA0)])
_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}


def printable(value: bytes | str) -> str:
    """``value`` with control characters (and the backslash) escaped as ``\\xNN``.

    Bytes are read as UTF-8 where they can be; an undecodable byte is escaped the
    same way, so nothing is lost and the result is one line of printable text.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not any(ord(c) in _CONTROL or c == "\\" or 0xDC80 <= ord(c) <= 0xDCFF for c in value):
        return value
    out = []
    for c in value:
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _ESCAPES:
            out.append(_ESCAPES[code])
        elif code in _CONTROL:
            out.append(f"\\x{code:02x}")
        else:
            out.append(c)
    return "".join(out)


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control character (a file name that could forge lines)."""
    return any(ord(c) in _CONTROL for c in value)


class LineCutter:
    """Splits a byte stream, chunk by chunk, into lines of at most ``limit`` bytes.

    Output from a slave or a hook can be anything: no newline at all, a 10 MB line,
    binary. Each line keeps its first ``limit`` bytes and counts the rest, so memory
    stays bounded whatever arrives and the reader can say how much it cut.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._head = bytearray()
        self._rest = 0  # bytes of the current line past its head
        self._open = False  # bytes arrived since the last newline

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        """The lines ``chunk`` ends, each as (its first ``limit`` bytes, bytes cut)."""
        *ended, partial = chunk.split(b"\n")
        lines = [self._close(part) for part in ended]
        self._add(partial)
        return lines

    def skip(self, chunk: bytes) -> int:
        """How many lines ``chunk`` ends, keeping none of them (past a budget: cheap,
        since a flood of tiny lines would cost a Python object each)."""
        ended = chunk.count(b"\n")
        if ended:
            self._head.clear()
            self._rest = 0
            self._open = not chunk.endswith(b"\n")
        elif chunk:
            self._open = True
        return ended

    def end(self) -> tuple[bytes, int] | None:
        """The last line, when the stream stopped without a newline after it."""
        return self._close(b"") if self._open else None

    @property
    def open(self) -> bool:
        """Whether a line has begun and not ended."""
        return self._open

    def _add(self, part: bytes) -> None:
        if not part:
            return
        self._open = True
        room = max(0, self.limit - len(self._head))
        self._head += part[:room]
        self._rest += max(0, len(part) - room)

    def _close(self, part: bytes) -> tuple[bytes, int]:
        self._add(part)
        line = (bytes(self._head), self._rest)
        self._head.clear()
        self._rest = 0
        self._open = False
        return line
