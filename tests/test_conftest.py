"""The order the workers run the suite in: the long tests at the heads of the shares."""

from __future__ import annotations

from tests.conftest import long_first


def shares(nodeids: list[str], workers: int) -> list[list[str]]:
    """The contiguous shares xdist's worksteal hands out first, as it splits them."""
    out, left, at = [], len(nodeids), 0
    for worker in range(workers):
        size = left // (workers - worker)
        out.append(nodeids[at : at + size])
        left, at = left - size, at + size
    return out


def test_long_tests_head_the_shares_longest_first() -> None:
    ids = [f"t{i}" for i in range(20)]
    order = long_first(ids, ["t19", "t3", "t18", "t4", "t17"], 4)
    ordered = [ids[i] for i in order]
    assert sorted(ordered) == sorted(ids)
    # Dealt longest first across the shares, then the rest in their order.
    assert [share[:2] for share in shares(ordered, 4)] == [
        ["t19", "t17"],
        ["t3", "t5"],
        ["t18", "t9"],
        ["t4", "t13"],
    ]
    assert [n for n in ordered if n not in {"t19", "t3", "t18", "t4", "t17"}] == [
        f"t{i}" for i in range(20) if i not in {19, 3, 18, 4, 17}
    ]


def test_unknown_names_one_worker_and_tiny_collections() -> None:
    ids = ["a", "b", "c"]
    assert long_first(ids, ["gone"], 4) == [0, 1, 2]
    assert long_first(ids, ["c"], 1) == [0, 1, 2]
    # More long tests than a share holds: every test still runs, once.
    assert sorted(long_first(ids, ["c", "b", "a"], 2)) == [0, 1, 2]
    assert long_first(ids, ["c", "b", "a"], 2)[0] == 2
