"""The guard against the big mistake: a build that removes too much is held (pure).

Control panels that regenerate zones files have wiped whole zone sets by accident:
a save of an empty or truncated file, a script gone wrong. A build that drops a
whole zone, or more than a set share of the records, is therefore not pushed until
an operator accepts it. This module only judges; the daemon holds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["Verdict", "judge"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a build is held: the records it removes and the zones it drops."""

    old_records: int
    new_records: int
    removed_zones: tuple[str, ...]
    reason: str


def judge(
    old_records: int,
    new_records: int,
    old_zones: Collection[str],
    new_zones: Collection[str],
    *,
    max_removed: float,
    zones: bool,
    allow: Collection[str] = (),
) -> Verdict | None:
    """None when the new build may go out; else why it must wait for an operator.

    ``max_removed`` is the share of records a build may remove (1 allows any);
    with ``zones``, dropping any zone not in ``allow`` holds the build too.
    """
    allowed = {z.lower().rstrip(".") for z in allow}
    gone = tuple(sorted(z for z in set(old_zones) - set(new_zones) if z not in allowed))
    removed = max(0, old_records - new_records)
    share = removed / old_records if old_records else 0.0
    reasons = []
    if share > max_removed:
        reasons.append(
            f"removes {removed} of {old_records} records ({share:.0%}, more than {max_removed:.0%})"
        )
    if zones and gone:
        reasons.append(f"removes the zones {', '.join(gone)}")
    if not reasons:
        return None
    return Verdict(old_records, new_records, gone if zones else (), "; ".join(reasons))
