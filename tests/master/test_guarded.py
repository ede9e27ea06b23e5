"""The guard's sides on a push by hand: what it reads of a build is kept for the next."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dnsmaster.config import Config
from dnsmaster.core.guard import count_records
from dnsmaster.master.archive import DIRECTORY
from dnsmaster.master.guarded import FACTS_FILE, Given, judge


def zone(name: str, hosts: int) -> bytes:
    soa = f"Z{name}:ns.{name}.:hostmaster.{name}.:1700000000::::::\n".encode()
    return soa + b"".join(f"+w{i}.{name}:192.0.2.{i % 250}\n".encode() for i in range(hosts))


def test_the_next_push_reads_only_its_own_build(tmp_path: Path) -> None:
    (tmp_path / DIRECTORY).mkdir()
    cfg = Config(
        path=tmp_path / "dnsmaster.toml", zones=tmp_path, output=tmp_path, state=tmp_path / "s"
    )
    old = zone("a.example", 20) + zone("b.example", 20)
    new = zone("a.example", 21) + zone("b.example", 20)
    gone = zone("a.example", 21)  # b.example dropped: held
    sha = {t: hashlib.sha256(t).hexdigest() for t in (old, new, gone)}

    assert judge(cfg, Given(sha[old], 1, old), new) is None
    assert (tmp_path / DIRECTORY / FACTS_FILE).is_file()
    # The base's bytes are not read again once its facts are kept: these would not
    # even compile.
    verdict = judge(cfg, Given(sha[new], 2, b"not data\n"), gone)
    assert verdict is not None
    assert verdict.removed_zones == ("b.example",)
    assert (verdict.old_records, verdict.new_records) == (count_records(new), count_records(gone))
