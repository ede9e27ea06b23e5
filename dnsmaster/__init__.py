"""dnsmaster: tinydns data from zones.* files, built once and pushed to every slave.

The pure core (parsing, make-data, the tinydns-data compiler, cdb) lives in
:mod:`dnsmaster.core` and does no I/O; everything else is a thin shell around it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
