"""``python -m dnsmaster``."""

import sys

from dnsmaster.commands.cli import main

sys.exit(main())
