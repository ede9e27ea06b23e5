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

from dnsmaster.config.load import ENV_VAR, from_mapping, load, load_paths, resolve_path
from dnsmaster.config.model import (
    DEFAULT_KEYS,
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
from dnsmaster.config.reader import expand_home

__all__ = [
    "DEFAULT_KEYS",
    "ENV_VAR",
    "MAX_FILE_SIZE",
    "AxfrdnsOptions",
    "Config",
    "DaemonOptions",
    "GuardOptions",
    "HookOptions",
    "LogOptions",
    "NotifyOptions",
    "PushOptions",
    "Secondary",
    "Slave",
    "expand_home",
    "from_mapping",
    "load",
    "load_paths",
    "resolve_path",
]
