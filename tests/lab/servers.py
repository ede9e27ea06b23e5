"""What the lab's standard DNS servers (NSD, Knot) share: asking one over UDP and
the serial it serves (each is stopped with :func:`tests.lab.realworld.stop_pid`)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

__all__ = ["ask", "served_serial"]


def ask(
    address: str, name: str, rdtype: str | dns.rdatatype.RdataType = "A", *, timeout: float = 2.0
) -> dns.message.Message:
    """Ask ``address`` port 53 over UDP, without recursion; raises
    dns.exception.Timeout if it does not answer."""
    q = dns.message.make_query(name, rdtype)
    q.flags &= ~dns.flags.RD
    return dns.query.udp(q, address, port=53, timeout=timeout)


def served_serial(address: str, zone: str, *, authoritative: bool = False) -> int | None:
    """The SOA serial ``address`` answers for ``zone``; None when it answers no
    serial (SERVFAIL before its first transfer, REFUSED for a zone it does not
    have, or, with ``authoritative``, an answer without the AA bit)."""
    response = ask(address, zone, "SOA")
    if response.rcode() != dns.rcode.NOERROR:
        return None
    if authoritative and not response.flags & dns.flags.AA:
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None
