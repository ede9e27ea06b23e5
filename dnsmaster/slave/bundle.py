"""The receiver as one file: a zipapp that a slave's ``python3`` runs with no pip.

``dnsmaster receiver-bundle -o dnsmaster-receive.pyz`` writes it; a slave then
needs only ``python3``, ``tinydns`` and that file, and its key's forced command is
``/usr/bin/python3 -I -S /usr/local/lib/dnsmaster-receive.pyz --root DIR``
(``dnsmaster authorized-key --bundle PATH`` prints the line). ``-I -S``: nothing
from the slave's environment or site-packages can change what runs.

The bundle holds exactly the modules ``dnsmaster.slave.receive`` imports
(:data:`MODULES`; a test checks the list against an isolated import), all pure
Python and standard library: the C accelerator is left out, the pure-Python
compiler and cdb writer give the same bytes. It is deterministic — fixed
timestamps, modes and order, stored uncompressed so no zlib version can change
a byte — so two builds of one version are byte-identical and a slave's copy can
be compared with ``sha256sum``.
"""

from __future__ import annotations

import io
import marshal
import zipfile
from importlib import resources
from importlib.util import MAGIC_NUMBER, source_hash
from pathlib import Path

from dnsmaster import fsutil

__all__ = ["DEFAULT_PYTHON", "MAIN", "MODULES", "build", "write"]

#: The interpreter the shebang names: Debian's own python3.
DEFAULT_PYTHON = "/usr/bin/python3"

#: The receiver's modules, relative to the directory holding the package. Only the
#: standard library besides these: ``receive`` keeps its imports light for speed
#: (one process per push), which is also what lets it travel as one file.
MODULES = (
    "dnsmaster/__init__.py",
    "dnsmaster/errors.py",
    "dnsmaster/fsutil.py",
    "dnsmaster/protocol.py",
    "dnsmaster/slave/__init__.py",
    "dnsmaster/slave/confined.py",
    "dnsmaster/slave/inplace.py",
    "dnsmaster/slave/masters.py",
    "dnsmaster/slave/newdata.py",
    "dnsmaster/slave/operator.py",
    "dnsmaster/slave/outcome.py",
    "dnsmaster/slave/receive.py",
    "dnsmaster/slave/records.py",
    "dnsmaster/slave/root.py",
    "dnsmaster/slave/sections.py",
    "dnsmaster/core/__init__.py",
    "dnsmaster/core/accel.py",
    "dnsmaster/core/banner.py",
    "dnsmaster/core/cdb.py",
    "dnsmaster/core/compiler.py",
    "dnsmaster/core/confine.py",
    "dnsmaster/core/delta.py",
    "dnsmaster/core/fields.py",
    "dnsmaster/core/linetypes.py",
    "dnsmaster/core/lint.py",
    "dnsmaster/core/serial.py",
    "dnsmaster/core/stream.py",
    "dnsmaster/core/text.py",
)

#: The bundle's ``__main__.py``; an unpacked copy of the package run with it behaves
#: as the bundle does.
MAIN = b'''\
"""dnsmaster's receiver, bundled: python3 -I -S dnsmaster-receive.pyz --root DIR."""

import gc
import sys

# One short run that makes few cycles: the collector's passes over every object the
# imports make would cost more than the garbage they find (as dnsmaster receive).
gc.disable()

from dnsmaster.slave.receive import main  # noqa: E402
from dnsmaster.slave.receive import end  # noqa: E402

args = sys.argv[1:]
# A line written for the installed command ("... receive --root DIR") works too.
if args[:1] == ["receive"]:
    args = args[1:]
# The process ends without the interpreter's teardown (see end()).
end(main(args))
'''

# zip's earliest date: the bundle's bytes must not depend on when it was made.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _source(module: str) -> bytes:
    # Through importlib.resources, so a package installed in any form can bundle itself.
    node = resources.files("dnsmaster")
    for part in module.split("/")[1:]:
        node = node.joinpath(part)
    return node.read_bytes()


def _pyc(module: str, source: bytes) -> bytes:
    """The compiled module as an unchecked hash-based .pyc (PEP 552).

    Spares the receiver compiling ~5000 lines of source at every start. The
    interpreter that runs the bundle uses it only when its magic number matches this
    one's (the same Python minor version); any other reads the .py beside it.
    Marshal format 2 writes no back-references, whose choice depends on reference
    counts in the building process: with it, the bytes depend on the source alone.
    """
    code = compile(source, module, "exec", dont_inherit=True)
    flags = (0b01).to_bytes(4, "little")  # hash-based, not checked against the source
    return MAGIC_NUMBER + flags + source_hash(source) + marshal.dumps(code, 2)


def build(python: str = DEFAULT_PYTHON, *, compiled: bool = True) -> bytes:
    """The bundle's bytes: a ``#!PYTHON -IS`` line, then the zip archive.

    ``compiled`` adds each module's .pyc for this Python version beside its source.
    """
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise ValueError(f"the interpreter must be an absolute path without spaces: {python!r}")
    out = io.BytesIO()
    # -IS in one word: a shebang passes at most one argument.
    out.write(f"#!{python} -IS\n".encode())
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        entries = [("__main__.py", MAIN)]
        for module in MODULES:
            source = _source(module)
            if compiled:
                entries.append((module + "c", _pyc(module, source)))
            entries.append((module, source))
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # Unix, so the mode below means what it says
            info.external_attr = 0o100644 << 16
            zf.writestr(info, data)
    return out.getvalue()


def write(path: Path, python: str = DEFAULT_PYTHON) -> None:
    """Write the bundle to ``path``, mode 0755, replacing it whole (temp file, rename).

    No receiver ever runs a half-written bundle, so one can be upgraded in place on a
    live slave. (A receiver reads its modules from the file by name only while it
    starts, a few milliseconds: one starting at the very instant of the rename may
    fail, and the master retries it like any other failed push.)
    """
    data = build(python)
    tmp = fsutil.stage(path, lambda fd: fsutil.write_all(fd, data), mode=0o755)
    try:
        fsutil.publish([(tmp, path)])
    except BaseException:
        fsutil.discard([tmp])
        raise
