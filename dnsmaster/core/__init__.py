"""The pure core: tinydns data parsing, make-data, the compiler and cdb.

Nothing in this package opens a file, reads the clock or touches the network;
callers pass bytes and numbers in and get values out. That keeps the rules that
decide byte identity with tinydns-data in one place, testable without any I/O.
"""
