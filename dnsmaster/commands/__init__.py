"""The command line: one thin module per command, and the parser that picks one.

- :mod:`~dnsmaster.commands.main`: the parser and the table of which module runs
  each command (imported only when that command runs); the console script's ``main``.
- :mod:`~dnsmaster.exits`: the exit statuses, and the one table of them.
- :mod:`~dnsmaster.commands.common`: what the master's commands share
  (configuration and logging, usage errors, the one-writer lock);
  :mod:`~dnsmaster.commands.handing`: the hand-off to a running daemon.
- One module per command: ``build`` (check, build), ``diff`` (diff and the dry
  runs), ``push``, ``wait``, ``rollback``, ``run`` (the daemon), ``status``,
  ``doctor``, ``demo``, ``serviceconf``, ``keys`` (authorized-key,
  receiver-bundle), ``receive`` (the slave's side), ``tinydnsdata``.
"""
