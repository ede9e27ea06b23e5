"""Showing untrusted bytes to people: control characters never reach a terminal or log.

Zones content and file names come from anywhere. An ESC in an error message can
rewrite the operator's terminal, a CR or a newline can forge a log line. Every
message that quotes input goes through :func:`printable`.
"""

from __future__ import annotations

__all__ = ["has_control", "printable"]

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
