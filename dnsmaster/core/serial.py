"""SOA serial arithmetic (RFC 1982, SERIAL_BITS = 32), pure.

Serials are compared on a circle: ``a`` is newer than ``b`` when it is less than
half the circle ahead. That is how secondaries and ``dnsmaster`` decide whether a
build is older than the one installed, and how a build's serial can pass
4294967295 without ever going backwards.
"""

from __future__ import annotations

__all__ = ["MODULUS", "newer", "next_after"]

MODULUS = 1 << 32
_HALF = 1 << 31


def newer(a: int, b: int) -> bool:
    """Whether serial ``a`` comes after serial ``b`` (RFC 1982 §3.2).

    Exactly half the circle apart is undefined in the RFC; it counts as not newer,
    so a doubtful push is refused rather than installed over a newer build.
    """
    a %= MODULUS
    b %= MODULUS
    return a != b and (a - b) % MODULUS < _HALF


def next_after(previous: int) -> int:
    """The serial right after ``previous``: add 1 modulo 2**32 (RFC 1982 §3.1)."""
    return (previous + 1) % MODULUS
