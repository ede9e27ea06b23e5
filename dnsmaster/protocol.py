"""The version of the conversation between the master and ``dnsmaster receive``.

Both sides import from here: the receiver reports :data:`PROTOCOL` in its
``status`` line (``... protocol=2 version=0.1.0``); the master refuses, on first
contact, a receiver whose protocol is lower than :data:`NEEDED`, and uses what a
higher one offers (:data:`DELTA`). This module imports nothing, so the receiver
(and its one-file bundle) stays light.

What a protocol number promises:

- protocol 1: the verbs ``push``, ``push --force`` and ``status`` (the key's
  forced command reads them from ``SSH_ORIGINAL_COMMAND``); a push is the data and
  its trailer line (:mod:`dnsmaster.core.stream`); ``status`` prints one line,
  ``status sha256=H serial=N bytes=N time=T protocol=P version=V`` or
  ``status none [pair=unknown] protocol=P version=V``; exit statuses 0, 1 (data
  refused), 2 (command refused), 111 (system error).
- protocol 2 adds: the verb ``delta`` (``delta``, ``delta --force``), whose stream
  is a delta against the installed data (:mod:`dnsmaster.core.delta`) that the
  receiver applies and checks against the trailer's length and sha256; ``--zlib``
  after ``push`` or ``delta`` (before ``--force``): the stream is zlib-compressed;
  exit status 3: the delta was refused (another base, malformed, a result that is
  not the trailer's), nothing changed, a full push is needed.
- Receivers from before versioning print no ``protocol=`` and count as 0.

A receiver of protocol N serves every master that needs N or less: a new
protocol only adds (a verb, a field) and a receiver keeps the old ones. The
master serves receivers of :data:`NEEDED` and up, each with what its protocol
offers: a protocol-1 receiver gets the full, uncompressed data (and the master
logs that an upgrade would let it take deltas). Raise :data:`NEEDED` only when the
master cannot do without something new in the receiver; every slave must then be
upgraded, and the master says so for each one that is not.
"""

from __future__ import annotations

__all__ = ["DELTA", "NEEDED", "PROTOCOL"]

#: The protocol this code's receiver speaks (and reports in ``status``).
PROTOCOL = 2
#: The lowest protocol this master pushes to: older receivers are refused.
NEEDED = 1
#: The lowest protocol that takes ``delta`` and ``--zlib``.
DELTA = 2
