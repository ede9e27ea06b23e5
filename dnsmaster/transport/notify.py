"""One DNS NOTIFY (RFC 1996) over UDP: sent, retransmitted, answered or given up.

A standard secondary (BIND, NSD, Knot, a provider) learns of a new serial from a
NOTIFY instead of waiting for its SOA refresh. UDP loses datagrams, so the same
message (same id) is sent again after :attr:`timeout` seconds, then after twice
that, and so on, :attr:`retries` times at most (RFC 1996 3.6 asks for a bounded
number of retransmissions). Only a NOTIFY response with our id, QR set and
NOERROR, from the address asked (the socket is connected, so the kernel drops
datagrams from anyone else), counts as the secondary's acknowledgement. An
answer with another rcode (REFUSED, NOTAUTH: the secondary does not take NOTIFY
from us for that zone) ends the NOTIFY at once: sending it again would change
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

__all__ = ["NotifyResult", "backoff", "notify", "notify_message"]


@dataclass(frozen=True, slots=True)
class NotifyResult:
    """How one NOTIFY ended."""

    zone: str
    #: The secondary answered NOERROR.
    acked: bool
    #: How many datagrams were sent (1 + the retransmissions).
    attempts: int
    #: Milliseconds from the first datagram to the answer (None: no answer).
    ms: float | None = None
    #: Why it failed: ``no answer`` after every retransmission, or the rcode
    #: (``REFUSED``), or the socket's error; None when acked.
    reason: str | None = None


def backoff(timeout: float, retries: int) -> tuple[float, ...]:
    """How long to wait for an answer after each datagram: ``timeout``, doubled each
    time; one wait per datagram (``retries + 1`` of them)."""
    return tuple(timeout * (1 << attempt) for attempt in range(retries + 1))


def notify_message(zone: str) -> dns.message.Message:
    """The NOTIFY for ``zone``: opcode NOTIFY, AA set, one question ``zone SOA``."""
    message = dns.message.make_query(dns.name.from_text(zone), dns.rdatatype.SOA)
    message.set_opcode(dns.opcode.NOTIFY)
    message.flags = dns.flags.AA | dns.opcode.to_flags(dns.opcode.NOTIFY)
    return message


class _Answers(asyncio.DatagramProtocol):
    """Datagrams arriving on the NOTIFY's socket, queued for :func:`notify`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: the secondary does not listen
        # (yet). Kept, so that a secondary starting meanwhile still gets a retry.
        self.queue.put_nowait(exc)


def _verdict(query: dns.message.Message, wire: bytes) -> str | None:
    """``ok``, or the rcode's name, for an answer to ``query``; None: not one."""
    try:
        answer = dns.message.from_wire(wire, question_only=True)
    except dns.exception.DNSException:
        return None
    if (
        answer.id != query.id
        or not answer.flags & dns.flags.QR
        or answer.opcode() != dns.opcode.NOTIFY
    ):
        return None
    rcode = answer.rcode()
    return "ok" if rcode == dns.rcode.NOERROR else dns.rcode.to_text(rcode)


async def notify(
    address: str,
    port: int,
    zone: str,
    *,
    timeout: float,
    retries: int,
    on_sent: Callable[[int, float], None] | None = None,
) -> NotifyResult:
    """Send a NOTIFY for ``zone`` to ``address``:``port`` until it is answered.

    Args:
        address: an IPv4 or IPv6 literal.
        zone: the zone's name (text).
        timeout: seconds to wait after the first datagram; doubled after each.
        retries: how many times to send it again when no answer comes.
        on_sent: called after each datagram with its attempt (from 1) and how many
            seconds it waits for an answer (the caller logs ``notify.sent``).

    Returns:
        A :class:`NotifyResult`; it never raises for the network's sake.
    """
    query = notify_message(zone)
    wire = query.to_wire()
    loop = asyncio.get_running_loop()
    try:
        transport, answers = await loop.create_datagram_endpoint(
            _Answers, remote_addr=(address, port)
        )
    except OSError as exc:
        return NotifyResult(zone, False, 0, reason=f"cannot send: {exc.strerror or exc}")
    started = time.monotonic()
    attempt = 0
    last_error: Exception | None = None
    try:
        for attempt, wait in enumerate(backoff(timeout, retries), start=1):
            transport.sendto(wire)
            if on_sent is not None:
                on_sent(attempt, wait)
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(left):
                        got = await answers.queue.get()
                except TimeoutError:
                    break
                if isinstance(got, Exception):
                    last_error = got
                    continue
                verdict = _verdict(query, got)
                if verdict is None:
                    continue  # not an answer to this NOTIFY: wait on
                if verdict == "ok":
                    ms = round((time.monotonic() - started) * 1000, 1)
                    return NotifyResult(zone, True, attempt, ms=ms)
                return NotifyResult(zone, False, attempt, reason=verdict)
    finally:
        with contextlib.suppress(OSError):
            transport.close()
    reason = "no answer"
    if last_error is not None:
        reason = f"no answer ({getattr(last_error, 'strerror', None) or last_error})"
    return NotifyResult(zone, False, attempt, reason=reason)
