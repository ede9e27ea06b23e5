"""Operators' own commands on the daemon's events: ``[hooks]`` in the config.

A hook is a shell command run after a build, after each slave's push, once all
slaves are done with a build, or after a failure, with the facts in its
environment (``DNSMASTER_EVENT``, ``DNSMASTER_SERIAL``, ``DNSMASTER_SHA256``,
``DNSMASTER_SLAVE``, ``DNSMASTER_RESULT``, ``DNSMASTER_ERROR``...). Its output is
logged line by line, like a slave's, cut to a bounded size whatever it prints;
it is killed after ``timeout`` seconds, and whatever it left running in its
process group when it ends. A hook runs beside the daemon's work, never in its
way: a slow, failing, hanging or babbling hook never holds up a build or a push.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from dnsmaster.config import HookOptions
from dnsmaster.core.text import LineCutter

__all__ = ["EVENTS", "Hooks"]

EVENTS = ("build", "push", "done", "failure")

#: A hook prints at most this many lines into the log, both streams together; the
#: rest is read and dropped (counted in one ``hook.output_cut``).
MAX_LINES = 200
#: A longer line is logged cut to this many bytes, with ``truncated`` the bytes cut.
MAX_LINE = 4096
_CHUNK = 64 * 1024


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
                start_new_session=True,  # its own process group: its end kills it all
            )
        except OSError as exc:
            self.log.error("hook.failed", hook=event, error=exc.strerror or str(exc))
            return
        try:
            status = await self._watch(event, proc)
        except OSError as exc:  # a hook's failure, whatever it is, is never the daemon's
            error = f"reading its output: {exc.strerror or exc}"
            self.log.error("hook.failed", hook=event, error=error)
            return
        finally:
            # Whatever ended the run (exit, timeout, cancel, an error), nothing the hook
            # started outlives it: a background child would hold the pipes, or run on
            # unseen. After a plain exit the leader is reaped already, but the kernel
            # reuses no pid while a group of that id has a member: killpg reaches the
            # hook's leftovers and nobody else.
            _kill_group(proc.pid)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
        seconds = round(time.monotonic() - started, 3)
        if status is None:
            self.log.error(
                "hook.failed", hook=event, error=f"timed out after {self.options.timeout:g} s"
            )
        elif status == 0:
            self.log.info("hook.done", hook=event, seconds=seconds)
        else:
            self.log.error("hook.failed", hook=event, exit_status=status, seconds=seconds)

    async def _watch(self, event: str, proc: asyncio.subprocess.Process) -> int | None:
        """Log the hook's output until it exits; its exit status, None on timeout."""
        assert proc.stdout is not None
        assert proc.stderr is not None
        output = _Output(event, self.log)
        try:
            async with asyncio.timeout(self.options.timeout):
                await asyncio.gather(
                    output.read(proc.stdout, "stdout"), output.read(proc.stderr, "stderr")
                )
                return await proc.wait()
        except TimeoutError:
            return None
        finally:
            output.close()

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


class _Output:
    """A hook's output as ``hook.line`` events, whatever its shape: lines cut at
    :data:`MAX_LINE` bytes, at most :data:`MAX_LINES` of them, the rest counted.

    Read in chunks, never by ``readline``: a line longer than the stream's buffer
    limit would raise there, and take the daemon down with it.
    """

    def __init__(self, hook: str, log: Any) -> None:
        self._hook = hook
        self._log = log
        self._left = MAX_LINES
        self.dropped = 0

    async def read(self, reader: asyncio.StreamReader, stream: str) -> None:
        cutter = LineCutter(MAX_LINE)
        try:
            while chunk := await reader.read(_CHUNK):
                if self._left <= 0:
                    self.dropped += cutter.skip(chunk)
                    continue
                for line in cutter.feed(chunk):
                    self._emit(stream, *line)
        finally:
            if self._left <= 0:
                self.dropped += cutter.open
            elif (last := cutter.end()) is not None:
                self._emit(stream, *last)

    def _emit(self, stream: str, raw: bytes, truncated: int) -> None:
        if self._left <= 0:
            self.dropped += 1
            return
        self._left -= 1
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if truncated:
            self._log.info(
                "hook.line", hook=self._hook, stream=stream, line=text, truncated=truncated
            )
        else:
            self._log.info("hook.line", hook=self._hook, stream=stream, line=text)

    def close(self) -> None:
        """Say once how many lines were dropped, if any were."""
        if self.dropped:
            self._log.warning(
                "hook.output_cut", hook=self._hook, dropped_lines=self.dropped, max_lines=MAX_LINES
            )
