"""Pushing a build to slaves: the one orchestrator, for ``dnsmaster push``,
``dnsmaster rollback`` and the daemon's slave workers alike.

A push to one slave (:func:`push_one`) sends what the master knows the slave can
take (an :class:`~dnsmaster.master.payload.Offer`: its receiver's protocol and the
bytes of the build it holds), falls back to the full data when the receiver
refuses a delta, and reports a :class:`PushResult`; it never raises for the
slave's failures. What the master knows comes from asking the receiver first
(:func:`ask_receiver`) or from the record of the last push
(:func:`record_results`); the delta's base is chosen in one place
(:meth:`Bases.offer`). :func:`push_all` pushes to many slaves, bounded, none
waiting on another; :func:`push_build` is a whole push by hand, as ``dnsmaster
push`` and ``rollback`` run it. The daemon's workers schedule their own pushes
(retries, parking, hand-off) around the same calls.

Every failure is a :class:`~dnsmaster.errors.SlaveError` (phase, reason, whether
retrying can help); a result carries the same facts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsmaster.config import Config, Slave
from dnsmaster.core.makedata import previous_serial
from dnsmaster.errors import ArchiveError, SlaveError, SlavePhase
from dnsmaster.master import state as statefile
from dnsmaster.master.archive import Archive
from dnsmaster.master.payload import (
    NO_SMALLER_DELTA,
    Data,
    DataFile,
    Offer,
    Send,
    compressed,
    text_of,
    tries_for,
)
from dnsmaster.protocol import DELTA, EXIT_DELTA, EXIT_USAGE, REFUSED_PREFIX, receiver_reason
from dnsmaster.transport.channel import (
    MAX_OUTPUT_BYTES,
    MAX_OUTPUT_LINES,
    LineSink,
    Receiver,
    RunResult,
    SlaveChannel,
    fetch_receiver,
    payload_size,
    receiver_error,
)
from dnsmaster.transport.local import LocalChannel

__all__ = [
    "Bases",
    "PushLog",
    "PushResult",
    "ask_receiver",
    "channel_for",
    "push_all",
    "push_build",
    "push_one",
    "record_results",
    "refused_line",
]


@dataclass(frozen=True, slots=True)
class PushResult:
    """How one slave's push ended.

    On failure ``error`` is the reason to show (the receiver's own last stderr line
    when it refused), ``phase`` where it failed and ``retryable`` whether pushing
    the same build again can help (see :class:`~dnsmaster.errors.SlaveError`).
    ``output_cut`` says the slave printed more than :data:`MAX_OUTPUT_LINES` lines or
    :data:`MAX_OUTPUT_BYTES` bytes on a stream, and the rest (``output_dropped``
    lines) was discarded.
    """

    slave: str
    ok: bool
    sha256: str
    bytes: int
    seconds: float
    exit_status: int | None = None
    error: str | None = None
    phase: SlavePhase | None = None
    retryable: bool = True
    output_cut: bool = False
    #: What was sent: ``delta`` or ``full`` (``bytes`` counts what went over the wire,
    #: after compression), and whether it was compressed.
    mode: str = "full"
    compressed: bool = False
    #: Why the receiver refused a delta, when it did (the full data followed).
    delta_refused: str | None = None
    #: Lines of the last run's output dropped past the caps, both streams together.
    output_dropped: int = 0

    @classmethod
    def unasked(cls, slave: str, sha256: str, error: SlaveError) -> PushResult:
        """The outcome of a slave that failed before anything was sent to it."""
        return cls(
            slave,
            False,
            sha256,
            0,
            0.0,
            exit_status=error.exit_status,
            error=error.reason,
            phase=error.phase,
            retryable=error.retryable,
        )


async def push_one(
    channel: SlaveChannel,
    data: Data,
    sha256: str,
    timeout: float,
    on_line: LineSink,
    *,
    offer: Offer | None = None,
    on_delta_refused: Callable[[str, str], None] | None = None,
    ask: Callable[[str], Awaitable[PushResult | Offer]] | None = None,
) -> PushResult:
    """Push ``data`` to one slave; never raises for the slave's failures.

    With an ``offer`` from the slave's status, a delta and compression as it
    allows; a delta the receiver refuses is reported to ``on_delta_refused`` (slave,
    reason) and followed by the full data, within the same ``timeout`` each.

    A :attr:`~Offer.recorded` offer saves the ``status`` exchange: only its delta is
    sent, and it counts only when the receiver says it installed this build. When
    it does not (another base there, exit 3; a receiver that no longer knows the
    verb, exit 2; or no such line), ``ask`` (called with why) asks the slave as a
    first contact does, and its answer is pushed as usual: the protocol check and
    the fallback to the full data stay as they were.
    """
    started = time.monotonic()
    offer = offer or Offer()
    if offer.recorded:
        done, stale = await _push_recorded(
            channel, data, sha256, timeout=timeout, on_line=on_line, offer=offer
        )
        if done is not None:
            return done
        asked = await ask(stale) if ask is not None else Offer()
        if isinstance(asked, PushResult):
            return asked
        offer = asked
    return await _push_offered(
        channel,
        data,
        sha256,
        timeout=timeout,
        on_line=on_line,
        offer=offer,
        on_delta_refused=on_delta_refused,
        started=started,
    )


async def _push_recorded(
    channel: SlaveChannel,
    data: Data,
    sha256: str,
    *,
    timeout: float,
    on_line: LineSink,
    offer: Offer,
) -> tuple[PushResult | None, str]:
    """The delta of a recorded offer: its result when it is final (installed, or a
    failure asking would not mend), else None and why the record does not hold."""
    slave = channel.slave
    started = time.monotonic()
    # Nothing to wait for before the delta: connect while it is computed (the first
    # slave computes it, about half a second at 500,000 lines; the others wait for it).
    # Only a channel with a connection to make (SSH) has warm(); asking the object,
    # not its class, spares this module importing asyncssh.
    warm: Callable[[], Coroutine[Any, Any, None]] | None = getattr(channel, "warm", None)
    warming = asyncio.create_task(warm()) if warm is not None else None
    try:
        sends = await tries_for(slave, data, offer)
    finally:
        if warming is not None:
            await warming
    send = sends[0]
    if send.mode != "delta":
        return None, NO_SMALLER_DELTA
    payload = await compressed(send) if send.compressed else send.plain
    try:
        async with asyncio.timeout(timeout):
            result = await channel.run(send.verb, payload, on_line)
    except TimeoutError:
        await channel.close()
        error: SlaveError = SlaveError(
            slave.name, f"timed out after {timeout:g} s", phase="timeout"
        )
    except SlaveError as exc:
        error = exc
    else:
        if result.exit_status in {EXIT_DELTA, EXIT_USAGE}:
            return None, receiver_reason(result.stderr_last, result.exit_status)
        if result.exit_status != 0:
            error = receiver_error(slave, result)
        elif any(line.startswith(f"done sha256={sha256} ") for line in result.stdout):
            return PushResult(
                slave.name,
                True,
                sha256,
                payload_size(payload),
                time.monotonic() - started,
                0,
                output_cut=result.cut,
                mode=send.mode,
                compressed=send.compressed,
                output_dropped=result.dropped,
            ), ""
        else:
            return None, "the receiver did not say it installed the build"
    failed = PushResult(
        slave.name,
        False,
        sha256,
        payload_size(payload),
        time.monotonic() - started,
        error.exit_status,
        error.reason,
        error.phase,
        error.retryable,
        mode=send.mode,
        compressed=send.compressed,
    )
    return failed, ""


async def _push_offered(
    channel: SlaveChannel,
    data: Data,
    sha256: str,
    *,
    timeout: float,
    on_line: LineSink,
    offer: Offer,
    on_delta_refused: Callable[[str, str], None] | None,
    started: float,
) -> PushResult:
    """:func:`push_one` once the slave's offer is known."""
    slave = channel.slave
    refused: str | None = None
    crossed = 0  # the bytes of a refused delta crossed too
    sends = await tries_for(slave, data, offer)
    for n, send in enumerate(sends):
        # Compressed only when it is sent: a delta taken spares the data's zlib.
        payload = await compressed(send) if send.compressed else send.plain
        crossed += payload_size(payload)

        def failed(
            error: SlaveError,
            run: RunResult | None = None,
            send: Send = send,
            sent: int = crossed,
            refused: str | None = refused,
        ) -> PushResult:
            return PushResult(
                slave.name,
                False,
                sha256,
                sent,
                time.monotonic() - started,
                error.exit_status,
                error.reason,
                error.phase,
                error.retryable,
                run is not None and run.cut,
                send.mode,
                send.compressed,
                refused,
                run.dropped if run is not None else 0,
            )

        try:
            async with asyncio.timeout(timeout):
                result = await channel.run(send.verb, payload, on_line)
        except TimeoutError:
            await channel.close()
            return failed(SlaveError(slave.name, f"timed out after {timeout:g} s", phase="timeout"))
        except SlaveError as exc:
            return failed(exc)
        if result.exit_status == EXIT_DELTA and send.mode == "delta" and n + 1 < len(sends):
            refused = receiver_reason(result.stderr_last, result.exit_status)
            if on_delta_refused is not None:
                on_delta_refused(slave.name, refused)
            continue
        if result.exit_status != 0:
            return failed(receiver_error(slave, result), result)
        return PushResult(
            slave.name,
            True,
            sha256,
            crossed,
            time.monotonic() - started,
            0,
            output_cut=result.cut,
            mode=send.mode,
            compressed=send.compressed,
            delta_refused=refused,
            output_dropped=result.dropped,
        )
    raise AssertionError("unreachable: the last send returns")  # pragma: no cover


async def push_all(
    channels: Sequence[SlaveChannel],
    data: Data,
    sha256: str,
    *,
    parallel: int,
    timeout: float,
    on_line: LineSink,
    on_result: Callable[[PushResult], None] | None = None,
    before: Callable[[SlaveChannel], Awaitable[PushResult | Offer | None]] | None = None,
    on_delta_refused: Callable[[str, str], None] | None = None,
    ask: Callable[[SlaveChannel, str], Awaitable[PushResult | Offer]] | None = None,
) -> list[PushResult]:
    """Push to every channel, at most ``parallel`` at once; results in channel order.

    ``before`` runs first in each slave's slot (asking its receiver what it runs,
    say); a result from it is that slave's outcome and nothing is pushed, an
    :class:`Offer` says what the push may use. Each slave goes on as soon as its own
    ``before`` is done, never waiting for the others'. ``ask`` (channel, why) is
    :func:`push_one`'s, for a recorded offer that does not hold.
    """
    gate = asyncio.Semaphore(parallel)

    async def one(channel: SlaveChannel) -> PushResult:
        async with gate:
            asked = await before(channel) if before is not None else None
            if isinstance(asked, PushResult):
                result = asked
            else:
                result = await push_one(
                    channel,
                    data,
                    sha256,
                    timeout,
                    on_line,
                    offer=asked,
                    on_delta_refused=on_delta_refused,
                    ask=None if ask is None else functools.partial(ask, channel),
                )
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(c) for c in channels)))


def refused_line(line: str) -> tuple[str, str] | None:
    """A line where a slave serving several masters names one line it refused:
    ``refused zones.X:LINE: +www.bank.example: not in this master's allowlist
    (a.example)`` gives (``zones.X:LINE``, the rest); None for any other line.

    The receiver's own last line (``dnsmaster receive: refused: ...``) is not one:
    it is the reason of the whole refusal, which the result carries.
    """
    if not line.startswith(_REFUSED_LINE) or line.startswith(REFUSED_PREFIX):
        return None
    where, sep, detail = line[len(_REFUSED_LINE) :].partition(": ")
    if not sep or not where or not detail:
        return None
    return where, detail


#: How the receiver starts each line of a push it refused line by line.
_REFUSED_LINE = "refused "


class PushLog:
    """Logs a push as it happens: ``push.line`` per slave line, then one result event.

    A line the receiver refused (a name outside this master's allowlist on a slave
    that serves several masters) is one ``push.refused_line`` error each, with its
    ``source`` (``zones.X:LINE``), instead of a ``push.line``.

    A changed or unknown host key is logged at level critical (someone may pose as
    the slave; only an operator can decide), other failures at error. Output cut at
    the caps is one ``push.output_cut`` warning before the result.
    """

    def __init__(self, logger: Any, serial: int | None = None) -> None:
        self._logger = logger
        self._serial = serial

    def line(self, slave: str, stream: str, line: str, truncated: int = 0) -> None:
        outside = refused_line(line)
        if outside is not None:
            # One event per offending line, so that each zones.X:LINE can be found
            # and counted in the log, not only the first few the last line names.
            where, detail = outside
            self._logger.error("push.refused_line", slave=slave, source=where, detail=detail)
            return
        if truncated:
            self._logger.info(
                "push.line", slave=slave, stream=stream, line=line, truncated=truncated
            )
        else:
            self._logger.info("push.line", slave=slave, stream=stream, line=line)

    def status_line(self, slave: str, stream: str, line: str, truncated: int = 0) -> None:
        """A line the receiver printed to ``status``: for debugging only."""
        cut = {"truncated": truncated} if truncated else {}
        self._logger.debug("status.line", slave=slave, stream=stream, line=line, **cut)

    def delta_refused(self, slave: str, reason: str) -> None:
        """The receiver refused a delta; the full data goes next."""
        self._logger.warning("push.delta_refused", slave=slave, error=reason, next="full push")

    def receiver(self, slave: str, receiver: Receiver) -> None:
        """Once per slave and run: a receiver too old for deltas is served, and told."""
        if receiver.protocol is not None and receiver.protocol < DELTA:
            self._logger.info(
                "push.receiver_old",
                slave=slave,
                protocol=receiver.protocol,
                version=receiver.version,
                hint=f"upgrade its receiver to protocol {DELTA} for delta and compressed pushes",
            )

    def result(self, result: PushResult) -> None:
        context: dict[str, object] = {
            "slave": result.slave,
            "serial": self._serial,
            "sha256": result.sha256[:16],
            "bytes": result.bytes,
            "mode": result.mode,
            "compressed": result.compressed,
            "seconds": round(result.seconds, 3),
        }
        if result.output_cut:
            self._logger.warning(
                "push.output_cut",
                slave=result.slave,
                dropped_lines=result.output_dropped,
                max_lines=MAX_OUTPUT_LINES,
                max_bytes=MAX_OUTPUT_BYTES,
            )
        if result.ok:
            self._logger.info("push.done", **context)
            return
        if result.exit_status is not None:
            context["exit_status"] = result.exit_status
        context["phase"] = result.phase
        context["retryable"] = result.retryable
        level = self._logger.critical if result.phase == "hostkey" else self._logger.error
        level("push.failed", **context, error=result.error)


def channel_for(slave: Slave, config: Config) -> SlaveChannel:
    """The channel that reaches ``slave``."""
    if slave.transport == "local":
        return LocalChannel(slave)
    # Imported here: asyncssh costs a quarter of a second of CPU, which a command
    # whose slaves are all local (a test, the demo) need not pay.
    from dnsmaster.transport.ssh import SshChannel  # noqa: PLC0415

    return SshChannel(slave, config)


class Bases:
    """The builds slaves hold, by sha256, for their deltas: the ``known`` ones (what
    the caller has in memory), else read from the master's archive, once each.

    Choosing a delta's base is this class's one job (:meth:`offer`): the daemon's
    workers and a push by hand choose it the same way.
    """

    def __init__(
        self, output: Path, keep: int, logger: Any, known: Mapping[str, Data] | None = None
    ) -> None:
        self._archive = Archive(output, keep)
        self._logger = logger
        self._bases: dict[str, Data | None] = dict(known or {})
        self._reading = asyncio.Lock()

    async def get(self, sha256: str, slave: str) -> Data | None:
        """The text of build ``sha256`` (which ``slave`` holds), when it can be had: a
        kept build is its file in the archive, read as the delta is made (and its
        sha256 checked then: a damaged one gives no delta)."""
        async with self._reading:
            if sha256 not in self._bases:
                try:
                    self._bases[sha256] = await asyncio.to_thread(self._kept, sha256)
                except ArchiveError as exc:
                    self._logger.warning(
                        "push.no_base", slave=slave, sha256=sha256[:16], error=exc.reason
                    )
                    self._bases[sha256] = None
        return self._bases[sha256]

    def _kept(self, sha256: str) -> DataFile | None:
        for kept in self._archive.entries():
            if kept.sha256 == sha256:
                try:
                    return DataFile(kept.path, sha256=sha256)
                except OSError:
                    continue  # pruned meanwhile, or unreadable: no delta from it
        return None

    async def offer(
        self, slave: Slave, protocol: int | None, holds: str | None, *, recorded: bool = False
    ) -> Offer:
        """What a push to ``slave`` may use: a receiver of ``protocol`` holding build
        ``holds`` (its sha256; None: nothing known) gets a delta against it when it
        speaks :data:`~dnsmaster.protocol.DELTA` and the bytes can be had."""
        base = None
        if slave.protocol != "legacy" and holds is not None and (protocol or 0) >= DELTA:
            base = await self.get(holds, slave.name)
        return Offer(protocol, base, recorded=recorded)


async def ask_receiver(channel: SlaveChannel, timeout: float, report: PushLog) -> Receiver:
    """What the slave's receiver speaks and holds
    (:func:`~dnsmaster.transport.channel.fetch_receiver`), its lines logged at debug
    and an old receiver named (:meth:`PushLog.receiver`): how every push asks a
    slave first."""
    receiver = await fetch_receiver(channel, timeout, report.status_line)
    report.receiver(channel.slave.name, receiver)
    return receiver


def record_results(
    output: Path, results: Sequence[PushResult], protocols: Mapping[str, int | None], logger: Any
) -> None:
    """Record what each slave now holds (nothing known, after a failure), with the
    protocol its receiver speaks: the next push, by hand or by the daemon, sends its
    delta against it without asking first (see :func:`push_build`)."""
    statefile.log_pushed(
        output,
        {
            r.slave: statefile.Pushed(r.sha256, protocols.get(r.slave) or 0) if r.ok else None
            for r in results
        },
        logger,
    )


async def push_build(
    cfg: Config,
    slaves: Sequence[Slave],
    data: Data,
    logger: Any,
    channels: Sequence[SlaveChannel] | None = None,
) -> list[PushResult]:
    """Push ``data`` to ``slaves`` by hand (no daemon): what ``dnsmaster push`` and
    ``dnsmaster rollback`` do, logged from ``push.start`` to ``push.end``.

    A slave the record of the last push (this command's, the daemon's, a
    rollback's) says holds a kept build gets a delta against it at once, without
    the ``status`` exchange; the receiver refuses any other base, and the slave is
    asked then. Any other slave is asked first, as the daemon does on first contact:
    is it a receiver that speaks this master's protocol, and which build does it
    hold? What each slave then holds is recorded. ``channels`` (one per slave, in
    order) are channels already reaching them (:mod:`dnsmaster.master.ahead`).
    """
    text = text_of(data)
    sha256 = data.sha256 if isinstance(data, DataFile) else hashlib.sha256(data).hexdigest()
    report = PushLog(logger, previous_serial(text.read(0, 200)))
    logger.info("push.start", slaves=len(slaves), sha256=sha256[:16], bytes=text.size)
    if channels is None:
        channels = [channel_for(slave, cfg) for slave in slaves]
    bases = Bases(cfg.output, cfg.daemon.keep, logger, {sha256: data})
    pushed = statefile.read_pushed(statefile.pushed_path(cfg.output))
    protocols: dict[str, int | None] = {}

    async def ask_first(channel: SlaveChannel) -> PushResult | Offer:
        slave = channel.slave
        try:
            receiver = await ask_receiver(channel, cfg.push.connect_timeout * 2, report)
        except SlaveError as exc:
            return PushResult.unasked(slave.name, sha256, exc)
        protocols[slave.name] = receiver.protocol
        holds = receiver.installed.sha256 if receiver.installed is not None else None
        return await bases.offer(slave, receiver.protocol, holds)

    async def recorded_first(channel: SlaveChannel) -> PushResult | Offer:
        slave = channel.slave
        known = pushed.get(slave.name)
        if known is not None:
            offer = await bases.offer(slave, known.protocol, known.sha256, recorded=True)
            if offer.base is not None:
                protocols[slave.name] = known.protocol
                return offer
        return await ask_first(channel)

    async def ask_again(channel: SlaveChannel, why: str) -> PushResult | Offer:
        name = channel.slave.name
        if why == NO_SMALLER_DELTA:  # the record holds; most of the data changed
            logger.info("push.delta_unused", slave=name, reason=why, next="status")
        else:
            logger.info("push.record_stale", slave=name, error=why, next="status")
        return await ask_first(channel)

    try:
        results = await push_all(
            channels,
            data,
            sha256,
            parallel=cfg.push.parallel,
            timeout=cfg.push.timeout,
            on_line=report.line,
            on_result=report.result,
            before=recorded_first,
            on_delta_refused=report.delta_refused,
            ask=ask_again,
        )
    finally:
        for channel in channels:
            await channel.close()
    record_results(cfg.output, results, protocols, logger)
    failed = sum(not r.ok for r in results)
    logger.info("push.end", ok=len(results) - failed, failed=failed)
    return results
