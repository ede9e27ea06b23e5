"""The master's own checkup for ``dnsmaster doctor``: its configuration and key
permissions, the zones, the output and state directories, the built data and the
C accelerator; and the words every check is reported in (:class:`Check`).

What the config loader only warns about (a configuration, zones directory or
known_hosts file others may write, a private key others may read) fails here:
doctor is where an operator asks whether the setup is right, not merely working.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from dnsmaster.config import DEFAULT_KEYS, Config, expand_home
from dnsmaster.core import accel
from dnsmaster.core.banner import previous_serial
from dnsmaster.core.soa import zone_serials
from dnsmaster.core.text import printable
from dnsmaster.fsutil import describe, user_name
from dnsmaster.master import served
from dnsmaster.master.secondaries import zone_text
from dnsmaster.master.zones import list_sources

__all__ = [
    "Build",
    "Check",
    "Findings",
    "Status",
    "accelerator_state",
    "master_checks",
    "user_name",
    "writable",
]

Status = Literal["OK", "WARN", "FAIL"]


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: ``group`` (config, output, slave NAME), what was checked,
    and for a warning or failure why and how to fix it."""

    group: str
    status: Status
    what: str
    why: str = ""
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        """``OK   group: what`` or ``FAIL group: what: why; fix: how``."""
        text = f"{self.status:<4} {self.group}: {self.what}"
        if self.why:
            text += f": {self.why}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return text


def accelerator_state() -> tuple[bool, str]:
    """Whether the C accelerator compiles, and in words why (not)."""
    return accel.state()


class Findings:
    """Collects one group's checks in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.checks: list[Check] = []

    def ok(self, what: str) -> None:
        self.checks.append(Check(self.name, "OK", what))

    def warn(self, what: str, why: str, fix: str = "") -> None:
        self.checks.append(Check(self.name, "WARN", what, why, fix))

    def fail(self, what: str, why: str, fix: str = "") -> None:
        self.checks.append(Check(self.name, "FAIL", what, why, fix))


def _default_keys() -> str:
    try:
        return ", ".join(str(expand_home(name)) for name in DEFAULT_KEYS)
    except ValueError as exc:
        return str(exc)


def _write_fix(directory: Path, exc: OSError) -> str:
    """How to make ``directory`` writable, for the reason ``exc`` says it is not."""
    if exc.errno == errno.ENOENT:
        return f"mkdir -p {shlex.quote(str(directory))}"
    if exc.errno == errno.EROFS:
        return (
            "its file system is mounted read-only: remount it read-write, or point the "
            "config at a writable directory"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"chown {user_name()} {shlex.quote(str(directory))} (or run dnsmaster as its owner)"
    if exc.errno == errno.ENOSPC:
        return "free space on its file system"
    return "make it a directory this user can write"


def _try_write(directory: Path) -> OSError | None:
    """Really create (and remove) a file in ``directory``: permission bits, ACLs,
    read-only mounts and full disks all say no the same way, as a build would meet it."""
    try:
        fd, name = tempfile.mkstemp(prefix=".dnsmaster-doctor.", dir=directory)
    except OSError as exc:
        return exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def writable(group: Findings, what: str, directory: Path) -> bool:
    """Whether this user can create files in ``directory``; says so in ``group``."""
    exc = _try_write(directory)
    if exc is None:
        group.ok(f"{what} {directory} writable by {user_name()}")
        return True
    if exc.errno == errno.ENOTDIR:
        group.fail(what, f"{directory} is not a directory", "point the config at a directory")
        return False
    group.fail(what, f"cannot write in {directory}: {describe(exc)}", _write_fix(directory, exc))
    return False


@dataclass(frozen=True, slots=True)
class Build:
    """The master's current data: what every slave should have and serve."""

    sha256: str
    serial: int | None
    zones: dict[bytes, int] = field(default_factory=dict)
    #: The build the served root should hold (what axfrdns gives the secondaries),
    #: when it is another one: while a build is held, or during a rollback.
    served: Build | None = None


def master_checks(cfg: Config) -> tuple[list[Check], Build | None]:
    """The master's checks in order, and its build (None when there is none to read)."""
    conf = Findings("config")
    ssh = [s for s in cfg.slaves if s.transport == "ssh"]
    conf.ok(
        f"{cfg.path}: {len(cfg.slaves)} slaves ({len(ssh)} ssh, {len(cfg.slaves) - len(ssh)} local)"
    )
    for warning in cfg.warnings:
        # Each warning names the path, the risk and the fix (``...; fix: chmod 600 KEY``).
        why, _, fix = warning.partition("; fix: ")
        conf.fail("permissions", why, fix)
    if not cfg.warnings:
        conf.ok("permissions: nothing others may write, no private key others may read")
    if ssh:
        keys = sorted({str(k) for k in [cfg.key, *(s.key for s in ssh)] if k is not None})
        conf.ok(
            f"ssh: known_hosts {cfg.known_hosts}, "
            + (
                f"key {', '.join(keys)}"
                if keys
                else f"{user_name()}'s default keys ({_default_keys()})"
            )
        )
    zones = Findings("zones")
    try:
        files, skipped = list_sources(cfg.zones)
    except OSError as exc:
        fix = f"mkdir -p {cfg.zones}" if exc.errno == errno.ENOENT else f"chmod u+rx {cfg.zones}"
        zones.fail(
            str(cfg.zones), f"cannot read: {describe(exc)}", f"{fix}, or set zones in {cfg.path}"
        )
    else:
        if files:
            zones.ok(
                f"{cfg.zones} readable: {len(files)} files (header, zones.*)" + _skipped(skipped)
            )
        else:
            zones.warn(
                str(cfg.zones),
                "no header or zones.* files: the build publishes nothing",
                "put the zones there (one zones.NAME file per customer or group)",
            )
    out = Findings("output")
    build: Build | None = None
    if writable(out, "directory", cfg.output):
        build = _read_build(out, cfg)
    for what, path in (("state", cfg.state), ("metrics", cfg.metrics)):
        if path is not None and path.parent != cfg.output:
            writable(out, f"{what} directory", path.parent)
    fast = Findings("accelerator")
    active, how = accelerator_state()
    if active:
        fast.ok("C accelerator active")
    else:
        fast.warn(
            "C accelerator",
            how,
            f"unset {accel.PURE_PYTHON_ENV}"
            if accel.disabled()
            else "apt-get install gcc python3-dev; pip install --force-reinstall dnsmaster",
        )
    return conf.checks + zones.checks + out.checks + fast.checks, build


def _skipped(skipped: Sequence[tuple[str, str]]) -> str:
    """The look-alikes the build leaves out, as `check` lists them (the first few)."""
    if not skipped:
        return ""
    shown = ", ".join(f"{printable(name)} ({reason})" for name, reason in skipped[:3])
    return f"; skipped {shown}" + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")


def _read_build(group: Findings, cfg: Config) -> Build | None:
    data_file = cfg.output / "data"
    try:
        data = data_file.read_bytes()
    except FileNotFoundError:
        group.warn(
            "data",
            f"{data_file} not built yet: nothing to push, no serial to ask the slaves for",
            f"dnsmaster build --config {shlex.quote(str(cfg.path))}",
        )
        return None
    except OSError as exc:
        group.fail("data", f"cannot read {data_file}: {describe(exc)}", f"chmod u+r {data_file}")
        return None
    build = Build(hashlib.sha256(data).hexdigest(), previous_serial(data[:300]), zone_serials(data))
    serial = f"serial {build.serial}" if build.serial is not None else "no dnsmaster banner"
    group.ok(f"data built: {serial}, {len(build.zones)} zones, sha256 {build.sha256[:16]}")
    want = _served_root(group, cfg, data) if served.wanted(cfg) else None
    if want is not None and want.sha256 != build.sha256:
        build = replace(build, served=Build(want.sha256, want.serial, want.zones))
    return build


def _served_root(group: Findings, cfg: Config, data: bytes) -> served.Expected | None:
    """Whether the served root holds the build the slaves are given, and no other;
    that build (None when the master no longer has it)."""
    root = served.root_of(cfg)
    what = f"served root {root}"
    want = served.expected(cfg, data)
    if want is None:
        group.warn(what, "the build the slaves have is not kept here: nothing to compare")
        return None
    fix = (
        "it is replaced when a build becomes current for the slaves: "
        "restart the daemon, or run dnsmaster push"
    )
    try:
        found = served.soa_serials((root / "data.cdb").read_bytes(), want.zones)
    except (OSError, ValueError) as exc:
        why = describe(exc) if isinstance(exc, OSError) else str(exc)
        group.fail(what, f"cannot read data.cdb: {why}; {want.what} has serial {want.serial}", fix)
        return want
    wrong = [(zone, serial) for zone, serial in want.zones.items() if found[zone] != serial]
    if not wrong:
        group.ok(f"{what}: {want.what}, serial {want.serial}, {len(want.zones)} zones")
        return want
    zone, serial = wrong[0]
    group.fail(
        what,
        f"data.cdb serves serial {found[zone]} for {printable(zone_text(zone))}, "
        f"{want.what} has serial {serial}"
        + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""),
        fix,
    )
    return want
