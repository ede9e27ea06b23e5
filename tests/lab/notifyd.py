"""A stand-in secondary on loopback: answers NOTIFY as told, answers or relays SOA.

A thread with one UDP socket (127.0.0.1, a port the kernel picks). Every NOTIFY
that arrives is recorded (its id, zone and arrival time); it is answered NOERROR,
with another rcode (``REFUSED``), or not at all (``rcode=None``), after ``drop``
datagrams are ignored. Any other question is relayed to ``upstream`` (the
master's own tinydns serving the served root), so the responder serves exactly what the
master serves: a secondary that transferred at once. ``upstream=None`` leaves
those unanswered. Built with dnspython, nothing else.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

__all__ = ["NotifyResponder", "Received"]


@dataclass(frozen=True, slots=True)
class Received:
    """One NOTIFY datagram as it arrived."""

    id: int
    zone: str
    at: float
    #: The address it came from.
    source: str


class NotifyResponder:
    """The stand-in secondary; a context manager, its thread stopped on exit."""

    def __init__(
        self,
        *,
        rcode: dns.rcode.Rcode | None = dns.rcode.NOERROR,
        drop: int = 0,
        upstream: tuple[str, int] | None = None,
        soa: dict[str, int] | None = None,
        bad_first: bool = False,
    ) -> None:
        self.rcode = rcode
        #: NOTIFY datagrams left to ignore before answering.
        self.drop = drop
        #: Answer each NOTIFY first with a wrong id, which must not count.
        self.bad_first = bad_first
        self.upstream = upstream
        #: Zone -> the serial its SOA answers, when there is no upstream (the test
        #: may change it while the responder runs).
        self.soa = dict(soa or {})
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.address, self.port = self._sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="notifyd", daemon=True)

    def __enter__(self) -> NotifyResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def zones(self) -> list[str]:
        with self._changed:
            return [r.zone for r in self.received]

    def wait_count(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until ``count`` NOTIFY datagrams arrived; all of them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} NOTIFY arrived, not {count}")
            return list(self.received)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = dns.message.from_wire(wire)
            except dns.exception.DNSException:
                continue
            if message.opcode() == dns.opcode.NOTIFY:
                self._notify(message, peer)
            elif self.upstream is not None:
                self._relay(wire, peer)
            else:
                self._answer_soa(message, peer)

    def _notify(self, message: dns.message.Message, peer: tuple[str, int]) -> None:
        zone = message.question[0].name.to_text(omit_final_dot=True) if message.question else ""
        with self._changed:
            self.received.append(Received(message.id, zone, time.monotonic(), peer[0]))
            self._changed.notify_all()
        if self.drop > 0:
            self.drop -= 1
            return
        if self.rcode is None:
            return
        response = dns.message.make_response(message)
        response.set_rcode(self.rcode)
        if self.bad_first:
            wrong = dns.message.make_response(message)
            wrong.id = (message.id + 1) % 65536
            self._sock.sendto(wrong.to_wire(), peer)
            not_qr = dns.message.make_response(message)
            not_qr.flags &= ~dns.flags.QR
            self._sock.sendto(not_qr.to_wire(), peer)
        self._sock.sendto(response.to_wire(), peer)

    def _answer_soa(self, message: dns.message.Message, peer: tuple[str, int]) -> None:
        if not message.question:
            return
        name = message.question[0].name
        serial = self.soa.get(name.to_text(omit_final_dot=True).lower())
        if serial is None:
            return  # silent, as a secondary still starting
        response = dns.message.make_response(message)
        response.flags |= dns.flags.AA
        rdata = dns.rdata.from_text(
            "IN", "SOA", f"ns.{name} hostmaster.{name} {serial} 3600 600 86400 300"
        )
        rrset = response.find_rrset(
            response.answer, name, dns.rdataclass.IN, dns.rdatatype.SOA, create=True
        )
        rrset.add(rdata, 300)
        self._sock.sendto(response.to_wire(), peer)

    def _relay(self, wire: bytes, peer: tuple[str, int]) -> None:
        assert self.upstream is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.settimeout(1.0)
            try:
                out.sendto(wire, self.upstream)
                answer, _ = out.recvfrom(65535)
            except OSError:
                return
        self._sock.sendto(answer, peer)
