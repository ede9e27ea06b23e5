"""The version of the conversation between the master and ``dnsmaster receive``.

Both sides import from here: the receiver reports :data:`PROTOCOL` in its
``status`` line (``... protocol=2 version=0.1.0``); the master refuses, on first
contact, a receiver whose protocol is lower than :data:`NEEDED`, and uses what a
higher one offers (:data:`DELTA`). Everything both sides must agree on lives
here: the verbs (:data:`COMMANDS`), the receiver's exit statuses, the ``status``
line (:func:`parse_status`, :func:`check_receiver`) and the words of its refusals
(:func:`receiver_reason`). It imports only :mod:`dnsmaster.errors`, so the
receiver (and its one-file bundle) stays light.

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
- protocol 3 adds confined masters: a key line may name its master and the
  domains it may publish (``--master NAME --allow DOMAIN ...``); that master's
  ``status`` line reports its own section of a root shared with other masters
  and ends with `` master=NAME``; a push with lines outside its domains is refused
  (exit 1) with each offending line on stderr (``refused zones.X:LINE: ...``)
  before the usual last line. Nothing changes for a key without ``--master``.
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dnsmaster import __version__
from dnsmaster.errors import SlaveError

__all__ = [
    "COMMANDS",
    "DELTA",
    "EXIT_DELTA",
    "EXIT_REFUSED",
    "EXIT_SYSTEM",
    "EXIT_USAGE",
    "FAILED_PREFIX",
    "FINAL_EXITS",
    "FORCE",
    "NEEDED",
    "PROTOCOL",
    "REFUSED_PREFIX",
    "SPEAKS",
    "VERBS",
    "ZLIB",
    "ReceiverOutdated",
    "SlaveVersion",
    "add_confinement_options",
    "check_receiver",
    "number",
    "parse_status",
    "receiver_reason",
    "status_fields",
]

#: The protocol this code's receiver speaks (and reports in ``status``).
PROTOCOL = 3
#: The lowest protocol this master pushes to: older receivers are refused.
NEEDED = 1
#: The lowest protocol that takes ``delta`` and ``--zlib``.
DELTA = 2

VERBS = ("push", "delta", "status")
#: After ``push`` or ``delta``: install even a build older than the installed one.
FORCE = "--force"
#: After ``push`` or ``delta``, before ``--force``: the stream is zlib-compressed.
ZLIB = "--zlib"
#: Every command the key runs, exactly as ``SSH_ORIGINAL_COMMAND`` must spell it
#: (protocol 1: the first three; protocol 2 adds ``delta`` and ``--zlib``).
COMMANDS = (
    "push",
    f"push {FORCE}",
    "status",
    f"push {ZLIB}",
    f"push {ZLIB} {FORCE}",
    "delta",
    f"delta {FORCE}",
    f"delta {ZLIB}",
    f"delta {ZLIB} {FORCE}",
)

#: The receiver refused the data (incomplete, too large, does not compile, older
#: than the installed build); the installed data is unchanged.
EXIT_REFUSED = 1
#: The receiver refused the command (not one of :data:`COMMANDS`).
EXIT_USAGE = 2
#: The receiver refused a delta (another base, malformed, a wrong result): nothing
#: changed there, and the full data goes at once.
EXIT_DELTA = 3
#: The receiver failed on its own side (a file it cannot read or write).
EXIT_SYSTEM = 111
#: Exit statuses after which pushing the same build again is refused again; 111
#: (system error) and others may pass.
FINAL_EXITS = frozenset({EXIT_REFUSED, EXIT_USAGE})

#: Ends every ``status`` line: the master checks the protocol on first contact and
#: names the version when it asks for an upgrade.
SPEAKS = f"protocol={PROTOCOL} version={__version__}"

#: The receiver's prefixes for a refusal and a failure (its last stderr line); the
#: words after them are the reason.
REFUSED_PREFIX = "dnsmaster receive: refused: "
FAILED_PREFIX = "dnsmaster receive: failed: "
_PREFIXES = (REFUSED_PREFIX, FAILED_PREFIX, "dnsmaster receive: ")
#: The longest reason quoted from a slave into a result, the log and ``status``.
_MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class SlaveVersion:
    """What a slave reports as installed (the ``status`` verb), and which receiver said so.

    ``protocol`` and ``version`` are the receiver's (None from one older than
    protocol 1). They describe the reporter, not the installed build, so they take
    no part in comparisons: two reports of one build are equal.
    """

    sha256: str
    serial: int | None
    protocol: int | None = field(default=None, compare=False)
    version: str | None = field(default=None, compare=False)


class ReceiverOutdated(SlaveError):
    """The slave's receiver speaks an older protocol than this master needs.

    ``protocol`` and ``version`` are what the receiver reported (None: nothing, it
    predates protocol 1), ``needed`` what this master needs at least
    (:data:`NEEDED`).
    Never retryable: only an operator who upgrades the slave's receiver can fix it.
    """

    def __init__(
        self, slave: str, protocol: int | None, version: str | None, needed: int = NEEDED
    ) -> None:
        self.protocol = protocol
        self.version = version
        self.needed = needed
        if protocol is None:
            speaks = f"no protocol version (it predates protocol {min(needed, 1)})"
        else:
            speaks = f"protocol {protocol}"
        reason = (
            f"receiver version {version or 'unknown'} speaks {speaks}; this master "
            f"(dnsmaster {__version__}) needs protocol {needed}: upgrade it: copy a new "
            "bundle (dnsmaster receiver-bundle -o dnsmaster-receive.pyz) over the file its "
            "authorized_keys line runs, or upgrade the dnsmaster installed there "
            f"(pip install --upgrade 'dnsmaster>={__version__}')"
        )
        super().__init__(slave, reason, phase="status", retryable=False)


def status_fields(lines: Sequence[str]) -> dict[str, str] | None:
    """The ``key=value`` words of the receiver's first ``status`` line; None without one."""
    for line in lines:
        words = line.split()
        if words and words[0] == "status":
            return dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return None


def number(text: str | None) -> int | None:
    """A field's value as a number; None when absent or not digits."""
    return int(text) if text is not None and text.isdigit() else None


def parse_status(lines: Sequence[str]) -> SlaveVersion | None:
    """Read the receiver's ``status sha256=... serial=... protocol=... version=...`` line.

    None when it names no sha256 (``status none``: nothing installed it vouches for).
    """
    fields = status_fields(lines)
    if fields is None or "sha256" not in fields:
        return None
    return SlaveVersion(
        fields["sha256"],
        number(fields.get("serial")),
        number(fields.get("protocol")),
        fields.get("version"),
    )


def check_receiver(slave: str, lines: Sequence[str], needed: int = NEEDED) -> None:
    """Raise :class:`ReceiverOutdated` unless the ``status`` output in ``lines`` comes
    from a receiver of protocol ``needed`` or later.

    Output without a status line is no receiver of any version: a plain
    :class:`~dnsmaster.errors.SlaveError`, not retryable either.
    """
    fields = status_fields(lines)
    if fields is None:
        raise SlaveError(
            slave,
            "its forced command printed no status line: it is not dnsmaster receive "
            "(dnsmaster authorized-key prints the line that runs it)",
            0,
            phase="status",
            retryable=False,
        )
    protocol = number(fields.get("protocol"))
    if protocol is None or protocol < needed:
        raise ReceiverOutdated(slave, protocol, fields.get("version"), needed)


def receiver_reason(stderr_last: str | None, exit_status: int | None) -> str:
    """Why a receiver failed, in its own words: its last stderr line without the
    ``dnsmaster receive: refused:`` prefix, and the exit status.

    ``data does not compile: line 3: ... (exit 1)``; a receiver that printed nothing
    gives ``receiver exited with status 111``.
    """
    if exit_status is None:
        status = "receiver ended without an exit status"
    elif exit_status < 0:
        status = f"receiver killed by signal {-exit_status}"
    else:
        status = f"receiver exited with status {exit_status}"
    if not stderr_last:
        return status
    reason = stderr_last
    for prefix in _PREFIXES:
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
            break
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    short = f"exit {exit_status}" if exit_status is not None and exit_status >= 0 else status
    return f"{reason} ({short})"


class _Options(Protocol):
    """An argparse parser or argument group."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


def add_confinement_options(options: _Options) -> None:
    """The options that confine a master on a shared slave: ``authorized-key`` puts
    them in the forced command and ``receive`` reads them back, so one definition
    serves both (a parser or an argument group)."""
    options.add_argument(
        "--master",
        metavar="NAME",
        help="the master's name on the slave (letters, digits, '_', '.', '-'); needs --allow",
    )
    options.add_argument(
        "--allow",
        metavar="DOMAIN",
        action="append",
        default=[],
        help="a domain the master may publish, and every name under it (repeatable)",
    )
    options.add_argument(
        "--except",
        dest="excepts",
        metavar="DOMAIN",
        action="append",
        default=[],
        help="a sub-tree of an --allow domain that another master owns (repeatable)",
    )
    options.add_argument(
        "--allow-locations",
        action="store_true",
        help="the master may send %%-lines (client locations), which change every master's answers",
    )
