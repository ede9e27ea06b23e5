"""The slave's side: the receiver and its one-file bundle.

It runs once per push on every slave, so it imports only :mod:`dnsmaster.core`,
:mod:`dnsmaster.protocol`, :mod:`dnsmaster.fsutil` and :mod:`dnsmaster.errors`
(``tests/test_layout.py`` holds it to that).
"""
