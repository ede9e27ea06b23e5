"""``python -m dnsmaster``."""

import sys

if sys.argv[1:2] == ["receive"]:
    # The slave's forced command: straight to the receiver, which ends the process.
    from dnsmaster.commands.receive import run

    run(sys.argv[2:])

from dnsmaster.commands.main import main

sys.exit(main())
