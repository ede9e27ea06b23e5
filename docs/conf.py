"""Sphinx configuration for the dnsmaster manual (``sphinx-build -W -b html docs OUT``)."""

from __future__ import annotations

from importlib import metadata

project = "dnsmaster"
author = "the dnsmaster authors"
copyright = "2026, the dnsmaster authors"
try:
    release = metadata.version("dnsmaster")
except metadata.PackageNotFoundError:  # building from a checkout without installing it
    release = "unknown"
version = release

extensions: list[str] = []
root_doc = "index"
exclude_patterns = ["_build"]
# Literal blocks are shell sessions, configuration and log lines, not Python.
highlight_language = "none"
html_theme = "alabaster"
html_title = "dnsmaster manual"
nitpicky = True
