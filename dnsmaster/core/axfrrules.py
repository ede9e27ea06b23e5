"""axfrdns' tcp rules for the configured secondaries: written, and read back (pure).

axfrdns runs under ucspi-tcp's ``tcpserver -x tcp.cdb``; ``tcprules`` compiles the
text file ``tcp`` into that cdb. Each line is ``ADDRESS:allow`` or ``ADDRESS:deny``,
and an allowed line may set environment variables for the program it starts:
axfrdns reads ``AXFR``, a ``/``-separated list of the zones that client may
transfer, and with no ``AXFR`` at all lets it transfer every zone data.cdb holds.

The rules written here give each secondary address one line, and end with ``:deny``
so that nobody else transfers anything. A secondary that carries every zone
(``zones = []``) gets a line without ``AXFR``: it then follows the data as zones
come and go, with no rules to rewrite. One that names its zones gets exactly those,
plus the catalog zone when there is one (RFC 9432: a consumer learns its members
from it).

:func:`parse` and :func:`allows` read a rules file back the way tcpserver looks a
client up (the exact address, then ``1.2.3.``, ``1.2.``, ``1.``, then the empty
rule; the first line for a key wins), for ``doctor`` to say whether an address may
transfer a zone, also when an operator edited the file by hand.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["Grant", "Rule", "allows", "grants", "normal_zone", "parse", "rules_text"]

# What a zone name may hold in a rules line: AXFR's value is quoted and split on "/",
# so nothing that would end the quote, split a zone or start another variable.
_ZONE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*|\.?")
# A tcprules address range: 1.2.3.4-7 stands for 1.2.3.4 to 1.2.3.7.
_RANGE = re.compile(r"((?:\d+\.)*)(\d+)-(\d+)")
_VARIABLE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"]*)"|([^,]*))')

HEAD = (
    "# Made by dnsmaster service-conf --axfrdns from the [[secondary]] entries;\n"
    "# running it again rewrites this file and tcp.cdb. One line per address\n"
    "# a secondary transfers from: AXFR lists its zones (no AXFR: every zone).\n"
)


def normal_zone(zone: str) -> str:
    """``zone`` as axfrdns compares it: lower case, no final dot (the root is "").

    Raises ValueError for a name a rules line cannot carry.
    """
    text = zone.strip().lower()
    if text != ".":
        text = text.removesuffix(".")
    if not _ZONE.fullmatch(text):
        raise ValueError(
            f"zone {zone!r}: a tcp rules line takes only letters, digits, '-', '_' and dots"
        )
    return "" if text == "." else text


@dataclass(frozen=True, slots=True)
class Grant:
    """What one client address may transfer: ``zones`` (normalised, in order), or
    every zone when ``zones`` is None."""

    address: str
    zones: tuple[str, ...] | None


def _ipv4(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        raise ValueError(f"transfer address {address!r}: not an IP address") from None
    if parsed.version != 4:
        # Debian's ucspi-tcp 0.88 listens and matches rules on IPv4 only.
        raise ValueError(
            f"transfer address {address!r}: tcpserver (ucspi-tcp) serves IPv4 only; "
            "give the secondary an IPv4 transfer_from address"
        )
    return str(parsed)


def grants(
    entries: Iterable[tuple[Sequence[str], Sequence[str]]], catalog: str = ""
) -> list[Grant]:
    """One grant per address, in order of first appearance, from ``entries``: each
    secondary's (addresses it transfers from, zones it carries; empty for every zone).

    Two secondaries behind one address share its line: the union of their zones, or
    every zone if either carries every zone. Raises ValueError for an address
    tcpserver cannot match or a zone a rules line cannot carry.
    """
    extra = (normal_zone(catalog),) if catalog else ()
    merged: dict[str, list[str] | None] = {}
    for addresses, zones in entries:
        wanted = [normal_zone(z) for z in zones]
        for raw in addresses:
            address = _ipv4(raw)
            if not wanted:
                merged[address] = None
                continue
            have = merged.setdefault(address, [])
            if have is not None:
                have.extend(z for z in [*wanted, *extra] if z not in have)
    return [
        Grant(address, None if zones is None else tuple(zones)) for address, zones in merged.items()
    ]


def rules_text(granted: Iterable[Grant]) -> str:
    """The ``tcp`` file: a comment, one line per grant, and ``:deny`` for everyone else."""
    lines = [HEAD]
    for grant in granted:
        if grant.zones is None:
            lines.append(f"{grant.address}:allow\n")
        else:
            lines.append(f'{grant.address}:allow,AXFR="{"/".join(grant.zones)}"\n')
    lines.append(":deny\n")
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of a rules file: the key it matches, allow or deny, its variables,
    and the line number (1-based) it came from."""

    key: str
    allow: bool
    env: dict[str, str] = field(default_factory=dict, hash=False)
    line: int = 0


def _keys(address: str) -> list[str]:
    """tcprules' keys for an address field: a range becomes one key per address."""
    found = _RANGE.fullmatch(address)
    if not found:
        return [address]
    prefix, low, high = found.group(1), int(found.group(2)), int(found.group(3))
    return [f"{prefix}{n}" for n in range(low, min(high, 255) + 1)]


def parse(text: str) -> dict[str, Rule]:
    """The rules of a ``tcp`` file by key, the first line for a key winning as in
    tcp.cdb; comments, blank lines and lines tcprules would reject are left out."""
    rules: dict[str, Rule] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        address, _, rest = line.partition(":")
        action, _, variables = rest.partition(",")
        if action not in ("allow", "deny"):
            continue
        env = {
            m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _VARIABLE.finditer(variables)
        }
        for key in _keys(address):
            rules.setdefault(key, Rule(key, action == "allow", env, number))
    return rules


def _lookup(rules: dict[str, Rule], address: str) -> Rule | None:
    """The rule tcpserver applies to a client at ``address`` (IPv4): the exact
    address, then each shorter prefix ending in a dot, then the empty key."""
    parts = address.split(".")
    for n in range(len(parts), -1, -1):
        key = address if n == len(parts) else "".join(p + "." for p in parts[:n])
        if key in rules:
            return rules[key]
    return None


def allows(rules: dict[str, Rule], address: str, zone: str) -> tuple[bool, str]:
    """Whether axfrdns lets a client at ``address`` transfer ``zone`` under ``rules``,
    and why, in words (the line that decides, or that none matches)."""
    rule = _lookup(rules, address)
    if rule is None:
        return False, f"no rule matches {address}: tcpserver refuses the connection"
    where = f"line {rule.line} ({rule.key or 'everyone'})"
    if not rule.allow:
        return False, f"{where} denies {address}"
    listed = rule.env.get("AXFR")
    if listed is None:
        return True, f"{where} allows {address} every zone"
    wanted = normal_zone(zone)
    zones = [z.lower().removesuffix(".") for z in listed.split("/")]
    if wanted in zones:
        return True, f"{where} allows {address} {wanted or '.'}"
    return False, f"{where} allows {address} only AXFR={listed!r}, not {wanted or '.'}"
