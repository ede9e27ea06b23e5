"""A zone transfer (AXFR over TCP) asked as a secondary would ask it (dnspython).

``doctor`` proves that axfrdns lets each secondary transfer its zones by doing the
transfer itself, from the master's side, with the secondary's address as the
source when the master holds that address (loopback, a shared host) and its own
otherwise.

dnspython's ``dns.query.xfr`` refuses djbdns' axfrdns: axfrdns leaves the
question section out of every message of its answer, the first one included
(RFC 5936 2.2.1 allows that only after the first), and dnspython then calls the
answer no answer to the question. So the stream is read here: each message is
parsed by dnspython and checked by its id, QR bit and rcode, and the transfer is
whole at the second SOA, as RFC 5936 2.2 says.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from dnsmaster.errors import TransferError

__all__ = ["Transferred", "transfer"]


@dataclass(frozen=True, slots=True)
class Transferred:
    """A whole zone as the server sent it: its SOA serial and how many records
    (the closing SOA not counted)."""

    zone: str
    serial: int
    records: int


async def transfer(
    server: str, port: int, zone: str, *, source: str | None = None, timeout: float = 10.0
) -> Transferred:
    """AXFR ``zone`` from ``server``:``port``, from ``source`` if given.

    Raises TransferError saying why no whole zone came: refused by rcode, the
    connection refused or closed early (tcpserver's rules drop a client they deny;
    axfrdns closes on a zone its AXFR list leaves out), or the deadline.
    """
    name = dns.name.from_text(zone)
    query = dns.message.make_query(name, dns.rdatatype.AXFR)
    query.flags &= ~dns.flags.RD
    wire = query.to_wire()
    where = f"{server} port {port}" + (f" (from {source})" if source else "")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                server, port, local_addr=(source, 0) if source else None
            )
            try:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
                return await _read(reader, query, name, where)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise TransferError(where, zone, f"no whole zone within {timeout:g} s") from None
    except asyncio.IncompleteReadError as exc:
        got = "before any answer" if not exc.partial else "in the middle of a message"
        raise TransferError(
            where,
            zone,
            f"the server closed the connection {got} (refused: its tcp rules or AXFR list)",
        ) from None
    except ConnectionRefusedError:
        raise TransferError(where, zone, "connection refused: nothing listens there") from None
    except ConnectionError:
        # tcpserver resets a client its rules deny, as soon as it has read the query.
        raise TransferError(
            where, zone, "the server reset the connection (refused: its tcp rules or AXFR list)"
        ) from None
    except OSError as exc:
        raise TransferError(where, zone, exc.strerror or str(exc)) from None
    except dns.exception.DNSException as exc:
        raise TransferError(where, zone, f"a malformed answer: {exc}") from None


async def _read(
    reader: asyncio.StreamReader, query: dns.message.Message, name: dns.name.Name, where: str
) -> Transferred:
    serial: int | None = None
    records = 0
    while True:
        try:
            size = int.from_bytes(await reader.readexactly(2), "big")
            wire = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            if serial is None:
                raise
            raise TransferError(
                where,
                name.to_text(True),
                f"the server closed the connection after {records} records, before the closing SOA",
            ) from None
        answer = dns.message.from_wire(wire, xfr=True, multi=True)
        if answer.id != query.id or not answer.flags & dns.flags.QR:
            raise TransferError(where, name.to_text(True), "a message that answers another query")
        if answer.rcode() != dns.rcode.NOERROR:
            raise TransferError(
                where, name.to_text(True), f"answered {dns.rcode.to_text(answer.rcode())}"
            )
        for rrset in answer.answer:
            for rdata in rrset:
                if rdata.rdtype == dns.rdatatype.SOA and rrset.name == name:
                    if serial is not None:
                        return Transferred(name.to_text(True), serial, records)
                    serial = int(rdata.serial)
                elif serial is None:
                    raise TransferError(
                        where, name.to_text(True), "the transfer does not start with the SOA"
                    )
                records += 1
