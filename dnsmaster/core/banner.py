"""The first line of a ``data`` that dnsmaster built: its serial and sources fingerprint.

Kept apart from :mod:`dnsmaster.core.makedata` so the slave's receiver, which only
reads the serial back, does not import the data assembler and its linter.
"""

from __future__ import annotations

import re

__all__ = ["BANNER", "BANNER_RE", "built_from", "previous_serial"]

BANNER = b"# dnsmaster serial "
_U32 = 0xFFFFFFFF
_MAX_DIGITS = len(str(_U32)) + 10  # leading zeros allowed, but not thousands of them
BANNER_RE = re.compile(rb"# dnsmaster serial ([0-9]+)(?: sources=([0-9a-f]{64}))?")


def previous_serial(data_head: bytes) -> int | None:
    """The serial of an earlier build, from the first line of its ``data``.

    None when there is no banner, or when its number cannot be a serial (over
    4294967295, or absurdly long): dnsmaster never wrote that banner, so it says
    nothing about an earlier build, and a serial must fit the 32-bit SOA field.
    """
    m = BANNER_RE.match(data_head)
    if m is None:
        return None
    digits = m.group(1)
    if len(digits) > _MAX_DIGITS:  # before int(): thousands of digits raise ValueError
        return None
    serial = int(digits)
    return serial if serial <= _U32 else None


def built_from(data_head: bytes) -> str | None:
    """The sources fingerprint an earlier build wrote in the first line of ``data``."""
    m = BANNER_RE.match(data_head)
    return m.group(2).decode() if m and m.group(2) else None
