"""The daemon's state file: what was built, what each slave has, what comes next.

Written atomically after every build and push result, so ``dnsmaster status``
(and a monitoring check) reads a whole file even while the daemon writes. The
format is plain JSON, meant to be read by people and scripts alike.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnsmaster import fsutil

__all__ = ["BuildState", "SlaveState", "State", "read", "render", "unhealthy", "write"]

FORMAT = 1


@dataclass(frozen=True, slots=True)
class BuildState:
    """The newest good build, the one every slave should have."""

    serial: int | None
    sha256: str
    records: int | None
    time: float
    error: str | None = None  # the last build attempt's failure, if it failed


@dataclass(frozen=True, slots=True)
class SlaveState:
    """One slave as the daemon last saw it."""

    name: str
    installed_sha256: str | None = None
    installed_serial: int | None = None
    result: str = "unknown"  # ok, failed, pushing, unknown
    error: str | None = None
    last_push: float | None = None
    next_retry: float | None = None
    verified: str | None = None  # ok, stale, failed


@dataclass(frozen=True, slots=True)
class State:
    """The whole file."""

    pid: int
    updated: float
    build: BuildState | None
    slaves: tuple[SlaveState, ...] = field(default=())


def write(path: Path, state: State) -> None:
    """Replace the state file atomically."""
    document = {"format": FORMAT, **asdict(state)}
    text = json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, text)), path)])


def read(path: Path) -> State:
    """Read a state file; raises OSError or ValueError (bad JSON or shape)."""
    document: dict[str, Any] = json.loads(path.read_bytes())
    if document.get("format") != FORMAT:
        raise ValueError(f"unknown state format {document.get('format')!r}")
    build = document.get("build")
    return State(
        pid=int(document["pid"]),
        updated=float(document["updated"]),
        build=BuildState(**build) if build else None,
        slaves=tuple(SlaveState(**s) for s in document.get("slaves", ())),
    )


def unhealthy(state: State) -> list[str]:
    """Why monitoring should worry: slaves behind or failing, a failed build."""
    problems = []
    if state.build is None:
        return ["no build yet"]
    if state.build.error:
        problems.append(f"last build failed: {state.build.error}")
    for slave in state.slaves:
        if slave.result == "failed":
            problems.append(f"{slave.name}: failing: {slave.error}")
        elif slave.installed_sha256 != state.build.sha256:
            problems.append(f"{slave.name}: behind")
    return problems


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def render(state: State) -> str:
    """The state as a table for people."""
    lines = [f"daemon pid {state.pid}, state written {_when(state.updated)}"]
    build = state.build
    if build is None:
        lines.append("build: none yet")
    else:
        lines.append(
            f"build: serial {build.serial} sha256 {build.sha256[:16]} "
            f"records {build.records} at {_when(build.time)}"
        )
        if build.error:
            lines.append(f"last build FAILED: {build.error}")
    rows = [("SLAVE", "STATE", "SERIAL", "SHA256", "LAST PUSH", "NEXT RETRY", "ERROR")]
    for s in state.slaves:
        current = build is not None and s.installed_sha256 == build.sha256
        status = s.result if s.result != "ok" else ("ok" if current else "behind")
        if s.verified == "stale":
            status += " (dns stale)"
        rows.append(
            (
                s.name,
                status,
                str(s.installed_serial) if s.installed_serial is not None else "-",
                (s.installed_sha256 or "-")[:16],
                _when(s.last_push),
                _when(s.next_retry),
                s.error or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"
