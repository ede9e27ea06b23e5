"""Confinement of a master to its own domains (issue 19): pure, bytes in, verdicts out.

A slave that serves several masters gives each a name and an :class:`Allowlist`
(the ``--allow``/``--except``/``--allow-locations`` of its key line). Before a
master's push is installed, :func:`offences` lists every line of its data that
would make a record for a name outside that allowlist; :func:`overlaps` says why
two masters' allowlists may not both be served.

Names are compared as tinydns-data reads them (spec §3.5, through
:func:`~dnsmaster.core.fields.name_to_wire`): octal escapes decoded (``a\\056b``
is one label holding a dot), empty labels dropped (so a trailing dot means
nothing), and case folded as cdb keys fold it (ASCII only, spec §4.2). A line the
compiler would refuse is not judged here: the compile refuses the whole push
later, so nothing of it is served.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnsmaster.core.fields import ip4, name_to_wire, split_fields
from dnsmaster.core.text import printable
from dnsmaster.errors import AllowlistError, NameTooLong

__all__ = [
    "MASTER_NAME",
    "Allowlist",
    "Labels",
    "Offence",
    "check_master_name",
    "domain_text",
    "name_labels",
    "offences",
    "overlaps",
]

#: A name as lowercase labels, leftmost first: ``www.a.example`` is
#: ``(b"www", b"a", b"example")``; the root is ``()``.
Labels = tuple[bytes, ...]

#: What a master's name may be: it names a directory on the slave.
MASTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Bytes a domain is shown with as they are; every other byte as \ooo, which
# tinydns-data reads back as the same byte (spec §3.5).
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_*")
# Bytes an --allow/--except may hold as typed: printable ASCII but ":" (which would
# cut a data field) and the blank (which the shell and the key line would split on).
_TYPED = re.compile(r"[!-9;-~]+")
_SHOWN = 3  # allowed domains named in a reason before "and N more"
_LINE_SHOWN = 120  # characters of an offending line kept in an Offence
_SOURCE = re.compile(rb"# (zones\.[^\n]*?):([0-9]+)(: [^\n]*)?")

# Spec §5: the line types whose first field is a name they make records for (with
# "-", the disabled line, and the IPv6 patch's 3 and 6, which the design confines
# as well although the stock compiler makes nothing of them).
_OWNED = frozenset(b"+-=.&@'^CZ:S36")
# §5.1: the types whose third field names a server that gets an A record when the
# second field is an address, and the suffix a dotless x is completed with.
_SERVER_SUFFIX = {ord("."): b".ns.", ord("&"): b".ns.", ord("@"): b".mx.", ord("S"): b".srv."}
_SERVER_LABELS = frozenset((b"ns", b"mx", b"srv"))
_IN_ADDR_ARPA = (b"in-addr", b"arpa")


def name_labels(raw: bytes) -> Labels | None:
    """The lowercase labels of a name field, or None for one tinydns-data refuses
    (a label over 63 bytes, a name over 255)."""
    try:
        wire = name_to_wire(raw)
    except NameTooLong:
        return None
    labels = []
    i = 0
    while n := wire[i]:
        labels.append(wire[i + 1 : i + 1 + n].lower())
        i += n + 1
    return tuple(labels)


def domain_text(labels: Labels) -> str:
    """``labels`` in tinydns text form, which :func:`name_labels` reads back
    unchanged; ``.`` for the root."""
    if not labels:
        return "."
    return ".".join(
        "".join(chr(b) if b in _PLAIN else f"\\{b:03o}" for b in label) for label in labels
    )


def check_master_name(name: str) -> None:
    """Raise :class:`AllowlistError` unless ``name`` may name a confined master."""
    if MASTER_NAME.fullmatch(name) is None or name in {".", ".."}:
        raise AllowlistError(
            printable(name),
            "a master's name is 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )


def _under(labels: Labels, domain: Labels) -> bool:
    """Whether ``labels`` is ``domain`` or a name under it."""
    n = len(domain)
    return len(labels) >= n and (n == 0 or labels[-n:] == domain)


@dataclass(frozen=True, slots=True)
class Allowlist:
    """The domains one master may publish: ``allowed`` and the sub-trees of them
    ``excepted`` (owned by other masters), as sorted :data:`Labels`; ``locations``
    whether it may send ``%`` lines."""

    allowed: tuple[Labels, ...]
    excepted: tuple[Labels, ...] = ()
    locations: bool = False

    @classmethod
    def parse(cls, allow: Sequence[str], excepts: Sequence[str], locations: bool) -> Allowlist:
        """The allowlist of a key line's options; :class:`AllowlistError` says what
        is wrong with the first domain that cannot be one."""
        allowed = sorted({_domain(text, "--allow") for text in allow})
        if not allowed:
            raise AllowlistError("", "a confined master needs at least one --allow DOMAIN")
        excepted = sorted({_domain(text, "--except") for text in excepts})
        for e in excepted:
            if not any(len(e) > len(a) and _under(e, a) for a in allowed):
                raise AllowlistError(
                    domain_text(e), "an --except must be strictly under one of the --allow domains"
                )
            for a in allowed:
                if _under(a, e):
                    raise AllowlistError(
                        domain_text(a), f"--allow is at or under --except {domain_text(e)}"
                    )
        return cls(tuple(allowed), tuple(excepted), locations)

    def covers(self, labels: Labels) -> bool:
        """Whether ``labels`` is at or under an allowed domain, and not at or under
        an excepted one."""
        return any(_under(labels, a) for a in self.allowed) and not any(
            _under(labels, e) for e in self.excepted
        )

    def describe(self) -> str:
        """The allowed domains for a reason: ``a.example, b.example`` (the first
        few, then how many more)."""
        names = [domain_text(a) for a in self.allowed[:_SHOWN]]
        if len(self.allowed) > _SHOWN:
            names.append(f"and {len(self.allowed) - _SHOWN} more")
        return ", ".join(names)

    def why_not(self, labels: Labels) -> str | None:
        """Why ``labels`` is not covered (None when it is), in words for a refusal."""
        if not any(_under(labels, a) for a in self.allowed):
            return f"not in this master's allowlist ({self.describe()})"
        for e in self.excepted:
            if _under(labels, e):
                return f"under {domain_text(e)}, which belongs to another master (--except)"
        return None


def _domain(text: str, option: str) -> Labels:
    if _TYPED.fullmatch(text) is None:
        raise AllowlistError(
            printable(text),
            f"{option} takes a domain in tinydns text form: printable ASCII without ':' "
            "or blanks (other bytes as \\ooo)",
        )
    labels = name_labels(text.encode("ascii"))
    if labels is None:
        raise AllowlistError(
            text, f"{option} takes a domain name: this has a label over 63 bytes or is over 255"
        )
    if not labels:
        raise AllowlistError(
            text, f"{option} cannot be the root: an unconfined master has no --master"
        )
    return labels


@dataclass(frozen=True, slots=True)
class Offence:
    """One line of a push outside the master's allowlist.

    ``source`` is ``zones.X:LINE``, the master's source line (from the nearest
    ``# zones.X:LINE`` comment before it), or None when the data has no such
    comment; ``lineno`` the line of the data itself; ``line`` the line, printable
    and shortened; ``name`` the name refused; ``reason`` why.
    """

    source: str | None
    lineno: int
    line: str
    name: str
    reason: str

    @property
    def where(self) -> str:
        """``zones.X:LINE``, else ``line N`` of the data."""
        return self.source if self.source is not None else f"line {self.lineno}"

    def __str__(self) -> str:
        return f"{self.where}: {self.line}: {self.reason}"


def offences(data: bytes, allow: Allowlist, *, limit: int | None = None) -> list[Offence]:
    """Every line of ``data`` (at most ``limit``) that makes a record outside ``allow``.

    A regular expression (:func:`_next_unclean`) passes over the lines that cannot
    make an offence without a Python step per line; every other line is judged by
    :func:`_line_offences`, the one reading of the rules. So the skipping only
    costs time where it cannot tell, never changes a verdict.
    """
    found: list[Offence] = []
    if limit is not None and limit <= 0:
        return found
    if data and not data.endswith(b"\n"):
        data += b"\n"  # every line then ends in LF, as the expressions want
    next_unclean = _next_unclean(allow)
    sources = _Sources(data)
    pos, size = 0, len(data)
    while pos < size:
        # The first line is judged as it is; each next one only where the search
        # stops, at the LF before a line that may be an offence (or the last LF).
        if pos and ((m := next_unclean(data, pos - 1)) is None or (pos := m.start() + 1) >= size):
            break
        end = data.index(b"\n", pos)
        line = data[pos:end].rstrip(b" \t")  # §2.2
        if line and line[0] != 0x23:  # "#"
            for name, reason in _line_offences(line, allow):
                index = sources.index(pos)
                where = sources.where(pos, index)
                found.append(Offence(where, index + 1, _shown(line), name, reason))
                if limit is not None and len(found) >= limit:
                    return found
        pos = end + 1
    return found


class _Sources:
    """Line numbers and ``# zones.X:LINE`` sources of positions in one data text,
    asked for in increasing order: each byte is counted once, however many lines
    are asked about."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # counted up to here
        self.lines = 0  # line feeds before pos
        self.searched = 0  # comments before here were looked at
        self.source: tuple[str, int, bool, int] | None = None  # file, line, expanded, index

    def index(self, pos: int) -> int:
        """The 0-based line index of ``pos``, a line's start."""
        self.lines += self.data.count(b"\n", self.pos, pos)
        self.pos = pos
        return self.lines

    def where(self, pos: int, index: int) -> str | None:
        """``zones.X:LINE`` of the line at ``pos`` (line ``index``), else None."""
        data = self.data
        # The comments before ``searched`` were looked at for an earlier line.
        at, floor = pos, self.searched
        self.searched = pos
        while (at := data.rfind(b"# zones.", floor, at)) >= 0:
            if at > 0 and data[at - 1] != 0x0A:
                continue
            stop = data.index(b"\n", at)
            if (m := _SOURCE.fullmatch(data[at:stop].rstrip(b" \t"))) is not None:
                name = printable(m.group(1).decode("utf-8", "surrogateescape"))
                cindex = index - data.count(b"\n", at, pos)
                self.source = (name, int(m.group(2)), m.group(3) is not None, cindex)
                break
        return _where(self.source, index)


def _offences_line_by_line(
    data: bytes, allow: Allowlist, limit: int | None = None
) -> list[Offence]:
    """:func:`offences` without the skipping: the reference the tests hold it to."""
    found: list[Offence] = []
    source: tuple[str, int, bool, int] | None = None
    for index, raw in enumerate(data.split(b"\n")):
        line = raw.rstrip(b" \t")  # §2.2
        if not line:
            continue
        if line[0] == 0x23:  # "#"
            if (m := _SOURCE.fullmatch(line)) is not None:
                name = printable(m.group(1).decode("utf-8", "surrogateescape"))
                source = (name, int(m.group(2)), m.group(3) is not None, index)
            continue
        for name, reason in _line_offences(line, allow):
            found.append(Offence(_where(source, index), index + 1, _shown(line), name, reason))
            if limit is not None and len(found) >= limit:
                return found
    return found


def _where(source: tuple[str, int, bool, int] | None, index: int) -> str | None:
    if source is None:
        return None
    file, lineno, expanded, at = source
    # "# zones.X:N: text" heads the lines one source line became; "# zones.X:N" is
    # followed by the source's lines from N on, one for one.
    return f"{file}:{lineno if expanded else lineno + index - at - 1}"


# ---- the skipping: an expression for runs of lines that make no offence

_LABELS = rb"(?:[^:\n\\.]*\.)*"  # whole labels without escapes, each with its dot
_NO_IP = rb"(?![0-9]+\.[0-9]+\.[0-9]+\.[0-9])"  # the field is no address (§3.2)
_ANY_IP = rb"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]"
# After the first k octets of an address written plainly, the rest of an address.
_IP_TAIL = {
    1: rb"\.[0-9]+\.[0-9]+\.[0-9]",
    2: rb"\.[0-9]+\.[0-9]",
    3: rb"\.[0-9]",
    4: rb"(?![0-9])",
}
# Label bytes data can only write with a backslash (or not at all): a domain holding
# one is left out of the expression, and the lines under it are judged one by one.
_ESCAPED_ONLY = frozenset(b".\\:\n")


@functools.lru_cache(maxsize=16)
def _next_unclean(allow: Allowlist) -> Callable[[bytes, int], re.Match[bytes] | None]:
    """A search for the LF before the next line that is not clean, one in which
    :func:`_line_offences` might find an offence.

    A clean line has only names without escapes, and addresses written plainly;
    every other line is judged by :func:`_line_offences`. The expression uses
    nothing newer than lookaheads: the possessive repeat of Python 3.11 (``*+``)
    matches past a failing line in Debian 12's 3.11.2, which runs the bundle.
    Compiling it costs about 0.3 ms per allowed domain (sre's parser is Python).
    """
    allowed = [b".".join(a) for a in allow.allowed if _plain(a)]
    excepted = [b".".join(e) for e in allow.excepted if _plain(e)]
    # A name field at or under an allowed domain and under no excepted one, up to
    # the colon or LF that ends it. An excepted domain left out of the expression
    # has a label with an escaped byte, so a name under it has a backslash, which
    # the expression never matches.
    name = rb"(?!)"
    if allowed:
        name = _LABELS + rb"(?i:" + _trie(allowed) + rb")\.*(?=[:\n])"
        if excepted:
            name = rb"(?!" + _LABELS + rb"(?i:" + _trie(excepted) + rb")\.*[:\n])" + name
    ptr = _covered_addresses(allow)
    address_ok = _NO_IP if ptr is None else rb"(?:" + _NO_IP + rb"|" + ptr + rb")"
    # An x with a dot is a name of its own (§5.1), which must then say so: the name
    # expression alone also matches a dotless x (an allowed domain of one label).
    dotted = rb"(?=[^:\n]*\.)"
    # A dotless x without escapes names a server x.ns.OWNER (mx, srv) under the
    # owner (§5.1): an except covers it only where the except's first or second
    # label is that suffix's, else it is covered with the owner.
    if any(_SERVER_LABELS.intersection(e[:2]) for e in allow.excepted):
        server = rb"[^:\n]*:" + dotted + name + rb"[^\n]*\n"
    else:
        server = rb"[^:\n]*(?:\n|:(?:[^:\n.\\]*(?=[:\n])|" + dotted + name + rb")[^\n]*\n)"
    lines = [
        rb"[+\-'^CZ:36]" + name + rb"[^\n]*\n",
        rb"=" + name + rb"(?:\n|:" + address_ok + rb"[^\n]*\n)",
        rb"[.&@S]" + name + rb"(?:\n|:(?:" + _NO_IP + rb"[^\n]*\n|" + server + rb"))",
        rb"#[^\n]*\n",
        rb"\n",
        rb"[^+\-=.&@'^CZ:S36%#\n][^\n]*\n",  # types the compile refuses, or blanks
    ]
    if allow.locations:
        lines.append(rb"%[^\n]*\n")
    return re.compile(rb"\n(?!" + rb"|".join(lines) + rb")").search


def _plain(labels: Labels) -> bool:
    return not any(_ESCAPED_ONLY.intersection(label) for label in labels)


def _covered_addresses(allow: Allowlist) -> bytes | None:
    """An expression for the start of an address field whose ``=`` line's PTR name
    is covered (None: none is, as far as an expression can tell)."""
    if any(e[-1] == b"arpa" for e in allow.excepted):
        return None  # rare enough to judge line by line
    by_octets: dict[int, list[bytes]] = {}
    for a in allow.allowed:
        if a in {(b"arpa",), _IN_ADDR_ARPA}:
            return _ANY_IP
        octets = a[:-2]
        if a[-2:] != _IN_ADDR_ARPA or len(octets) > 4:
            continue
        # The PTR's labels are plain decimal (§5.5); "010" matches no address.
        if all(
            o.isdigit() and len(o) <= 3 and o == b"%d" % int(o) and int(o) <= 255 for o in octets
        ):
            by_octets.setdefault(len(octets), []).append(b".".join(reversed(octets)))
    if not by_octets:
        return None
    return (
        rb"(?:"
        + rb"|".join(_trie(t, names=False) + _IP_TAIL[k] for k, t in by_octets.items())
        + rb")"
    )


def _trie(words: list[bytes], *, names: bool = True) -> bytes:
    """An expression matching exactly ``words``, as a trie: thousands of domains
    then cost a walk down one path, not a try of each. In ``names``, a dot is
    one or more dots, as empty labels vanish (§3.5)."""
    root: dict[int, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = root
        for byte in word:
            node = node.setdefault(byte, {})
        node[-1] = {}

    def walk(node: dict[int, dict]) -> bytes:  # type: ignore[type-arg]
        branches = [
            (rb"\.+" if names and b == 0x2E else re.escape(bytes((b,)))) + walk(child)
            for b, child in sorted(node.items())
            if b >= 0
        ]
        if not branches:
            return b""
        if len(branches) == 1 and -1 not in node:
            return branches[0]
        return rb"(?:" + rb"|".join(branches) + (rb")?" if -1 in node else rb")")

    return walk(root)


def _shown(line: bytes) -> str:
    text = printable(line)
    return text if len(text) <= _LINE_SHOWN else text[: _LINE_SHOWN - 3] + "..."


def _line_offences(line: bytes, allow: Allowlist) -> list[tuple[str, str]]:
    """The names of one stripped, non-comment line that ``allow`` does not cover."""
    kind = line[0]
    if kind == 0x25:  # "%"
        if allow.locations:
            return []
        return [
            (
                printable(line[1:].partition(b":")[0]),
                "a client location line changes answers for every master's records: "
                "this master has no --allow-locations",
            )
        ]
    if kind not in _OWNED:
        return []  # unknown types: the compile refuses them
    f = split_fields(line)
    out = []
    owner = name_labels(f[0])
    if owner is not None and (why := allow.why_not(owner)) is not None:
        out.append((domain_text(owner), why))
    suffix = _SERVER_SUFFIX.get(kind)
    if suffix is not None and ip4(f[1]) is not None:
        x = f[2]
        server = name_labels(x if b"." in x else x + suffix + f[0])
        if server is not None and (why := allow.why_not(server)) is not None:
            out.append((domain_text(server), f"the A record's name {domain_text(server)} is {why}"))
    elif kind == 0x3D and (ip := ip4(f[1])) is not None:  # "=": its PTR too (§5.5)
        ptr = (b"%d" % ip[3], b"%d" % ip[2], b"%d" % ip[1], b"%d" % ip[0], *_IN_ADDR_ARPA)
        if (why := allow.why_not(ptr)) is not None:
            out.append((domain_text(ptr), f"the PTR name {domain_text(ptr)} is {why}"))
    return out


def overlaps(name_a: str, allow_a: Allowlist, name_b: str, allow_b: Allowlist) -> str | None:
    """Why masters ``name_a`` and ``name_b`` may not both be served, or None.

    Equal domains always overlap. A domain strictly under the other master's
    domain overlaps unless that broader master excepts it (then the narrower
    master owns the sub-tree).
    """
    for a in allow_a.allowed:
        for b in allow_b.allowed:
            if a == b:
                return (
                    f"masters {name_a} and {name_b} both allow {domain_text(a)}: "
                    "only one master may serve a domain"
                )
            if len(b) > len(a) and _under(b, a):
                wide, wide_allow, narrow, sub, top = name_a, allow_a, name_b, b, a
            elif len(a) > len(b) and _under(a, b):
                wide, wide_allow, narrow, sub, top = name_b, allow_b, name_a, a, b
            else:
                continue
            if not any(_under(sub, e) for e in wide_allow.excepted):
                return (
                    f"master {narrow} allows {domain_text(sub)}, which is under "
                    f"{domain_text(top)} of master {wide}: add --except {domain_text(sub)} "
                    f"to master {wide}'s key line if {narrow} owns it"
                )
    return None
