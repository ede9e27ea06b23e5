"""A zone transfer read by hand: a whole zone, and each way one is refused, against
a small in-process server that answers as axfrdns does (no question section) or as
it should not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from dnsmaster.errors import TransferError
from dnsmaster.transport.axfr import transfer

SOA = "ns1.example.com. hostmaster.example.com. 42 16384 2048 1048576 2560"
Answer = Callable[[dns.message.Message], list[dns.message.Message]]


def message(query: dns.message.Message, *records: tuple[str, str, str]) -> dns.message.Message:
    """An answer to ``query`` with ``records`` and, as axfrdns sends it, no question."""
    answer = dns.message.Message(query.id)
    answer.flags = dns.flags.QR | dns.flags.AA
    for name, rdtype, text in records:
        answer.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, text))
    return answer


def axfrdns_like(query: dns.message.Message) -> list[dns.message.Message]:
    return [
        message(query, ("example.com.", "SOA", SOA)),
        message(query, ("www.example.com.", "A", "192.0.2.80")),
        message(query, ("example.com.", "SOA", SOA)),
    ]


async def serve(answer: Answer | None, run: Callable[[int], Awaitable[None]]) -> None:
    """Serve one connection on a free 127.0.0.1 port: read the query, send what
    ``answer`` makes (None: close at once), then close; ``run(port)`` is the client."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if answer is not None:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                for reply in answer(query):
                    wire = reply.to_wire()
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await run(port)


def run_transfer(answer: Answer | None, timeout: float = 5.0) -> object:
    result: list[object] = []

    async def client(port: int) -> None:
        try:
            result.append(await transfer("127.0.0.1", port, "example.com", timeout=timeout))
        except TransferError as exc:
            result.append(exc)

    asyncio.run(serve(answer, client))
    return result[0]


def test_whole_zone_without_question_sections() -> None:
    """axfrdns' answer (no question in any message) is a whole zone: serial, records."""
    done = run_transfer(axfrdns_like)
    assert not isinstance(done, TransferError), done
    assert (done.serial, done.records) == (42, 2)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (None, "refused: its tcp rules or AXFR list"),  # closed or reset, as timing has it
        (lambda q: axfrdns_like(q)[:2], "after 2 records, before the closing SOA"),
        (lambda q: [message(q, ("www.example.com.", "A", "192.0.2.80"))], "start with the SOA"),
    ],
    ids=["closed", "cut-short", "no-soa-first"],
)
def test_no_whole_zone(answer: Answer | None, words: str) -> None:
    """A server that closes, cuts the zone short or starts elsewhere gives no zone."""
    done = run_transfer(answer)
    assert isinstance(done, TransferError)
    assert words in done.reason


def test_refused_by_rcode() -> None:
    def refused(query: dns.message.Message) -> list[dns.message.Message]:
        answer = message(query)
        answer.set_rcode(dns.rcode.REFUSED)
        return [answer]

    done = run_transfer(refused)
    assert isinstance(done, TransferError)
    assert done.reason == "answered REFUSED"


def test_other_id() -> None:
    def stranger(query: dns.message.Message) -> list[dns.message.Message]:
        answer = message(query, ("example.com.", "SOA", SOA))
        answer.id = (query.id + 1) % 65536
        return [answer]

    done = run_transfer(stranger)
    assert isinstance(done, TransferError)
    assert "another query" in done.reason


def test_nothing_listens() -> None:
    async def main() -> TransferError:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(TransferError) as caught:
            await transfer("127.0.0.1", port, "example.com", timeout=5)
        return caught.value

    assert "connection refused" in asyncio.run(main()).reason
