"""The TOML configuration, read into frozen dataclasses.

Every mistake is a :class:`~dnsmaster.errors.ConfigError` naming the file and the
key (``slave[2].host``), found before the daemon does anything. Relative paths
are taken relative to the configuration file, so a config and its zones can move
together (the shipped demo relies on it). A leading ``~`` is the home directory in
the running account's passwd entry, never ``$HOME`` (see :func:`expand_home`).

Private keys are read and parsed here, not at the first push: a key with a
passphrase, or a file that is no private key, would otherwise surface only as a
failed push per slave, retried forever. What is legal but unsafe (files others
may write, a key others may read) is no error: it is listed in
:attr:`Config.warnings` for the caller to log. A command that never opens SSH
(``status`` without ``--live``) loads with ``ssh=False``: it may run as a user
who cannot read the key, on a master whose known_hosts is not written yet.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from dnsmaster.errors import ConfigError
from dnsmaster.fsutil import account, describe, home

__all__ = [
    "DEFAULT_KEYS",
    "Config",
    "DaemonOptions",
    "GuardOptions",
    "HookOptions",
    "LogOptions",
    "PushOptions",
    "Slave",
    "expand_home",
    "from_mapping",
    "load",
    "load_paths",
    "resolve_path",
]

ENV_VAR = "DNSMASTER_CONFIG"

#: The default cap on one zones file: far above any real one (1M lines are about
#: 50 MB), far below what would exhaust memory.
MAX_FILE_SIZE = 256 * 1024 * 1024

#: The keys an SSH slave is logged in to with when neither it nor the config names
#: one (OpenSSH's own defaults, in its order of preference); ``~`` as in
#: :func:`expand_home`.
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True, slots=True)
class Slave:
    """One slave: where to reach its receiver and where its tinydns answers."""

    name: str
    host: str = ""
    port: int = 22
    user: str = "dnsslave"
    key: Path | None = None
    dns: str = ""
    dns_port: int = 53
    protocol: Literal["dnsmaster", "legacy"] = "dnsmaster"
    transport: Literal["ssh", "local"] = "ssh"
    #: The tinydns root, for ``transport = "local"`` (the receiver runs here).
    root: Path | None = None
    #: zlib on what is pushed: ``auto`` (on unless the slave is on this machine:
    #: a loopback host or a local transport), ``on`` or ``off``. Only receivers of
    #: protocol 2 and up take it; older ones get the data plain.
    compress: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """``[daemon]``: when to build, how to retry and verify."""

    debounce: float = 0.5
    max_delay: float = 5.0
    poll: bool = False
    poll_interval: float = 1.0
    retry_initial: float = 1.0
    retry_max: float = 300.0
    stop_timeout: float = 30.0
    verify: bool = True
    verify_timeout: float = 2.0
    #: Seconds between checks of the sources' fingerprint, which catch any change the
    #: watcher missed (0: never).
    rescan: float = 60.0
    #: How many builds the master keeps in OUTPUT/.dnsmaster-builds for rollback.
    keep: int = 10


@dataclass(frozen=True, slots=True)
class PushOptions:
    """``[push]``: how many slaves at once, and how long to wait for each."""

    parallel: int = 16
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    timeout: float = 300.0
    #: A kept connection whose host key was confirmed longer ago than this is reused
    #: only after a key exchange shows the slave still has that key (0: every push).
    host_key_recheck: float = 60.0


@dataclass(frozen=True, slots=True)
class HookOptions:
    """``[hooks]``: shell commands run on events, with the facts in the environment.

    Each is run by ``/bin/sh -c``; empty means none. A hook never holds up a push:
    it runs beside the daemon's work and is killed after ``timeout`` seconds.
    """

    build: str = ""  # after a good build
    push: str = ""  # after each slave's push, whatever its result
    done: str = ""  # once every slave has the build or failed it
    failure: str = ""  # after a failed build or a failed push
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class GuardOptions:
    """``[guard]``: a build that removes this much waits for ``push --accept``."""

    max_removed: float = 0.1  # the share of records a build may remove (1: no limit)
    zones: bool = True  # dropping a whole zone holds the build
    allow: tuple[str, ...] = ()  # zones that may be dropped without holding


@dataclass(frozen=True, slots=True)
class LogOptions:
    """``[log]``: one line per event; logfmt without timestamps suits multilog."""

    format: Literal["logfmt", "json"] = "logfmt"
    timestamps: bool = False
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    path: Path
    zones: Path
    output: Path
    state: Path
    key: Path | None = None
    known_hosts: Path | None = None
    strict: bool = False
    #: A ``6`` line (the IPv6 patch's AAAA + PTR) publishes its PTR under ip6.int as
    #: well as ip6.arpa, as the patched tinydns-data does; false leaves it out.
    ipv6_int: bool = True
    #: The largest zones file a build reads, in bytes.
    max_file_size: int = MAX_FILE_SIZE
    slaves: tuple[Slave, ...] = ()
    daemon: DaemonOptions = field(default_factory=DaemonOptions)
    push: PushOptions = field(default_factory=PushOptions)
    log: LogOptions = field(default_factory=LogOptions)
    hooks: HookOptions = field(default_factory=HookOptions)
    guard: GuardOptions = field(default_factory=GuardOptions)
    #: The Prometheus textfile the daemon rewrites after each build and push (for
    #: node_exporter's textfile collector, which reads only ``*.prom``); None: none.
    metrics: Path | None = None
    #: Unsafe but working setups found at load, each naming the path, what is
    #: wrong and the fix (``chmod 600 KEY``); the daemon and push log them.
    warnings: tuple[str, ...] = ()

    def select(self, names: Sequence[str]) -> tuple[Slave, ...]:
        """The slaves named (all when ``names`` is empty), in config order.

        Raises :class:`ConfigError` naming every name no slave has.
        """
        unknown = sorted(set(names) - {s.name for s in self.slaves})
        if unknown:
            raise ConfigError(str(self.path), "slave", f"no such slave: {', '.join(unknown)}")
        return tuple(s for s in self.slaves if not names or s.name in names)


def expand_home(text: str) -> Path:
    """``text`` as a path, a leading ``~`` or ``~/`` being the running account's home.

    The home comes from the passwd entry (:func:`dnsmaster.fsutil.home`), never from
    ``$HOME``: daemontools and runit pass on the environment of whoever started the
    supervisor (often root's ``HOME=/root``), and the daemon runs as its own account.
    ``~NAME`` is NAME's home, as in the shell. ValueError if the account has no entry.
    """
    if text != "~" and not text.startswith("~/"):
        return Path(text).expanduser()  # ~NAME: looked up in passwd, $HOME unused
    own = home()
    if own is None:
        raise ValueError(f"~ has no meaning for {account()}: give an absolute path")
    return own / text[2:]


def resolve_path(option: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The config file: ``--config``, else ``$DNSMASTER_CONFIG``."""
    if option is not None:
        return Path(option)
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    raise ConfigError("", "", f"no configuration: give --config FILE or set {ENV_VAR}")


def load(path: Path, *, ssh: bool = True) -> Config:
    """Read and check the configuration file at ``path``.

    ``ssh=False``: the files only an SSH connection reads (known_hosts, private
    keys) are named but not checked, for a command that never opens one.
    """
    return from_mapping(_parse(path), path=path, ssh=ssh)


def load_paths(path: Path) -> Config:
    """Only where the daemon's files are (zones, output, state, and the size cap that
    reading the zones needs), from a file that may not load as a whole.

    For ``status``: a daemon whose SIGHUP found the file broken runs on, and its
    state file is still found. Raises :class:`ConfigError` when even these cannot
    be read (the file is no TOML).
    """
    table = _parse(path)
    keys: tuple[str, ...] = ("zones", "output", "state", "max_file_size")
    wanted = {k: table[k] for k in keys if k in table}
    top = _Reader(wanted, path=path, prefix="")
    zones = top.path("zones")
    output = top.path("output")
    if zones is None or output is None:
        raise top.error("zones" if zones is None else "output", "missing")
    return Config(
        path=path,
        zones=zones,
        output=output,
        state=top.path("state") or output / "dnsmaster-state.json",
        max_file_size=top.integer("max_file_size", MAX_FILE_SIZE, low=1, high=1 << 40),
    )


def _parse(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read as {account()}: {describe(exc)}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    return table


_T = TypeVar("_T")


class _Reader:
    """Takes keys out of one TOML table, checking each; leftovers are unknown keys."""

    def __init__(self, table: Mapping[str, Any], *, path: Path, prefix: str) -> None:
        self._table = dict(table)
        self._given = frozenset(self._table)
        self._path = path
        self._prefix = prefix
        self._known: tuple[str, ...] = ()

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(str(self._path), f"{self._prefix}{key}", reason)

    def take(self, key: str, kind: type[_T] | tuple[type, ...], default: _T) -> _T:
        if key not in self._table:
            return default
        value = self._table.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML booleans are ints to isinstance; a bool is never a number here.
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kind_name(kinds)}, not {_toml_type(value)}")
        return value  # type: ignore[return-value]

    def text(self, key: str, default: str = "") -> str:
        value = self.take(key, str, default)
        if key in self._given and not value:
            raise self.error(key, "must not be empty")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = float(self.take(key, (int, float), default))
        if math.isnan(value) or value < minimum:
            raise self.error(key, f"must be at least {minimum:g}")
        return value

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self.take(key, int, default)
        if not low <= value <= high:
            raise self.error(key, f"must be from {low} to {high}, not {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.take(key, str, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return value

    def path(self, key: str) -> Path | None:
        value = self.take(key, str, "")
        if key in self._given and not value:
            raise self.error(key, "must not be empty")
        if not value:
            return None
        try:
            return (self._path.parent / expand_home(value)).absolute()
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def table(self, key: str) -> Mapping[str, Any]:
        return self.take(key, dict, {})

    def known(self, names: tuple[str, ...]) -> _Reader:
        """Name the keys this table may hold, for the unknown-key message."""
        self._known = names
        return self

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self._table:
            key = sorted(self._table)[0]
            raise self.error(key, f"unknown key (known: {', '.join(sorted(self._known))})")


def _kind_name(kinds: tuple[type, ...]) -> str:
    if float in kinds:
        kinds = tuple(k for k in kinds if k is not int)  # int or float: "a number"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _toml_type(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        dict: "a table",
        list: "an array",
    }.get(type(value), type(value).__name__)


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def from_mapping(table: Mapping[str, Any], *, path: Path, ssh: bool = True) -> Config:
    """Check a parsed TOML document and build the :class:`Config` (``ssh``: as for
    :func:`load`)."""
    top_keys = (
        "zones", "output", "state", "key", "known_hosts", "user", "strict", "max_file_size",
        "ipv6_int", "slave", "daemon", "push", "log", "metrics", "hooks", "guard",
    )  # fmt: skip
    with _Reader(table, path=path, prefix="").known(top_keys) as top:
        zones = top.path("zones")
        if zones is None:
            raise top.error("zones", "missing: the directory holding header and zones.*")
        output = top.path("output")
        if output is None:
            raise top.error("output", "missing: the directory to write data and data.cdb in")
        state = top.path("state") or output / "dnsmaster-state.json"
        key = top.path("key")
        metrics = top.path("metrics")
        if metrics is not None and (metrics.suffix != ".prom" or metrics.name == ".prom"):
            raise top.error(
                "metrics",
                f"{metrics}: name the file NAME.prom: node_exporter's textfile collector "
                "reads only *.prom files",
            )
        known_hosts = top.path("known_hosts")
        user = top.text("user", "dnsslave")
        strict = top.take("strict", bool, False)
        ipv6_int = top.take("ipv6_int", bool, True)
        max_file_size = top.integer("max_file_size", MAX_FILE_SIZE, low=1, high=1 << 40)
        daemon = _section(top.table("daemon"), path, "daemon.", _daemon)
        push = _section(top.table("push"), path, "push.", _push)
        log = _section(top.table("log"), path, "log.", _log)
        hooks = _section(top.table("hooks"), path, "hooks.", _hooks)
        guard = _section(top.table("guard"), path, "guard.", _guard)
        raw_slaves = top.take("slave", list, [])
    slaves = tuple(_slave(item, path=path, index=i, user=user) for i, item in enumerate(raw_slaves))
    seen: dict[str, int] = {}
    for i, slave in enumerate(slaves):
        if slave.name in seen:
            raise ConfigError(str(path), f"slave[{i}].name", f"duplicate slave name {slave.name!r}")
        seen[slave.name] = i
    over_ssh = [s for s in slaves if s.transport == "ssh"]
    warnings = _writable_by_anyone(
        path, "the configuration file", "point dnsmaster at other zones, keys or slaves"
    )
    warnings += _writable_by_anyone(
        zones, "the zones directory", "add a zones file and publish records for any domain"
    )
    keys: dict[Path, str] = {}  # each key file once, under the first config key naming it
    if over_ssh:
        known_hosts = known_hosts or _default_known_hosts(path)
        if ssh:
            _known_hosts_readable(path, known_hosts)
        warnings += _writable_by_anyone(
            known_hosts, "the known_hosts file", "add a host key and pose as a slave"
        )
        if key is not None:
            keys.setdefault(key, "key")
    for i, slave in enumerate(slaves):
        if slave.key is not None:
            keys.setdefault(slave.key, f"slave[{i}].key")
    for file, name in keys.items() if ssh else ():
        warnings += _private_key(path, name, file)
    return Config(
        path=path,
        zones=zones,
        output=output,
        state=state,
        key=key,
        known_hosts=known_hosts,
        strict=strict,
        ipv6_int=ipv6_int,
        max_file_size=max_file_size,
        slaves=slaves,
        daemon=daemon,
        push=push,
        log=log,
        hooks=hooks,
        guard=guard,
        metrics=metrics,
        warnings=tuple(warnings),
    )


def _section(
    table: Mapping[str, Any], path: Path, prefix: str, build: Callable[[_Reader], _T]
) -> _T:
    return build(_Reader(table, path=path, prefix=prefix))


def _daemon(r: _Reader) -> DaemonOptions:
    d = DaemonOptions()
    with r.known(_names(DaemonOptions)):
        options = DaemonOptions(
            debounce=r.number("debounce", d.debounce, minimum=0.01),
            max_delay=r.number("max_delay", d.max_delay),
            poll=r.take("poll", bool, d.poll),
            poll_interval=r.number("poll_interval", d.poll_interval, minimum=0.01),
            retry_initial=r.number("retry_initial", d.retry_initial, minimum=0.01),
            retry_max=r.number("retry_max", d.retry_max, minimum=0.01),
            stop_timeout=r.number("stop_timeout", d.stop_timeout),
            verify=r.take("verify", bool, d.verify),
            verify_timeout=r.number("verify_timeout", d.verify_timeout, minimum=0.01),
            rescan=r.number("rescan", d.rescan),
            keep=r.integer("keep", d.keep, low=1, high=10000),
        )
    if options.max_delay < options.debounce:
        raise r.error("max_delay", "must not be shorter than debounce")
    if options.retry_max < options.retry_initial:
        raise r.error("retry_max", "must not be shorter than retry_initial")
    return options


def _push(r: _Reader) -> PushOptions:
    d = PushOptions()
    with r.known(_names(PushOptions)):
        return PushOptions(
            parallel=r.integer("parallel", d.parallel, low=1, high=1024),
            connect_timeout=r.number("connect_timeout", d.connect_timeout, minimum=0.1),
            keepalive_interval=r.number("keepalive_interval", d.keepalive_interval),
            timeout=r.number("timeout", d.timeout, minimum=0.1),
            host_key_recheck=r.number("host_key_recheck", d.host_key_recheck),
        )


def _log(r: _Reader) -> LogOptions:
    d = LogOptions()
    with r.known(_names(LogOptions)):
        return LogOptions(
            format=r.choice("format", ("logfmt", "json"), d.format),  # type: ignore[arg-type]
            timestamps=r.take("timestamps", bool, d.timestamps),
            level=r.choice(  # type: ignore[arg-type]
                "level", ("debug", "info", "warning", "error"), d.level
            ),
        )


def _guard(r: _Reader) -> GuardOptions:
    d = GuardOptions()
    with r.known(_names(GuardOptions)):
        share = r.number("max_removed", d.max_removed)
        if share > 1:
            raise r.error("max_removed", "is a share of the records, from 0 to 1")
        allow = r.take("allow", list, list(d.allow))
        if not all(isinstance(z, str) and z for z in allow):
            raise r.error("allow", "must be a list of zone names")
        return GuardOptions(
            max_removed=share,
            zones=r.take("zones", bool, d.zones),
            allow=tuple(z.lower().rstrip(".") for z in allow),
        )


def _hooks(r: _Reader) -> HookOptions:
    d = HookOptions()
    with r.known(_names(HookOptions)):
        return HookOptions(
            build=r.text("build"),
            push=r.text("push"),
            done=r.text("done"),
            failure=r.text("failure"),
            timeout=r.number("timeout", d.timeout, minimum=0.1),
        )


def _slave(item: object, *, path: Path, index: int, user: str) -> Slave:
    prefix = f"slave[{index}]."
    if not isinstance(item, dict):
        raise ConfigError(str(path), f"slave[{index}]", "must be a table ([[slave]])")
    with _Reader(item, path=path, prefix=prefix).known(_names(Slave)) as r:
        name = r.text("name")
        if not name:
            raise r.error("name", "missing: every slave needs a name")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise r.error("name", f"{name!r}: use letters, digits, '-', '_' and '.'")
        transport = r.choice("transport", ("ssh", "local"), "ssh")
        host = r.text("host")
        root = r.path("root")
        if transport == "ssh" and not host:
            raise r.error("host", f"missing: slave {name!r} needs a host to push to")
        if transport == "local" and root is None:
            raise r.error("root", f"missing: local slave {name!r} needs its tinydns root")
        slave = Slave(
            name=name,
            host=host,
            port=r.integer("port", 22, low=1, high=65535),
            user=r.text("user", user),
            key=r.path("key"),
            dns=r.text("dns", host),
            dns_port=r.integer("dns_port", 53, low=1, high=65535),
            protocol=r.choice("protocol", ("dnsmaster", "legacy"), "dnsmaster"),  # type: ignore[arg-type]
            transport=transport,  # type: ignore[arg-type]
            root=root,
            compress=r.choice("compress", ("auto", "on", "off"), "auto"),  # type: ignore[arg-type]
        )
    return slave


def _default_known_hosts(path: Path) -> Path:
    # Never fall back to "no checking": the account's own known_hosts, or an error.
    try:
        return expand_home("~/.ssh/known_hosts")
    except ValueError as exc:
        raise ConfigError(str(path), "known_hosts", f"missing, and {exc}") from None


def _known_hosts_readable(path: Path, file: Path) -> None:
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            str(path),
            "known_hosts",
            f"cannot read {file} as {account()}: {describe(exc)}; every SSH slave's host key "
            f"is checked against it: create it (`ssh-keyscan -p PORT HOST >> {file}`, then "
            "compare the keys with the slaves'), or set known_hosts to the file that holds them",
        ) from None


#: Far beyond any private key (an 16384-bit RSA key is 13 kB): a bigger file is not
#: one, and reading it whole would only waste memory.
_KEY_SIZE_MAX = 1 << 20


def _private_key(path: Path, key: str, file: Path) -> list[str]:
    """Check that ``file`` holds a private key usable without a passphrase.

    Raises ConfigError (naming ``key``) when it is not; returns the warnings about
    its permissions.
    """

    def error(reason: str) -> ConfigError:
        return ConfigError(str(path), key, f"{file}: {reason}")

    try:
        # O_NONBLOCK: a key path naming a FIFO must not hang the start.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(
            str(path), key, f"cannot read {file} as {account()}: {describe(exc)}"
        ) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error("cannot read: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise error("not a regular file, so not a private key")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(_KEY_SIZE_MAX + 1)
    except OSError as exc:
        raise error(f"cannot read: {describe(exc)}") from None
    finally:
        os.close(fd)
    if not data.strip():
        raise error("empty file, not a private key")
    if len(data) > _KEY_SIZE_MAX:
        raise error("over 1 MiB: not a private key")
    _parse_private_key(data, file, error)
    return _key_permissions(key, file, info.st_mode)


def _parse_private_key(data: bytes, file: Path, error: Callable[[str], ConfigError]) -> None:
    # Imported here: asyncssh costs 0.16 s to import, which `build` and `check`
    # need not pay when no SSH slave is configured.
    from dnsmaster.transport.sshlib import asyncssh  # noqa: PLC0415

    try:
        asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        reason = str(exc)
        if "assphrase" in reason:
            # push.py connects without an agent and cannot ask for a passphrase.
            raise error(
                "the private key is encrypted with a passphrase; dnsmaster needs a key "
                "without a passphrase; make one with ssh-keygen -t ed25519 -N '' "
                f"(or remove this one's: ssh-keygen -p -N '' -f {file})"
            ) from None
        if _is_public_key(data):
            fix = ": name the file without .pub" if file.suffix == ".pub" else ""
            raise error(f"a public key, not a private key{fix}") from None
        if reason == "Invalid private key":
            reason = "not in a format ssh-keygen writes (OpenSSH, PEM or PKCS#8)"
        raise error(f"not a private key: {reason}") from None


def _is_public_key(data: bytes) -> bool:
    from dnsmaster.transport.sshlib import asyncssh  # noqa: PLC0415

    try:
        asyncssh.import_public_key(data)
    except (asyncssh.KeyImportError, ValueError):
        return False
    return True


def _key_permissions(key: str, file: Path, mode: int) -> list[str]:
    # OpenSSH's ssh refuses a key whose mode has any of 0o077 set ("UNPROTECTED
    # PRIVATE KEY FILE"); asyncssh does not check, so we say it ourselves.
    if mode & 0o077 == 0:
        return []
    return [
        f"{key}: {file}: the private key has mode {stat.S_IMODE(mode):04o}, open to group "
        f"or others: whoever can read it can log in to the slaves, and OpenSSH refuses "
        f"such a key; fix: chmod 600 {file}"
    ]


def _writable_by_anyone(file: Path, what: str, risk: str) -> list[str]:
    """A warning when any user may write ``file`` (a missing file is no warning)."""
    try:
        mode = file.stat().st_mode
    except OSError:
        return []  # what must exist is checked elsewhere, with a clear error
    if not mode & stat.S_IWOTH:
        return []
    return [
        f"{file}: {what} is writable by anyone (mode {stat.S_IMODE(mode):04o}): any local "
        f"user could {risk}; fix: chmod o-w {file}"
    ]
