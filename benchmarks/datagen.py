"""Deterministic, realistic tinydns zones for the benchmarks.

One zone is about fifty lines in the mix the design measured (``.``, ``+``, ``=``,
``@``, ``C``, ``'``), so sizes compare with the figures in DESIGN.md.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["LINES_PER_ZONE", "write_data", "write_zones", "zone_lines"]

LINES_PER_ZONE = 50


def zone_lines(n: int, rng: random.Random) -> list[str]:
    """The lines of zone number ``n``: 2 NS, 1 MX, a TXT, hosts, aliases."""
    dom = f"customer{n}.example"
    net = f"10.{(n >> 8) & 255}.{n & 255}"
    lines = [
        f".{dom}:192.0.2.1:a:259200",
        f".{dom}:198.51.100.1:b",
        f"@{dom}:{net}.25:mx1:10",
        f"'{dom}:v=spf1 mx -all:3600",
        f"={dom}:{net}.1",
    ]
    i = 2
    while len(lines) < LINES_PER_ZONE:
        host = f"h{i}-{rng.randrange(1 << 20):05x}"
        kind = rng.random()
        if kind < 0.55:
            lines.append(f"+{host}.{dom}:{net}.{i & 255}")
        elif kind < 0.8:
            lines.append(f"={host}.{dom}:{net}.{i & 255}:3600")
        elif kind < 0.95:
            lines.append(f"C{host}.{dom}:www.{dom}")
        else:
            lines.append(f"'{host}.{dom}:token-{rng.randrange(1 << 30)}")
        i += 1
    return lines


def write_data(path: Path, total_lines: int, seed: int = 1) -> None:
    """One ``data`` file of about ``total_lines`` lines."""
    rng = random.Random(seed)
    with path.open("w") as out:
        for n in range(max(1, total_lines // LINES_PER_ZONE)):
            out.write("\n".join(zone_lines(n, rng)) + "\n")


def write_zones(directory: Path, total_lines: int, files: int = 100, seed: int = 1) -> list[Path]:
    """A zones directory of ``files`` zones.* files with ``total_lines`` in all."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    zones = max(1, total_lines // LINES_PER_ZONE)
    per_file = max(1, zones // files)
    written = []
    for f in range(0, zones, per_file):
        path = directory / f"zones.group{f // per_file:04d}"
        with path.open("w") as out:
            for n in range(f, min(zones, f + per_file)):
                out.write("\n".join(zone_lines(n, rng)) + "\n")
        written.append(path)
    (directory / "header").write_text("# dnsmaster benchmark data\n")
    return written
