"""``dnsmaster demo``: a master and two slaves in one directory, nothing else needed.

The slaves use ``transport = "local"``: the daemon runs ``dnsmaster receive`` as
a subprocess, exactly as sshd would run the forced command, so a new user sees a
save propagate, and every line a slave prints, without SSH keys or tinydns.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

__all__ = ["CONFIG", "main"]

CONFIG = """\
# dnsmaster demo: one master and two slaves on this machine. The slaves are
# reached by running the receiver locally; real slaves use SSH (see README).
zones = "zones"           # edit the files here; every save is built and pushed
output = "master"         # the master's data and data.cdb
state = "state.json"      # what `dnsmaster status --config dnsmaster.toml` shows

[daemon]
debounce = 0.5

[[slave]]
name = "ns2"
transport = "local"
root = "slaves/ns2"

[[slave]]
name = "ns3"
transport = "local"
root = "slaves/ns3"
"""


def main(directory: Path) -> int:
    """Create the demo in ``directory`` (kept if it exists); the exit status."""
    zones = directory / "zones"
    try:
        for sub in ("zones", "master", "slaves/ns2", "slaves/ns3"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        config = directory / "dnsmaster.toml"
        if not config.exists():
            config.write_text(CONFIG)
        if not any(zones.iterdir()):
            for item in resources.files("dnsmaster").joinpath("demo_zones").iterdir():
                with resources.as_file(item) as source:
                    shutil.copyfile(source, zones / item.name)
    except OSError as exc:
        sys.stderr.write(f"dnsmaster: {exc.filename or directory}: {exc.strerror or exc}\n")
        return 111
    sys.stderr.write(
        f"dnsmaster demo in {directory}/: edit {zones}/zones.example.com and save;\n"
        f"watch the log here, then: dnsmaster status --config {config}\n"
    )
    return 0
