"""Operators' own commands on the daemon's events: ``[hooks]`` in the config.

A hook is a shell command run after a build, after each slave's push, once all
slaves are done with a build, or after a failure, with the facts in its
environment (``DNSMASTER_EVENT``, ``DNSMASTER_SERIAL``, ``DNSMASTER_SHA256``,
``DNSMASTER_SLAVE``, ``DNSMASTER_RESULT``, ``DNSMASTER_ERROR``...). Its output is
logged line by line, like a slave's; it is killed after ``timeout`` seconds. A
hook runs beside the daemon's work, never in its way: a slow, failing or hanging
hook never holds up a build or a push.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from dnsmaster.config import HookOptions

__all__ = ["EVENTS", "Hooks"]

EVENTS = ("build", "push", "done", "failure")

#: A hook prints at most this many lines into the log; the rest is read and dropped.
MAX_LINES = 200


class Hooks:
    """Runs the configured hooks as tasks on the running loop."""

    def __init__(self, options: HookOptions, log: Any) -> None:
        self.options = options
        self.log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, event: str, **facts: object) -> None:
        """Start the hook for ``event``, if one is configured; returns at once."""
        command: str = getattr(self.options, event)
        if not command:
            return
        env = dict(os.environ, DNSMASTER_EVENT=event)
        for name, value in facts.items():
            env[f"DNSMASTER_{name.upper()}"] = "" if value is None else str(value)
        task = asyncio.create_task(self._run(event, command, env), name=f"hook {event}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event: str, command: str, env: dict[str, str]) -> None:
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except OSError as exc:
            self.log.error("hook.failed", hook=event, error=exc.strerror or str(exc))
            return
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines = 0

        async def read(reader: asyncio.StreamReader, stream: str) -> None:
            nonlocal lines
            while raw := await reader.readline():
                lines += 1
                if lines <= MAX_LINES:
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self.log.info("hook.line", hook=event, stream=stream, line=text)

        try:
            async with asyncio.timeout(self.options.timeout):
                await asyncio.gather(read(proc.stdout, "stdout"), read(proc.stderr, "stderr"))
                status = await proc.wait()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            self.log.error(
                "hook.failed", hook=event, error=f"timed out after {self.options.timeout:g} s"
            )
            return
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        seconds = round(time.monotonic() - started, 3)
        if status == 0:
            self.log.info("hook.done", hook=event, seconds=seconds)
        else:
            self.log.error("hook.failed", hook=event, exit_status=status, seconds=seconds)

    async def close(self, grace: float = 5.0) -> None:
        """At shutdown: let running hooks finish for ``grace`` seconds, then kill them."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
