"""Build the optional C accelerator of the compiler (dnsmaster/core/_ccompile.c).

Everything else is declared in pyproject.toml. The extension is optional: when it
cannot be built (no compiler, no Python headers) or DNSMASTER_NO_COMPILE=1 is set,
the package installs as pure Python and compiles with the reference implementation,
which gives the same bytes, only slower.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

_SKIP = os.environ.get("DNSMASTER_NO_COMPILE", "") not in {"", "0"}

ext_modules = (
    []
    if _SKIP
    else [
        Extension(
            "dnsmaster.core._ccompile",
            sources=["dnsmaster/core/_ccompile.c"],
            optional=True,  # a failed build falls back to pure Python
        )
    ]
)

setup(ext_modules=ext_modules)
