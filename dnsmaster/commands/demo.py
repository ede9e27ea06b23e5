"""``dnsmaster demo``: a master and two slaves in one directory, nothing else needed.

The slaves use ``transport = "local"``: the daemon runs ``dnsmaster receive`` as
a subprocess, exactly as sshd would run the forced command, so a new user sees a
save propagate, and every line a slave prints, without SSH keys or tinydns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path

from dnsmaster.commands import run
from dnsmaster.exits import EXIT_OK, EXIT_SYSTEM

__all__ = ["CONFIG", "command", "create", "main"]

CONFIG = """\
# dnsmaster demo: one master and two slaves on this machine. The slaves are
# reached by running the receiver locally; real slaves use SSH (docs/slaves.rst).
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


def command() -> str:
    """How a shell runs this dnsmaster.

    ``dnsmaster`` when PATH finds this very program; else its path, since a
    program installed in a venv (``.venv/bin/dnsmaster``) is not on PATH and a
    bare ``dnsmaster`` would fail, or run another installation.
    """
    script = Path(sys.argv[0])
    if script.name == "__main__.py":  # python -m dnsmaster: no script of its own
        return f"{shlex.quote(sys.executable)} -m dnsmaster"
    if not script.is_file():
        return "dnsmaster"  # not run as a script (python -c, embedded): nothing better
    found = shutil.which("dnsmaster")
    with contextlib.suppress(OSError):  # found and removed since: not this program
        if found is not None and os.path.samefile(found, script):
            return "dnsmaster"
    return shlex.quote(str(script.absolute()))


def main(args: argparse.Namespace) -> int:
    """``dnsmaster demo [DIR] [--setup-only]``: create the demo, then run the daemon on it."""
    status = create(args.directory)
    if status != EXIT_OK or args.setup_only:
        return status
    args.config, args.log_format = str(args.directory / "dnsmaster.toml"), None
    return run.main(args)


def create(directory: Path) -> int:
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
        return EXIT_SYSTEM
    # Absolute: the status command is meant for another terminal, in another directory.
    config_path = shlex.quote(str(config.absolute()))
    sys.stderr.write(
        f"dnsmaster demo in {directory}/: edit {zones}/zones.example.com and save;\n"
        f"watch the log here, then: {command()} status --config {config_path}\n"
    )
    return EXIT_OK
