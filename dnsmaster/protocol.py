"""The version of the conversation between the master and ``dnsmaster receive``.

Both sides import :data:`PROTOCOL` from here: the receiver reports it in its
``status`` line (``... protocol=1 version=0.1.0``), and the master refuses, on
first contact, a receiver whose protocol is lower than its own. This module
imports nothing, so the receiver (and its one-file bundle) stays light.

What a protocol number promises:

- protocol 1: the verbs ``push``, ``push --force`` and ``status`` (the key's
  forced command reads them from ``SSH_ORIGINAL_COMMAND``); a push is the data and
  its trailer line (:mod:`dnsmaster.core.stream`); ``status`` prints one line,
  ``status sha256=H serial=N bytes=N time=T protocol=P version=V`` or
  ``status none [pair=unknown] protocol=P version=V``; exit statuses 0, 1 (data
  refused), 2 (command refused), 111 (system error).
- Receivers from before versioning print no ``protocol=`` and count as 0.

A receiver of protocol N serves every master that needs N or less: a new
protocol only adds (a verb, a field) and a receiver keeps the old ones. The
master needs a receiver of at least its own :data:`PROTOCOL`, so raise it only
when the master starts relying on something new in the receiver; every slave
must then be upgraded, and the master says so for each one that is not.
"""

from __future__ import annotations

__all__ = ["PROTOCOL"]

#: The protocol this code speaks: what the receiver reports, what the master needs.
PROTOCOL = 1
