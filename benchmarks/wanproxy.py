"""A wide-area link in user space: a delaying, rate-limiting TCP proxy for loopback labs.

This kernel has the ``tbf`` qdisc but not ``netem``, so there is no kernel way to add
latency between two loopback addresses. Instead each slave's sshd gets a :class:`Proxy`
in front of it: the master connects to the proxy's port, the proxy connects to sshd, and
every byte is carried through two pumps, one per direction.

The method:

* **Delay.** A pump reads whatever has arrived (at most :data:`CHUNK` bytes), stamps it
  with ``now + delay`` and queues it; a second task writes each chunk when its stamp is
  due. Many chunks are in flight at once, so the delay adds latency without capping
  throughput at one chunk per delay (what a read, sleep, write loop would do).
* **Rate.** Before the master-to-slave pump stamps a chunk it takes that many bytes from
  one :class:`TokenBucket` shared by every proxy: the master's uplink, serialised, then
  propagated. The other direction is not limited (the slaves' replies are a few lines).
* **Connection set-up.** The proxy opens the connection to sshd one forward delay after
  accepting (the SYN's trip), and reads nothing from the master until one round trip
  after accepting (the SYN-ACK's trip back), so the first bytes reach sshd three one-way
  delays after ``connect()``, as over a real link; sshd's banner arrives after two.
* **Counting.** Each proxy counts the bytes it delivered in each direction, so a
  benchmark can say what crossed the link per slave.
* **Back-pressure.** A pump stops reading while :data:`MAX_IN_FLIGHT` bytes are queued,
  so a sender's kernel buffers fill and it blocks, as behind a real bottleneck.

The limits of the method:

* It adds a user-space hop: each byte is copied through Python on top of the lab's
  loopback (a few percent of a core at 50 Mbit/s), and timer resolution (about 1 ms in
  asyncio) is the finest delay step.
* TCP's own behaviour over a long path is not reproduced: both TCP connections of a
  proxied stream run over loopback with loopback's round trip, so there is no slow start
  stretched over 80 ms round trips, no loss and no retransmission. What the delay does
  govern is every end-to-end exchange above TCP: the SSH handshake's round trips, SSH's
  channel window (sshd's 2 MiB window must come back through the proxy before more data
  may go, so one channel moves at most window / RTT, 25 MB/s at 80 ms) and the
  application's own request-reply turns.
* The bucket models one bottleneck with a queue of :data:`MAX_IN_FLIGHT` bytes per
  connection; a real uplink's queue, drops and fairness between flows are not modelled
  (chunks are served first come, first served).

Loopback only: :class:`Proxy` refuses a listening or target address outside 127.0.0.0/8
and ::1.

Usage from a benchmark::

    bucket = TokenBucket(rate=50e6 / 8)
    proxy = Proxy(("127.0.1.2", 2222), bucket, up_delay=0.04, down_delay=0.04)
    await proxy.start("127.0.1.2")          # listens on a free port of that address
    ...                                      # connect to proxy.port instead of 2222
    print(proxy.counted())                   # Counts(to_target=..., to_client=...)
    await proxy.close()

:class:`ProxyThread` runs a set of proxies on an event loop of their own in a
background thread, for a synchronous benchmark that starts subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["CHUNK", "MAX_IN_FLIGHT", "Counts", "Proxy", "ProxyThread", "TokenBucket", "Trace"]

#: The most one read takes from a socket: 16 KiB is 2.6 ms at 50 Mbit/s, so the bucket
#: interleaves the slaves' streams finely.
CHUNK = 16 * 1024
#: Bytes a pump holds (stamped, not yet written) before it stops reading.
MAX_IN_FLIGHT = 4 * 1024 * 1024

_T = TypeVar("_T")

#: What a traced proxy saw: (time.perf_counter() of the read, ``>`` towards the target
#: or ``<`` back to the client, bytes read; 0 is the end of the stream).
Trace = list[tuple[float, str, int]]


def _check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host}: the WAN proxy works on loopback addresses only")


class TokenBucket:
    """A byte-rate limit that any number of pumps share, first come, first served.

    ``take(n)`` waits until ``n`` bytes may pass at ``rate`` bytes a second. Up to
    ``burst`` bytes of unused allowance are saved while the link is idle; the balance may
    go below zero by one chunk, and the next taker waits for it to be paid back.
    """

    def __init__(self, rate: float, burst: int = CHUNK) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        # The lock makes the takers queue (asyncio.Lock wakes waiters in order), so a
        # chunk waits behind the chunks of every other slave that asked before it.
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


@dataclass(frozen=True)
class Counts:
    """Bytes a proxy delivered: to the target (the master's sends) and back to the client."""

    to_target: int = 0
    to_client: int = 0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.to_target - other.to_target, self.to_client - other.to_client)


class _Pump:
    """One direction of one connection: read, (take from the bucket,) stamp, delay, write."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
        bucket: TokenBucket | None,
        counter: list[int],
        *,
        start_at: float = 0.0,
        trace: Trace | None = None,
        side: str = ">",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.delay = delay
        self.bucket = bucket
        self.counter = counter
        self.start_at = start_at
        self.trace = trace
        self.side = side
        # (due time, chunk); b"" is the end of the stream.
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.in_flight = 0
        self.room = asyncio.Event()
        self.room.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read())
            group.create_task(self._write())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        if self.start_at > loop.time():
            await asyncio.sleep(self.start_at - loop.time())
        while True:
            await self.room.wait()
            try:
                chunk = await self.reader.read(CHUNK)
            except ConnectionError:
                chunk = b""
            if self.trace is not None:
                self.trace.append((time.perf_counter(), self.side, len(chunk)))
            if chunk and self.bucket is not None:
                await self.bucket.take(len(chunk))
            self.queue.put_nowait((loop.time() + self.delay, chunk))
            if not chunk:
                return
            self.in_flight += len(chunk)
            if self.in_flight >= MAX_IN_FLIGHT:
                self.room.clear()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, chunk = await self.queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if not chunk:
                with contextlib.suppress(OSError):
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                return
            self.writer.write(chunk)
            await self.writer.drain()  # a ConnectionError ends the whole connection
            self.counter[0] += len(chunk)
            self.in_flight -= len(chunk)
            if self.in_flight < MAX_IN_FLIGHT:
                self.room.set()


class Proxy:
    """Listen on a loopback port; carry each connection to ``target`` over the emulated link.

    ``up_delay`` is the one-way delay towards the target (the master's sends), and
    ``down_delay`` back to the client; ``bucket`` (if any) limits the sends towards the
    target and may be shared with other proxies.
    """

    def __init__(
        self,
        target: tuple[str, int],
        bucket: TokenBucket | None,
        *,
        up_delay: float = 0.04,
        down_delay: float = 0.04,
    ) -> None:
        _check_loopback(target[0])
        self.target = target
        self.bucket = bucket
        self.up_delay = up_delay
        self.down_delay = down_delay
        self.host = ""
        self.port = 0
        self._to_target = [0]
        self._to_client = [0]
        self._server: asyncio.Server | None = None
        #: Set to a list to have every read of every connection recorded in it, as it
        #: arrives at the proxy (one delay before it reaches the other end).
        self.trace: Trace | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def counted(self) -> Counts:
        """Bytes delivered so far, in each direction (read between runs; not reset)."""
        return Counts(self._to_target[0], self._to_client[0])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host``:``port`` (0: a free one; then read :attr:`port`)."""
        _check_loopback(host)
        self._server = await asyncio.start_server(self._accept, host, port)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> int:
        """Cut every connection open now, as a link that drops would; keep listening.

        Both ends see their connection closed. Returns how many were cut.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def close(self) -> None:
        """Stop listening and cut every connection still open."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        if self.trace is not None:
            self.trace.append((time.perf_counter(), "connect", 0))
        target_w: asyncio.StreamWriter | None = None
        try:
            await asyncio.sleep(self.up_delay)  # the SYN on its way to the target
            try:
                target_r, target_w = await asyncio.open_connection(*self.target)
            except OSError:
                return  # refused: the client sees its connection closed
            up = _Pump(
                client_r,
                target_w,
                self.up_delay,
                self.bucket,
                self._to_target,
                start_at=accepted + self.up_delay + self.down_delay,
                trace=self.trace,
            )
            down = _Pump(
                target_r,
                client_w,
                self.down_delay,
                None,
                self._to_client,
                trace=self.trace,
                side="<",
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(up.run())
                group.create_task(down.run())
        except (Exception, asyncio.CancelledError):
            pass  # either side gone (or the proxy closing): cut both
        finally:
            for writer in (client_w, target_w):
                if writer is not None:
                    writer.close()
                    # Closing the proxy cancels this task: it ends here all the same.
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await writer.wait_closed()
            self._tasks.discard(task)


class ProxyThread:
    """Proxies on an event loop in a background thread, driven from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="wanproxy", daemon=True)
        self._thread.start()
        self.proxies: list[Proxy] = []

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the proxies' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def add(
        self,
        target: tuple[str, int],
        bucket: TokenBucket | None,
        *,
        listen: str,
        up_delay: float,
        down_delay: float,
    ) -> Proxy:
        async def make() -> Proxy:
            proxy = Proxy(target, bucket, up_delay=up_delay, down_delay=down_delay)
            await proxy.start(listen)
            return proxy

        proxy = self.call(make())
        self.proxies.append(proxy)
        return proxy

    def bucket(self, rate: float) -> TokenBucket:
        """A :class:`TokenBucket` made on the proxies' loop (its lock belongs to that loop)."""

        async def make() -> TokenBucket:
            return TokenBucket(rate)

        return self.call(make())

    def cpu(self) -> float:
        """CPU seconds the proxies' thread has used."""

        async def read() -> float:
            return time.thread_time()

        return self.call(read())

    def counted(self, proxies: Sequence[Proxy] | None = None) -> list[Counts]:
        async def read() -> list[Counts]:
            return [p.counted() for p in proxies or self.proxies]

        return self.call(read())

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(p.close() for p in self.proxies))

        try:
            self.call(close_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
