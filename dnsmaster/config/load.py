"""Loading the configuration file: TOML parsed, every table read and checked."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dnsmaster.config.keyfiles import (
    default_known_hosts,
    known_hosts_readable,
    private_key,
    writable_by_anyone,
)
from dnsmaster.config.model import (
    MAX_FILE_SIZE,
    AxfrdnsOptions,
    Config,
    DaemonOptions,
    GuardOptions,
    HookOptions,
    LogOptions,
    NotifyOptions,
    PushOptions,
    Secondary,
    Slave,
)
from dnsmaster.config.reader import TableReader, field_names
from dnsmaster.core.catalog import catalog_wire
from dnsmaster.errors import ConfigError
from dnsmaster.fsutil import account, describe

__all__ = ["ENV_VAR", "from_mapping", "load", "load_paths", "resolve_path"]

ENV_VAR = "DNSMASTER_CONFIG"


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
    top = TableReader(wanted, path=path, prefix="")
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


def from_mapping(table: Mapping[str, Any], *, path: Path, ssh: bool = True) -> Config:
    """Check a parsed TOML document and build the :class:`Config` (``ssh``: as for
    :func:`load`)."""
    top_keys = (
        "zones", "output", "state", "key", "known_hosts", "user", "strict", "max_file_size",
        "ipv6_int", "slave", "daemon", "push", "log", "metrics", "hooks", "guard",
        "secondary", "axfrdns", "notify", "catalog",
    )  # fmt: skip
    with TableReader(table, path=path, prefix="").known(top_keys) as top:
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
        axfrdns = _served_root(
            top, _section(top.table("axfrdns"), path, "axfrdns.", _axfrdns), output
        )
        notify = _section(top.table("notify"), path, "notify.", _notify)
        catalog = _catalog(top)
        raw_slaves = top.take("slave", list, [])
        raw_secondaries = top.take("secondary", list, [])
    slaves = tuple(_slave(item, path=path, index=i, user=user) for i, item in enumerate(raw_slaves))
    secondaries = tuple(
        _secondary(item, path=path, index=i) for i, item in enumerate(raw_secondaries)
    )
    _check_names(path, slaves, secondaries)
    if secondaries and not axfrdns.ip:
        raise ConfigError(
            str(path), "axfrdns.ip", "missing: the secondaries need the address axfrdns serves on"
        )
    over_ssh = [s for s in slaves if s.transport == "ssh"]
    warnings = writable_by_anyone(
        path, "the configuration file", "point dnsmaster at other zones, keys or slaves"
    )
    warnings += writable_by_anyone(
        zones, "the zones directory", "add a zones file and publish records for any domain"
    )
    keys: dict[Path, str] = {}  # each key file once, under the first config key naming it
    if over_ssh:
        known_hosts = known_hosts or default_known_hosts(path)
        if ssh:
            known_hosts_readable(path, known_hosts)
        warnings += writable_by_anyone(
            known_hosts, "the known_hosts file", "add a host key and pose as a slave"
        )
        if key is not None:
            keys.setdefault(key, "key")
    for i, slave in enumerate(slaves):
        if slave.key is not None:
            keys.setdefault(slave.key, f"slave[{i}].key")
    for file, name in keys.items() if ssh else ():
        warnings += private_key(path, name, file)
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
        secondaries=secondaries,
        axfrdns=axfrdns,
        notify=notify,
        catalog=catalog,
        warnings=tuple(warnings),
    )


def _section(
    table: Mapping[str, Any], path: Path, prefix: str, build: Callable[[TableReader], _T]
) -> _T:
    return build(TableReader(table, path=path, prefix=prefix))


def _daemon(r: TableReader) -> DaemonOptions:
    d = DaemonOptions()
    with r.known(field_names(DaemonOptions)):
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


def _push(r: TableReader) -> PushOptions:
    d = PushOptions()
    with r.known(field_names(PushOptions)):
        return PushOptions(
            parallel=r.integer("parallel", d.parallel, low=1, high=1024),
            connect_timeout=r.number("connect_timeout", d.connect_timeout, minimum=0.1),
            keepalive_interval=r.number("keepalive_interval", d.keepalive_interval),
            timeout=r.number("timeout", d.timeout, minimum=0.1),
            host_key_recheck=r.number("host_key_recheck", d.host_key_recheck),
        )


def _log(r: TableReader) -> LogOptions:
    d = LogOptions()
    with r.known(field_names(LogOptions)):
        return LogOptions(
            format=r.choice("format", ("logfmt", "json"), d.format),  # type: ignore[arg-type]
            timestamps=r.take("timestamps", bool, d.timestamps),
            level=r.choice(  # type: ignore[arg-type]
                "level", ("debug", "info", "warning", "error"), d.level
            ),
        )


def _guard(r: TableReader) -> GuardOptions:
    d = GuardOptions()
    with r.known(field_names(GuardOptions)):
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


def _hooks(r: TableReader) -> HookOptions:
    d = HookOptions()
    with r.known(field_names(HookOptions)):
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
    with TableReader(item, path=path, prefix=prefix).known(field_names(Slave)) as r:
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


def _check_names(path: Path, slaves: tuple[Slave, ...], secondaries: tuple[Secondary, ...]) -> None:
    # One namespace: logs, status and metrics name slaves and secondaries alike.
    seen: set[str] = set()
    for i, slave in enumerate(slaves):
        if slave.name in seen:
            raise ConfigError(str(path), f"slave[{i}].name", f"duplicate slave name {slave.name!r}")
        seen.add(slave.name)
    for i, secondary in enumerate(secondaries):
        if secondary.name in seen:
            raise ConfigError(
                str(path),
                f"secondary[{i}].name",
                f"duplicate name {secondary.name!r} (slaves and secondaries share names)",
            )
        seen.add(secondary.name)


def _catalog(top: TableReader) -> str:
    catalog = top.text("catalog")
    if not catalog:
        return ""
    name = _zone_name(catalog, lambda why: top.error("catalog", why))
    try:
        catalog_wire(name)  # what the build writes into data: a plain host name
    except ValueError as exc:
        raise top.error("catalog", str(exc)) from None
    return name


def _address(r: TableReader, key: str, text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise r.error(key, f"{text!r}: give an IPv4 or IPv6 address, not a name") from None
    return text


def _zone_name(text: str, error: Callable[[str], ConfigError]) -> str:
    """``text`` as the build names zones: lower case, without the final dot."""
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(0 < len(label) <= 63 for label in labels):
        raise error(f"{text!r} is no domain name")
    if any(c.isspace() or c in ":/\\" for c in name):
        raise error(f"{text!r}: a domain name has no spaces, ':', '/' or '\\'")
    return name


def _zone_list(r: TableReader, key: str) -> tuple[str, ...]:
    raw = r.take(key, list, [])
    if not all(isinstance(z, str) for z in raw):
        raise r.error(key, "must be a list of zone names")
    names = (_zone_name(z, lambda why: r.error(key, why)) for z in raw)
    return tuple(dict.fromkeys(names))


def _axfrdns(r: TableReader) -> AxfrdnsOptions:
    d = AxfrdnsOptions()
    with r.known(field_names(AxfrdnsOptions)):
        ip = r.text("ip")
        return AxfrdnsOptions(
            ip=_address(r, "ip", ip) if ip else "",
            port=r.integer("port", d.port, low=1, high=65535),
            service=r.path("service"),
            root=r.path("root"),
        )


def _served_root(top: TableReader, axfrdns: AxfrdnsOptions, output: Path) -> AxfrdnsOptions:
    """``[axfrdns] root`` given, or ``OUTPUT/served``."""
    if axfrdns.root is None:
        return dataclasses.replace(axfrdns, root=output / "served")
    if axfrdns.root == output:
        # The output directory holds held builds too: serving it defeats the guard.
        raise top.error("axfrdns.root", "must not be the output directory")
    return axfrdns


def _notify(r: TableReader) -> NotifyOptions:
    d = NotifyOptions()
    with r.known(field_names(NotifyOptions)):
        return NotifyOptions(
            timeout=r.number("timeout", d.timeout, minimum=0.01),
            retries=r.integer("retries", d.retries, low=0, high=20),
            confirm_timeout=r.number("confirm_timeout", d.confirm_timeout, minimum=0.1),
        )


def _secondary(item: object, *, path: Path, index: int) -> Secondary:
    if not isinstance(item, dict):
        raise ConfigError(str(path), f"secondary[{index}]", "must be a table ([[secondary]])")
    reader = TableReader(item, path=path, prefix=f"secondary[{index}].")
    with reader.known(field_names(Secondary)) as r:
        name = r.text("name")
        if not name:
            raise r.error("name", "missing: every secondary needs a name")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise r.error("name", f"{name!r}: use letters, digits, '-', '_' and '.'")
        address = r.text("address")
        if not address:
            raise r.error(
                "address", f"missing: secondary {name!r} needs the address NOTIFY goes to"
            )
        address = _address(r, "address", address)
        port = r.integer("port", 53, low=1, high=65535)
        zones = _zone_list(r, "zones")
        raw_from = r.take("transfer_from", list, [address])
        if not raw_from or not all(isinstance(a, str) for a in raw_from):
            raise r.error("transfer_from", "must be a non-empty list of addresses")
        transfer_from = tuple(dict.fromkeys(_address(r, "transfer_from", a) for a in raw_from))
    return Secondary(
        name=name, address=address, port=port, zones=zones, transfer_from=transfer_from
    )
