"""Build the optional C accelerators: the compiler's (dnsmaster/core/_ccompile.c) and
the packed cdb records' (dnsmaster/core/_cdbblob.c). Both write cdb files through
the one cdb_make in dnsmaster/core/cdbmake.h, which each includes.

Everything else is declared in pyproject.toml. Each extension is optional: when it
cannot be built (no compiler, no Python headers) or DNSMASTER_NO_COMPILE=1 is set,
the package installs as pure Python and compiles with the reference implementation,
which gives the same bytes, only slower.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

_SKIP = os.environ.get("DNSMASTER_NO_COMPILE", "") not in {"", "0"}
# Python's own CFLAGS carry -g: debugging symbols cost a third of the compile's CPU
# (every install CI makes) and change no instruction. Whoever sets CFLAGS (a
# developer who wants the symbols for perf or callgrind) gets Python's flags, -g
# included, and theirs.
_FLAGS = [] if "CFLAGS" in os.environ else ["-g0"]
# Not compiled on its own: listed so that an edit to it rebuilds both extensions
# (MANIFEST.in ships it in the sdist).
_CDBMAKE = ["dnsmaster/core/cdbmake.h"]

ext_modules = (
    []
    if _SKIP
    else [
        Extension(
            "dnsmaster.core._ccompile",
            sources=["dnsmaster/core/_ccompile.c"],
            depends=_CDBMAKE,
            extra_compile_args=_FLAGS,
            optional=True,  # a failed build falls back to pure Python
        ),
        Extension(
            "dnsmaster.core._cdbblob",
            sources=["dnsmaster/core/_cdbblob.c"],
            depends=_CDBMAKE,
            extra_compile_args=_FLAGS,
            optional=True,
        ),
    ]
)

# The two extensions compile at once, one a CPU (build_ext's --parallel), rather
# than one after the other.
setup(ext_modules=ext_modules, options={"build_ext": {"parallel": True}})
