"""The master's pipeline and records: build, cache, archive, guard, hand-off,
push, state, rollback, and the health that ``status`` and ``doctor`` judge.

Everything that turns ``zones.*`` files into a build, gives it to the slaves
(:mod:`dnsmaster.master.pushing`, the one push orchestrator) and keeps the record of
what was built and given. It reaches slaves only through :mod:`dnsmaster.transport`.
"""
