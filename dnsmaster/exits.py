"""Every exit status of every dnsmaster process: the constants, and the one table the
manual shows.

:data:`EXIT_STATUSES` is the table ``docs/reference/exit-codes.rst`` copies as it is
(``tests/test_docs.py`` checks it). A number means the same across commands where it
can (2 usage, 3 a slave, 111 the system); where a command gives 1, 4 or 5 a meaning
of its own, the constant is named for it. The receiver's statuses are part of what
the master and the slave speak, so they are in :mod:`dnsmaster.protocol`.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BUILD",
    "EXIT_CHANGES",
    "EXIT_CRASH",
    "EXIT_DAEMON",
    "EXIT_DATA",
    "EXIT_FAILED",
    "EXIT_HELD",
    "EXIT_NO_PLAN",
    "EXIT_OK",
    "EXIT_SLAVES",
    "EXIT_STALE_CONFIG",
    "EXIT_STATUSES",
    "EXIT_SYSTEM",
    "EXIT_USAGE",
]

#: Every command's exit statuses (argparse's usage errors are 2 for all of them, and
#: ``--help``/``--version`` exit 0). For the docs: keep it the one table.
EXIT_STATUSES = """\
command                        exit statuses
-----------------------------  ----------------------------------------------------------
build                          0 built (or already current); 1 the zones have errors (or
                               warnings, with --strict): nothing written; 2 configuration;
                               111 a file or directory cannot be read or written.
                               Handed to a running daemon: 1 too when a rollback holds
                               the slaves; 4 the guard holds the build; 111 the daemon
                               did not build in time
diff                           as diff(1): 0 no change; 1 changes (a held build is one:
                               the push itself would exit 4); 2 no plan: errors in the
                               zones, configuration, no output directory, an unreadable
                               file, a slave that cannot be asked or holds a build the
                               master does not keep (--slave), a damaged rollback file
build --dry-run                as diff
push --dry-run                 as diff (a slave that cannot be asked is a change: the push
                               would try it)
check                          0 ok; 1 errors (or warnings, with --strict); 2
                               configuration; 111 the zones cannot be read
push                           0 every slave took the build (or, --accept, nothing was
                               held); 1 the zones have errors, the data on disk is not
                               valid data, or a rollback holds the slaves (rollback
                               --release); 2 usage or configuration; 3 a slave did not
                               take it (the others did), or, --wait, did not serve the
                               serial in time; 4 the guard holds the build (push --accept
                               BUILD releases it), or --accept names another build than
                               the one held; 111 a file cannot be read or written, or a
                               daemon handed the push did not act in time
wait                           0 every slave serves the serial; 2 usage or configuration
                               (no zone has the serial: name it with --zone); 3 the time
                               ran out; 111 the data cannot be read
rollback                       0 done (--list; --release with nothing held); 1 --release:
                               the zones have errors (the rollback stays); 2 usage or
                               configuration, no kept build matches --to; 3 a slave did
                               not take it; 4 (handed to a daemon) the guard holds the
                               released build; 111 the rollback cannot be written, or a
                               daemon refused it or did not act in time
status                         the highest that applies: 0 all ok; 1 the daemon does not
                               run on the configuration file as it is (reload-failed,
                               changed, restart-needed); 3 a slave or a secondary is not
                               ok; 4 the build is not current (none, failed, unbuilt,
                               held, rollback); 5 the daemon is not running, or whether
                               it runs cannot be told (unsure: its heartbeat is dated in
                               the future); 2 usage or configuration; 111 no readable
                               state file, or one that is not a state file (the field is
                               named). --nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
                               --live: 0 every slave serves the data, 3 one does not, 111
                               the data cannot be read
doctor                         0 nothing failed (warnings allowed); 1 a check failed; 2
                               the configuration cannot be loaded
run                            0 stopped by SIGTERM; 2 configuration; 70 an unexpected
                               exception (a bug: the traceback is in the log); 111 the
                               output directory or state file cannot be written, or the
                               zones watcher was lost
demo                           as run; --setup-only 0; 111 the demo cannot be created
service-conf                   0 made; 2 usage (an account does not exist, DIR exists);
                               111 ACCT cannot run the daemon, or DIR cannot be created
receive (the slave)            0 installed (or status printed); 1 the data was refused
                               (incomplete, too large, does not compile, older serial); 2
                               the command was refused (unknown verb); 3 the delta was
                               refused (another base): a full push is needed; 111 a
                               system error
authorized-key                 0 printed; 2 not a public key, relative paths
receiver-bundle                0 written; 2 a bad --python, or stdout is a terminal; 111
                               the file cannot be written
tinydns-data                   0 compiled; 111 any failure, as the original
"""

EXIT_OK = 0
#: ``check``, ``build``, ``push``: the zones have errors, nothing was written.
EXIT_DATA = 1
#: ``diff`` and the dry runs, as diff(1): the plan changes something.
EXIT_CHANGES = 1
#: ``doctor``: a check failed.
EXIT_FAILED = 1
#: ``status``: the daemon does not run on the configuration file as it is.
EXIT_STALE_CONFIG = 1
EXIT_USAGE = 2
#: ``diff`` and the dry runs: no plan could be made.
EXIT_NO_PLAN = 2
#: A slave did not take the build, or does not serve it.
EXIT_SLAVES = 3
#: ``push``, and ``build``/``rollback`` handed to a daemon: the guard holds the build.
EXIT_HELD = 4
#: ``status``: the build is not current.
EXIT_BUILD = 4
#: ``status``: the daemon is not running, or whether it runs cannot be told.
EXIT_DAEMON = 5
#: ``run``: EX_SOFTWARE, an unexpected exception (a bug); the traceback is in the log.
EXIT_CRASH = 70
EXIT_SYSTEM = 111
