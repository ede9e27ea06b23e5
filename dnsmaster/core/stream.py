"""The push stream: data followed by a trailer line that proves it arrived whole.

A push is the ``data`` text and then one more line::

    #dnsmaster-end bytes=4159 sha256=0478a1e3...

The trailer is a ``#`` comment, so the stream as a whole is still valid tinydns
data. The receiver installs nothing unless the last line is a trailer whose length
and sha256 match everything before it: a connection cut at any byte leaves either
no trailer or a body that does not match.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["TRAILER_MAX", "Trailer", "seal", "split"]

#: No trailer line is longer than this (the receiver's size cap allows for it).
TRAILER_MAX = 128

_TRAILER = re.compile(rb"#dnsmaster-end bytes=([0-9]{1,20}) sha256=([0-9a-f]{64})\n")


@dataclass(frozen=True, slots=True)
class Trailer:
    """The length and sha256 a trailer line claims for the body before it."""

    size: int
    sha256: str

    def line(self) -> bytes:
        return b"#dnsmaster-end bytes=%d sha256=%s\n" % (self.size, self.sha256.encode())

    def mismatch(self, body: bytes | memoryview) -> str | None:
        """Why ``body`` is not what this trailer describes, or None if it is."""
        if len(body) != self.size:
            return f"received {len(body)} bytes, the trailer says {self.size}"
        digest = hashlib.sha256(body).hexdigest()
        if digest != self.sha256:
            return f"sha256 {digest} differs from the trailer's {self.sha256}"
        return None


def seal(data: bytes) -> bytes:
    """The trailer line for ``data``, which must end with a newline (or be empty)."""
    if data and not data.endswith(b"\n"):
        raise ValueError("data must end with a newline before a trailer can follow it")
    return Trailer(len(data), hashlib.sha256(data).hexdigest()).line()


def split(content: bytes) -> tuple[bytes, Trailer | None]:
    """Split a received stream into body and trailer (None when there is none)."""
    start = content.rfind(b"\n", 0, len(content) - 1) + 1
    m = _TRAILER.fullmatch(content, start)
    if m is None:
        return content, None
    return content[:start], Trailer(int(m.group(1)), m.group(2).decode())
