"""The first line of a ``data`` that dnsmaster built: its serial and sources fingerprint.

Kept apart from :mod:`dnsmaster.core.makedata` so the slave's receiver, which only
reads the serial back, does not import the data assembler and its linter.
"""

from __future__ import annotations

import re

__all__ = ["BANNER", "BANNER_RE", "built_from", "previous_serial"]

BANNER = b"# dnsmaster serial "
BANNER_RE = re.compile(rb"# dnsmaster serial ([0-9]+)(?: sources=([0-9a-f]{64}))?")


def previous_serial(data_head: bytes) -> int | None:
    """The serial of an earlier build, from the first line of its ``data``."""
    m = BANNER_RE.match(data_head)
    return int(m.group(1)) if m else None


def built_from(data_head: bytes) -> str | None:
    """The sources fingerprint an earlier build wrote in the first line of ``data``."""
    m = BANNER_RE.match(data_head)
    return m.group(2).decode() if m and m.group(2) else None
