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
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

__all__ = ["asyncssh"]

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module="asyncssh",
    )
    import asyncssh
