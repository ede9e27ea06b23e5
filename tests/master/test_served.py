"""The served root: the build's data.cdb put there atomically, or nothing changed."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from dnsmaster.config import Config, from_mapping
from dnsmaster.errors import ConfigError
from dnsmaster.master import guarded, served
from dnsmaster.master.build import Builder
from dnsmaster.master.checkup import master_checks
from tests.lab.clock import Clock


@pytest.fixture
def output(tmp_path: Path) -> Path:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "zones.example.com").write_bytes(b".example.com:192.0.2.1:a\n")
    out = tmp_path / "out"
    out.mkdir()
    Builder(zones, out, clock=Clock(1_700_000_000)).build()
    return out


def build_of(output: Path) -> tuple[str, bytes]:
    data = (output / "data").read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def serve(output: Path, root: Path) -> served.Served:
    sha256, data = build_of(output)
    return served.serve(output, root, sha256, data, 1_700_000_000)


def test_the_build_is_linked_into_the_root(output: Path, tmp_path: Path) -> None:
    root = tmp_path / "served"
    umask = os.umask(0o077)
    try:
        done = serve(output, root)
    finally:
        os.umask(umask)
    assert done == served.Served(root, "link")
    assert root.stat().st_mode & 0o777 == 0o755  # axfrdns' account reads it
    assert os.path.samefile(root / "data.cdb", output / "data.cdb")
    assert sorted(p.name for p in root.iterdir()) == ["data.cdb"]


def test_a_new_build_replaces_it_and_the_old_file_is_left_whole(
    output: Path, tmp_path: Path
) -> None:
    root = tmp_path / "served"
    serve(output, root)
    before = (root / "data.cdb").read_bytes()
    reader = (root / "data.cdb").open("rb")  # what tinydns holds while it answers
    (output.parent / "zones" / "zones.example.com").write_bytes(b".example.com:192.0.2.9:a\n")
    Builder(output.parent / "zones", output, clock=Clock(1_700_000_100)).build()
    serve(output, root)
    assert (root / "data.cdb").read_bytes() == (output / "data.cdb").read_bytes() != before
    with reader:
        assert reader.read() == before


def test_a_crash_between_link_and_rename_leaves_the_old_file_served(
    output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.cdb").write_bytes(b"the old build")

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # the process dies between the two steps

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        serve(output, root)
    monkeypatch.undo()
    assert (root / "data.cdb").read_bytes() == b"the old build"
    # What a killed process leaves is swept by the next replacement.
    (root / ".data.cdb.1.dead.tmp").write_bytes(b"litter")
    serve(output, root)
    assert sorted(p.name for p in root.iterdir()) == ["data.cdb"]


def test_a_failed_rename_changes_nothing(
    output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.cdb").write_bytes(b"the old build")

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "no space")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="no space"):
        serve(output, root)
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == ["data.cdb"]
    assert (root / "data.cdb").read_bytes() == b"the old build"


def test_it_is_copied_where_no_link_can_be_made(
    output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    root = tmp_path / "served"
    assert serve(output, root).how == "copy"
    assert (root / "data.cdb").read_bytes() == (output / "data.cdb").read_bytes()
    assert not os.path.samefile(root / "data.cdb", output / "data.cdb")
    assert (root / "data.cdb").stat().st_mode & 0o777 == 0o644


def test_a_build_no_longer_in_the_output_is_compiled_from_its_data(
    output: Path, tmp_path: Path
) -> None:
    sha256, data = build_of(output)
    expected = (output / "data.cdb").read_bytes()
    # A later build written there since (a save during a rollback, say).
    (output.parent / "zones" / "zones.example.com").write_bytes(b".example.com:192.0.2.9:a\n")
    Builder(output.parent / "zones", output, clock=Clock(1_700_000_100)).build()
    root = tmp_path / "served"
    done = served.serve(output, root, sha256, data, 1_700_000_000)
    assert done.how == "compiled"
    assert (root / "data.cdb").read_bytes() == expected


def test_the_root_defaults_to_output_served_and_may_not_be_the_output(tmp_path: Path) -> None:
    base = {"zones": "zones", "output": "out"}
    cfg = from_mapping(base, path=tmp_path / "dnsmaster.toml")
    assert cfg.axfrdns.root == tmp_path / "out" / "served"
    assert served.root_of(cfg) == tmp_path / "out" / "served"
    assert not served.wanted(cfg)
    cfg = from_mapping(
        {**base, "axfrdns": {"ip": "127.0.0.1", "root": "/srv/axfrdns/root"}},
        path=tmp_path / "dnsmaster.toml",
    )
    assert served.root_of(cfg) == Path("/srv/axfrdns/root")
    assert served.wanted(cfg)
    with pytest.raises(ConfigError, match=r"axfrdns\.root"):
        from_mapping({**base, "axfrdns": {"root": "out"}}, path=tmp_path / "dnsmaster.toml")


def doctor_lines(cfg: Config) -> list[str]:
    checks, build = master_checks(cfg)
    assert build is not None
    # The secondaries are judged against the served build, not a held one.
    assert (build.served is not None) == guarded.held_path(cfg.output).exists()
    return [c.line() for c in checks if "served root" in c.line()]


def test_doctor_names_both_serials_until_the_slaves_build_is_served(
    output: Path, tmp_path: Path
) -> None:
    (tmp_path / "zones" / "header").write_bytes(b"")
    cfg = from_mapping(
        {"zones": "zones", "output": "out", "axfrdns": {"ip": "127.0.0.1"}},
        path=tmp_path / "dnsmaster.toml",
    )
    root = served.root_of(cfg)
    serve(output, root)
    assert doctor_lines(cfg) == [
        f"OK   output: served root {root}: the output's build, serial 1700000000, 1 zones"
    ]
    first, _ = build_of(output)
    (tmp_path / "zones" / "zones.example.com").write_bytes(b".example.com:192.0.2.9:a\n")
    Builder(tmp_path / "zones", output, clock=Clock(1_700_000_100)).build()
    [line] = doctor_lines(cfg)
    assert line.startswith(
        f"FAIL output: served root {root}: data.cdb serves serial 1700000000 for "
        "example.com, the output's build has serial 1700000100; "
    )
    # Held: the slaves keep the first build, and so does the served root.
    sha256, _ = build_of(output)
    guarded.write(output, guarded.Held(1_700_000_100, sha256, "too much removed", 0.0, first))
    assert doctor_lines(cfg) == [
        f"OK   output: served root {root}: the slaves' build (the output's is held), "
        "serial 1700000000, 1 zones"
    ]
