"""The master's pipeline: build, cache, archive, guard, hand-off, state and rollback.

Everything that turns ``zones.*`` files into a build and keeps the record of what
was built and given to the slaves. It speaks to slaves only through
:mod:`dnsmaster.transport`.
"""
