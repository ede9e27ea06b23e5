"""The daemon's state as a Prometheus text-format file, for node_exporter's textfile
collector.

The collector reads every ``*.prom`` file in its directory at each scrape, so the
file is replaced whole by rename (:func:`write`): a scrape never sees half a file.
The temp file is named ``.NAME.XXXX.tmp`` (:func:`dnsmaster.fsutil.stage`), which
the collector ignores because it does not end in ``.prom``.

Sample values carry no timestamps (the collector refuses them); the heartbeat
(``dnsmaster_heartbeat_timestamp_seconds``) and the collector's own
``node_textfile_mtime_seconds`` tell a fresh file from one a dead daemon left.

:func:`render` is pure: it renders a :class:`~dnsmaster.master.state.State` and nothing
else, judging each slave and each standard secondary as ``dnsmaster status`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dnsmaster import fsutil
from dnsmaster.master.health import SLAVE_STATES, judge_slave
from dnsmaster.master.secondaryhealth import SECONDARY_STATES, judge_secondary
from dnsmaster.master.state import State

__all__ = ["METRICS", "render", "write"]

#: name -> (type, help). The order is the file's.
METRICS: dict[str, tuple[str, str]] = {
    "dnsmaster_heartbeat_timestamp_seconds": (
        "gauge",
        "When the daemon last wrote its state (Unix time).",
    ),
    "dnsmaster_daemon_start_timestamp_seconds": ("gauge", "When the daemon started (Unix time)."),
    "dnsmaster_build_serial": ("gauge", "SOA serial of the current build."),
    "dnsmaster_build_timestamp_seconds": ("gauge", "When the current build was made (Unix time)."),
    "dnsmaster_build_duration_seconds": ("gauge", "How long the current build took."),
    "dnsmaster_build_records": ("gauge", "Records in the current build's data.cdb."),
    "dnsmaster_build_failed": (
        "gauge",
        "1 when the last build attempt failed (the zones have errors; the current build "
        "stays), else 0.",
    ),
    "dnsmaster_config_reload_failed": (
        "gauge",
        "1 when the last SIGHUP could not load the configuration file (the daemon runs on "
        "the one it loaded before), else 0.",
    ),
    "dnsmaster_config_load_timestamp_seconds": (
        "gauge",
        "When the configuration the daemon runs on was loaded (Unix time).",
    ),
    "dnsmaster_slave_up_to_date": (
        "gauge",
        "1 when the slave has the current build installed, else 0.",
    ),
    "dnsmaster_slave_state": (
        "gauge",
        "1 for the slave's state as dnsmaster status names it, 0 for the others.",
    ),
    "dnsmaster_slave_installed_serial": ("gauge", "SOA serial of the build the slave has."),
    "dnsmaster_slave_served_serial": (
        "gauge",
        "SOA serial the slave's tinydns answered at the last verification.",
    ),
    "dnsmaster_slave_last_success_timestamp_seconds": (
        "gauge",
        "When the slave was last seen on the then current build (Unix time).",
    ),
    "dnsmaster_slave_consecutive_failures": ("gauge", "Pushes to the slave that failed in a row."),
    "dnsmaster_slave_push_duration_seconds": (
        "gauge",
        "How long the last push to the slave took, ok or not.",
    ),
    "dnsmaster_secondary_ok": (
        "gauge",
        "1 when the secondary serves the current build's serial, else 0.",
    ),
    "dnsmaster_secondary_state": (
        "gauge",
        "1 for the secondary's state as dnsmaster status names it, 0 for the others.",
    ),
    "dnsmaster_secondary_serial": (
        "gauge",
        "Lowest SOA serial the secondary served of its zones when last asked.",
    ),
    "dnsmaster_secondary_serve_seconds": (
        "gauge",
        "How long the secondary took to serve the current build's serial once fed it.",
    ),
}


def _label(value: str) -> str:
    # The text format's escapes in label values: backslash, double quote, newline.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def render(state: State) -> str:
    """The state in the Prometheus text format (version 0.0.4)."""
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in METRICS}

    def add(name: str, value: float | None, labels: Iterable[tuple[str, str]] = ()) -> None:
        if value is None:
            return  # unknown: no sample rather than a made-up 0
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels)
        samples[name].append((f"{{{text}}}" if text else "", value))

    add("dnsmaster_heartbeat_timestamp_seconds", state.updated)
    add("dnsmaster_daemon_start_timestamp_seconds", state.started)
    build = state.build
    if build is not None:
        add("dnsmaster_build_serial", build.serial)
        add("dnsmaster_build_timestamp_seconds", build.time)
        add("dnsmaster_build_duration_seconds", build.seconds)
        add("dnsmaster_build_records", build.records)
    failed = (build is not None and bool(build.error)) or bool(state.build_error)
    add("dnsmaster_build_failed", int(failed))
    if state.config is not None:
        add("dnsmaster_config_reload_failed", int(state.config.error is not None))
        add("dnsmaster_config_load_timestamp_seconds", state.config.loaded)
    for slave in state.slaves:
        name = (("slave", slave.name),)
        if build is not None:
            add("dnsmaster_slave_up_to_date", int(slave.installed_sha256 == build.sha256), name)
        judged = judge_slave(slave, state, now=state.updated).state
        for each in SLAVE_STATES:
            add("dnsmaster_slave_state", int(each == judged), (*name, ("state", each)))
        add("dnsmaster_slave_installed_serial", slave.installed_serial, name)
        add("dnsmaster_slave_served_serial", slave.served_serial, name)
        add("dnsmaster_slave_last_success_timestamp_seconds", slave.last_success, name)
        add("dnsmaster_slave_consecutive_failures", slave.failures, name)
        add("dnsmaster_slave_push_duration_seconds", slave.push_seconds, name)
    for secondary in state.secondaries:
        name = (("secondary", secondary.name),)
        judged = judge_secondary(secondary, state, now=state.updated).state
        add("dnsmaster_secondary_ok", int(judged == "ok"), name)
        for each in SECONDARY_STATES:
            add("dnsmaster_secondary_state", int(each == judged), (*name, ("state", each)))
        add("dnsmaster_secondary_serial", secondary.serving, name)
        add("dnsmaster_secondary_serve_seconds", secondary.seconds, name)
    lines = []
    for metric, (kind, text) in METRICS.items():
        if not samples[metric]:
            continue
        lines.append(f"# HELP {metric} {text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines += [f"{metric}{labels} {_number(value)}" for labels, value in samples[metric]]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (temp file in the same directory, fsync, rename).

    Raises OSError; the daemon logs it and goes on, as for the state file.
    """
    data = text.encode()
    fsutil.publish([(fsutil.stage(path, lambda fd: fsutil.write_all(fd, data)), path)])
