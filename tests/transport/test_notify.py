"""NOTIFY against a real UDP responder on loopback (tests/lab/notifyd.py).

Retransmission is checked by what arrived (how many datagrams, all with one id)
and by the waits :func:`notify` planned for each (``on_sent``), never by timing
the test itself.
"""

from __future__ import annotations

import asyncio
import socket

import dns.flags
import dns.opcode
import dns.rcode
import dns.rdatatype

from dnsmaster.transport.notify import NotifyResult, backoff, notify, notify_message
from tests.lab.notifyd import NotifyResponder

#: Short waits: the responder is on loopback, and a silent one costs their sum.
TIMEOUT = 0.05


def send(
    responder: NotifyResponder, retries: int = 3, zone: str = "example.com"
) -> tuple[NotifyResult, list[tuple[int, float]]]:
    sent: list[tuple[int, float]] = []

    async def run() -> NotifyResult:
        return await notify(
            responder.address,
            responder.port,
            zone,
            timeout=TIMEOUT,
            retries=retries,
            on_sent=lambda attempt, wait: sent.append((attempt, wait)),
        )

    return asyncio.run(run()), sent


def test_backoff_doubles_from_the_timeout() -> None:
    assert backoff(1.0, 5) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    assert backoff(0.5, 0) == (0.5,)


def test_the_message_is_a_notify_for_the_zone_soa() -> None:
    message = notify_message("Example.COM")
    assert message.opcode() == dns.opcode.NOTIFY
    assert message.flags & dns.flags.AA
    assert not message.flags & (dns.flags.RD | dns.flags.QR)
    (question,) = message.question
    assert question.name.to_text() == "Example.COM."
    assert question.rdtype == dns.rdatatype.SOA


def test_an_answered_notify_is_acked_at_once() -> None:
    with NotifyResponder() as responder:
        result, sent = send(responder)
    assert result.acked, result
    assert result.attempts == 1
    assert result.ms is not None
    assert result.ms >= 0
    assert sent == [(1, TIMEOUT)]
    assert responder.zones() == ["example.com"]


def test_silence_is_retransmitted_with_doubling_waits_then_fails() -> None:
    with NotifyResponder(rcode=None) as responder:
        result, sent = send(responder, retries=3)
        arrived = responder.wait_count(4)
    assert result == NotifyResult("example.com", False, 4, reason="no answer")
    assert sent == [(1, TIMEOUT), (2, 2 * TIMEOUT), (3, 4 * TIMEOUT), (4, 8 * TIMEOUT)]
    assert len(arrived) == 4, "one datagram per attempt, no more"
    assert len({r.id for r in arrived}) == 1, "a retransmission is the same message"


def test_a_lost_notify_is_answered_on_a_retransmission() -> None:
    with NotifyResponder(drop=2) as responder:
        result, sent = send(responder, retries=5)
    assert result.acked
    assert result.attempts == 3
    assert [attempt for attempt, _ in sent] == [1, 2, 3]
    assert len(responder.received) == 3


def test_refused_ends_at_once_without_retransmission() -> None:
    with NotifyResponder(rcode=dns.rcode.REFUSED) as responder:
        result, sent = send(responder, retries=5)
    assert result == NotifyResult("example.com", False, 1, reason="REFUSED")
    assert len(sent) == 1
    assert len(responder.received) == 1


def test_notauth_is_a_failure_too() -> None:
    with NotifyResponder(rcode=dns.rcode.NOTAUTH) as responder:
        result, _ = send(responder)
    assert not result.acked
    assert result.reason == "NOTAUTH"


def test_answers_with_a_wrong_id_or_without_qr_do_not_count() -> None:
    """The responder sends both before the right answer: only the right one acks."""
    with NotifyResponder(bad_first=True, drop=1) as responder:
        result, _ = send(responder, retries=2)
    assert result.acked
    assert result.attempts == 2


def test_no_retries_means_one_datagram() -> None:
    with NotifyResponder(rcode=None) as responder:
        result, sent = send(responder, retries=0)
        responder.wait_count(1)
    assert not result.acked
    assert result.attempts == 1
    assert sent == [(1, TIMEOUT)]


def test_nobody_listening_is_no_answer() -> None:
    """ICMP port unreachable on loopback: reported, never raised."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> NotifyResult:
        return await notify("127.0.0.1", port, "example.com", timeout=TIMEOUT, retries=1)

    result = asyncio.run(run())
    assert not result.acked
    assert result.attempts == 2
    assert result.reason is not None
    assert result.reason.startswith("no answer")
