"""The receiver as a local subprocess, exactly as sshd would run it: for the demo,
tests, and a slave on the master's own machine."""

from __future__ import annotations

import asyncio
import os
import sys

from dnsmaster.config import Slave
from dnsmaster.errors import SlaveError
from dnsmaster.transport.channel import LineSink, Payload, RunResult, converse, os_reason

__all__ = ["LocalChannel"]


class LocalChannel:
    """The receiver as a local subprocess, exactly as sshd would run it."""

    def __init__(self, slave: Slave) -> None:
        self.slave = slave

    async def run(self, verb: str, payload: Payload | None, on_line: LineSink) -> RunResult:
        assert self.slave.root is not None
        env = dict(os.environ, SSH_ORIGINAL_COMMAND=verb)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dnsmaster",
                "receive",
                "--root",
                str(self.slave.root),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise SlaveError(
                self.slave.name, f"cannot start the receiver: {os_reason(exc)}", phase="connect"
            ) from None
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            return await converse(
                self.slave.name,
                _PipeWriter(proc.stdin),
                proc.stdout,
                proc.stderr,
                payload=payload,
                on_line=on_line,
                wait=proc.wait,
            )
        except OSError as exc:
            raise SlaveError(
                self.slave.name, f"receiver pipe: {os_reason(exc)}", phase="transfer"
            ) from None
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def close(self) -> None:
        return None


class _PipeWriter:
    """asyncio's pipe StreamWriter with write_eof meaning "close stdin"."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def write_eof(self) -> None:
        self._writer.close()
