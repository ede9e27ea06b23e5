"""``python -m dnsmaster``."""

import sys

from dnsmaster.commands.main import main

sys.exit(main())
