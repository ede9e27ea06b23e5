"""Asking a slave's tinydns which SOA serial it serves, over real DNS (dnspython).

A push that exited 0 proves the receiver installed data.cdb; only a DNS answer
proves tinydns serves it. Serials compare with RFC 1982 arithmetic, so a stale
answer is told apart from a newer one after the serial wraps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.serial

__all__ = ["SoaCheck", "check_serials"]


@dataclass(frozen=True, slots=True)
class SoaCheck:
    """One zone on one slave: what it should serve and what it answered."""

    zone: str
    expected: int
    served: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.served is not None and self.served == self.expected

    @property
    def behind(self) -> bool:
        """The slave still answers an older serial."""
        return self.served is not None and dns.serial.Serial(self.served) < self.expected


def _name(wire: bytes) -> dns.name.Name:
    labels = []
    at = 0
    while wire[at]:
        labels.append(wire[at + 1 : at + 1 + wire[at]])
        at += 1 + wire[at]
    return dns.name.Name([*labels, b""])


async def _serial(server: str, port: int, zone: dns.name.Name, timeout: float) -> int | None:
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD  # tinydns is authoritative only
    answer = await dns.asyncquery.udp(query, server, timeout=timeout, port=port)
    if answer.rcode() != dns.rcode.NOERROR:
        raise ValueError(f"answered {dns.rcode.to_text(answer.rcode())}")
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == zone:
            return int(rrset[0].serial)
    return None


async def check_serials(
    server: str, port: int, zones: Mapping[bytes, int], timeout: float
) -> list[SoaCheck]:
    """Ask ``server`` for the SOA of every zone (wire name -> expected serial)."""
    checks = []
    for wire, expected in zones.items():
        zone = _name(wire)
        text = zone.to_text(omit_final_dot=True)
        try:
            served = await _serial(server, port, zone, timeout)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            reason = "no answer (timeout)" if isinstance(exc, dns.exception.Timeout) else str(exc)
            checks.append(SoaCheck(text, expected, None, reason or type(exc).__name__))
            continue
        error = None if served is not None else "no SOA in the answer"
        checks.append(SoaCheck(text, expected, served, error))
    return checks
