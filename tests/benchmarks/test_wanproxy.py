"""The WAN benchmark's proxy: it delays, limits the rate, counts, and carries bytes intact.

The time checks are lower bounds only (a slow machine can only make them pass more
easily); a proxy that forgot the delay or the rate fails them.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from benchmarks.wanproxy import Counts, Proxy, TokenBucket


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _round_trip(port: int, payload: bytes) -> tuple[bytes, float, float]:
    """Send ``payload`` through the proxy to the echo server; (echo, connect-to-first-byte,
    total seconds)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    first = await reader.read(1)
    first_at = time.monotonic() - started
    rest = await reader.read()
    total = time.monotonic() - started
    writer.close()
    await writer.wait_closed()
    return first + rest, first_at, total


class TestProxy:
    def test_delay_and_counts(self) -> None:
        """The first echoed byte comes after SYN, SYN-ACK, data and echo: four one-way
        delays; every byte arrives intact and is counted once per direction."""

        async def main() -> tuple[bytes, float, Counts]:
            server, port = await _echo_server()
            proxy = Proxy(("127.0.0.1", port), None, up_delay=0.05, down_delay=0.05)
            await proxy.start("127.0.0.1")
            try:
                echoed, first_at, _ = await _round_trip(proxy.port, payload)
                return echoed, first_at, proxy.counted()
            finally:
                await proxy.close()
                server.close()
                await server.wait_closed()

        payload = os.urandom(300_000) + bytes(range(256))
        echoed, first_at, counts = asyncio.run(main())
        assert echoed == payload
        assert first_at >= 4 * 0.05
        assert counts == Counts(to_target=len(payload), to_client=len(payload))

    def test_rate_is_shared(self) -> None:
        """Two proxies on one 400 kB/s bucket move 2 x 200 kB in at least about a second;
        the replies are not limited."""

        async def main() -> tuple[float, list[Counts]]:
            server, port = await _echo_server()
            bucket = TokenBucket(400_000)
            proxies = [
                Proxy(("127.0.0.1", port), bucket, up_delay=0.0, down_delay=0.0) for _ in range(2)
            ]
            for proxy in proxies:
                await proxy.start("127.0.0.1")
            try:
                started = time.monotonic()
                results = await asyncio.gather(*(_round_trip(p.port, payload) for p in proxies))
                took = time.monotonic() - started
                assert all(echoed == payload for echoed, _, _ in results)
                return took, [p.counted() for p in proxies]
            finally:
                await asyncio.gather(*(p.close() for p in proxies))
                server.close()
                await server.wait_closed()

        payload = os.urandom(200_000)
        took, counts = asyncio.run(main())
        # 400 kB through the shared bucket, less the one burst it starts with.
        assert took >= (2 * len(payload) - 16 * 1024) / 400_000
        assert counts == [Counts(len(payload), len(payload))] * 2

    def test_loopback_only(self) -> None:
        """A target outside loopback is refused before anything listens."""
        with pytest.raises(ValueError, match="loopback"):
            Proxy(("192.0.2.1", 22), None)

    def test_cut(self) -> None:
        """cut() drops the connections open now (the client reads the end of its stream)
        and the proxy goes on accepting new ones."""

        async def main() -> tuple[int, bytes, bytes]:
            server, port = await _echo_server()
            proxy = Proxy(("127.0.0.1", port), None, up_delay=0.0, down_delay=0.0)
            await proxy.start("127.0.0.1")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"ping")
                await writer.drain()
                assert await reader.readexactly(4) == b"ping"
                cut = await proxy.cut()
                rest = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                await writer.wait_closed()
                echoed, _, _ = await _round_trip(proxy.port, b"again")
                return cut, rest, echoed
            finally:
                await proxy.close()
                server.close()
                await server.wait_closed()

        cut, rest, echoed = asyncio.run(main())
        assert cut == 1
        assert rest == b""
        assert echoed == b"again"
