"""asyncssh, imported in one place.

cryptography 48 and later deprecate DSA, and asyncssh (through at least 2.24) names
DSA types at import time, so a plain ``import asyncssh`` prints ten lines of
``CryptographyDeprecationWarning`` on stderr: beside the daemon's log lines, into
multilog, and into the JSON that ``--log-format json`` promises. dnsmaster never
offers or accepts DSA keys; this one warning, from asyncssh's own modules, is the
only one silenced, and only for the import. Every other warning reaches the log as
a ``python.warning`` event (:func:`dnsmaster.log.capture_warnings`).

Every module that needs asyncssh imports it from here::

    from dnsmaster.sshlib import asyncssh

Every connection is made with :func:`client_options`: left to its defaults, asyncssh
finds keys, config, an agent and CA files under ``$HOME`` on its own, and a supervised
daemon's ``$HOME`` is whatever the supervisor's starter had (root's ``/root``).
"""

from __future__ import annotations

import warnings
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

__all__ = ["asyncssh", "client_options", "host_key_options"]

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module="asyncssh",
    )
    import asyncssh


def client_options() -> dict[str, Any]:
    """asyncssh.connect's options that leave it only what the caller names.

    The caller adds ``known_hosts`` (a path), ``client_keys`` (loaded key pairs,
    never empty: empty means asyncssh's default keys) and ``username``. Each entry
    here turns off something asyncssh would otherwise look for in the environment.
    ``config`` must be passed to every call, even beside ``options=``: a call's own
    default (``()``, "read ~/.ssh/config") replaces the one in the options.
    """
    return {
        "config": [],  # ~/.ssh/config
        "agent_path": None,  # $SSH_AUTH_SOCK, IdentityAgent
        "agent_identities": None,  # ~/.ssh/id_*.pub and -cert.pub
        "agent_forwarding": False,
        "pkcs11_provider": None,
        # ~/.ssh/ca-bundle.crt and ~/.ssh/crt: the is_dir() of the latter raises
        # EACCES under an unreadable $HOME, which was "cannot connect: access denied".
        "x509_trusted_certs": None,
        "x509_trusted_cert_paths": [],
        "gss_kex": False,  # Kerberos: $KRB5CCNAME, /tmp/krb5cc_UID
        "gss_auth": False,
        "host_based_auth": False,  # the machine's host keys, through ssh-keysign
        "client_host_keysign": False,
        "kbdint_auth": False,  # a forced-command account has no password to give
        "password_auth": False,
        "public_key_auth": True,
    }


def host_key_options() -> asyncssh.SSHClientConnectionOptions:
    """The options for ``asyncssh.get_server_host_key(..., config=[], options=...)``:
    a key exchange needs no keys, and without ``client_keys=None`` asyncssh would
    load the default ones from ``$HOME``."""
    return asyncssh.SSHClientConnectionOptions(
        **client_options(), client_keys=None, known_hosts=None
    )
